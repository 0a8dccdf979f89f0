//! MQTT in the site config: the brokers the gateway subscribes to (`[[mqtt_source]]`), the
//! devices heard through them (`[[mqtt_device]]`), and the optional embedded broker
//! (`[mqtt_broker]`).
//!
//! ```toml
//! [[mqtt_source]]
//! name = "building"             # devices refer to it; "default" when absent
//! host = "127.0.0.1"
//! port = 1883                   # 8883 when tls is set
//! client_id = "jieneng-gw-01"   # "jieneng-<gateway id>-<name>" when absent; keep it stable:
//!                               # the broker keeps the persistent session under it
//! username = "gateway"
//! password = "…"                # or password_file = "/etc/jieneng/mqtt-password"
//! tls = { ca_file = "/etc/ssl/certs/ca-certificates.crt" }
//! keep_alive = 30               # seconds
//! dead_letter_max_bytes = 16777216
//! max_payload_bytes = 1048576   # larger messages are dead-lettered, never decoded
//!
//! [[mqtt_device]]
//! meter = "plug-1"
//! account = "110108A001"
//! category = "01"
//! item = "01A10"
//! source = "building"           # optional when there is one [[mqtt_source]]
//! topic = "tele/plug1/SENSOR"   # an MQTT topic filter; + and # allowed
//! firmware = { type = "tasmota", utc_offset = "+08:00" }
//! channel = "1"                 # optional: only this channel of the device, as `meter` itself
//! interval = 300                # seconds between messages, to flag gaps in counters
//! device_time = true            # stamp readings with the device's time when it sends one
//! max_delta = { energy_import = 5.0 }   # kWh between two messages; more is flagged out_of_range
//! reset = { reads = 3, after = 600 }    # a drop is a reset only once the new counter persists
//!
//! [[mqtt_device.replacement]]   # the plug was swapped: the delta across the swap is exact
//! at = 2026-03-01T10:00:00+08:00
//! quantity = "energy_import"
//! channel = "0"                 # optional: only this firmware channel's counter
//! old_final = 514.2             # the old device's last reading (kWh)
//! new_start = 0.0               # the new one's reading when it was installed
//!
//! [mqtt_broker]                 # the embedded broker; authentication is always on
//! listen = "0.0.0.0:1883"
//! users = { gateway = "…", plugs = "…" }
//! ```
//!
//! Firmwares (`firmware.type`): `tasmota` (`utc_offset`), `shelly`, `esphome` (`sensors`,
//! `discovery_prefix`), `zigbee2mqtt` (`base_topic`), `sparkplug` (`metrics`), `json-mapping`
//! (`fields`, `timestamp`); see `firmware-bridge` for what each decodes. A device's channel
//! `"0"` (the whole device) is stored as `meter`; other channels as `meter:<channel>`, the way
//! per-phase registers of a Modbus meter are.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::FixedOffset;
use firmware_bridge::esphome::SensorConfig;
use firmware_bridge::mapping::{FieldMapping, TimestampMapping};
use firmware_bridge::sparkplug::{MetricMapping, SparkplugConfig};
use firmware_bridge::{JsonMapping, sparkplug};
use reading_model::{AccountCode, Category, EnergyCode, GatewayId, MeterId, Quantity};
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttSourceSection {
    #[serde(default = "default_source_name")]
    name: String,
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsSection>,
    #[serde(default = "default_keep_alive")]
    keep_alive: f64,
    #[serde(default = "default_dead_letter_max")]
    dead_letter_max_bytes: u64,
    #[serde(default = "default_source_max_payload")]
    max_payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    /// PEM certificates the broker's certificate must chain to. Required: the gateway carries
    /// no root store of its own (point it at the system bundle to use the system's roots).
    ca_file: PathBuf,
}

fn default_source_name() -> String {
    "default".to_owned()
}
fn default_keep_alive() -> f64 {
    30.0
}
/// 1 MiB: no device's telemetry comes near it.
fn default_source_max_payload() -> usize {
    1 << 20
}

fn default_dead_letter_max() -> u64 {
    16 << 20
}

/// How a device's payloads are decoded, and what each firmware needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum FirmwareSection {
    #[serde(rename = "tasmota")]
    Tasmota {
        /// The device's clock offset from UTC: Tasmota's `Time` carries no zone.
        #[serde(default = "default_utc_offset")]
        utc_offset: String,
    },
    #[serde(rename = "shelly")]
    Shelly,
    #[serde(rename = "esphome")]
    Esphome {
        /// Sensors whose unit the site states (they win over discovery).
        #[serde(default)]
        sensors: Vec<SensorConfig>,
        #[serde(default = "default_discovery_prefix")]
        discovery_prefix: String,
    },
    #[serde(rename = "zigbee2mqtt")]
    Zigbee2mqtt {
        #[serde(default = "default_z2m_base")]
        base_topic: String,
    },
    #[serde(rename = "sparkplug")]
    Sparkplug { metrics: Vec<MetricMapping> },
    #[serde(rename = "json-mapping")]
    JsonMapping {
        fields: Vec<FieldMapping>,
        #[serde(default)]
        timestamp: Option<TimestampMapping>,
    },
}

fn default_utc_offset() -> String {
    "+08:00".to_owned()
}
fn default_discovery_prefix() -> String {
    "homeassistant".to_owned()
}
fn default_z2m_base() -> String {
    firmware_bridge::zigbee2mqtt::DEFAULT_BASE_TOPIC.to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttDeviceSection {
    meter: MeterId,
    account: AccountCode,
    category: Category,
    item: String,
    #[serde(default)]
    source: Option<String>,
    topic: String,
    firmware: FirmwareSection,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default = "default_interval")]
    interval: f64,
    #[serde(default = "yes")]
    device_time: bool,
    /// Per cumulative quantity: the largest plausible delta between two messages, in the
    /// reading's unit. A larger delta is kept and flagged `out_of_range`, never clamped.
    #[serde(default)]
    max_delta: BTreeMap<String, f64>,
    /// Device replacements, so the delta across a swap is exact instead of read as a reset.
    #[serde(default)]
    replacement: Vec<MqttReplacementSection>,
    /// When a drop of a counter is a reset rather than a glitch (as for `[[device]]`).
    #[serde(default)]
    reset: super::ResetSection,
}

/// `[[mqtt_device.replacement]]`: like `[[device.replacement]]`, the counter named by its
/// quantity (and, on a device with several channels, its channel).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttReplacementSection {
    at: toml::value::Datetime,
    quantity: String,
    #[serde(default)]
    channel: Option<String>,
    old_final: f64,
    new_start: f64,
}

/// Tasmota's default TelePeriod.
fn default_interval() -> f64 {
    300.0
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BrokerSection {
    listen: SocketAddr,
    users: BTreeMap<String, String>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_payload")]
    max_payload_bytes: usize,
}

fn default_max_connections() -> usize {
    1_000
}
fn default_max_payload() -> usize {
    256 << 10
}

/// A validated broker connection.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSource {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Username and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// The CA bundle of a TLS connection; plain TCP when `None`.
    pub tls_ca: Option<PathBuf>,
    pub keep_alive: Duration,
    /// The bound of this source's dead-letter files together (see `source::mqtt::dead_letter`).
    pub dead_letter_max_bytes: u64,
    /// A message whose payload is larger is dead-lettered undecoded (and acknowledged).
    pub max_payload_bytes: usize,
}

/// The largest packet MQTT 3.1.1 can frame (its remaining length is at most 268,435,455 bytes,
/// plus up to 5 bytes of fixed header).
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// A validated firmware choice.
#[derive(Debug, Clone)]
pub enum Firmware {
    Tasmota {
        utc_offset: FixedOffset,
    },
    Shelly,
    Esphome {
        sensors: Vec<SensorConfig>,
        discovery_prefix: String,
    },
    Zigbee2mqtt {
        base_topic: String,
    },
    Sparkplug(SparkplugConfig),
    JsonMapping(JsonMapping),
}

impl Firmware {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tasmota { .. } => "tasmota",
            Self::Shelly => "shelly",
            Self::Esphome { .. } => "esphome",
            Self::Zigbee2mqtt { .. } => "zigbee2mqtt",
            Self::Sparkplug(_) => "sparkplug",
            Self::JsonMapping(_) => "json-mapping",
        }
    }
}

/// A validated MQTT device.
#[derive(Debug, Clone)]
pub struct MqttDevice {
    pub meter: MeterId,
    pub account: AccountCode,
    pub category: Category,
    pub item: EnergyCode,
    /// Index into [`MqttConfig::sources`].
    pub source: usize,
    /// The topic filter the device's messages arrive on.
    pub topic: String,
    pub firmware: Firmware,
    pub channel: Option<String>,
    pub interval: Duration,
    pub device_time: bool,
    /// Per cumulative quantity: the plausibility limit on its deltas.
    pub max_delta: Vec<(Quantity, f64)>,
    /// Declared replacements, oldest first.
    pub replacements: Vec<MqttReplacement>,
    /// When a drop of one of its counters is a reset rather than a glitch.
    pub reset: crate::counter::ResetRule,
}

/// A declared replacement of an MQTT device's counter.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttReplacement {
    pub quantity: Quantity,
    /// Only this firmware channel's counter; every channel's when `None`.
    pub channel: Option<String>,
    pub replacement: crate::counter::Replacement,
}

impl MqttDevice {
    /// The limit on deltas of `quantity`, if one is declared.
    pub fn max_delta(&self, quantity: Quantity) -> Option<f64> {
        self.max_delta
            .iter()
            .find(|(q, _)| *q == quantity)
            .map(|(_, v)| *v)
    }

    /// The declared replacements of the counter of `quantity` on firmware channel `channel`.
    pub fn replacements_of(
        &self,
        quantity: Quantity,
        channel: &str,
    ) -> Vec<crate::counter::Replacement> {
        self.replacements
            .iter()
            .filter(|r| r.quantity == quantity && r.channel.as_deref().is_none_or(|c| c == channel))
            .map(|r| r.replacement)
            .collect()
    }

    /// A short name for logs: `account/meter`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.account, self.meter)
    }
}

/// The embedded broker.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedBroker {
    pub listen: SocketAddr,
    pub users: BTreeMap<String, String>,
    pub max_connections: usize,
    pub max_payload_bytes: usize,
}

/// Everything MQTT of a site, validated.
#[derive(Debug, Clone, Default)]
pub struct MqttConfig {
    pub sources: Vec<MqttSource>,
    pub devices: Vec<MqttDevice>,
    pub broker: Option<EmbeddedBroker>,
}

/// What `validate` needs from the config parser to report an error where it is.
pub(super) struct Where<'a> {
    pub invalid: &'a dyn Fn(Range<usize>, String, String) -> ConfigError,
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
}

/// An error about one key of the section being checked.
type Bad<'a> = &'a dyn Fn(&str, String) -> ConfigError;

pub(super) fn validate(
    gateway: &GatewayId,
    sources: Vec<Spanned<MqttSourceSection>>,
    devices: Vec<Spanned<MqttDeviceSection>>,
    broker: Option<Spanned<BrokerSection>>,
    at: &Where<'_>,
) -> Result<MqttConfig, ConfigError> {
    let mut out = MqttConfig::default();
    let mut names = HashSet::new();
    for (i, s) in sources.into_iter().enumerate() {
        let span = s.span();
        let s = s.into_inner();
        let bad = |k: &str, m: String| {
            (at.invalid)(
                span.clone(),
                format!("mqtt_source[{i}].{k} ({})", s.name),
                m,
            )
        };
        if s.name.is_empty() || !names.insert(s.name.clone()) {
            return Err(bad("name", "must be non-empty and unique".into()));
        }
        let source = check_source(gateway, &s, at, &bad)?;
        out.sources.push(source);
    }

    let mut seen = HashSet::new();
    for (i, d) in devices.into_iter().enumerate() {
        let span = d.span();
        let d = d.into_inner();
        let bad = |k: &str, m: String| {
            (at.invalid)(
                span.clone(),
                format!("mqtt_device[{i}].{k} ({}/{})", d.account, d.meter),
                m,
            )
        };
        if !seen.insert((d.account.clone(), d.meter.clone())) {
            return Err(bad(
                "meter",
                "this account already has an MQTT meter with this id".into(),
            ));
        }
        let device = check_device(&d, &out.sources, &bad)?;
        out.devices.push(device);
    }

    if let Some(b) = broker {
        let span = b.span();
        let b = b.into_inner();
        let bad = |k: &str, m: String| (at.invalid)(span.clone(), format!("mqtt_broker.{k}"), m);
        out.broker = Some(check_broker(b, &bad)?);
    }
    Ok(out)
}

/// One `[[mqtt_source]]` (its name already checked unique): a host, credentials, TLS, and a
/// client id.
fn check_source(
    gateway: &GatewayId,
    s: &MqttSourceSection,
    at: &Where<'_>,
    bad: Bad<'_>,
) -> Result<MqttSource, ConfigError> {
    if s.host.is_empty() {
        return Err(bad("host", "must not be empty".into()));
    }
    let credentials = source_credentials(s, at, bad)?;
    let tls_ca = s.tls.as_ref().map(|t| (at.resolve)(&t.ca_file));
    if let Some(ca) = tls_ca.as_ref().filter(|ca| !ca.is_file()) {
        return Err(bad(
            "tls.ca_file",
            format!("{} is not a file", ca.display()),
        ));
    }
    if !(1.0..=65_535.0).contains(&s.keep_alive) {
        return Err(bad(
            "keep_alive",
            format!("{} s is outside 1 ..= 65535 s", s.keep_alive),
        ));
    }
    if s.dead_letter_max_bytes < 64 << 10 {
        return Err(bad(
            "dead_letter_max_bytes",
            format!("{} is below the 64 KiB minimum", s.dead_letter_max_bytes),
        ));
    }
    if !(1024..=MQTT_MAX_PACKET).contains(&s.max_payload_bytes) {
        return Err(bad(
            "max_payload_bytes",
            format!(
                "{} is outside 1 KiB ..= {MQTT_MAX_PACKET} (the MQTT maximum)",
                s.max_payload_bytes
            ),
        ));
    }
    let client_id = s
        .client_id
        .clone()
        .unwrap_or_else(|| format!("jieneng-{gateway}-{}", s.name));
    if client_id.is_empty() || client_id.contains(['+', '#', '/']) {
        return Err(bad(
            "client_id",
            format!("{client_id:?} must be non-empty, without + # /"),
        ));
    }
    Ok(MqttSource {
        port: s.port.unwrap_or(if tls_ca.is_some() { 8883 } else { 1883 }),
        name: s.name.clone(),
        host: s.host.clone(),
        client_id,
        credentials,
        tls_ca,
        keep_alive: Duration::from_secs_f64(s.keep_alive),
        dead_letter_max_bytes: s.dead_letter_max_bytes,
        max_payload_bytes: s.max_payload_bytes,
    })
}

/// A source's user name and password (given, or read from `password_file`), or none.
fn source_credentials(
    s: &MqttSourceSection,
    at: &Where<'_>,
    bad: Bad<'_>,
) -> Result<Option<(String, String)>, ConfigError> {
    let password = match (&s.password, &s.password_file) {
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string((at.resolve)(f))
                .map_err(|e| bad("password_file", format!("cannot read {}: {e}", f.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(bad(
                "password",
                "set at most one of password and password_file".into(),
            ));
        }
    };
    match (s.username.clone(), password) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        _ => Err(bad("username", "username and password go together".into())),
    }
}

/// One `[[mqtt_device]]` (its meter already checked unique): its source, topic, firmware,
/// delta limits and replacements.
fn check_device(
    d: &MqttDeviceSection,
    sources: &[MqttSource],
    bad: Bad<'_>,
) -> Result<MqttDevice, ConfigError> {
    let item = EnergyCode::parse_in(&d.item, d.category).map_err(|e| bad("item", e.to_string()))?;
    let source = match &d.source {
        Some(name) => sources
            .iter()
            .position(|s| &s.name == name)
            .ok_or_else(|| bad("source", format!("no [[mqtt_source]] is named {name:?}")))?,
        None if sources.len() == 1 => 0,
        None => {
            return Err(bad(
                "source",
                format!("name one of the {} [[mqtt_source]] sections", sources.len()),
            ));
        }
    };
    if !rumqttc::valid_filter(&d.topic) {
        return Err(bad(
            "topic",
            format!("{:?} is not an MQTT topic filter", d.topic),
        ));
    }
    if !(1.0..=86_400.0).contains(&d.interval) {
        return Err(bad(
            "interval",
            format!("{} s is outside 1 s ..= 1 day", d.interval),
        ));
    }
    if d.channel.as_deref() == Some("") {
        return Err(bad("channel", "must not be empty".into()));
    }
    let firmware = device_firmware(d, bad)?;
    let max_delta = delta_limits(&d.max_delta, bad)?;
    let replacements = declared_replacements(&d.replacement, bad)?;
    let interval = Duration::from_secs_f64(d.interval);
    let reset = d.reset.rule(interval).map_err(|(key, m)| bad(key, m))?;
    Ok(MqttDevice {
        meter: d.meter.clone(),
        account: d.account.clone(),
        category: d.category,
        item,
        source,
        topic: d.topic.clone(),
        firmware,
        channel: d.channel.clone(),
        interval,
        device_time: d.device_time,
        max_delta,
        replacements,
        reset,
    })
}

/// The decoder settings of a device's firmware, checked.
fn device_firmware(d: &MqttDeviceSection, bad: Bad<'_>) -> Result<Firmware, ConfigError> {
    Ok(match d.firmware.clone() {
        FirmwareSection::Tasmota { utc_offset } => Firmware::Tasmota {
            utc_offset: utc_offset.parse().map_err(|e| {
                bad(
                    "firmware.utc_offset",
                    format!("{utc_offset:?} is not an offset like +08:00: {e}"),
                )
            })?,
        },
        FirmwareSection::Shelly => Firmware::Shelly,
        FirmwareSection::Esphome {
            sensors,
            discovery_prefix,
        } => {
            if discovery_prefix.is_empty() || rumqttc::has_wildcards(&discovery_prefix) {
                return Err(bad(
                    "firmware.discovery_prefix",
                    "must be a topic level without wildcards".into(),
                ));
            }
            Firmware::Esphome {
                sensors,
                discovery_prefix,
            }
        }
        FirmwareSection::Zigbee2mqtt { base_topic } => {
            if base_topic.is_empty() || rumqttc::has_wildcards(&base_topic) {
                return Err(bad(
                    "firmware.base_topic",
                    "must be a topic without wildcards".into(),
                ));
            }
            Firmware::Zigbee2mqtt { base_topic }
        }
        FirmwareSection::Sparkplug { metrics } => {
            if !d.topic.starts_with(sparkplug::NAMESPACE) {
                return Err(bad(
                    "topic",
                    format!("a Sparkplug B topic starts with {}", sparkplug::NAMESPACE),
                ));
            }
            Firmware::Sparkplug(
                SparkplugConfig::new(metrics)
                    .map_err(|e| bad("firmware.metrics", e.to_string()))?,
            )
        }
        FirmwareSection::JsonMapping { fields, timestamp } => Firmware::JsonMapping(
            JsonMapping::new(fields, timestamp)
                .map_err(|e| bad("firmware.fields", e.to_string()))?,
        ),
    })
}

/// A quantity by name, if it is cumulative (a counter with deltas).
fn cumulative(name: &str) -> Result<Quantity, String> {
    match Quantity::parse(name) {
        Ok(q) if q.is_cumulative() => Ok(q),
        Ok(q) => Err(format!("{q} is not a cumulative quantity")),
        Err(e) => Err(e.to_string()),
    }
}

/// Per cumulative quantity, the plausibility limit on its deltas (`max_delta`).
fn delta_limits(
    limits: &BTreeMap<String, f64>,
    bad: Bad<'_>,
) -> Result<Vec<(Quantity, f64)>, ConfigError> {
    let mut max_delta = Vec::new();
    for (name, &v) in limits {
        let key = format!("max_delta.{name}");
        let q = cumulative(name).map_err(|m| bad(&key, m))?;
        if !v.is_finite() || v <= 0.0 {
            return Err(bad(&key, format!("{v} must be a positive number")));
        }
        max_delta.push((q, v));
    }
    Ok(max_delta)
}

/// The device's declared counter replacements, oldest first.
fn declared_replacements(
    declared: &[MqttReplacementSection],
    bad: Bad<'_>,
) -> Result<Vec<MqttReplacement>, ConfigError> {
    let mut replacements: Vec<MqttReplacement> = Vec::new();
    for (j, r) in declared.iter().enumerate() {
        let key = |k: &str| format!("replacement[{j}].{k}");
        let quantity = cumulative(&r.quantity).map_err(|m| bad(&key("quantity"), m))?;
        let at = super::replacement_at(&r.at).map_err(|m| bad(&key("at"), m))?;
        for (k, v) in [("old_final", r.old_final), ("new_start", r.new_start)] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(&key(k), format!("{v} must be a reading, zero or more")));
            }
        }
        if replacements
            .iter()
            .any(|x| x.quantity == quantity && x.channel == r.channel && x.replacement.at == at)
        {
            return Err(bad(
                &key("at"),
                format!("{} is declared twice for {}", r.at, r.quantity),
            ));
        }
        replacements.push(MqttReplacement {
            quantity,
            channel: r.channel.clone(),
            replacement: crate::counter::Replacement {
                at,
                old_final: r.old_final,
                new_start: r.new_start,
            },
        });
    }
    replacements.sort_by_key(|r| r.replacement.at);
    Ok(replacements)
}

/// `[mqtt_broker]`: authenticated users and sane limits.
fn check_broker(b: BrokerSection, bad: Bad<'_>) -> Result<EmbeddedBroker, ConfigError> {
    if b.users.is_empty() {
        return Err(bad(
            "users",
            "the embedded broker requires authentication: list at least one user".into(),
        ));
    }
    for (user, password) in &b.users {
        if user.is_empty() || password.len() < 8 {
            return Err(bad(
                "users",
                format!(
                    "user {user:?}: names must be non-empty and passwords at least 8 characters"
                ),
            ));
        }
    }
    if b.max_connections == 0 || b.max_payload_bytes < 1024 {
        return Err(bad(
            "max_connections",
            "max_connections must be positive and max_payload_bytes at least 1024".into(),
        ));
    }
    Ok(EmbeddedBroker {
        listen: b.listen,
        users: b.users,
        max_connections: b.max_connections,
        max_payload_bytes: b.max_payload_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::GatewayConfig;

    const HEAD: &str = r#"[gateway]
id = "gw-test"
spool_dir = "spool"

[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"

[[mqtt_source]]
host = "broker.local"
username = "gw"
password = "secret-secret"
"#;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse("site.toml", text, Some(Path::new("/etc/jieneng")))
    }

    fn device(extra: &str) -> String {
        format!(
            "{HEAD}\n[[mqtt_device]]\nmeter = \"plug\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
             item = \"01A10\"\ntopic = \"tele/plug/SENSOR\"\n{extra}"
        )
    }

    #[test]
    fn the_example_site_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway-site.toml");
        let c = GatewayConfig::load(&path).unwrap();
        assert_eq!(c.mqtt.sources.len(), 1);
        assert_eq!(c.mqtt.devices.len(), 3);
        assert_eq!(c.mqtt.devices[1].channel.as_deref(), Some("switch:0"));
        assert_eq!(c.mqtt.devices[1].interval, Duration::from_secs(60));
        assert!(matches!(
            c.mqtt.devices[2].firmware,
            Firmware::JsonMapping(_)
        ));
        assert_eq!(c.mqtt.broker.as_ref().unwrap().users.len(), 2);
        assert!(!c.devices.is_empty(), "Modbus devices are still there");
    }

    #[test]
    fn replacements_and_delta_limits_are_checked() {
        let ok = device(
            "firmware = { type = \"tasmota\" }\nmax_delta = { energy_import = 5.0 }\n\n\
             [[mqtt_device.replacement]]\nat = 2026-03-01T10:00:00+08:00\nquantity = \"energy_import\"\n\
             old_final = 514.2\nnew_start = 0.0\n",
        );
        let c = parse(&ok).unwrap();
        let d = &c.mqtt.devices[0];
        assert_eq!(d.max_delta(Quantity::EnergyImport), Some(5.0));
        assert_eq!(d.max_delta(Quantity::EnergyExport), None);
        let swaps = d.replacements_of(Quantity::EnergyImport, "0");
        assert_eq!(swaps.len(), 1);
        assert_eq!(swaps[0].at, 1_772_330_400_000);
        assert!(d.replacements_of(Quantity::EnergyExport, "0").is_empty());

        let err = |from: &str, to: &str| parse(&ok.replace(from, to)).unwrap_err().to_string();
        let e = err("max_delta = { energy_import", "max_delta = { power_active");
        assert!(
            e.contains("mqtt_device[0].max_delta.power_active") && e.contains("not a cumulative"),
            "{e}"
        );
        let e = err("energy_import = 5.0", "energy_import = -1.0");
        assert!(e.contains("must be a positive number"), "{e}");
        let e = err("2026-03-01T10:00:00+08:00", "2026-03-01T10:00:00");
        assert!(
            e.contains("mqtt_device[0].replacement[0].at") && e.contains("UTC offset"),
            "{e}"
        );
        let e = err("quantity = \"energy_import\"", "quantity = \"voltage\"");
        assert!(e.contains("replacement[0].quantity"), "{e}");
        let e = err("old_final = 514.2", "old_final = -3.0");
        assert!(e.contains("replacement[0].old_final"), "{e}");
    }

    #[test]
    fn defaults_fill_in_a_source_and_a_device() {
        let c = parse(&device("firmware = { type = \"tasmota\" }\n")).unwrap();
        let s = &c.mqtt.sources[0];
        assert_eq!(s.name, "default");
        assert_eq!(s.port, 1883);
        assert_eq!(s.client_id, "jieneng-gw-test-default");
        assert_eq!(
            s.credentials,
            Some(("gw".to_owned(), "secret-secret".to_owned()))
        );
        let d = &c.mqtt.devices[0];
        assert_eq!(d.source, 0);
        assert_eq!(d.interval, Duration::from_secs(300));
        assert!(d.device_time);
        let Firmware::Tasmota { utc_offset } = d.firmware else {
            panic!("{:?}", d.firmware)
        };
        assert_eq!(utc_offset.local_minus_utc(), 8 * 3600);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let cases = [
            (
                device("firmware = { type = \"tasmota\", utc_offset = \"Beijing\" }\n"),
                "mqtt_device[0].firmware.utc_offset",
            ),
            (
                device("firmware = { type = \"tasmota\" }\nsource = \"nowhere\"\n"),
                "mqtt_device[0].source",
            ),
            (
                device("firmware = { type = \"tasmota\" }\nitem = \"02A10\"\n").replace(
                    "item = \"01A10\"\ntopic = \"tele/plug/SENSOR\"\n",
                    "topic = \"tele/plug/SENSOR\"\n",
                ),
                "mqtt_device[0].item",
            ),
            (
                device("firmware = { type = \"shelly\" }\n")
                    .replace("tele/plug/SENSOR", "tele/#/SENSOR"),
                "mqtt_device[0].topic",
            ),
            (
                device("firmware = { type = \"sparkplug\", metrics = [] }\n"),
                "mqtt_device[0].topic",
            ),
            (
                device(
                    "firmware = { type = \"sparkplug\", metrics = [{ name = \"E\", quantity = \"energy_import\", unit = \"W\" }] }\n",
                )
                .replace("tele/plug/SENSOR", "spBv1.0/g/+/e"),
                "mqtt_device[0].firmware.metrics",
            ),
            (
                format!("{HEAD}\n[mqtt_broker]\nlisten = \"127.0.0.1:1883\"\nusers = {{}}\n"),
                "mqtt_broker.users",
            ),
            (
                HEAD.replace("password = \"secret-secret\"\n", ""),
                "mqtt_source[0].username",
            ),
            (
                HEAD.replace(
                    "username = \"gw\"",
                    "max_payload_bytes = 100\nusername = \"gw\"",
                ),
                "mqtt_source[0].max_payload_bytes",
            ),
            (
                device("firmware = { type = \"tasmota\" }\nreset = { reads = 0 }\n"),
                "mqtt_device[0].reset.reads",
            ),
        ];
        for (text, key) in cases {
            match parse(&text) {
                Err(ConfigError::Invalid { key: k, line, .. }) => {
                    assert!(k.starts_with(key), "{k} is not {key}");
                    let at = text.lines().nth(line - 1).unwrap_or("");
                    assert!(
                        at.starts_with('[') || at.contains('='),
                        "line {line} ({at:?}) for {key}"
                    );
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        // Unknown keys are refused by the parser, with their position.
        let e = parse(&device(
            "firmware = { type = \"tasmota\" }\ncolour = \"red\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
