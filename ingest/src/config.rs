//! The write path's settings (`IngestConfig`) and the sections of the server file it reads:
//! `[[gateway]]` (ids and token hashes), `[tls]`, `[mqtt]` (the embedded broker), `[storage]`
//! (compaction, rollups, retention). The binary parses the server file as a whole (TOML, unknown
//! keys rejected, errors naming file, line and key) and hands this part to [`crate::Server`].
//!
//! Tokens must not cross a network in clear text, so a listener on anything but a loopback
//! address needs `[tls]` (a TLS-terminating proxy in front counts as loopback: listen there).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_contract::credential::{Credential, Expiry};
use reading_model::GatewayId;
use serde::Deserialize;

use crate::tls::TlsFiles;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuth {
    pub id: GatewayId,
    /// SHA-256 of the token, lowercase hex: the server never stores a token itself.
    pub token_sha256: String,
    /// When the token stops working (a TOML offset date-time). A gateway may have several
    /// `[[gateway]]` entries with different tokens, so a token is rotated by adding the new one,
    /// moving the gateway to it, and removing the old one, each with a reload (SIGHUP).
    #[serde(default)]
    pub expires: Option<Expiry>,
}

impl GatewayAuth {
    /// The gateway tokens in force for `gateways`, as the batch API and the broker check them.
    pub fn credentials(
        gateways: &[GatewayAuth],
    ) -> impl Iterator<Item = (String, Credential<GatewayId>)> + '_ {
        gateways.iter().map(|g| {
            (
                g.token_sha256.clone(),
                Credential {
                    grants: g.id.clone(),
                    expires_ms: g.expires.map(|e| e.0),
                },
            )
        })
    }
}

/// The write path's part of the server config: where it listens, where the data goes, how it
/// flushes, its gateways and their tokens, TLS, the embedded broker and storage maintenance.
/// The server file that holds it (with the read API's sections) is parsed by the binary.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Seconds between Parquet flushes.
    pub flush_interval: f64,
    /// Rows waiting in memory that trigger a flush sooner.
    pub flush_rows: usize,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// TLS on the HTTP and MQTT listeners.
    pub tls: Option<TlsFiles>,
    /// The embedded MQTT broker.
    pub mqtt: MqttSettings,
    pub gateway: Vec<GatewayAuth>,
    /// Compaction, rollups and retention.
    pub storage: StorageConfig,
}

impl IngestConfig {
    /// One machine's write path for programs and tests: HTTP on a loopback port the OS picks,
    /// no broker, no TLS, no gateways yet, a flush every second, defaults elsewhere.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            flush_interval: 1.0,
            flush_rows: default_flush_rows(),
            max_body_bytes: default_body(),
            tls: None,
            mqtt: MqttSettings::disabled(),
            gateway: Vec::new(),
            storage: StorageConfig::default(),
        }
    }

    /// The same, accepting gateway `id` with `token` (stored as its sha256).
    pub fn with_gateway(mut self, id: GatewayId, token: &str) -> Self {
        self.gateway.push(GatewayAuth {
            id,
            token_sha256: http_contract::token_hash(token),
            expires: None,
        });
        self
    }

    /// Checks what needs no I/O; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval.is_nan()
            || self.flush_interval <= 0.0
            || self.flush_interval > 3600.0
        {
            return Err(format!(
                "flush_interval: {} s is outside (0, 3600]",
                self.flush_interval
            ));
        }
        if self.flush_rows == 0 || self.max_body_bytes < 1024 {
            return Err("flush_rows must be positive and max_body_bytes at least 1024".into());
        }
        if self.tls.is_none() {
            let mut open = vec![("listen", self.listen)];
            if self.mqtt.enabled {
                open.push(("mqtt.listen", self.mqtt.listen));
            }
            for (key, addr) in open {
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "{key} = {addr} without [tls] would let gateway tokens cross the network in \
                         clear text; add [tls] cert_file and key_file, or listen on a loopback \
                         address behind a TLS-terminating proxy"
                    ));
                }
            }
        }
        self.storage.validate()?;
        for (i, g) in self.gateway.iter().enumerate() {
            if g.token_sha256.len() != 64
                || !g
                    .token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "gateway[{i}].token_sha256 ({}): expected 64 lowercase hex digits",
                    g.id
                ));
            }
            // One token names one gateway; the same token twice would make the first entry's
            // expiry meaningless.
            if let Some(j) = self.gateway[..i]
                .iter()
                .position(|o| o.token_sha256 == g.token_sha256)
            {
                return Err(format!(
                    "gateway[{i}].token_sha256 ({}): the same token as gateway[{j}] ({})",
                    g.id, self.gateway[j].id
                ));
            }
        }
        Ok(())
    }

    /// Makes paths relative to the config file's directory `base` absolute.
    pub fn resolve(&mut self, base: &Path) {
        if self.data_dir.is_relative() {
            self.data_dir = base.join(&self.data_dir);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve(base);
        }
    }
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

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
pub fn default_flush_interval() -> f64 {
    10.0
}
pub fn default_flush_rows() -> usize {
    500_000
}
pub fn default_body() -> usize {
    16 * 1024 * 1024
}
