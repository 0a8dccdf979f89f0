//! Tasmota energy telemetry: the `ENERGY` object of `tele/<topic>/SENSOR` (every TelePeriod) and
//! of the `StatusSNS` answer on `stat/<topic>/STATUS10`.
//!
//! ```json
//! {"Time":"2023-05-19T20:52:56","ENERGY":{"TotalStartTime":"2022-03-20T15:20:48","Total":514.153,
//!  "Yesterday":1.495,"Today":0.537,"Period":0,"Power":56,"ApparentPower":92,"ReactivePower":73,
//!  "Factor":0.61,"Voltage":234,"Current":0.392}}
//! ```
//!
//! Units: `Total`, `Today`, `Yesterday`, `ExportActive` kWh; `Period` Wh; `Power` W;
//! `ApparentPower` VA; `ReactivePower` var; `Voltage` V; `Current` A; `Frequency` Hz; `Factor` 1.
//!
//! Channels: multi-channel devices publish arrays (`"Total":[2.813,0.254]`, `"Power":[52,5]`)
//! whose elements become channels `"1"`, `"2"` … — Tasmota's own 1-based relay numbering
//! (`POWER1`, `POWER2`). A scalar belongs to the device as a whole and becomes channel `"0"`: on
//! a multi-channel device a scalar `Voltage` is the one supply voltage, and a scalar `Total` is
//! the sum of the channels, so neither may be copied onto the numbered channels.
//!
//! `Time` is the device's local time without a zone (unless `SetOption52` appends one), so the
//! caller supplies the device's UTC offset. This is the hot path of the MQTT source: the payload
//! is parsed into borrowed structs, unknown keys are skipped without allocating, channel names are
//! static strings, and [`decode_into`] appends to a caller-owned `Vec`, so a steady stream of
//! messages allocates nothing.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use reading_model::{Quantity, Unit};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::error::DecodeError;
use crate::value::{Basis, FirmwareValue};

/// The most array elements accepted per `ENERGY` key. Tasmota's energy driver handles at most
/// 8 phases or channels [M: `ENERGY_MAX_PHASES`]; a longer array is refused, not truncated.
pub const MAX_CHANNELS: usize = 8;

const CHANNELS: [&str; MAX_CHANNELS + 1] = ["0", "1", "2", "3", "4", "5", "6", "7", "8"];

/// Which Tasmota message a topic carries, judged by its last level so that a reordered
/// FullTopic (`compteur/tele/SENSOR`) still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `tele/<topic>/SENSOR`, sent every TelePeriod.
    Sensor,
    /// `stat/<topic>/STATUS10`, the answer to `Status 10`.
    Status10,
}

impl Message {
    pub fn of_topic(topic: &str) -> Option<Self> {
        match topic.rsplit('/').next() {
            Some("SENSOR") => Some(Self::Sensor),
            Some("STATUS10") => Some(Self::Status10),
            _ => None,
        }
    }
}

/// The device's `%topic%` under the default FullTopic `%prefix%/%topic%/`, e.g. `plug1` for
/// `tele/plug1/SENSOR`; `None` for other layouts, where the caller's config names the device.
pub fn device_topic(topic: &str) -> Option<&str> {
    let rest = topic
        .strip_prefix("tele/")
        .or_else(|| topic.strip_prefix("stat/"))?;
    rest.strip_suffix("/SENSOR")
        .or_else(|| rest.strip_suffix("/STATUS10"))
        .filter(|t| !t.is_empty())
}

/// Decodes one Tasmota message into a new `Vec`. See [`decode_into`].
pub fn decode(
    topic: &str,
    payload: &[u8],
    utc_offset: FixedOffset,
) -> Result<Vec<FirmwareValue>, DecodeError> {
    let mut out = Vec::with_capacity(12);
    decode_into(topic, payload, utc_offset, &mut out)?;
    Ok(out)
}

/// Decodes one Tasmota `SENSOR` or `STATUS10` message and appends its values to `out`, returning
/// how many it appended. `utc_offset` is the device's offset from UTC (China: +08:00) and turns
/// its zone-less `Time` into UTC. A message without an `ENERGY` object (a temperature sensor's
/// telemetry, say) appends nothing. On error `out` is left as it was.
pub fn decode_into(
    topic: &str,
    payload: &[u8],
    utc_offset: FixedOffset,
    out: &mut Vec<FirmwareValue>,
) -> Result<usize, DecodeError> {
    if Message::of_topic(topic).is_none() {
        return Err(DecodeError::topic(
            topic,
            "a Tasmota …/SENSOR or …/STATUS10 topic",
        ));
    }
    let wire: Wire<'_> =
        serde_json::from_slice(payload).map_err(|e| DecodeError::json(topic, payload, &e))?;
    // STATUS10 nests the telemetry under StatusSNS; SENSOR has it at the top.
    let (sensor, base) = match wire.status_sns {
        Some(s) => (s, "/StatusSNS"),
        None => (
            Sensor {
                time: wire.time,
                energy: wire.energy,
            },
            "",
        ),
    };
    let ts_ms = match &sensor.time {
        Some(t) => Some(
            parse_time(t, utc_offset)
                .map_err(|reason| DecodeError::field(topic, format!("{base}/Time"), reason))?,
        ),
        None => None,
    };
    let Some(energy) = sensor.energy else {
        return Ok(0);
    };
    let start = out.len();
    let result = push_energy(&energy, ts_ms, out);
    match result {
        Ok(()) => Ok(out.len() - start),
        Err((key, source)) => {
            out.truncate(start);
            Err(DecodeError::value(
                topic,
                format!("{base}/ENERGY/{key}"),
                source,
            ))
        }
    }
}

/// How each `ENERGY` key maps onto the reading model; the order is the order of [`Energy::keys`].
const FIELDS: [(&str, Quantity, Basis, Unit); 12] = [
    (
        "Total",
        Quantity::EnergyImport,
        Basis::Total,
        Unit::KilowattHour,
    ),
    (
        "Today",
        Quantity::EnergyImport,
        Basis::Today,
        Unit::KilowattHour,
    ),
    (
        "Yesterday",
        Quantity::EnergyImport,
        Basis::Yesterday,
        Unit::KilowattHour,
    ),
    // Wh, unlike its kWh neighbours [M for the unit].
    (
        "Period",
        Quantity::EnergyImport,
        Basis::Period,
        Unit::WattHour,
    ),
    (
        "ExportActive",
        Quantity::EnergyExport,
        Basis::Total,
        Unit::KilowattHour,
    ),
    ("Power", Quantity::PowerActive, Basis::Instant, Unit::Watt),
    (
        "ApparentPower",
        Quantity::PowerApparent,
        Basis::Instant,
        Unit::VoltAmpere,
    ),
    (
        "ReactivePower",
        Quantity::PowerReactive,
        Basis::Instant,
        Unit::Var,
    ),
    ("Factor", Quantity::PowerFactor, Basis::Instant, Unit::One),
    ("Voltage", Quantity::Voltage, Basis::Instant, Unit::Volt),
    ("Current", Quantity::Current, Basis::Instant, Unit::Ampere),
    (
        "Frequency",
        Quantity::Frequency,
        Basis::Instant,
        Unit::Hertz,
    ),
];

fn push_energy(
    energy: &Energy,
    ts_ms: Option<i64>,
    out: &mut Vec<FirmwareValue>,
) -> Result<(), (&'static str, crate::ValueError)> {
    for ((key, quantity, basis, unit), num) in FIELDS.iter().zip(energy.keys()) {
        let push = |out: &mut Vec<FirmwareValue>, channel: &'static str, v: f64| {
            FirmwareValue::convert(Cow::Borrowed(channel), *quantity, *basis, v, *unit, ts_ms)
                .map(|fv| out.push(fv))
                .map_err(|e| (*key, e))
        };
        match num {
            None => {}
            Some(Num::One(v)) => push(out, CHANNELS[0], *v)?,
            Some(Num::Many { vals, len }) => {
                // Channels "1".."n": element i of the array is Tasmota's channel i+1.
                for (v, channel) in vals.iter().zip(&CHANNELS[1..]).take(usize::from(*len)) {
                    if let Some(v) = v {
                        push(out, channel, *v)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Tasmota's `Time`: local time without a zone, or with one when `SetOption52` is on.
fn parse_time(text: &str, utc_offset: FixedOffset) -> Result<i64, &'static str> {
    if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        // A fixed offset maps every local time to exactly one instant.
        return utc_offset
            .from_local_datetime(&naive)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or("local time out of range");
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| "expected a time like 2023-05-19T20:52:56")
}

/// The top level of a SENSOR or STATUS10 payload. Unknown keys (other sensors, `TotalStartTime`)
/// are skipped by serde without being materialized.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "Time", borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(rename = "ENERGY", default)]
    energy: Option<Energy>,
    #[serde(rename = "StatusSNS", borrow, default)]
    status_sns: Option<Sensor<'a>>,
}

#[derive(Deserialize)]
struct Sensor<'a> {
    #[serde(rename = "Time", borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(rename = "ENERGY", default)]
    energy: Option<Energy>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Energy {
    #[serde(default)]
    total: Option<Num>,
    #[serde(default)]
    today: Option<Num>,
    #[serde(default)]
    yesterday: Option<Num>,
    #[serde(default)]
    period: Option<Num>,
    #[serde(default)]
    export_active: Option<Num>,
    #[serde(default)]
    power: Option<Num>,
    #[serde(default)]
    apparent_power: Option<Num>,
    #[serde(default)]
    reactive_power: Option<Num>,
    #[serde(default)]
    factor: Option<Num>,
    #[serde(default)]
    voltage: Option<Num>,
    #[serde(default)]
    current: Option<Num>,
    #[serde(default)]
    frequency: Option<Num>,
}

impl Energy {
    /// The keys in the order of [`FIELDS`].
    fn keys(&self) -> [&Option<Num>; 12] {
        [
            &self.total,
            &self.today,
            &self.yesterday,
            &self.period,
            &self.export_active,
            &self.power,
            &self.apparent_power,
            &self.reactive_power,
            &self.factor,
            &self.voltage,
            &self.current,
            &self.frequency,
        ]
    }
}

/// A scalar or an array of numbers, held without allocating. A `null` element is a channel
/// without a reading and is skipped.
#[derive(Debug, Clone, Copy)]
enum Num {
    One(f64),
    Many {
        vals: [Option<f64>; MAX_CHANNELS],
        len: u8,
    },
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number or an array of at most {MAX_CHANNELS} numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::One(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::One(v as f64))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::One(v as f64))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        let mut vals = [None; MAX_CHANNELS];
        let mut len = 0u8;
        for slot in vals.iter_mut() {
            match seq.next_element::<Option<f64>>()? {
                Some(v) => {
                    *slot = v;
                    len += 1;
                }
                None => return Ok(Num::Many { vals, len }),
            }
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format_args!(
                "more than {MAX_CHANNELS} channels in one array"
            )));
        }
        Ok(Num::Many { vals, len })
    }
}

#[cfg(test)]
mod tests;
