//! One decoded number: which channel of the device, what it measures, its value in the canonical
//! unit, and when the device says it was measured.

use std::borrow::Cow;

use reading_model::{Quantity, Unit, UnitError};
use serde::{Deserialize, Serialize};

/// What span of time a value covers. Firmwares publish several energy figures side by side
/// (Tasmota: `Total`, `Today`, `Yesterday`, `Period`); only `Total` is a counter to compute
/// interval consumption from, so the others are labelled rather than dropped or confused with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A gauge: the value at `ts` (power, voltage, current …).
    Instant,
    /// A cumulative counter since the device's (or meter's) last reset.
    Total,
    /// Energy since local midnight; resets daily.
    Today,
    /// Energy of the previous local day.
    Yesterday,
    /// Energy since the device's previous telemetry message.
    Period,
}

impl Basis {
    /// `Total` for cumulative quantities, `Instant` for the rest.
    pub fn default_for(quantity: Quantity) -> Self {
        if quantity.is_cumulative() {
            Self::Total
        } else {
            Self::Instant
        }
    }
}

/// Why a number could not become a [`FirmwareValue`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
}

/// A value decoded from a firmware payload, in the canonical unit of its quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareValue {
    /// The part of the device the value belongs to, in the firmware's own terms: `"0"` for a
    /// whole Tasmota device and `"1"`, `"2"` … for its array channels, `"switch:0"` or
    /// `"em:0/a"` for Shelly, an ESPHome object id, a Sparkplug metric name. `Cow` so that the
    /// hot Tasmota path can use static strings without allocating.
    pub channel: Cow<'static, str>,
    pub quantity: Quantity,
    pub basis: Basis,
    /// Always `quantity.canonical_unit()`; carried so that a value can be printed or checked
    /// without looking it up.
    pub unit: Unit,
    pub value: f64,
    /// The device's own timestamp, UTC milliseconds, when the payload has one; otherwise the
    /// caller stamps the value with its receive time.
    pub ts_ms: Option<i64>,
}

impl FirmwareValue {
    /// Converts `value`, given in `from`, into `quantity`'s canonical unit.
    pub fn convert(
        channel: impl Into<Cow<'static, str>>,
        quantity: Quantity,
        basis: Basis,
        value: f64,
        from: Unit,
        ts_ms: Option<i64>,
    ) -> Result<Self, ValueError> {
        let unit = quantity.canonical_unit();
        let value = from.convert(value, unit)?;
        // A NaN or infinite reading is never a measurement; refusing it here means no decoder
        // can forward one by accident.
        if !value.is_finite() {
            return Err(ValueError::NotFinite(value));
        }
        Ok(Self {
            channel: channel.into(),
            quantity,
            basis,
            unit,
            value,
            ts_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_into_the_canonical_unit() {
        let v = FirmwareValue::convert(
            "switch:0",
            Quantity::EnergyImport,
            Basis::Total,
            1500.0,
            Unit::WattHour,
            Some(7),
        )
        .unwrap();
        assert_eq!(v.unit, Unit::KilowattHour);
        assert_eq!(v.value, 1.5);
        assert_eq!(v.channel, "switch:0");
    }

    #[test]
    fn refuses_other_dimensions_and_non_finite_values() {
        let e = FirmwareValue::convert(
            "0",
            Quantity::PowerActive,
            Basis::Instant,
            1.0,
            Unit::KilowattHour,
            None,
        );
        assert!(matches!(e, Err(ValueError::Unit(_))));
        let e = FirmwareValue::convert(
            "0",
            Quantity::PowerActive,
            Basis::Instant,
            f64::NAN,
            Unit::Watt,
            None,
        );
        assert!(matches!(e, Err(ValueError::NotFinite(_))));
        let e = FirmwareValue::convert(
            "0",
            Quantity::PowerActive,
            Basis::Instant,
            f64::MAX,
            Unit::Megawatt,
            None,
        );
        assert!(matches!(e, Err(ValueError::NotFinite(_))));
    }

    #[test]
    fn basis_follows_the_quantity() {
        assert_eq!(Basis::default_for(Quantity::EnergyExport), Basis::Total);
        assert_eq!(Basis::default_for(Quantity::Voltage), Basis::Instant);
    }
}
