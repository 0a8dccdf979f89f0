//! The site configuration: who this gateway is, where it forwards, which devices it polls and
//! which account, category and item each belongs to. TOML, unknown keys rejected, validated
//! before anything starts; errors name the file, line and key.
//!
//! ```toml
//! [gateway]
//! id = "gw-01"
//! spool_dir = "/var/lib/jieneng-gateway"
//! poll_interval = 15          # seconds, aligned to the wall clock
//!
//! [forward]
//! url = "https://ingest.example:8443/api/v1/batches"  # http:// only to a loopback address
//! token = "…"                 # or token_file = "/etc/jieneng/token"
//! ca_file = "ca.pem"          # trust this CA (PEM) instead of the system roots
//! # mode = "mqtt" with url = "mqtts://ingest.example:8883" publishes to ingest's broker instead
//!
//! [[carbon_factor]]          # a provincial factor the built-in table lacks
//! id = "sd-2024/grid"
//! category = "01"
//! region = "37"
//! year = 2024
//! value = 0.7
//! per = "kWh"
//! source = "…"
//!
//! [[account]]
//! code = "110108A001"
//! name = "区政府办公楼"
//! carbon_region = "grid"      # national | grid | province | a region name
//!
//! [[device]]
//! meter = "main"
//! account = "110108A001"
//! category = "01"
//! item = "01000"
//! profile = "eastron/sdm630"
//! source = { type = "modbus-tcp", host = "10.0.0.21", port = 502, unit = 1 }
//! max_delta = { energy_import = 500.0 }   # kWh between two polls; more is flagged out_of_range
//! reset = { reads = 3, after = 60 }       # a drop is a reset only once the new counter persists
//!
//! [[device.replacement]]      # the meter was swapped: the delta across the swap is exact
//! at = 2026-03-01T10:00:00+08:00
//! register = "energy_import"
//! old_final = 15234.5         # the old meter's last reading (kWh)
//! new_start = 0.0             # the new meter's reading when installed
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use device_profiles::{Library, Phase, Profile};

use crate::counter::ResetRule;
use reading_model::{
    AccountCode, CarbonFactor, Category, CoalFactor, EnergyCode, FactorSelection, FactorTables,
    GatewayId, MeterId, Quantity,
};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub id: GatewayId,
    pub spool_dir: PathBuf,
    /// Seconds between polls, aligned to the wall clock (a 15 s poll reads at :00, :15, …).
    #[serde(default = "default_poll")]
    pub poll_interval: f64,
    /// Seconds to wait for one Modbus response.
    #[serde(default = "default_timeout")]
    pub request_timeout: f64,
    /// Unused registers a request may read across to join two registers.
    #[serde(default = "default_gap")]
    pub max_gap: u16,
    /// A directory of site-specific profiles (`<vendor>/<model>.toml`), added to the built-in ones.
    #[serde(default)]
    pub profile_dir: Option<PathBuf>,
    /// Bytes the spool may hold. When full, cumulative readings are held back (the meter keeps
    /// counting, so the next delta spans the wait: no energy is lost) and instantaneous ones
    /// are dropped and counted; an error is logged until there is room again.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Threads of the async runtime that polls meters and forwards batches (spool writes run
    /// on tokio's blocking pool besides). One keeps a thousand meters polled every second at a
    /// few percent of a core with the least memory; more only help with many more devices.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

fn default_worker_threads() -> usize {
    1
}

fn default_spool_max() -> u64 {
    1 << 30
}

fn default_poll() -> f64 {
    15.0
}
fn default_timeout() -> f64 {
    3.0
}
fn default_gap() -> u16 {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    pub url: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Readings per batch at most. A batch is cut at the end of each poll cycle, or earlier
    /// when it reaches this many.
    #[serde(default = "default_batch")]
    pub max_batch_readings: usize,
    /// Seconds before an HTTP request (or, over MQTT, the wait for ingest's ack) is abandoned
    /// and retried.
    #[serde(default = "default_http_timeout")]
    pub timeout: f64,
    /// How batches travel: `http` (POST, the default) or `mqtt` (publish to ingest's broker).
    #[serde(default)]
    pub mode: ForwardMode,
    /// PEM file of the CA(s) the server's certificate must chain to, instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The forwarder's transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    #[default]
    Http,
    Mqtt,
}

impl ForwardSection {
    /// Checks the URL's scheme against the mode, and that a scheme without TLS only reaches this
    /// machine: the token must not cross a network in clear text.
    pub fn check_url(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("{:?}: {e}", self.url))?;
        let (plain, tls) = match self.mode {
            ForwardMode::Http => ("http", "https"),
            ForwardMode::Mqtt => ("mqtt", "mqtts"),
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{:?} has no host", self.url))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host.eq_ignore_ascii_case("localhost"),
        };
        if url.scheme() == tls || (url.scheme() == plain && loopback) {
            if self.mode == ForwardMode::Mqtt && url.port().is_none() {
                return Err(format!("{:?}: give the broker's port", self.url));
            }
            Ok(())
        } else if url.scheme() == plain {
            Err(format!(
                "{:?}: {plain}:// sends the gateway token in clear text; use {tls}:// (or a loopback address)",
                self.url
            ))
        } else {
            Err(format!(
                "{:?}: mode = {:?} takes a {tls}:// URL ({plain}:// for loopback)",
                self.url, self.mode
            ))
        }
    }
}

/// Enough for a poll cycle of about 1,300 forty-register meters in one batch, so a site spools,
/// fsyncs and forwards once per cycle; about 130 KB as an Arrow body.
fn default_batch() -> usize {
    50_000
}
fn default_http_timeout() -> f64 {
    10.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    pub code: AccountCode,
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub factors: FactorSelection,
}

/// Where a device is read. Devices with the same bus (TCP `host:port`, or serial `port`) share
/// one connection and their requests are serialized on it (see `source::bus`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SourceConfig {
    #[serde(rename = "modbus-tcp")]
    ModbusTcp {
        host: String,
        #[serde(default = "default_modbus_port")]
        port: u16,
        #[serde(default = "default_unit")]
        unit: u8,
        /// Attempts after a failed request (timeout, lost connection) before the poll gives
        /// up on it; exceptions are answers and are not retried.
        #[serde(default = "default_retries")]
        retries: u8,
    },
    /// Modbus RTU on a serial line (RS-485 adapter): `port` is the device path.
    #[serde(rename = "modbus-rtu")]
    ModbusRtu {
        port: PathBuf,
        #[serde(default = "default_baud")]
        baud: u32,
        /// The Modbus serial line default is even parity (Modbus over Serial Line §2.5.1).
        #[serde(default)]
        parity: Parity,
        #[serde(default = "default_data_bits")]
        data_bits: u8,
        #[serde(default = "default_stop_bits")]
        stop_bits: u8,
        #[serde(default = "default_unit")]
        unit: u8,
        #[serde(default = "default_retries")]
        retries: u8,
    },
}

impl SourceConfig {
    /// The Modbus unit (slave) id of the device.
    pub fn unit(&self) -> u8 {
        match self {
            Self::ModbusTcp { unit, .. } | Self::ModbusRtu { unit, .. } => *unit,
        }
    }

    /// Retries of a failed request.
    pub fn retries(&self) -> u8 {
        match self {
            Self::ModbusTcp { retries, .. } | Self::ModbusRtu { retries, .. } => *retries,
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

/// The settings all devices of one serial line share: baud, parity, data bits, stop bits.
type SerialLine = (u32, Parity, u8, u8);

fn default_modbus_port() -> u16 {
    502
}
fn default_unit() -> u8 {
    1
}
fn default_retries() -> u8 {
    2
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    pub meter: MeterId,
    pub account: AccountCode,
    pub category: Category,
    pub item: String,
    pub profile: String,
    pub source: SourceConfig,
    /// Register names to read; all of the profile's when absent.
    #[serde(default)]
    pub registers: Option<Vec<String>>,
    /// What a register measures at this installation, where the profile's quantity is too
    /// general (e.g. `temperature = "outdoor_temperature"`).
    #[serde(default)]
    pub quantities: BTreeMap<String, Quantity>,
    #[serde(default = "one")]
    pub ct_ratio: f64,
    #[serde(default = "one")]
    pub pt_ratio: f64,
    /// Seconds; the gateway's poll interval when absent.
    #[serde(default)]
    pub poll_interval: Option<f64>,
    /// Per cumulative register: the largest plausible delta between two polls, in the
    /// reading's unit (kWh, m³, GJ…, after CT/PT ratios). A larger delta is kept and flagged
    /// `out_of_range`, never clamped.
    #[serde(default)]
    pub max_delta: BTreeMap<String, Spanned<f64>>,
    /// Meter replacements (`[[device.replacement]]`), so the delta across a swap is exact
    /// instead of being read as a reset.
    #[serde(default)]
    pub replacement: Vec<Spanned<ReplacementSection>>,
    /// When a drop of a cumulative register is a reset rather than a glitch
    /// (`reset = { reads = 3, after = 60 }`); see [`crate::counter`].
    #[serde(default)]
    pub reset: ResetSection,
}

/// `reset = { reads = 3, after = 60 }`: a value below a counter is taken as a new counter
/// (a reset or an undeclared meter swap) only after `reads` reads over at least `after`
/// seconds. Until then the reads are flagged `glitch` and count no energy.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetSection {
    /// Reads of the new counter; 3 when absent.
    #[serde(default)]
    pub reads: Option<u32>,
    /// Seconds from the new counter's first read to its confirming one; the larger of two
    /// intervals and 60 s when absent.
    #[serde(default)]
    pub after: Option<f64>,
}

impl ResetSection {
    /// The rule for a counter read every `interval`, or why the section is wrong (its key
    /// and the message).
    pub fn rule(self, interval: Duration) -> Result<ResetRule, (&'static str, String)> {
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let mut rule = ResetRule::for_interval(interval_ms);
        if let Some(reads) = self.reads {
            if !(2..=1000).contains(&reads) {
                return Err(("reset.reads", format!("{reads} is outside 2 ..= 1000")));
            }
            rule.reads = reads;
        }
        if let Some(after) = self.after {
            if !(0.0..=7.0 * 86_400.0).contains(&after) {
                return Err(("reset.after", format!("{after} s is outside 0 ..= 7 days")));
            }
            rule.after_ms = (after * 1000.0).round() as i64;
        }
        Ok(rule)
    }
}

/// A declared meter replacement: at `at` the old meter read `old_final` for the last time and
/// the new one started at `new_start` (both in the reading's unit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplacementSection {
    /// A TOML date-time with its UTC offset, e.g. `2026-03-01T10:00:00+08:00`. Readings taken
    /// at or after it are the new meter's.
    pub at: toml::value::Datetime,
    /// The cumulative register (profile name) the readings are of.
    pub register: String,
    pub old_final: f64,
    pub new_start: f64,
}

fn one() -> f64 {
    1.0
}

/// A replacement's `at`, in ms since the epoch: a full date-time with its UTC offset.
fn replacement_at(at: &toml::value::Datetime) -> Result<i64, String> {
    if at.offset.is_none() || at.time.is_none() {
        return Err(format!(
            "{at} needs a date, a time and a UTC offset, e.g. 2026-03-01T10:00:00+08:00"
        ));
    }
    chrono::DateTime::parse_from_rfc3339(&at.to_string())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{at}: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: GatewaySection,
    forward: ForwardSection,
    #[serde(default)]
    factors: FactorSelection,
    /// Standard-coal coefficients added to (or replacing, by id) the built-in GB/T 2589 table.
    #[serde(default)]
    coal_factor: Vec<CoalFactor>,
    /// Carbon factors added to (or replacing, by id) the built-in MEE/NBS and NDRC tables.
    #[serde(default)]
    carbon_factor: Vec<CarbonFactor>,
    /// Fuel densities (kg/L) by category code, e.g. `"12" = 0.835` for this site's diesel.
    #[serde(default)]
    density: BTreeMap<Category, f64>,
    #[serde(default)]
    account: Vec<Spanned<AccountSection>>,
    #[serde(default)]
    device: Vec<Spanned<DeviceSection>>,
    #[serde(default)]
    mqtt_source: Vec<Spanned<mqtt::MqttSourceSection>>,
    #[serde(default)]
    mqtt_device: Vec<Spanned<mqtt::MqttDeviceSection>>,
    #[serde(default)]
    mqtt_broker: Option<Spanned<mqtt::BrokerSection>>,
}

/// A validated device: its profile resolved, its registers chosen.
#[derive(Debug, Clone)]
pub struct Device {
    pub meter: MeterId,
    pub account: AccountCode,
    pub category: Category,
    pub item: EnergyCode,
    /// Shared by every device of the same profile.
    pub profile: Arc<Profile>,
    /// Indices into `profile.registers`.
    pub registers: Vec<usize>,
    pub quantities: Vec<Quantity>,
    pub source: SourceConfig,
    pub ratios: device_profiles::decode::Ratios,
    pub poll_interval: Duration,
    /// Per register (index into `profile.registers`): the plausibility limit on its deltas.
    pub max_delta: Vec<Option<f64>>,
    /// Per register: declared meter replacements, oldest first.
    pub replacements: Vec<Vec<crate::counter::Replacement>>,
    /// When a drop of one of its counters is a reset rather than a glitch.
    pub reset: ResetRule,
    /// The meter ids and counter keys its readings carry, made once here rather than per
    /// reading.
    pub channels: Channels,
}

impl Device {
    /// A short name for logs: `account/meter`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.account, self.meter)
    }

    /// The meter id the readings of a register of `phase` are stored under.
    pub fn channel_meter(&self, phase: Phase) -> &MeterId {
        match Channels::slot(phase) {
            Some(i) => self.channels.phases[i].as_ref().unwrap_or(&self.meter),
            None => &self.meter,
        }
    }

    /// The key of the counter of register `reg` (an index into `profile.registers`) in the
    /// spool state, if the device reads it and it is cumulative.
    pub fn counter_key(&self, reg: usize) -> Option<&str> {
        self.channels
            .counter_keys
            .iter()
            .find(|(r, _)| *r == reg)
            .map(|(_, k)| &**k)
    }
}

/// What a device's readings are stored under: the meter id of each phase channel it reads,
/// and the spool-state key of each of its counters. Per device, not per register, so a
/// thousand devices do not hold forty copies each.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// `meter:L1`, `meter:L2`, `meter:L3`, `meter:N`, for the phases the device reads.
    phases: [Option<MeterId>; 4],
    /// (index into `profile.registers`, `account/meter/quantity`) per cumulative register read.
    counter_keys: Vec<(usize, Box<str>)>,
}

impl Channels {
    fn slot(phase: Phase) -> Option<usize> {
        match phase {
            Phase::Total => None,
            Phase::L1 => Some(0),
            Phase::L2 => Some(1),
            Phase::L3 => Some(2),
            Phase::N => Some(3),
        }
    }

    fn new(
        account: &AccountCode,
        meter: &MeterId,
        profile: &Profile,
        registers: &[usize],
        quantities: &[Quantity],
    ) -> Self {
        let mut c = Self::default();
        for &r in registers {
            let Some(reg) = profile.registers.get(r) else {
                continue;
            };
            let channel = match Self::slot(reg.phase) {
                Some(i) => c.phases[i]
                    .get_or_insert_with(|| crate::channel::channel_meter(meter, reg.phase))
                    .clone(),
                None => meter.clone(),
            };
            let quantity = quantities.get(r).copied().unwrap_or(reg.quantity);
            if quantity.is_cumulative() {
                c.counter_keys.push((
                    r,
                    crate::channel::counter_key_of(account, &channel, quantity).into(),
                ));
            }
        }
        c
    }
}

/// The whole validated site.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    pub forward: ForwardSection,
    pub token: String,
    pub default_factors: FactorSelection,
    pub accounts: BTreeMap<AccountCode, AccountSection>,
    pub devices: Vec<Device>,
    pub factors: FactorTables,
    /// MQTT brokers, devices and the embedded broker (see [`mqtt`]).
    pub mqtt: mqtt::MqttConfig,
}

/// Alias kept for readers who think of the file as "the site".
pub type SiteConfig = GatewayConfig;

fn line_of(text: &str, span: Range<usize>) -> usize {
    text.as_bytes()[..span.start.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text, path.parent())
    }

    /// Parses and validates; `base` resolves relative paths (the config file's directory).
    pub fn parse(file: &str, text: &str, base: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        let at = ConfigFile { file, text, base };
        let mut gateway = raw.gateway;
        check_gateway_section(&mut gateway, &at)?;
        let mut forward = raw.forward;
        let token = check_forward_section(&mut forward, &at)?;
        let factors = factor_tables(
            raw.coal_factor,
            raw.carbon_factor,
            raw.density,
            &raw.factors,
            &at,
        )?;
        let library = profile_library(&gateway, &at)?;
        let accounts = check_accounts(raw.account, &factors, &at)?;
        let devices = check_devices(raw.device, &library, gateway.poll_interval, &at)?;
        let mqtt = mqtt::validate(
            &gateway.id,
            raw.mqtt_source,
            raw.mqtt_device,
            raw.mqtt_broker,
            &mqtt::Where {
                invalid: &|span, key, message| at.invalid(span, key, message),
                resolve: &|p| at.resolve(p),
            },
        )?;

        Ok(Self {
            gateway,
            forward,
            token,
            default_factors: raw.factors,
            accounts,
            devices,
            factors,
            mqtt,
        })
    }

    /// The factor selection of an account: its own, else the site default.
    pub fn selection(&self, account: &AccountCode) -> &FactorSelection {
        self.accounts
            .get(account)
            .map(|a| &a.factors)
            .unwrap_or(&self.default_factors)
    }
}

/// The file being validated: turns a span or a top-level key into an error that names the
/// file, the line and the key, and resolves relative paths against the file's directory.
struct ConfigFile<'a> {
    file: &'a str,
    text: &'a str,
    base: Option<&'a Path>,
}

impl ConfigFile<'_> {
    fn invalid(&self, span: Range<usize>, key: String, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: line_of(self.text, span),
            key,
            message,
        }
    }

    /// An error about a key of a top-level section, at the first line that sets it.
    fn at_top(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: self
                .text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1),
            key: key.to_owned(),
            message,
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        match self.base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// `[gateway]`: its paths resolved, its intervals and limits in range.
fn check_gateway_section(gateway: &mut GatewaySection, at: &ConfigFile) -> Result<(), ConfigError> {
    gateway.spool_dir = at.resolve(&gateway.spool_dir);
    gateway.profile_dir = gateway.profile_dir.as_deref().map(|p| at.resolve(p));
    if !(0.1..=86_400.0).contains(&gateway.poll_interval) {
        return Err(at.at_top(
            "poll_interval",
            format!("{} s is outside 0.1 s ..= 1 day", gateway.poll_interval),
        ));
    }
    if !(1..=64).contains(&gateway.worker_threads) {
        return Err(at.at_top(
            "worker_threads",
            format!("{} is outside 1 ..= 64", gateway.worker_threads),
        ));
    }
    if gateway.spool_max_bytes < 1 << 20 {
        return Err(at.at_top(
            "spool_max_bytes",
            format!(
                "{} bytes is below the 1 MiB minimum",
                gateway.spool_max_bytes
            ),
        ));
    }
    if gateway.request_timeout.is_nan()
        || !(0.0..=60.0).contains(&gateway.request_timeout)
        || gateway.request_timeout == 0.0
    {
        return Err(at.at_top(
            "request_timeout",
            format!("{} s is outside (0, 60]", gateway.request_timeout),
        ));
    }
    Ok(())
}

/// `[forward]`: its URL and CA file checked, and the gateway's token (given, or read from
/// `token_file`).
fn check_forward_section(
    forward: &mut ForwardSection,
    at: &ConfigFile,
) -> Result<String, ConfigError> {
    forward.check_url().map_err(|e| at.at_top("url", e))?;
    forward.ca_file = forward.ca_file.as_deref().map(|p| at.resolve(p));
    let token = match (&forward.token, &forward.token_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(at.resolve(f))
            .map_err(|e| at.at_top("token_file", format!("cannot read {}: {e}", f.display())))?
            .trim()
            .to_owned(),
        _ => {
            return Err(at.at_top("[forward]", "set exactly one of token or token_file".into()));
        }
    };
    if token.len() < 16 {
        return Err(at.at_top(
            "token",
            "a gateway token must be at least 16 characters".into(),
        ));
    }
    if forward.max_batch_readings == 0 || forward.timeout.is_nan() || forward.timeout <= 0.0 {
        return Err(at.at_top(
            "[forward]",
            "max_batch_readings and timeout must be positive".into(),
        ));
    }
    Ok(token)
}

/// The built-in conversion factors with the site's own added, and the site's default
/// selection checked against them.
fn factor_tables(
    coal: Vec<CoalFactor>,
    carbon: Vec<CarbonFactor>,
    density: BTreeMap<Category, f64>,
    selection: &FactorSelection,
    at: &ConfigFile,
) -> Result<FactorTables, ConfigError> {
    let factors = FactorTables::builtin()
        .and_then(|t| t.with_overrides(coal, carbon, density))
        .map_err(|e| at.at_top("[factors]", e.to_string()))?;
    factors
        .check_selection(selection)
        .map_err(|e| at.at_top("[factors]", e.to_string()))?;
    Ok(factors)
}

/// The built-in device profiles, and those of `profile_dir`.
fn profile_library(gateway: &GatewaySection, at: &ConfigFile) -> Result<Library, ConfigError> {
    let mut library = Library::builtin().map_err(|e| at.at_top("[gateway]", e.to_string()))?;
    if let Some(dir) = &gateway.profile_dir {
        load_profile_dir(&mut library, dir).map_err(|e| at.at_top("profile_dir", e))?;
    }
    Ok(library)
}

/// `[[account]]`s by code: each listed once, its factor selection known.
fn check_accounts(
    raw: Vec<Spanned<AccountSection>>,
    factors: &FactorTables,
    at: &ConfigFile,
) -> Result<BTreeMap<AccountCode, AccountSection>, ConfigError> {
    let mut accounts = BTreeMap::new();
    for (i, a) in raw.into_iter().enumerate() {
        let span = a.span();
        let a = a.into_inner();
        factors.check_selection(&a.factors).map_err(|e| {
            at.invalid(
                span.clone(),
                format!("account[{i}] ({})", a.code),
                e.to_string(),
            )
        })?;
        if accounts.insert(a.code.clone(), a.clone()).is_some() {
            return Err(at.invalid(
                span,
                format!("account[{i}].code"),
                format!("{} is listed twice", a.code),
            ));
        }
    }
    Ok(accounts)
}

/// What the devices of a site share while they are validated: one copy of each profile
/// however many devices use it (a site may have a thousand meters of one model), the meters
/// seen, and the settings of each serial line.
#[derive(Default)]
struct DeviceSet {
    profiles: HashMap<String, Arc<Profile>>,
    meters: HashSet<(AccountCode, MeterId)>,
    /// Serial port → (first device on it, its line settings).
    serial_lines: BTreeMap<PathBuf, (usize, SerialLine)>,
}

/// Errors about one `[[device]]`, with keys like `device[3].source.unit (110108A001/main)`.
struct DeviceAt<'a> {
    file: &'a ConfigFile<'a>,
    index: usize,
    span: Range<usize>,
    /// `account/meter`.
    name: String,
}

impl DeviceAt<'_> {
    fn key(&self, k: &str) -> String {
        format!("device[{}].{k} ({})", self.index, self.name)
    }

    /// An error at the device's own line.
    fn bad(&self, k: &str, message: String) -> ConfigError {
        self.file.invalid(self.span.clone(), self.key(k), message)
    }

    /// An error at the line of one of the device's keys.
    fn bad_at(&self, span: Range<usize>, k: &str, message: String) -> ConfigError {
        self.file.invalid(span, self.key(k), message)
    }
}

/// `[[device]]`s, each with its profile resolved and its registers chosen.
fn check_devices(
    raw: Vec<Spanned<DeviceSection>>,
    library: &Library,
    default_poll: f64,
    at: &ConfigFile,
) -> Result<Vec<Device>, ConfigError> {
    let mut set = DeviceSet::default();
    let mut devices = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let span = d.span();
        let d = d.into_inner();
        let device_at = DeviceAt {
            file: at,
            index: i,
            span,
            name: format!("{}/{}", d.account, d.meter),
        };
        devices.push(check_device(
            d,
            &device_at,
            library,
            default_poll,
            &mut set,
        )?);
    }
    Ok(devices)
}

fn check_device(
    d: DeviceSection,
    at: &DeviceAt,
    library: &Library,
    default_poll: f64,
    set: &mut DeviceSet,
) -> Result<Device, ConfigError> {
    if !set.meters.insert((d.account.clone(), d.meter.clone())) {
        return Err(at.bad(
            "meter",
            "this account already has a meter with this id".into(),
        ));
    }
    let item =
        EnergyCode::parse_in(&d.item, d.category).map_err(|e| at.bad("item", e.to_string()))?;
    let profile =
        shared_profile(&d.profile, library, &mut set.profiles).map_err(|e| at.bad("profile", e))?;
    let registers = chosen_registers(&profile, d.registers.as_deref(), at)?;
    let quantities = register_quantities(&profile, &d.quantities, &registers, at)?;
    let max_delta = delta_limits(&profile, &quantities, &d.max_delta, at)?;
    let replacements = declared_replacements(&profile, &quantities, &d.replacement, at)?;
    for (k, v) in [("ct_ratio", d.ct_ratio), ("pt_ratio", d.pt_ratio)] {
        if !v.is_finite() || v <= 0.0 {
            return Err(at.bad(k, format!("{v} must be a positive number")));
        }
    }
    let poll = d.poll_interval.unwrap_or(default_poll);
    if !(0.1..=86_400.0).contains(&poll) {
        return Err(at.bad(
            "poll_interval",
            format!("{poll} s is outside 0.1 s ..= 1 day"),
        ));
    }
    let poll_interval = Duration::from_secs_f64(poll);
    let reset = d
        .reset
        .rule(poll_interval)
        .map_err(|(key, m)| at.bad(key, m))?;
    check_modbus_source(&d.source, at, &mut set.serial_lines)?;
    let channels = Channels::new(&d.account, &d.meter, &profile, &registers, &quantities);
    Ok(Device {
        channels,
        meter: d.meter,
        account: d.account,
        category: d.category,
        item,
        profile,
        registers,
        quantities,
        source: d.source,
        ratios: device_profiles::decode::Ratios {
            ct: d.ct_ratio,
            pt: d.pt_ratio,
        },
        poll_interval,
        max_delta,
        replacements,
        reset,
    })
}

/// The library's profile `id`, shared with the devices that use it already.
fn shared_profile(
    id: &str,
    library: &Library,
    shared: &mut HashMap<String, Arc<Profile>>,
) -> Result<Arc<Profile>, String> {
    if let Some(p) = shared.get(id) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(library.get(id).map_err(|e| e.to_string())?.clone());
    shared.insert(id.to_owned(), Arc::clone(&p));
    Ok(p)
}

/// Indices of the registers a device reads: those named (all of the profile's when none
/// are), and the fractions of those, which are read with the accumulator they belong to.
fn chosen_registers(
    profile: &Profile,
    names: Option<&[String]>,
    at: &DeviceAt,
) -> Result<Vec<usize>, ConfigError> {
    let mut registers: Vec<usize> = match names {
        None => (0..profile.registers.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                profile
                    .registers
                    .iter()
                    .position(|r| &r.name == n)
                    .ok_or_else(|| {
                        at.bad(
                            "registers",
                            format!("profile {} has no register {n:?}", profile.id),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let fractions: Vec<usize> = registers
        .iter()
        .flat_map(|&i| {
            let main = &profile.registers[i].name;
            profile
                .registers
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.fraction_of.as_deref() == Some(main.as_str()))
                .map(|(j, _)| j)
        })
        .collect();
    for j in fractions {
        if !registers.contains(&j) {
            registers.push(j);
        }
    }
    Ok(registers)
}

/// Per profile register, what it measures at this installation: the profile's quantity or
/// the device's `quantities` override, which must keep the register's unit.
fn register_quantities(
    profile: &Profile,
    overrides: &BTreeMap<String, Quantity>,
    registers: &[usize],
    at: &DeviceAt,
) -> Result<Vec<Quantity>, ConfigError> {
    for name in overrides.keys() {
        if profile.register(name).is_none() {
            return Err(at.bad(
                "quantities",
                format!("profile {} has no register {name:?}", profile.id),
            ));
        }
    }
    let quantities: Vec<Quantity> = profile
        .registers
        .iter()
        .map(|r| overrides.get(&r.name).copied().unwrap_or(r.quantity))
        .collect();
    for &r in registers {
        let reg = &profile.registers[r];
        if reg.quantity.canonical_unit() != quantities[r].canonical_unit() {
            return Err(at.bad(
                "quantities",
                format!(
                    "{} measures {}, which {} cannot be",
                    reg.name, reg.quantity, quantities[r]
                ),
            ));
        }
    }
    Ok(quantities)
}

/// The index of register `name` of `profile`, if it measures a cumulative quantity.
fn cumulative_register(
    profile: &Profile,
    quantities: &[Quantity],
    name: &str,
) -> Result<usize, String> {
    match profile.registers.iter().position(|r| r.name == name) {
        None => Err(format!("profile {} has no register {name:?}", profile.id)),
        Some(r) if !quantities[r].is_cumulative() => Err(format!(
            "{name} measures {}, which is not a cumulative quantity",
            quantities[r]
        )),
        Some(r) => Ok(r),
    }
}

/// Per profile register, the plausibility limit on its deltas (`max_delta`).
fn delta_limits(
    profile: &Profile,
    quantities: &[Quantity],
    limits: &BTreeMap<String, Spanned<f64>>,
    at: &DeviceAt,
) -> Result<Vec<Option<f64>>, ConfigError> {
    let mut max_delta = vec![None; profile.registers.len()];
    for (name, limit) in limits {
        let bad = |m: String| at.bad_at(limit.span(), &format!("max_delta.{name}"), m);
        let r = cumulative_register(profile, quantities, name).map_err(bad)?;
        let v = *limit.get_ref();
        if !v.is_finite() || v <= 0.0 {
            return Err(bad(format!("{v} must be a positive number")));
        }
        max_delta[r] = Some(v);
    }
    Ok(max_delta)
}

/// Per profile register, its declared meter replacements (`[[device.replacement]]`), oldest
/// first.
fn declared_replacements(
    profile: &Profile,
    quantities: &[Quantity],
    declared: &[Spanned<ReplacementSection>],
    at: &DeviceAt,
) -> Result<Vec<Vec<crate::counter::Replacement>>, ConfigError> {
    let mut replacements = vec![Vec::new(); profile.registers.len()];
    for (j, rep) in declared.iter().enumerate() {
        let bad = |k: &str, m: String| at.bad_at(rep.span(), &format!("replacement[{j}].{k}"), m);
        let rep = rep.get_ref();
        let r = cumulative_register(profile, quantities, &rep.register)
            .map_err(|m| bad("register", m))?;
        let when = replacement_at(&rep.at).map_err(|m| bad("at", m))?;
        for (k, v) in [("old_final", rep.old_final), ("new_start", rep.new_start)] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(k, format!("{v} must be a reading, zero or more")));
            }
        }
        if replacements[r]
            .iter()
            .any(|x: &crate::counter::Replacement| x.at == when)
        {
            return Err(bad(
                "at",
                format!("{} is declared twice for {}", rep.at, rep.register),
            ));
        }
        replacements[r].push(crate::counter::Replacement {
            at: when,
            old_final: rep.old_final,
            new_start: rep.new_start,
        });
    }
    for r in &mut replacements {
        r.sort_by_key(|x| x.at);
    }
    Ok(replacements)
}

/// A device's Modbus source: retries bounded, a host or a serial port, a unit id in range,
/// and on a serial line the same speed and framing as the line's other devices.
fn check_modbus_source(
    source: &SourceConfig,
    at: &DeviceAt,
    serial_lines: &mut BTreeMap<PathBuf, (usize, SerialLine)>,
) -> Result<(), ConfigError> {
    if source.retries() > 10 {
        return Err(at.bad(
            "source.retries",
            format!("{} is more than 10", source.retries()),
        ));
    }
    match source {
        SourceConfig::ModbusTcp { host, unit, .. } => {
            if host.is_empty() {
                return Err(at.bad("source.host", "must not be empty".into()));
            }
            if *unit > 247 {
                return Err(at.bad("source.unit", format!("unit id {unit} is outside 0..=247")));
            }
            Ok(())
        }
        SourceConfig::ModbusRtu {
            port,
            baud,
            parity,
            data_bits,
            stop_bits,
            unit,
            ..
        } => {
            check_serial_framing(*baud, *data_bits, *stop_bits, *unit, port, at)?;
            // One serial line has one speed and framing: every device on it must agree.
            let line = (*baud, *parity, *data_bits, *stop_bits);
            match serial_lines.get(port) {
                Some((other, settings)) if *settings != line => Err(at.bad(
                    "source.port",
                    format!(
                        "{} is used by device[{other}] at {} baud, {:?} parity, {} data, {} stop bits; \
                         devices on one line must use the same settings",
                        port.display(),
                        settings.0,
                        settings.1,
                        settings.2,
                        settings.3
                    ),
                )),
                Some(_) => Ok(()),
                None => {
                    serial_lines.insert(port.clone(), (at.index, line));
                    Ok(())
                }
            }
        }
    }
}

/// A Modbus RTU device's own settings: a port, a speed, 8 data bits, 1 or 2 stop bits, and a
/// unit id that is not broadcast.
fn check_serial_framing(
    baud: u32,
    data_bits: u8,
    stop_bits: u8,
    unit: u8,
    port: &Path,
    at: &DeviceAt,
) -> Result<(), ConfigError> {
    if port.as_os_str().is_empty() {
        return Err(at.bad("source.port", "must not be empty".into()));
    }
    if !(300..=1_000_000).contains(&baud) {
        return Err(at.bad("source.baud", format!("{baud} is outside 300..=1000000")));
    }
    if data_bits != 8 {
        return Err(at.bad(
            "source.data_bits",
            format!("Modbus RTU frames need 8 data bits, not {data_bits}"),
        ));
    }
    if !matches!(stop_bits, 1 | 2) {
        return Err(at.bad(
            "source.stop_bits",
            format!("{stop_bits} is neither 1 nor 2"),
        ));
    }
    // 0 is broadcast: nobody answers a read sent to it.
    if !(1..=247).contains(&unit) {
        return Err(at.bad("source.unit", format!("unit id {unit} is outside 1..=247")));
    }
    Ok(())
}

fn load_profile_dir(library: &mut Library, dir: &Path) -> Result<(), String> {
    let vendors = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for vendor in vendors.flatten() {
        let Ok(models) = std::fs::read_dir(vendor.path()) else {
            continue;
        };
        for model in models.flatten() {
            let path = model.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let name = format!(
                    "{}/{}",
                    vendor.file_name().to_string_lossy(),
                    model.file_name().to_string_lossy()
                );
                let p = Profile::parse(&name, &text)
                    .map_err(|e| format!("{} ({})", e, path.display()))?;
                library.add(p);
            }
        }
    }
    Ok(())
}

pub mod mqtt;

#[cfg(test)]
mod tests;
