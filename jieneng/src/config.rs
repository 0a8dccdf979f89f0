//! The server file (`jieneng serve --config server.toml`): TOML, unknown keys rejected, validated
//! before anything starts, errors naming the file, the line and the key. Its write-path part goes
//! to `ingest` ([`ServeConfig::ingest`]), its read-API part to `api` ([`ServeConfig::api`]).
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
//! factor_files = ["factors/mee-nbs-2024.toml"]  # optional: factors over the built-in
//!                            # tables (`reading_model::factor`), relative to this file
//!
//! [[account]]                # who each 分户 account is (`query::accounts`)
//! code = "110108A001"
//! name_zh = "海淀区机关办公楼"
//! institution_type = "state_organ"
//! [account.factors]          # optional: the factors of all this account's figures
//! coal_method = "equivalent" # 等价; default calorific (当量)
//! carbon_region = "grid"     # grid (default), national, province, or a region name
//! year = 2023                # default: the readings' year
//!
//! [reference]                # optional: the deployment's own data files, each in the format
//! holidays = "holidays.toml" # of the built-in `query/data/*.toml` of its kind (relative to
//! benchmarks = "bench.toml"  # this file): later holiday notices, benchmark sets with values,
//! school_terms = "terms.toml"        # school vacations, heating seasons
//! heating_seasons = "heating.toml"   # (`query::savings::reference`)
//!
//! [[api_key]]                # people and systems (`api::access`)
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

use api::SavingsSettings;
use api::access::ApiKeyConfig;
use ingest::IngestConfig;
use ingest::config::{
    GatewayAuth, MqttSettings, StorageConfig, default_body, default_flush_interval,
    default_flush_rows, default_listen,
};
use ingest::tls::TlsFiles;
use query::Account;
use query::savings::ReferenceFiles;
use serde::Deserialize;

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

/// The whole server file.
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
    pub account: Vec<Account>,
    /// API keys of people and systems (`api::access`), apart from gateway tokens.
    #[serde(default)]
    pub api_key: Vec<ApiKeyConfig>,
    /// Compaction, rollups and retention.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Inputs of the savings analysis (`GET /api/v1/savings`).
    #[serde(default)]
    pub savings: SavingsSettings,
    /// The deployment's reference data files (holidays, benchmarks, terms, heating seasons).
    #[serde(default)]
    pub reference: ReferenceFiles,
    /// Factor files over the built-in tables, in order (relative to this file).
    #[serde(default)]
    pub factor_files: Vec<PathBuf>,
    /// The audit trail (`http_contract::audit`).
    #[serde(default)]
    pub audit: AuditSettings,
}

/// `[audit]`: where the audit trail goes and how it rotates. On by default, in
/// `<data_dir>/audit/audit.jsonl` (outside `readings/`, so no Parquet glob meets it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Relative to the server file; default `<data_dir>/audit/audit.jsonl`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A file past this size is rotated (`audit.jsonl.1`, …).
    #[serde(default = "default_audit_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_audit_keep")]
    pub keep: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            max_bytes: default_audit_bytes(),
            keep: default_audit_keep(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_audit_bytes() -> u64 {
    64 << 20
}

fn default_audit_keep() -> usize {
    10
}

impl AuditSettings {
    /// The trail's file for a server whose data lives in `data_dir`.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| data_dir.join("audit").join("audit.jsonl"))
    }
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
            if let Some(p) = c.audit.path.as_mut()
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
            if let Some(csv) = c.savings.temperature_csv.as_mut()
                && csv.is_relative()
            {
                *csv = base.join(&*csv);
            }
            c.reference.resolve(base);
            for f in &mut c.factor_files {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        check_reference(&file, &text, &c)?;
        c.factor_tables(&file, &text)?;
        Ok(c)
    }

    /// The factor tables the server prices with: the built-in ones and `factor_files`, checked
    /// against the factor ids the accounts pin. `file` and `text` are this file's name and
    /// contents, to name an account's line.
    pub fn factor_tables(
        &self,
        file: &str,
        text: &str,
    ) -> Result<reading_model::FactorTables, ConfigError> {
        let tables = query::accounts::load_factor_tables(&self.factor_files).map_err(|e| {
            ConfigError::Invalid {
                file: format!("{}:{}", e.file, e.line),
                message: format!("{}: {}", e.key, e.message),
            }
        })?;
        let starts = account_lines(text);
        for (i, a) in self.account.iter().enumerate() {
            a.check_factors(&format!("account[{i}]"), &tables)
                .map_err(|e| ConfigError::Invalid {
                    file: format!("{file}:{}", starts.get(i).copied().unwrap_or(1)),
                    message: e.to_string(),
                })?;
        }
        Ok(tables)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        };
        let c: Self = toml::from_str(text)
            .map_err(|e| invalid(e.to_string().trim_end().replace('\n', " | ")))?;
        c.ingest().validate().map_err(invalid)?;
        check_accounts_and_keys(file, text, &c)?;
        Ok(c)
    }

    /// The write path's part.
    pub fn ingest(&self) -> IngestConfig {
        IngestConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            flush_interval: self.flush_interval,
            flush_rows: self.flush_rows,
            max_body_bytes: self.max_body_bytes,
            tls: self.tls.clone(),
            mqtt: self.mqtt.clone(),
            gateway: self.gateway.clone(),
            storage: self.storage.clone(),
        }
    }

    /// The read API's part.
    pub fn api(&self) -> api::ApiConfig {
        api::ApiConfig {
            data_dir: self.data_dir.clone(),
            account: self.account.clone(),
            api_key: self.api_key.clone(),
            savings: self.savings.clone(),
            reference: self.reference.clone(),
            factor_files: self.factor_files.clone(),
        }
    }
}

/// Loads the `[reference]` files once, so that a bad one stops the server at startup with its
/// name, line and key (and the `[reference]` key naming it in this file) rather than at the
/// first request.
fn check_reference(file: &str, text: &str, c: &ServeConfig) -> Result<(), ConfigError> {
    query::savings::ReferenceData::load(&c.reference).map_err(|e| {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("[reference]"))
            .map_or(0, |i| i + 1);
        ConfigError::Invalid {
            file: format!("{file}:{line}"),
            message: format!("[reference]: {e}"),
        }
    })?;
    Ok(())
}

/// The line of each `[[account]]` entry of `text`.
fn account_lines(text: &str) -> Vec<usize> {
    #[derive(Deserialize)]
    struct Spans {
        #[serde(default)]
        account: Vec<toml::Spanned<toml::Value>>,
    }
    let Ok(spans) = toml::from_str::<Spans>(text) else {
        return vec![];
    };
    spans
        .account
        .iter()
        .map(|s| {
            let at = s.span().start.min(text.len());
            text.as_bytes()[..at]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        })
        .collect()
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
    use http_contract::token_hash;
    use ingest::config::StorageConfig;

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

    /// A later State Council notice in the deployment's own file (a fixture with made-up
    /// dates, so `verified = false`).
    const HOLIDAYS_2027: &str = "[[year]]\nyear = 2027\nsource = \"test fixture\"\nurl = \"\"\n\n[[year.holiday]]\nname = \"春节\"\nname_en = \"Spring Festival\"\nfrom = \"2027-02-06\"\nto = \"2027-02-12\"\nwork = [\"2027-02-14\"]\n";

    fn server_file(dir: &Path, reference: &str) -> PathBuf {
        let p = dir.join("server.toml");
        std::fs::write(&p, format!("data_dir = \"d\"\n\n[reference]\n{reference}")).unwrap();
        p
    }

    #[test]
    fn reference_files_extend_the_built_in_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("holidays.toml"), HOLIDAYS_2027).unwrap();
        let c =
            ServeConfig::load(&server_file(dir.path(), "holidays = \"holidays.toml\"\n")).unwrap();
        assert_eq!(
            c.reference.holidays.as_deref(),
            Some(dir.path().join("holidays.toml").as_path()),
            "relative to the server file"
        );
        let data = query::savings::ReferenceData::load(&c.api().reference).unwrap();
        let spring_festival = chrono::NaiveDate::from_ymd_opt(2027, 2, 8).unwrap();
        assert!(data.calendar.covers(spring_festival));
        assert_eq!(
            data.calendar.day_type(spring_festival),
            query::savings::DayType::Holiday
        );
        assert!(!data.calendar.source(2027).unwrap().verified);
    }

    #[test]
    fn a_bad_reference_file_names_both_files_the_line_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        // A weekday as a 调休 working day, on line 11 of the holiday file.
        let bad = HOLIDAYS_2027.replace("2027-02-14", "2027-02-15");
        std::fs::write(dir.path().join("holidays.toml"), bad).unwrap();
        let server = server_file(dir.path(), "holidays = \"holidays.toml\"\n");
        let e = ServeConfig::load(&server).unwrap_err().to_string();
        assert!(e.contains("server.toml:3: [reference]"), "{e}");
        assert!(e.contains("holidays.toml: holiday calendar, line 6"), "{e}");
        assert!(e.contains("`work`") && e.contains("2027-02-15"), "{e}");
        // A benchmark file with an unknown key: the parser names its line and the key.
        std::fs::write(
            dir.path().join("bench.toml"),
            "[[set]]\nid = \"x\"\nname = \"x\"\nname_en = \"x\"\nsource = \"s\"\nunit = \"kWh/(m²·a)\"\nverifed = true\n",
        )
        .unwrap();
        let server = server_file(dir.path(), "benchmarks = \"bench.toml\"\n");
        let e = ServeConfig::load(&server).unwrap_err().to_string();
        assert!(
            e.contains("bench.toml") && e.contains("line 7") && e.contains("verifed"),
            "{e}"
        );
        // A file that is not there.
        let server = server_file(dir.path(), "school_terms = \"nope.toml\"\n");
        let e = ServeConfig::load(&server).unwrap_err().to_string();
        assert!(e.contains("nope.toml: cannot read"), "{e}");
        // An unknown key of the section itself.
        let server = server_file(dir.path(), "holiday = \"holidays.toml\"\n");
        let e = ServeConfig::load(&server).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("holiday"), "{e}");
    }

    #[test]
    fn factor_files_and_account_selections_are_checked_with_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let factors = "[[carbon_factor]]\nid = \"sd-2024/grid\"\ncategory = \"01\"\nregion = \"37\"\nyear = 2024\nvalue = 0.7\nper = \"kWh\"\nsource = \"provincial guide\"\n";
        std::fs::write(dir.path().join("sd.toml"), factors).unwrap();
        let account = "[[account]]\ncode = \"370102A001\"\nname_zh = \"济南\"\ninstitution_type = \"state_organ\"\n[account.factors]\ncoal_method = \"等价\"\ncarbon_factor = { \"01\" = \"sd-2024/grid\" }\n";
        let server = |files: &str| {
            let p = dir.path().join("server.toml");
            std::fs::write(
                &p,
                format!("data_dir = \"d\"\nfactor_files = [{files}]\n{account}"),
            )
            .unwrap();
            ServeConfig::load(&p)
        };
        let c = server("\"sd.toml\"").unwrap();
        assert_eq!(c.factor_files, [dir.path().join("sd.toml")]);
        let a = &c.account[0];
        assert_eq!(a.factors.coal_method, reading_model::CoalMethod::Equivalent);
        let tables = c
            .factor_tables(
                "server.toml",
                &std::fs::read_to_string(dir.path().join("server.toml")).unwrap(),
            )
            .unwrap();
        assert!(tables.version_of(false, "sd-2024/grid").is_some());
        // Without the file, the pinned id is unknown: the account's line is named.
        let e = server("").unwrap_err().to_string();
        assert!(
            e.contains("server.toml:3") && e.contains("account[0].factors"),
            "{e}"
        );
        assert!(e.contains("sd-2024/grid"), "{e}");
        // A bad factor file: its own name, line and key.
        std::fs::write(dir.path().join("bad.toml"), factors.replace("0.7", "-0.7")).unwrap();
        let e = server("\"bad.toml\"").unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:1") && e.contains("carbon_factor[0] (sd-2024/grid)"),
            "{e}"
        );
        // A misspelt selection key is refused, not ignored.
        let p = dir.path().join("typo.toml");
        std::fs::write(
            &p,
            format!(
                "data_dir = \"d\"\n{}",
                account.replace("coal_method", "coal_methd")
            ),
        )
        .unwrap();
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("coal_methd"), "{e}");
    }
}
