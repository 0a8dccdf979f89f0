//! Zigbee2MQTT: a device's state on `zigbee2mqtt/<friendly_name>` as one flat JSON object,
//! e.g. `{"state":"ON","power":12.3,"energy":1.23,"voltage":230,"current":0.05,"linkquality":120}`.
//!
//! Keys and units follow Zigbee2MQTT's exposes presets [M: key names and units not checked
//! against a primary source]: `power` W, `energy` kWh (cumulative), `produced_energy` kWh,
//! `voltage` V, `current` A, `ac_frequency` Hz. A key with an endpoint or phase suffix
//! (`power_l1`, `voltage_b`) goes to that channel; plain keys go to channel `"0"`. Other keys
//! (`state`, `linkquality`, `power_factor` whose scale varies by device) are not decoded.
//!
//! Values are `null` until a device first reports them; those keys are skipped. When Zigbee2MQTT's
//! `last_seen` option is on, the payload's `last_seen` (ISO 8601 or epoch milliseconds) is the
//! timestamp.

use std::borrow::Cow;

use reading_model::{Quantity, Unit};
use serde_json::Value;

use crate::error::{DecodeError, pointer};
use crate::mapping::{TimeFormat, timestamp};
use crate::value::{Basis, FirmwareValue};

/// Zigbee2MQTT's default base topic.
pub const DEFAULT_BASE_TOPIC: &str = "zigbee2mqtt";

const KEYS: [(&str, Quantity, Unit); 6] = [
    ("power", Quantity::PowerActive, Unit::Watt),
    ("energy", Quantity::EnergyImport, Unit::KilowattHour),
    (
        "produced_energy",
        Quantity::EnergyExport,
        Unit::KilowattHour,
    ),
    ("voltage", Quantity::Voltage, Unit::Volt),
    ("current", Quantity::Current, Unit::Ampere),
    ("ac_frequency", Quantity::Frequency, Unit::Hertz),
];

/// The friendly name of a device state topic `<base>/<friendly_name>`, or `None` for the
/// bridge's own topics and a device's `/availability`, `/set` and `/get` topics. Friendly names
/// may themselves contain `/`.
pub fn device_name<'a>(topic: &'a str, base_topic: &str) -> Option<&'a str> {
    let name = topic.strip_prefix(base_topic)?.strip_prefix('/')?;
    if name.is_empty() || name == "bridge" || name.starts_with("bridge/") {
        return None;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('/') && matches!(last, "availability" | "set" | "get") {
        return None;
    }
    Some(name)
}

/// What a key measures and on which channel: `power` → channel 0, `power_l2` → channel `l2`.
fn classify(key: &str) -> Option<(Cow<'static, str>, Quantity, Unit)> {
    for (base, q, u) in KEYS {
        if key == base {
            return Some((Cow::Borrowed("0"), q, u));
        }
        if let Some(suffix) = key.strip_prefix(base).and_then(|s| s.strip_prefix('_')) {
            // Only endpoint and phase suffixes, so that `power_factor` or `energy_today` are
            // never mistaken for a channel of `power` or `energy`.
            let endpoint = suffix.len() >= 2
                && suffix.starts_with('l')
                && suffix.bytes().skip(1).all(|b| b.is_ascii_digit());
            let phase = matches!(suffix, "a" | "b" | "c");
            if endpoint || phase {
                return Some((Cow::Owned(suffix.to_owned()), q, u));
            }
        }
    }
    None
}

/// Decodes one device state message. `base_topic` is Zigbee2MQTT's base topic, normally
/// [`DEFAULT_BASE_TOPIC`].
pub fn decode(
    topic: &str,
    payload: &[u8],
    base_topic: &str,
) -> Result<Vec<FirmwareValue>, DecodeError> {
    if device_name(topic, base_topic).is_none() {
        return Err(DecodeError::topic(
            topic,
            "a Zigbee2MQTT device state topic <base>/<friendly_name>",
        ));
    }
    let obj = match serde_json::from_slice(payload) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(DecodeError::field(topic, "", "expected a JSON object")),
        Err(e) => return Err(DecodeError::json(topic, payload, &e)),
    };
    let ts_ms = match obj.get("last_seen") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(
            timestamp(v, TimeFormat::Rfc3339)
                .map_err(|r| DecodeError::field(topic, "/last_seen", r))?,
        ),
        Some(v) => Some(
            timestamp(v, TimeFormat::EpochMs)
                .map_err(|r| DecodeError::field(topic, "/last_seen", r))?,
        ),
    };
    let mut out = Vec::new();
    for (key, v) in &obj {
        let Some((channel, quantity, unit)) = classify(key) else {
            continue;
        };
        let x = match v {
            Value::Null => continue,
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| DecodeError::field(topic, pointer(&[key]), "number out of range"))?,
            _ => {
                return Err(DecodeError::field(
                    topic,
                    pointer(&[key]),
                    "expected a number",
                ));
            }
        };
        let fv = FirmwareValue::convert(
            channel,
            quantity,
            Basis::default_for(quantity),
            x,
            unit,
            ts_ms,
        )
        .map_err(|e| DecodeError::value(topic, pointer(&[key]), e))?;
        out.push(fv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
