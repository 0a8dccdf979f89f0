//! A gateway site config (the TOML a facilities engineer writes) built in tests, so each test
//! says only what differs: its gateway, where it forwards, its devices.

use std::fmt::Write as _;
use std::path::Path;

/// The text of a site config: `[gateway]`, `[forward]`, then whatever sections a test adds.
/// Values are written as TOML basic strings with `{:?}` quoting, which escapes as TOML does for
/// the paths, URLs and tokens tests use.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    gateway: Vec<(String, String)>,
    forward: Vec<(String, String)>,
    sections: String,
}

impl SiteConfig {
    /// Gateway `id` spooling under `spool_dir`, forwarding to `ingest` (host:port) with `token`.
    pub fn new(id: &str, spool_dir: &Path, ingest: impl std::fmt::Display, token: &str) -> Self {
        Self {
            gateway: vec![
                ("id".into(), format!("{id:?}")),
                (
                    "spool_dir".into(),
                    format!("{:?}", spool_dir.display().to_string()),
                ),
            ],
            forward: vec![
                ("url".into(), format!("\"http://{ingest}/api/v1/batches\"")),
                ("token".into(), format!("{token:?}")),
            ],
            sections: String::new(),
        }
    }

    /// A `[gateway]` key, its value as TOML (`"0.5"`, `"\"x\""`).
    pub fn gateway(mut self, key: &str, toml_value: impl std::fmt::Display) -> Self {
        self.gateway.push((key.into(), toml_value.to_string()));
        self
    }

    /// A `[forward]` key, its value as TOML.
    pub fn forward(mut self, key: &str, toml_value: impl std::fmt::Display) -> Self {
        self.forward.push((key.into(), toml_value.to_string()));
        self
    }

    /// A Modbus TCP meter on loopback: a `[[device]]` in category 01 (electricity).
    pub fn modbus_tcp_meter(mut self, m: &ModbusMeter<'_>) -> Self {
        let ModbusMeter {
            meter,
            account,
            item,
            profile,
            registers,
            port,
            unit,
        } = m;
        let _ = write!(
            self.sections,
            "[[device]]\nmeter = {meter:?}\naccount = {account:?}\ncategory = \"01\"\n\
             item = {item:?}\nprofile = {profile:?}\nregisters = {registers:?}\n\
             source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port}, unit = {unit} }}\n\n"
        );
        self
    }

    /// Any other section, as TOML text (an `[[mqtt_source]]`, an `[mqtt_broker]`, …).
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push_str(toml.trim_end());
        self.sections.push_str("\n\n");
        self
    }

    /// The config's text.
    pub fn toml(&self) -> String {
        let table = |name: &str, keys: &[(String, String)]| {
            let mut out = format!("[{name}]\n");
            for (k, v) in keys {
                let _ = writeln!(out, "{k} = {v}");
            }
            out.push('\n');
            out
        };
        table("gateway", &self.gateway) + &table("forward", &self.forward) + &self.sections
    }
}

/// One Modbus TCP meter of a [`SiteConfig`].
#[derive(Debug, Clone)]
pub struct ModbusMeter<'a> {
    pub meter: &'a str,
    pub account: &'a str,
    pub item: &'a str,
    /// A built-in profile, `vendor/model`.
    pub profile: &'a str,
    pub registers: &'a [&'a str],
    pub port: u16,
    pub unit: u8,
}

impl<'a> ModbusMeter<'a> {
    /// Energy and total power of `meter` under account 110108A001, item 01000.
    pub fn new(meter: &'a str, profile: &'a str, port: u16) -> Self {
        Self {
            meter,
            account: crate::ACCOUNT,
            item: "01000",
            profile,
            registers: &["energy_import", "power_total"],
            port,
            unit: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_with_one_meter_reads_as_its_sections() {
        let site = SiteConfig::new("gw-t", Path::new("/var/spool/x"), "127.0.0.1:8080", "tok")
            .gateway("poll_interval", 0.5)
            .modbus_tcp_meter(&ModbusMeter {
                registers: &["energy_import"],
                ..ModbusMeter::new("main", "chint/dtsu666", 5020)
            })
            .toml();
        assert_eq!(
            site,
            "[gateway]\nid = \"gw-t\"\nspool_dir = \"/var/spool/x\"\npoll_interval = 0.5\n\n\
             [forward]\nurl = \"http://127.0.0.1:8080/api/v1/batches\"\ntoken = \"tok\"\n\n\
             [[device]]\nmeter = \"main\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
             item = \"01000\"\nprofile = \"chint/dtsu666\"\nregisters = [\"energy_import\"]\n\
             source = { type = \"modbus-tcp\", host = \"127.0.0.1\", port = 5020, unit = 1 }\n\n"
        );
    }
}
