//! Server configuration (TOML, unknown keys rejected).
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./data"
//! flush_interval = 10        # seconds between Parquet flushes
//! flush_rows = 500000        # or sooner, when this many rows wait in memory
//!
//! [tls]                      # optional; required unless `listen` is a loopback address
//! cert_file = "server.pem"   # certificate chain, leaf first (relative to this file)
//! key_file = "server.key"
//!
//! [mqtt]                     # the embedded broker; on unless `enabled = false`
//! listen = "127.0.0.1:1883"  # TLS too when [tls] is set
//!
//! [storage]                  # all optional; see `StorageConfig`
//! compact_files = 8          # compact a date partition once it has this many files,
//! compact_after = 60         # or once it has been written to this many seconds ago
//! compact_grace = 60         # seconds compacted-away files stay for queries still reading them
//! retention_days = 0         # days of raw readings kept (0: all); rollups are separate:
//! rollup_retention_days = 0  # days of hourly and daily rollups kept (0: all)
//!
//! [[gateway]]
//! id = "gw-01"
//! token_sha256 = "…"         # sha256 of the gateway's token, hex (`jieneng token-hash`)
//!
//! [[account]]                # who each 分户 account is (`query::accounts`)
//! code = "110108A001"
//! name_zh = "海淀区机关办公楼"
//! institution_type = "state_organ"
//!
//! [[api_key]]                # people and systems (`crate::api::access`)
//! name = "haidian-officer"
//! key_sha256 = "…"
//! role = "officer"
//! region = "110108"
//! ```
//!
//! Tokens must not cross a network in clear text, so a listener on anything but a loopback
//! address needs `[tls]` (a TLS-terminating proxy in front counts as loopback: listen there).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reading_model::GatewayId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::tls::TlsFiles;

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
    /// TLS on the HTTP and MQTT listeners.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The embedded MQTT broker.
    #[serde(default)]
    pub mqtt: MqttSettings,
    #[serde(default)]
    pub gateway: Vec<GatewayAuth>,
    /// Who each 分户 account is and how its meters nest (`query::accounts`).
    #[serde(default)]
    pub account: Vec<query::Account>,
    /// API keys of people and systems (`crate::api::access`), apart from gateway tokens.
    #[serde(default)]
    pub api_key: Vec<crate::api::access::ApiKeyConfig>,
    /// Compaction, rollups and retention.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Inputs of the savings analysis (`GET /api/v1/savings`).
    #[serde(default)]
    pub savings: SavingsSettings,
}

/// `[savings]`: inputs of the savings analysis.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavingsSettings {
    /// Outdoor temperature for accounts without temperature readings: a CSV of
    /// `date,temperature_c` daily means (or `time,temperature_c` samples), relative to the
    /// config file. Without it, and without readings, the baseline is day-type-only.
    pub temperature_csv: Option<PathBuf>,
}

/// How the store keeps its files: compaction, rollups and retention (see `store::maintenance`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// A date partition with at least this many files is compacted into one.
    pub compact_files: usize,
    /// A partition last written to this many seconds ago is compacted (and its rollups
    /// recomputed) even with fewer files: this bounds how stale rollups get.
    pub compact_after: f64,
    /// Seconds a compacted-away file stays on disk, so that queries which listed it before the
    /// compaction can still read it. Readers skip it as soon as its replacement exists.
    pub compact_grace: f64,
    /// Days of raw readings kept, by UTC date; older date partitions are removed. 0 keeps all.
    pub retention_days: u32,
    /// Days of hourly and daily rollups kept. 0 keeps all.
    pub rollup_retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            compact_files: 8,
            compact_after: 60.0,
            compact_grace: 60.0,
            retention_days: 0,
            rollup_retention_days: 0,
        }
    }
}

impl StorageConfig {
    /// Checks the values without touching the disk.
    pub fn validate(&self) -> Result<(), String> {
        if self.compact_files < 2 {
            return Err(format!(
                "storage.compact_files: {} is less than 2",
                self.compact_files
            ));
        }
        for (name, v) in [
            ("compact_after", self.compact_after),
            ("compact_grace", self.compact_grace),
        ] {
            if !(0.0..=86_400.0).contains(&v) {
                return Err(format!("storage.{name}: {v} s is outside [0, 86400]"));
            }
        }
        if self.retention_days != 0
            && self.rollup_retention_days != 0
            && self.rollup_retention_days < self.retention_days
        {
            return Err(format!(
                "storage.rollup_retention_days ({}) is shorter than retention_days ({}): \
                 rollups are what remains of old data",
                self.rollup_retention_days, self.retention_days
            ));
        }
        Ok(())
    }
}

/// `[mqtt]`: the embedded broker gateways may publish batches to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where gateways connect; TLS when the server has `[tls]`.
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_mqtt_listen(),
        }
    }
}

impl MqttSettings {
    /// No broker: for programs and tests that only speak HTTP.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

fn yes() -> bool {
    true
}
fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
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
        if let Some(base) = path.parent() {
            if c.data_dir.is_relative() {
                c.data_dir = base.join(&c.data_dir);
            }
            if let Some(tls) = c.tls.as_mut() {
                tls.resolve(base);
            }
            if let Some(csv) = c.savings.temperature_csv.as_mut()
                && csv.is_relative()
            {
                *csv = base.join(&*csv);
            }
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
        if c.tls.is_none() {
            let mut open = vec![("listen", c.listen)];
            if c.mqtt.enabled {
                open.push(("mqtt.listen", c.mqtt.listen));
            }
            for (key, addr) in open {
                if !addr.ip().is_loopback() {
                    return Err(invalid(format!(
                        "{key} = {addr} without [tls] would let gateway tokens cross the network in \
                         clear text; add [tls] cert_file and key_file, or listen on a loopback \
                         address behind a TLS-terminating proxy"
                    )));
                }
            }
        }
        check_accounts_and_keys(file, text, &c)?;
        c.storage.validate().map_err(invalid)?;
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

/// Checks `[[account]]` and `[[api_key]]` entries; errors name the file, the entry's line and
/// the key.
fn check_accounts_and_keys(file: &str, text: &str, c: &ServeConfig) -> Result<(), ConfigError> {
    /// Only the spans of the entries, to name their lines.
    #[derive(Deserialize)]
    struct Spans {
        #[serde(default)]
        account: Vec<toml::Spanned<toml::Value>>,
        #[serde(default)]
        api_key: Vec<toml::Spanned<toml::Value>>,
    }
    let spans: Spans = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let line = |s: Option<&toml::Spanned<toml::Value>>| {
        let at = s.map_or(0, |s| s.span().start).min(text.len());
        text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    };
    let invalid = |line: usize, message: String| ConfigError::Invalid {
        file: format!("{file}:{line}"),
        message,
    };
    if let Err((i, e)) = query::accounts::validate_accounts(&c.account) {
        return Err(invalid(line(spans.account.get(i)), e.to_string()));
    }
    for (i, k) in c.api_key.iter().enumerate() {
        if let Err((key, message)) = k.validate() {
            return Err(invalid(
                line(spans.api_key.get(i)),
                format!("api_key[{i}].{key} ({}): {message}", k.name),
            ));
        }
        if c.gateway.iter().any(|g| g.token_sha256 == k.key_sha256) {
            return Err(invalid(
                line(spans.api_key.get(i)),
                format!(
                    "api_key[{i}] ({}): the same secret as a gateway token; keep them apart",
                    k.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/server.toml");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(c.gateway.len(), 1);
        assert_eq!(c.account.len(), 1);
        assert_eq!(c.account[0].main_meter[0].sub_meters.len(), 2);
        assert_eq!(
            c.api_key[0].key_sha256,
            token_hash("change-me-haidian-officer-key")
        );
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
        assert!(c.mqtt.enabled, "the broker is on by default");
        assert!(c.tls.is_none());
        let e = ServeConfig::parse("s.toml", "data_dir = \"d\"\nlisten = \"0.0.0.0:8080\"\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("listen = 0.0.0.0:8080 without [tls]"),
            "{e}"
        );
        let e = ServeConfig::parse(
            "s.toml",
            "data_dir = \"d\"\n[mqtt]\nlisten = \"0.0.0.0:1883\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("mqtt.listen"), "{e}");
        let c = ServeConfig::parse(
            "s.toml",
            "data_dir = \"d\"\nlisten = \"0.0.0.0:8443\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[mqtt]\nlisten = \"0.0.0.0:8883\"\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.listen.port(), 8883);
        assert_eq!(c.storage, StorageConfig::default());
        let c = ServeConfig::parse(
            "s.toml",
            "data_dir = \"d\"\n[storage]\nretention_days = 400\ncompact_after = 5\n",
        )
        .unwrap();
        assert_eq!(
            (c.storage.retention_days, c.storage.compact_after),
            (400, 5.0)
        );
        let e = ServeConfig::parse("s.toml", "data_dir = \"d\"\n[storage]\ncompact_files = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("storage.compact_files"), "{e}");
        let e = ServeConfig::parse(
            "s.toml",
            "data_dir = \"d\"\n[storage]\nretention_days = 30\nrollup_retention_days = 7\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("rollup_retention_days"), "{e}");
        let e = ServeConfig::parse("s.toml", "data_dir = \"d\"\nlisten = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("s.toml") && e.to_string().contains("line 2"),
            "{e}"
        );
    }
}
