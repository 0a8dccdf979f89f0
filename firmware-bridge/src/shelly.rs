//! Shelly Gen2+ (Plus, Pro, Gen3, Gen4) over MQTT: the JSON-RPC notifications on
//! `<device>/events/rpc` (`NotifyStatus`, `NotifyFullStatus`), the component status on
//! `<device>/status/<component>:<n>` ("generic status update over MQTT"), and the answer to a
//! `Shelly.GetStatus` request.
//!
//! Metering components and their fields (units as Shelly documents them):
//!
//! | component | fields | channel |
//! |---|---|---|
//! | `switch:N`, `pm1:N` | `apower` W, `voltage` V, `current` A, `freq` Hz, `pf`, `aenergy.total` Wh, `ret_aenergy.total` Wh | `switch:N` / `pm1:N` |
//! | `em:N` | `a_`/`b_`/`c_` + `voltage`, `current`, `act_power` W, `aprt_power` VA, `pf`, `freq`; `n_current`; `total_current`, `total_act_power`, `total_aprt_power` | `em:N`, `em:N/a` … `em:N/n` |
//! | `emdata:N` | `total_act`, `total_act_ret` Wh; `a_total_act_energy`, `a_total_act_ret_energy` … Wh | `em:N`, `em:N/a` … |
//! | `em1:N` | `current`, `voltage`, `act_power`, `aprt_power`, `pf`, `freq` | `em1:N` |
//! | `em1data:N` | `total_act_energy`, `total_act_ret_energy` Wh | `em1:N` |
//!
//! `emdata:N` and `em1data:N` report on the same channel as `em:N` and `em1:N`, so one meter's
//! power and energy arrive under one channel name.
//!
//! On `switch` and `pm1`, returned energy is counted in `aenergy` as well as in `ret_aenergy`
//! [V-code: evcc `meter/shelly/gen2.go`], so when `ret_aenergy` is present the import counter is
//! `aenergy.total − ret_aenergy.total`. Without `ret_aenergy`, `aenergy` is import only.
//!
//! `NotifyStatus` carries only the fields that changed. [`ShellyState`] keeps each device's last
//! known component status, overlays each notification on it — which Shelly documents as equal to
//! a fresh `GetStatus` — and emits the component's complete values. When a notification arrives
//! for a component it has never seen in full, it says so ([`ShellyUpdate::needs_full_status`]) and
//! the caller publishes [`get_status_request`].

use std::collections::{BTreeMap, HashMap};

use reading_model::{Quantity, Unit};
use serde_json::{Map, Value};

use crate::error::{DecodeError, pointer};
use crate::value::{Basis, FirmwareValue};

/// Devices tracked by a [`ShellyState`] unless set otherwise; a bound so that a flood of made-up
/// device ids cannot grow the gateway's memory without limit.
pub const DEFAULT_MAX_DEVICES: usize = 10_000;

/// Metering components kept per device; real devices have a handful.
pub const MAX_COMPONENTS: usize = 64;

/// What a Shelly topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `<device>/events/rpc`: `NotifyStatus`, `NotifyFullStatus`, `NotifyEvent`.
    Events { device: &'a str },
    /// `<device>/status/<component>`: one component's full status.
    Status { device: &'a str, component: &'a str },
    /// `<device>/online`: the last-will flag, `true` or `false`.
    Online { device: &'a str },
}

/// Recognizes a Shelly topic. `device` is the MQTT prefix, the device id unless reconfigured.
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    if let Some(device) = topic.strip_suffix("/events/rpc") {
        return (!device.is_empty()).then_some(Topic::Events { device });
    }
    if let Some(device) = topic.strip_suffix("/online") {
        return (!device.is_empty()).then_some(Topic::Online { device });
    }
    let i = topic.rfind("/status/")?;
    let device = topic.get(..i)?;
    let component = topic.get(i + "/status/".len()..)?;
    (!device.is_empty() && !component.is_empty() && !component.contains('/'))
        .then_some(Topic::Status { device, component })
}

/// The request that makes a device answer with its full status on `<src>/rpc`: publish `payload`
/// to `topic`, then hand the answer to [`ShellyState::apply_response`].
pub fn get_status_request(device: &str, src: &str, id: u64) -> (String, String) {
    let payload = serde_json::json!({"id": id, "src": src, "method": "Shelly.GetStatus"});
    (format!("{device}/rpc"), payload.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `switch` and `pm1` share their metering fields.
    Switch,
    Em,
    EmData,
    Em1,
    Em1Data,
}

/// The metering kind of a component key such as `switch:0`, and the channel its values go to.
fn component(key: &str) -> Option<(Kind, String)> {
    let (name, id) = key.split_once(':')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kind, channel) = match name {
        "switch" | "pm1" => (Kind::Switch, key.to_owned()),
        "em" => (Kind::Em, key.to_owned()),
        "emdata" => (Kind::EmData, format!("em:{id}")),
        "em1" => (Kind::Em1, key.to_owned()),
        "em1data" => (Kind::Em1Data, format!("em1:{id}")),
        _ => return None,
    };
    Some((kind, channel))
}

/// One field: its key, the sub-channel it belongs to (a phase, or none for the whole
/// component), what it measures and in which unit Shelly sends it.
type Field = (&'static str, Option<&'static str>, Quantity, Unit);

const SWITCH: &[Field] = &[
    ("apower", None, Quantity::PowerActive, Unit::Watt),
    ("voltage", None, Quantity::Voltage, Unit::Volt),
    ("current", None, Quantity::Current, Unit::Ampere),
    ("freq", None, Quantity::Frequency, Unit::Hertz),
    ("pf", None, Quantity::PowerFactor, Unit::One),
];

const EM1: &[Field] = &[
    ("voltage", None, Quantity::Voltage, Unit::Volt),
    ("current", None, Quantity::Current, Unit::Ampere),
    ("act_power", None, Quantity::PowerActive, Unit::Watt),
    (
        "aprt_power",
        None,
        Quantity::PowerApparent,
        Unit::VoltAmpere,
    ),
    ("pf", None, Quantity::PowerFactor, Unit::One),
    ("freq", None, Quantity::Frequency, Unit::Hertz),
];

const EM1DATA: &[Field] = &[
    (
        "total_act_energy",
        None,
        Quantity::EnergyImport,
        Unit::WattHour,
    ),
    (
        "total_act_ret_energy",
        None,
        Quantity::EnergyExport,
        Unit::WattHour,
    ),
];

const EM: &[Field] = &[
    ("a_voltage", Some("a"), Quantity::Voltage, Unit::Volt),
    ("a_current", Some("a"), Quantity::Current, Unit::Ampere),
    ("a_act_power", Some("a"), Quantity::PowerActive, Unit::Watt),
    (
        "a_aprt_power",
        Some("a"),
        Quantity::PowerApparent,
        Unit::VoltAmpere,
    ),
    ("a_pf", Some("a"), Quantity::PowerFactor, Unit::One),
    ("a_freq", Some("a"), Quantity::Frequency, Unit::Hertz),
    ("b_voltage", Some("b"), Quantity::Voltage, Unit::Volt),
    ("b_current", Some("b"), Quantity::Current, Unit::Ampere),
    ("b_act_power", Some("b"), Quantity::PowerActive, Unit::Watt),
    (
        "b_aprt_power",
        Some("b"),
        Quantity::PowerApparent,
        Unit::VoltAmpere,
    ),
    ("b_pf", Some("b"), Quantity::PowerFactor, Unit::One),
    ("b_freq", Some("b"), Quantity::Frequency, Unit::Hertz),
    ("c_voltage", Some("c"), Quantity::Voltage, Unit::Volt),
    ("c_current", Some("c"), Quantity::Current, Unit::Ampere),
    ("c_act_power", Some("c"), Quantity::PowerActive, Unit::Watt),
    (
        "c_aprt_power",
        Some("c"),
        Quantity::PowerApparent,
        Unit::VoltAmpere,
    ),
    ("c_pf", Some("c"), Quantity::PowerFactor, Unit::One),
    ("c_freq", Some("c"), Quantity::Frequency, Unit::Hertz),
    ("n_current", Some("n"), Quantity::Current, Unit::Ampere),
    ("total_current", None, Quantity::Current, Unit::Ampere),
    ("total_act_power", None, Quantity::PowerActive, Unit::Watt),
    (
        "total_aprt_power",
        None,
        Quantity::PowerApparent,
        Unit::VoltAmpere,
    ),
];

const EMDATA: &[Field] = &[
    ("total_act", None, Quantity::EnergyImport, Unit::WattHour),
    (
        "total_act_ret",
        None,
        Quantity::EnergyExport,
        Unit::WattHour,
    ),
    (
        "a_total_act_energy",
        Some("a"),
        Quantity::EnergyImport,
        Unit::WattHour,
    ),
    (
        "a_total_act_ret_energy",
        Some("a"),
        Quantity::EnergyExport,
        Unit::WattHour,
    ),
    (
        "b_total_act_energy",
        Some("b"),
        Quantity::EnergyImport,
        Unit::WattHour,
    ),
    (
        "b_total_act_ret_energy",
        Some("b"),
        Quantity::EnergyExport,
        Unit::WattHour,
    ),
    (
        "c_total_act_energy",
        Some("c"),
        Quantity::EnergyImport,
        Unit::WattHour,
    ),
    (
        "c_total_act_ret_energy",
        Some("c"),
        Quantity::EnergyExport,
        Unit::WattHour,
    ),
];

/// Where a component's status sits in the payload, for error pointers.
struct At<'a> {
    topic: &'a str,
    /// Tokens leading to the component object (`["params", "switch:0"]`), empty when the
    /// payload is the component itself.
    base: &'a [&'a str],
}

impl At<'_> {
    fn pointer(&self, tail: &[&str]) -> String {
        let tokens: Vec<&str> = self.base.iter().chain(tail).copied().collect();
        pointer(&tokens)
    }

    fn field(&self, tail: &[&str], reason: &str) -> DecodeError {
        DecodeError::field(self.topic, self.pointer(tail), reason)
    }
}

/// Decodes one metering component's status object (`key` like `em:0`) and appends its values.
/// Keys that are not metering components append nothing. `ts_ms` is the notification's time, if
/// any; Shelly's status objects carry none of their own.
pub fn decode_component(
    topic: &str,
    key: &str,
    status: &Value,
    ts_ms: Option<i64>,
    out: &mut Vec<FirmwareValue>,
) -> Result<(), DecodeError> {
    let at = At { topic, base: &[] };
    if component(key).is_none() {
        return Ok(());
    }
    match status {
        Value::Object(status) => decode_at(&at, key, status, ts_ms, out),
        _ => Err(at.field(&[], "expected a component status object")),
    }
}

fn decode_at(
    at: &At<'_>,
    key: &str,
    status: &Map<String, Value>,
    ts_ms: Option<i64>,
    out: &mut Vec<FirmwareValue>,
) -> Result<(), DecodeError> {
    let Some((kind, channel)) = component(key) else {
        return Ok(());
    };
    let fields = match kind {
        Kind::Switch => SWITCH,
        Kind::Em => EM,
        Kind::EmData => EMDATA,
        Kind::Em1 => EM1,
        Kind::Em1Data => EM1DATA,
    };
    for (name, phase, quantity, unit) in fields {
        let Some(v) = status.get(*name) else {
            continue;
        };
        let Some(v) = number(v).map_err(|r| at.field(&[name], r))? else {
            continue;
        };
        let channel = match phase {
            Some(p) => format!("{channel}/{p}"),
            None => channel.clone(),
        };
        let fv = FirmwareValue::convert(
            channel,
            *quantity,
            Basis::default_for(*quantity),
            v,
            *unit,
            ts_ms,
        )
        .map_err(|e| DecodeError::value(at.topic, at.pointer(&[name]), e))?;
        out.push(fv);
    }
    if kind == Kind::Switch {
        switch_energy(at, &channel, status, ts_ms, out)?;
    }
    Ok(())
}

/// `aenergy.total` and `ret_aenergy.total` of a switch or pm1, split into import and export.
fn switch_energy(
    at: &At<'_>,
    channel: &str,
    status: &Map<String, Value>,
    ts_ms: Option<i64>,
    out: &mut Vec<FirmwareValue>,
) -> Result<(), DecodeError> {
    let total = |key: &'static str| -> Result<Option<f64>, DecodeError> {
        match status.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => match o.get("total") {
                None => Ok(None),
                Some(v) => number(v).map_err(|r| at.field(&[key, "total"], r)),
            },
            Some(_) => Err(at.field(&[key], "expected an object with `total`")),
        }
    };
    let aenergy = total("aenergy")?;
    let ret = total("ret_aenergy")?;
    let mut push = |quantity: Quantity, wh: f64, key: &'static str| {
        FirmwareValue::convert(
            channel.to_owned(),
            quantity,
            Basis::Total,
            wh,
            Unit::WattHour,
            ts_ms,
        )
        .map(|fv| out.push(fv))
        .map_err(|e| DecodeError::value(at.topic, at.pointer(&[key, "total"]), e))
    };
    if let Some(a) = aenergy {
        // Not clamped at zero: a negative import would be the device contradicting itself, and
        // the counter logic downstream flags it rather than this decoder hiding it.
        push(Quantity::EnergyImport, a - ret.unwrap_or(0.0), "aenergy")?;
    }
    if let Some(r) = ret {
        push(Quantity::EnergyExport, r, "ret_aenergy")?;
    }
    Ok(())
}

fn number(v: &Value) -> Result<Option<f64>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or("number out of range"),
        _ => Err("expected a number"),
    }
}

/// Values decoded from one message, and whether the device should be asked for its full status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShellyUpdate {
    pub values: Vec<FirmwareValue>,
    /// A `NotifyStatus` touched a component whose full status is not known yet (first contact,
    /// or after the device went offline): the values emitted hold only what has been seen so
    /// far. Publish [`get_status_request`] and feed the answer to [`ShellyState::apply_response`].
    pub needs_full_status: bool,
}

/// The last known status of every metering component of every Shelly device seen, so that
/// `NotifyStatus` deltas can be completed. Pure and in memory; the caller owns it.
#[derive(Debug)]
pub struct ShellyState {
    devices: HashMap<String, Device>,
    max_devices: usize,
}

#[derive(Debug, Default)]
struct Device {
    components: BTreeMap<String, Component>,
}

#[derive(Debug)]
struct Component {
    status: Map<String, Value>,
    /// Seeded by a full status rather than built up from deltas.
    complete: bool,
}

impl Default for ShellyState {
    fn default() -> Self {
        Self::new()
    }
}

impl ShellyState {
    pub fn new() -> Self {
        Self::with_max_devices(DEFAULT_MAX_DEVICES)
    }

    pub fn with_max_devices(max_devices: usize) -> Self {
        Self {
            devices: HashMap::new(),
            max_devices,
        }
    }

    /// Devices currently tracked.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Drops what is known of a device, e.g. when it goes offline; its next `NotifyStatus` will
    /// ask for a full status again.
    pub fn forget(&mut self, device: &str) {
        self.devices.remove(device);
    }

    /// Feeds one message from a Shelly topic (see [`parse_topic`]). Messages that carry no
    /// metering data (`NotifyEvent`, non-metering components, `online`) yield no values.
    pub fn apply(&mut self, topic: &str, payload: &[u8]) -> Result<ShellyUpdate, DecodeError> {
        match parse_topic(topic) {
            None => Err(DecodeError::topic(
                topic,
                "a Shelly <device>/events/rpc, <device>/status/<component> or <device>/online topic",
            )),
            Some(Topic::Online { device }) => {
                // Whatever the device did while offline is unknown; start over on its return.
                if payload.trim_ascii() == b"false" {
                    self.forget(device);
                }
                Ok(ShellyUpdate::default())
            }
            Some(Topic::Status {
                device,
                component: key,
            }) => {
                if component(key).is_none() {
                    return Ok(ShellyUpdate::default());
                }
                let status = parse_object(topic, payload)?;
                let mut one = Map::new();
                one.insert(key.to_owned(), Value::Object(status));
                self.apply_components(topic, None, device, &one, None, true)
            }
            Some(Topic::Events { device }) => {
                let msg = parse_object(topic, payload)?;
                let full = match msg.get("method").and_then(Value::as_str) {
                    Some("NotifyStatus") => false,
                    Some("NotifyFullStatus") => true,
                    _ => return Ok(ShellyUpdate::default()),
                };
                let params = match msg.get("params") {
                    Some(Value::Object(p)) => p,
                    _ => {
                        return Err(DecodeError::field(topic, "/params", "expected an object"));
                    }
                };
                let ts_ms = notification_ts(topic, params)?;
                self.apply_components(topic, Some("params"), device, params, ts_ms, full)
            }
        }
    }

    /// Feeds the answer to [`get_status_request`], received on `<src>/rpc`, for `device` (the
    /// prefix the request was published under).
    pub fn apply_response(
        &mut self,
        device: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<ShellyUpdate, DecodeError> {
        let msg = parse_object(topic, payload)?;
        match msg.get("result") {
            Some(Value::Object(result)) => {
                self.apply_components(topic, Some("result"), device, result, None, true)
            }
            _ => Err(DecodeError::field(
                topic,
                "/result",
                "expected the status object of a Shelly.GetStatus answer",
            )),
        }
    }

    /// Applies the metering components of one message. Everything is checked before anything
    /// changes, so a message is applied whole or not at all. `base_key` is where the components
    /// sit in the payload (`params`, `result`), for error pointers; `None` when the payload is
    /// the component itself.
    fn apply_components<'a>(
        &mut self,
        topic: &str,
        base_key: Option<&'a str>,
        device: &str,
        components: &'a Map<String, Value>,
        ts_ms: Option<i64>,
        full: bool,
    ) -> Result<ShellyUpdate, DecodeError> {
        let base = |key: &'a str| -> Vec<&'a str> {
            match base_key {
                Some(b) => vec![b, key],
                None => Vec::new(),
            }
        };
        let mut parts = Vec::new();
        let mut scratch = Vec::new();
        for (key, status) in components {
            if component(key).is_none() {
                continue;
            }
            let tokens = base(key);
            let at = At {
                topic,
                base: &tokens,
            };
            let Value::Object(status) = status else {
                return Err(at.field(&[], "expected a component status object"));
            };
            // A delta is checked on its own too, so a malformed field never enters the state.
            decode_at(&at, key, status, ts_ms, &mut scratch)?;
            parts.push((key, status));
        }
        if parts.is_empty() {
            return Ok(ShellyUpdate::default());
        }
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            return Err(DecodeError::Capacity {
                topic: topic.to_owned(),
                what: "Shelly devices",
                limit: self.max_devices,
            });
        }
        let dev = self.devices.entry(device.to_owned()).or_default();
        let new = parts
            .iter()
            .filter(|(k, _)| !dev.components.contains_key(k.as_str()))
            .count();
        if dev.components.len() + new > MAX_COMPONENTS {
            return Err(DecodeError::Capacity {
                topic: topic.to_owned(),
                what: "metering components of one Shelly device",
                limit: MAX_COMPONENTS,
            });
        }
        let mut update = ShellyUpdate::default();
        for (key, status) in parts {
            let c = dev
                .components
                .entry(key.clone())
                .or_insert_with(|| Component {
                    status: Map::new(),
                    complete: false,
                });
            if full {
                c.status = status.clone();
                c.complete = true;
            } else {
                // Unchanged fields are still current as of this notification.
                merge(&mut c.status, status);
                update.needs_full_status |= !c.complete;
            }
            let tokens = base(key);
            let at = At {
                topic,
                base: &tokens,
            };
            decode_at(&at, key, &c.status, ts_ms, &mut update.values)?;
        }
        Ok(update)
    }
}

/// Overlays `delta` on `status`: objects merge key by key (a delta may carry part of
/// `aenergy`), anything else replaces.
fn merge(status: &mut Map<String, Value>, delta: &Map<String, Value>) {
    for (k, v) in delta {
        match (status.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
            _ => {
                status.insert(k.clone(), v.clone());
            }
        }
    }
}

fn parse_object(topic: &str, payload: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice(payload) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(DecodeError::field(topic, "", "expected a JSON object")),
        Err(e) => Err(DecodeError::json(topic, payload, &e)),
    }
}

/// `params.ts`: Unix time in seconds (with a fraction), UTC.
fn notification_ts(topic: &str, params: &Map<String, Value>) -> Result<Option<i64>, DecodeError> {
    match params.get("ts") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            // Up to the year 2286; anything else is not a clock reading.
            Some(s) if (0.0..1e10).contains(&s) => Ok(Some((s * 1000.0).round() as i64)),
            _ => Err(DecodeError::field(
                topic,
                "/params/ts",
                "expected Unix seconds",
            )),
        },
        Some(_) => Err(DecodeError::field(
            topic,
            "/params/ts",
            "expected Unix seconds",
        )),
    }
}

#[cfg(test)]
mod tests;
