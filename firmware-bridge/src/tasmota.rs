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
//! caller supplies the device's UTC offset. This is the hot path of the MQTT source: a streaming
//! serde visitor matches keys without allocating, skips unknown ones without materializing them,
//! and pushes values with static channel names straight into a caller-owned `Vec`
//! ([`decode_into`]), so a steady stream of messages allocates nothing (short of a `Time` with
//! JSON escapes). About 1.4 M messages/s on one core of the build machine, in release.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use reading_model::{Quantity, Unit};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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
    let start = out.len();
    let mut sink = Sink {
        out,
        time: None,
        status_time: None,
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de
        .deserialize_map(MessageVisitor {
            sink: &mut sink,
            in_status: false,
        })
        .and_then(|()| de.end());
    if let Err(e) = parsed {
        let err = match sink.failed.take() {
            Some((key, in_status, source)) => {
                DecodeError::value(topic, energy_pointer(in_status, key), source)
            }
            None => DecodeError::json(topic, payload, &e),
        };
        sink.out.truncate(start);
        return Err(err);
    }
    // STATUS10 nests the telemetry under StatusSNS; SENSOR has it at the top.
    let (time, base) = match (sink.status_time.take(), sink.time.take()) {
        (Some(t), _) => (Some(t), "/StatusSNS"),
        (None, t) => (t, ""),
    };
    if let Some(t) = time {
        match parse_time(&t, utc_offset) {
            Ok(ts) => {
                // The values were pushed as they were parsed, before `Time` was known to be
                // valid (JSON keys have no order); stamp them now.
                for v in &mut sink.out[start..] {
                    v.ts_ms = Some(ts);
                }
            }
            Err(reason) => {
                sink.out.truncate(start);
                return Err(DecodeError::field(topic, format!("{base}/Time"), reason));
            }
        }
    }
    Ok(sink.out.len() - start)
}

fn energy_pointer(in_status: bool, key: &str) -> String {
    let base = if in_status { "/StatusSNS" } else { "" };
    format!("{base}/ENERGY/{key}")
}

/// How each `ENERGY` key maps onto the reading model.
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

/// Tasmota's `Time`: local time without a zone, or with one when `SetOption52` is on.
fn parse_time(text: &str, utc_offset: FixedOffset) -> Result<i64, &'static str> {
    // The plain `YYYY-MM-DDThh:mm:ss` form is nearly every message; chrono's format-string
    // parser costs more than the rest of the decode, so that form is read by hand.
    if let Some(naive) = plain_local_time(text.as_bytes()) {
        let utc_ms = naive.and_utc().timestamp_millis();
        return Ok(utc_ms - i64::from(utc_offset.local_minus_utc()) * 1000);
    }
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

/// `YYYY-MM-DDThh:mm:ss` exactly, or `None` (for chrono to try other forms).
fn plain_local_time(b: &[u8]) -> Option<NaiveDateTime> {
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
    ] = *b
    else {
        return None;
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| u32::from(c - b'0'));
    let two = |a: u8, b: u8| Some(digit(a)? * 10 + digit(b)?);
    let year = two(y0, y1)? * 100 + two(y2, y3)?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, two(m0, m1)?, two(d0, d1)?)?.and_hms_opt(
        two(h0, h1)?,
        two(n0, n1)?,
        two(s0, s1)?,
    )
}

/// Where the streaming parse puts what it finds. Values go straight into the caller's `Vec`
/// as the parser meets them — materializing the `ENERGY` object first would move a
/// kilobyte-sized struct around per message, which profiling showed to be a quarter of the time.
struct Sink<'o, 'de> {
    out: &'o mut Vec<FirmwareValue>,
    time: Option<Cow<'de, str>>,
    status_time: Option<Cow<'de, str>>,
    /// A value the reading model refused: (key, inside StatusSNS, why). The parse is aborted
    /// with a serde error, and this turns it back into a [`DecodeError::Value`].
    failed: Option<(&'static str, bool, crate::ValueError)>,
}

impl Sink<'_, '_> {
    fn push(
        &mut self,
        field: usize,
        channel: usize,
        v: f64,
        in_status: bool,
    ) -> Result<(), &'static str> {
        let Some((key, quantity, basis, unit)) = FIELDS.get(field) else {
            return Err("unknown field");
        };
        let Some(channel) = CHANNELS.get(channel) else {
            return Err("too many channels");
        };
        match FirmwareValue::convert(Cow::Borrowed(*channel), *quantity, *basis, v, *unit, None) {
            Ok(fv) => {
                self.out.push(fv);
                Ok(())
            }
            Err(e) => {
                self.failed = Some((key, in_status, e));
                Err("value refused")
            }
        }
    }
}

/// A top-level key the decoder cares about, matched without allocating.
enum TopKey {
    Time,
    Energy,
    StatusSns,
    Other,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<TopKey, E> {
                Ok(match k {
                    "Time" => TopKey::Time,
                    "ENERGY" => TopKey::Energy,
                    "StatusSNS" => TopKey::StatusSns,
                    _ => TopKey::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The index in [`FIELDS`] of an `ENERGY` key, or `None` for keys not decoded.
struct EnergyKey(Option<usize>);

impl<'de> Deserialize<'de> for EnergyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnergyKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<EnergyKey, E> {
                Ok(EnergyKey(FIELDS.iter().position(|(name, ..)| *name == k)))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A SENSOR payload, or the `StatusSNS` object of a STATUS10 answer.
struct MessageVisitor<'s, 'o, 'de> {
    sink: &'s mut Sink<'o, 'de>,
    in_status: bool,
}

impl<'de> Visitor<'de> for MessageVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Tasmota telemetry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = [false; 3];
        let mut once = |i: usize, name: &str| -> Result<(), A::Error> {
            match seen.get_mut(i) {
                Some(s) if *s => Err(de::Error::custom(format_args!("duplicate key `{name}`"))),
                Some(s) => {
                    *s = true;
                    Ok(())
                }
                None => Ok(()),
            }
        };
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Time => {
                    once(0, "Time")?;
                    let t = map.next_value_seed(TimeSeed)?;
                    if self.in_status {
                        self.sink.status_time = t;
                    } else {
                        self.sink.time = t;
                    }
                }
                TopKey::Energy => {
                    once(1, "ENERGY")?;
                    map.next_value_seed(EnergySeed {
                        sink: &mut *self.sink,
                        in_status: self.in_status,
                    })?;
                }
                // One level only: STATUS10 has no StatusSNS inside StatusSNS.
                TopKey::StatusSns if !self.in_status => {
                    once(2, "StatusSNS")?;
                    map.next_value_seed(MessageSeed {
                        sink: &mut *self.sink,
                    })?;
                }
                TopKey::StatusSns | TopKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `StatusSNS` value: an object like a SENSOR payload, or `null`.
struct MessageSeed<'s, 'o, 'de> {
    sink: &'s mut Sink<'o, 'de>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(MessageVisitor {
            sink: self.sink,
            in_status: true,
        })
    }
}

/// `Time`: a string, borrowed from the payload when it has no escapes, or `null`.
struct TimeSeed;

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `ENERGY` object (or `null`).
struct EnergySeed<'s, 'o, 'de> {
    sink: &'s mut Sink<'o, 'de>,
    in_status: bool,
}

impl<'de> DeserializeSeed<'de> for EnergySeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnergySeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ENERGY object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = 0u16;
        while let Some(EnergyKey(field)) = map.next_key()? {
            let Some(field) = field else {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            };
            let bit = 1u16 << field;
            if seen & bit != 0 {
                let name = FIELDS.get(field).map_or("?", |f| f.0);
                return Err(de::Error::custom(format_args!("duplicate key `{name}`")));
            }
            seen |= bit;
            map.next_value_seed(NumSeed {
                sink: &mut *self.sink,
                field,
                in_status: self.in_status,
            })?;
        }
        Ok(())
    }
}

/// One `ENERGY` value: a number (the device, channel 0), an array of numbers (channels 1..n,
/// `null` elements skipped) or `null`.
struct NumSeed<'s, 'o, 'de> {
    sink: &'s mut Sink<'o, 'de>,
    field: usize,
    in_status: bool,
}

impl<'de> DeserializeSeed<'de> for NumSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl NumSeed<'_, '_, '_> {
    fn one<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink
            .push(self.field, 0, v, self.in_status)
            .map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for NumSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number or an array of at most {MAX_CHANNELS} numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.one(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.one(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.one(v as f64)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut channel = 0;
        while let Some(v) = seq.next_element::<Option<f64>>()? {
            channel += 1;
            if channel > MAX_CHANNELS {
                return Err(de::Error::custom(format_args!(
                    "more than {MAX_CHANNELS} channels in one array"
                )));
            }
            if let Some(v) = v {
                self.sink
                    .push(self.field, channel, v, self.in_status)
                    .map_err(de::Error::custom)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
