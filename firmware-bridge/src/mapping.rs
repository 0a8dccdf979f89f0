//! Any other firmware's JSON payload, decoded by a mapping declared in config rather than code:
//! which JSON pointer holds which quantity in which unit, and where the timestamp is.
//!
//! ```toml
//! [[fields]]
//! pointer = "/data/energy_wh"
//! quantity = "energy_import"
//! unit = "Wh"
//!
//! [[fields]]
//! pointer = "/data/p"
//! channel = "l1"
//! quantity = "power_active"
//! unit = "W"
//! scale = 0.1          # the device sends tenths of a watt
//!
//! [timestamp]
//! pointer = "/ts"
//! format = "epoch_ms"  # or "epoch_s" (fractions allowed) or "rfc3339"
//! ```
//!
//! A [`JsonMapping`] is validated when it is built or deserialized, so one that exists can be
//! used without further checks. Values may be JSON numbers or strings holding a decimal number
//! (many devices quote their numbers); `null` is "no reading" and yields nothing.

use chrono::DateTime;
use reading_model::{Quantity, Unit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::value::{Basis, FirmwareValue};

/// One number to take from the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// RFC 6901 JSON pointer, e.g. `/ENERGY/Total` or `/values/0`.
    pub pointer: String,
    #[serde(default = "default_channel")]
    pub channel: String,
    pub quantity: Quantity,
    /// The unit the device sends, after `scale`.
    pub unit: Unit,
    /// Multiplies the raw number before the unit conversion (e.g. 0.01 for hundredths).
    #[serde(default = "one")]
    pub scale: f64,
    /// Defaults to `total` for cumulative quantities and `instant` for the rest.
    #[serde(default)]
    pub basis: Option<Basis>,
    /// When true a missing pointer yields nothing; otherwise it is an error.
    #[serde(default)]
    pub optional: bool,
}

/// Where the payload's timestamp is and how it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampMapping {
    pub pointer: String,
    pub format: TimeFormat,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Unix seconds, fractions allowed.
    EpochS,
    /// Unix milliseconds.
    EpochMs,
    /// RFC 3339 with an offset, e.g. `2024-03-01T08:00:00+08:00`.
    Rfc3339,
}

/// Why a mapping is refused; `index` is the position in `fields`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("a mapping needs at least one field")]
    Empty,
    #[error("fields[{index}]: pointer {pointer:?} is not an RFC 6901 JSON pointer")]
    Pointer { index: usize, pointer: String },
    #[error("timestamp: pointer {0:?} is not an RFC 6901 JSON pointer")]
    TimestampPointer(String),
    #[error("fields[{index}]: scale {scale} must be a finite number other than 0")]
    Scale { index: usize, scale: f64 },
    #[error("fields[{index}]: unit {unit} does not measure {quantity}")]
    Unit {
        index: usize,
        unit: Unit,
        quantity: Quantity,
    },
    #[error("fields[{index}]: channel must not be empty")]
    Channel { index: usize },
}

/// A validated mapping from a JSON payload to values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMapping", into = "RawMapping")]
pub struct JsonMapping {
    fields: Vec<FieldMapping>,
    timestamp: Option<TimestampMapping>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    fields: Vec<FieldMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<TimestampMapping>,
}

impl TryFrom<RawMapping> for JsonMapping {
    type Error = MappingError;
    fn try_from(raw: RawMapping) -> Result<Self, MappingError> {
        Self::new(raw.fields, raw.timestamp)
    }
}

impl From<JsonMapping> for RawMapping {
    fn from(m: JsonMapping) -> Self {
        Self {
            fields: m.fields,
            timestamp: m.timestamp,
        }
    }
}

fn default_channel() -> String {
    "0".to_owned()
}

fn one() -> f64 {
    1.0
}

/// RFC 6901: empty, or `/`-separated tokens in which `~` is only ever `~0` or `~1`.
pub(crate) fn is_json_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    if !p.starts_with('/') {
        return false;
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

impl JsonMapping {
    pub fn new(
        fields: Vec<FieldMapping>,
        timestamp: Option<TimestampMapping>,
    ) -> Result<Self, MappingError> {
        if fields.is_empty() {
            return Err(MappingError::Empty);
        }
        for (index, f) in fields.iter().enumerate() {
            if !is_json_pointer(&f.pointer) {
                return Err(MappingError::Pointer {
                    index,
                    pointer: f.pointer.clone(),
                });
            }
            if !f.scale.is_finite() || f.scale == 0.0 {
                return Err(MappingError::Scale {
                    index,
                    scale: f.scale,
                });
            }
            if f.unit.convert(1.0, f.quantity.canonical_unit()).is_err() {
                return Err(MappingError::Unit {
                    index,
                    unit: f.unit,
                    quantity: f.quantity,
                });
            }
            if f.channel.is_empty() {
                return Err(MappingError::Channel { index });
            }
        }
        if let Some(t) = &timestamp
            && !is_json_pointer(&t.pointer)
        {
            return Err(MappingError::TimestampPointer(t.pointer.clone()));
        }
        Ok(Self { fields, timestamp })
    }

    pub fn fields(&self) -> &[FieldMapping] {
        &self.fields
    }

    pub fn timestamp(&self) -> Option<&TimestampMapping> {
        self.timestamp.as_ref()
    }

    /// Decodes one payload: every mapped field present and not `null` yields a value.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<Vec<FirmwareValue>, DecodeError> {
        let doc: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::json(topic, payload, &e))?;
        let ts_ms = match &self.timestamp {
            None => None,
            Some(t) => match doc.pointer(&t.pointer) {
                None | Some(Value::Null) if t.optional => None,
                None | Some(Value::Null) => {
                    return Err(DecodeError::field(topic, &t.pointer, "timestamp missing"));
                }
                Some(v) => Some(
                    timestamp(v, t.format).map_err(|r| DecodeError::field(topic, &t.pointer, r))?,
                ),
            },
        };
        let mut out = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let raw = match doc.pointer(&f.pointer) {
                None if f.optional => continue,
                None => return Err(DecodeError::field(topic, &f.pointer, "missing")),
                Some(Value::Null) => continue,
                Some(v) => number(v).map_err(|r| DecodeError::field(topic, &f.pointer, r))?,
            };
            let basis = f.basis.unwrap_or_else(|| Basis::default_for(f.quantity));
            let v = FirmwareValue::convert(
                f.channel.clone(),
                f.quantity,
                basis,
                raw * f.scale,
                f.unit,
                ts_ms,
            )
            .map_err(|e| DecodeError::value(topic, &f.pointer, e))?;
            out.push(v);
        }
        Ok(out)
    }
}

/// A JSON number, or a string holding one.
pub(crate) fn number(v: &Value) -> Result<f64, &'static str> {
    match v {
        Value::Number(n) => n.as_f64().ok_or("number out of range"),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or("expected a number"),
        _ => Err("expected a number"),
    }
}

/// A timestamp in `format`, as UTC milliseconds.
pub(crate) fn timestamp(v: &Value, format: TimeFormat) -> Result<i64, &'static str> {
    // Beyond ±10^15 ms (year ~33 700) a number is not a clock reading, and the cast is exact.
    let ms = |x: f64| {
        (x.is_finite() && x.abs() < 1e15)
            .then(|| x.round() as i64)
            .ok_or("timestamp out of range")
    };
    match format {
        TimeFormat::EpochS => ms(number(v)? * 1000.0),
        TimeFormat::EpochMs => ms(number(v)?),
        TimeFormat::Rfc3339 => match v {
            Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.timestamp_millis())
                .map_err(|_| "expected an RFC 3339 time with an offset"),
            _ => Err("expected an RFC 3339 time string"),
        },
    }
}

#[cfg(test)]
mod tests;
