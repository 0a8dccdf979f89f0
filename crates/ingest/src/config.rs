//! Server configuration (TOML, unknown keys rejected).
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./data"
//! flush_interval = 10        # seconds between Parquet flushes
//! flush_rows = 500000        # or sooner, when this many rows wait in memory
//!
//! [[gateway]]
//! id = "gw-01"
//! token_sha256 = "…"         # sha256 of the gateway's token, hex (`jieneng token-hash`)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reading_model::GatewayId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuth {
    pub id: GatewayId,
    /// SHA-256 of the token, lowercase hex: the server never stores a token itself.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default = "default_flush_interval")]
    pub flush_interval: f64,
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Largest request body accepted, bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub gateway: Vec<GatewayAuth>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_flush_interval() -> f64 {
    10.0
}
fn default_flush_rows() -> usize {
    500_000
}
fn default_body() -> usize {
    16 * 1024 * 1024
}

/// SHA-256 of a token, lowercase hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut c = Self::parse(&file, &text)?;
        if c.data_dir.is_relative()
            && let Some(base) = path.parent()
        {
            c.data_dir = base.join(&c.data_dir);
        }
        Ok(c)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        };
        let c: Self = toml::from_str(text)
            .map_err(|e| invalid(e.to_string().trim_end().replace('\n', " | ")))?;
        if c.flush_interval.is_nan() || c.flush_interval <= 0.0 || c.flush_interval > 3600.0 {
            return Err(invalid(format!(
                "flush_interval: {} s is outside (0, 3600]",
                c.flush_interval
            )));
        }
        if c.flush_rows == 0 || c.max_body_bytes < 1024 {
            return Err(invalid(
                "flush_rows must be positive and max_body_bytes at least 1024".into(),
            ));
        }
        for (i, g) in c.gateway.iter().enumerate() {
            if g.token_sha256.len() != 64
                || !g
                    .token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(invalid(format!(
                    "gateway[{i}].token_sha256 ({}): expected 64 lowercase hex digits",
                    g.id
                )));
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/server.toml");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(c.gateway.len(), 1);
        assert_eq!(
            c.gateway[0].token_sha256,
            token_hash("change-me-gw-haidian-01-token")
        );
    }

    #[test]
    fn parses_and_validates() {
        let h = token_hash("secret-token-123456");
        let c = ServeConfig::parse(
            "s.toml",
            &format!("data_dir = \"d\"\n[[gateway]]\nid = \"gw\"\ntoken_sha256 = \"{h}\"\n"),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.gateway[0].token_sha256, h);
        let e = ServeConfig::parse(
            "s.toml",
            "data_dir = \"d\"\n[[gateway]]\nid = \"gw\"\ntoken_sha256 = \"abc\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("gateway[0].token_sha256"), "{e}");
        let e = ServeConfig::parse("s.toml", "data_dir = \"d\"\nlisten = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("s.toml") && e.to_string().contains("line 2"),
            "{e}"
        );
    }
}
