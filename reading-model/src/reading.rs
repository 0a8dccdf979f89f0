//! The normalized observation and the batch that carries readings from a gateway to ingest.

use serde::{Deserialize, Serialize};

use crate::account::{AccountCode, GatewayId, MeterId};
use crate::code::{Category, EnergyCode};
use crate::quality::Quality;
use crate::quantity::Quantity;
use crate::unit::Unit;

/// Version of the batch wire format. Version 1: JSON object `{version, gateway, seq, readings}`.
/// New fields are added with `#[serde(default)]` so older gateways keep working.
pub const WIRE_VERSION: u16 = 1;

/// One normalized observation. For consumption, `ts` is the end of the interval that `delta`
/// covers; `kgce` and `kgco2e` are of `delta`, computed with the factor named in `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// UTC, milliseconds since the Unix epoch.
    pub ts: i64,
    pub account: AccountCode,
    pub meter: MeterId,
    pub category: Category,
    pub item: EnergyCode,
    pub quantity: Quantity,
    pub unit: Unit,
    /// The value as read, in the canonical unit.
    pub value: f64,
    /// Consumption since the previous good reading (cumulative quantities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kgce: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kgco2e: Option<f64>,
    /// Id of the carbon factor used for `kgco2e`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
    #[serde(default = "good")]
    pub quality: Quality,
}

/// The largest |value| a reading may carry, in its canonical unit: storage keeps it to 0.001
/// unit as an integer below 2^53 (a register of a billion MWh still fits).
pub const MAX_ABS_QUANTITY: f64 = 1e12;
/// The largest |delta| of one reading: storage keeps it to 1e-6 unit as an integer below 2^53
/// (a GWh in one interval still fits).
pub const MAX_ABS_DELTA: f64 = 1e9;
/// The largest |kgce| and |kgco2e| of one reading: storage keeps them to 1e-7 kg as integers
/// below 2^53 (100 kt of coal in one interval is far past any meter).
pub const MAX_ABS_KG: f64 = 1e8;

fn good() -> Quality {
    Quality::Good
}

/// A problem with one reading of a batch: which row, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("readings[{row}].{field}: {message}")]
pub struct ReadingError {
    pub row: usize,
    pub field: &'static str,
    pub message: String,
}

impl Reading {
    /// Checks what the types cannot: finite numbers, canonical units, codes that agree.
    pub fn check(&self, row: usize) -> Result<(), ReadingError> {
        let err = |field, message: String| {
            Err(ReadingError {
                row,
                field,
                message,
            })
        };
        if self.item.category() != self.category {
            return err(
                "item",
                format!("{} is not an item of category {}", self.item, self.category),
            );
        }
        if self.unit != self.quantity.canonical_unit() {
            return err(
                "unit",
                format!(
                    "{} is stored in {}, not {}",
                    self.quantity,
                    self.quantity.canonical_unit(),
                    self.unit
                ),
            );
        }
        for (field, v, max) in [
            ("value", Some(self.value), MAX_ABS_QUANTITY),
            ("delta", self.delta, MAX_ABS_DELTA),
            ("kgce", self.kgce, MAX_ABS_KG),
            ("kgco2e", self.kgco2e, MAX_ABS_KG),
        ] {
            match v {
                Some(v) if !v.is_finite() => {
                    return err(field, format!("{v} is not a finite number"));
                }
                Some(v) if v.abs() >= max => {
                    return err(field, format!("{v} is not below {max:e} in magnitude"));
                }
                _ => {}
            }
        }
        if self.delta.is_some() && !self.quantity.is_cumulative() {
            return err(
                "delta",
                format!("{} is not cumulative and has no delta", self.quantity),
            );
        }
        // Year 2000 .. 2200: a clock at zero or a seconds/ms mix-up is caught here.
        if !(946_684_800_000..7_258_118_400_000).contains(&self.ts) {
            return err(
                "ts",
                format!("{} ms is not a plausible UTC timestamp", self.ts),
            );
        }
        Ok(())
    }
}

/// Readings from one gateway, numbered by a sequence that only increases within one `epoch`
/// of the gateway's spool, so a retried batch is recognised by (gateway, epoch, seq).
///
/// The epoch names one life of a gateway's numbering: a gateway that starts over (an empty
/// spool under its old id) starts a new epoch, and its seq may start again at 0. A batch without
/// an epoch (gateways before it, third-party clients) is numbered per gateway across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub gateway: GatewayId,
    /// The sender's numbering epoch, any u64 (the jieneng gateway's stay below 2^53, so any JSON
    /// reader sees them exactly); absent: the gateway's seq only ever increases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub seq: u64,
    pub readings: Vec<Reading>,
}

fn wire_version() -> u16 {
    WIRE_VERSION
}

impl Batch {
    pub fn new(gateway: GatewayId, seq: u64, readings: Vec<Reading>) -> Self {
        Self {
            version: WIRE_VERSION,
            gateway,
            epoch: None,
            seq,
            readings,
        }
    }

    /// The batch as numbered in `epoch`.
    #[must_use]
    pub fn with_epoch(self, epoch: Option<u64>) -> Self {
        Self { epoch, ..self }
    }

    /// Checks every reading; the first problem names its row and field.
    pub fn check(&self) -> Result<(), ReadingError> {
        if self.version != WIRE_VERSION {
            return Err(ReadingError {
                row: 0,
                field: "version",
                message: format!(
                    "unsupported batch version {} (this server speaks {WIRE_VERSION})",
                    self.version
                ),
            });
        }
        self.readings
            .iter()
            .enumerate()
            .try_for_each(|(row, r)| r.check(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            ts: 1_764_547_200_000,
            account: AccountCode::parse("110108A001").unwrap(),
            meter: MeterId::parse("main").unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse("01A10").unwrap(),
            quantity: Quantity::EnergyImport,
            unit: Unit::KilowattHour,
            value: 1234.5,
            delta: Some(1.5),
            kgce: Some(1.5 * 0.1229),
            kgco2e: Some(1.5 * 0.6361),
            factor: Some("mee-nbs-2023/grid/华北".into()),
            quality: Quality::Good,
        }
    }

    #[test]
    fn json_round_trip_and_fixture() {
        let b = Batch::new(GatewayId::parse("gw-1").unwrap(), 7, vec![reading()]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Batch>(&json).unwrap(), b);
        // A version-1 batch as a third-party client would write it keeps decoding.
        let fixture = r#"{"gateway":"gw-1","seq":1,"readings":[{"ts":1764547200000,
            "account":"110108A001","meter":"m1","category":"02","item":"02000",
            "quantity":"volume","unit":"m3","value":12.5}]}"#;
        let b: Batch = serde_json::from_str(fixture).unwrap();
        assert_eq!(b.version, 1);
        assert_eq!(b.readings[0].unit, Unit::CubicMetre);
        assert_eq!(b.readings[0].quality, Quality::Good);
        assert_eq!(b.epoch, None);
        b.check().unwrap();
    }

    #[test]
    fn the_epoch_is_optional_in_json_and_exact_as_a_u64() {
        let b = Batch::new(GatewayId::parse("gw-1").unwrap(), 7, vec![]);
        // Without an epoch the JSON is what it was before epochs.
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"version":1,"gateway":"gw-1","seq":7,"readings":[]}"#
        );
        let b = b.with_epoch(Some(u64::MAX));
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""epoch":18446744073709551615"#), "{json}");
        assert_eq!(serde_json::from_str::<Batch>(&json).unwrap(), b);
        let bad = r#"{"gateway":"gw","epoch":-1,"seq":1,"readings":[]}"#;
        assert!(serde_json::from_str::<Batch>(bad).is_err());
    }

    #[test]
    fn check_names_row_and_field() {
        let mut r = reading();
        r.item = EnergyCode::parse("02000").unwrap();
        let b = Batch::new(GatewayId::parse("gw").unwrap(), 1, vec![reading(), r]);
        let e = b.check().unwrap_err();
        assert_eq!((e.row, e.field), (1, "item"));
        assert_eq!(
            e.to_string(),
            "readings[1].item: 02000 is not an item of category 01"
        );

        let mut r = reading();
        r.unit = Unit::WattHour;
        assert_eq!(r.check(0).unwrap_err().field, "unit");
        let mut r = reading();
        r.value = f64::NAN;
        assert_eq!(r.check(0).unwrap_err().field, "value");
        let mut r = reading();
        r.ts = 1_764_547_200; // seconds, not ms
        assert_eq!(r.check(0).unwrap_err().field, "ts");
        let mut r = reading();
        r.quantity = Quantity::PowerActive;
        r.unit = Unit::Kilowatt;
        assert_eq!(r.check(0).unwrap_err().field, "delta");
    }

    #[test]
    fn unknown_fields_and_codes_are_rejected() {
        let bad = r#"{"gateway":"gw","seq":1,"readings":[],"extra":1}"#;
        assert!(serde_json::from_str::<Batch>(bad).is_err());
        let bad = r#"{"gateway":"gw","seq":1,"readings":[{"ts":1764547200000,"account":"11010A001",
            "meter":"m","category":"01","item":"01000","quantity":"energy_import","unit":"kWh","value":1}]}"#;
        let e = serde_json::from_str::<Batch>(bad).unwrap_err().to_string();
        assert!(e.contains("11010A001"), "{e}");
    }
}
