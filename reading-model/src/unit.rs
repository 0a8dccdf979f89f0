//! Units as read from devices, and the canonical unit each is stored in.
//!
//! Every value is converted once, at normalization, into the canonical unit of its dimension
//! (kWh, kW, V, A, m³, GJ, °C …); storage and reports never see another unit.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown unit {0:?}")]
    Unknown(String),
    #[error("cannot convert {from} to {to}: different dimensions")]
    Dimension { from: Unit, to: Unit },
}

/// A unit of measure. `canonical()` tells the unit values of this dimension are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Unit {
    // Electrical energy (and thermal energy metered in kWh).
    WattHour,
    KilowattHour,
    MegawattHour,
    // Thermal energy.
    Megajoule,
    Gigajoule,
    /// Thermal kWh (heat and cooling meters that count in kWh).
    KilowattHourThermal,
    MegawattHourThermal,
    // Power.
    Watt,
    Kilowatt,
    Megawatt,
    Var,
    Kilovar,
    VoltAmpere,
    KilovoltAmpere,
    // Electrical.
    Volt,
    Ampere,
    Milliampere,
    Hertz,
    /// Dimensionless (power factor, ratios).
    One,
    // Volume and flow.
    Litre,
    CubicMetre,
    CubicMetrePerHour,
    LitrePerHour,
    // Mass.
    Kilogram,
    Tonne,
    // Other.
    Celsius,
    KilogramCoalEquivalent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    ElectricEnergy,
    ThermalEnergy,
    ActivePower,
    ReactivePower,
    ApparentPower,
    Voltage,
    Current,
    Frequency,
    Ratio,
    Volume,
    VolumeFlow,
    Mass,
    Temperature,
    CoalEquivalent,
}

const NAMES: &[(Unit, &str)] = &[
    (Unit::WattHour, "Wh"),
    (Unit::KilowattHour, "kWh"),
    (Unit::MegawattHour, "MWh"),
    (Unit::Megajoule, "MJ"),
    (Unit::Gigajoule, "GJ"),
    (Unit::KilowattHourThermal, "kWh_th"),
    (Unit::MegawattHourThermal, "MWh_th"),
    (Unit::Watt, "W"),
    (Unit::Kilowatt, "kW"),
    (Unit::Megawatt, "MW"),
    (Unit::Var, "var"),
    (Unit::Kilovar, "kvar"),
    (Unit::VoltAmpere, "VA"),
    (Unit::KilovoltAmpere, "kVA"),
    (Unit::Volt, "V"),
    (Unit::Ampere, "A"),
    (Unit::Milliampere, "mA"),
    (Unit::Hertz, "Hz"),
    (Unit::One, "1"),
    (Unit::Litre, "L"),
    (Unit::CubicMetre, "m³"),
    (Unit::CubicMetrePerHour, "m³/h"),
    (Unit::LitrePerHour, "L/h"),
    (Unit::Kilogram, "kg"),
    (Unit::Tonne, "t"),
    (Unit::Celsius, "°C"),
    (Unit::KilogramCoalEquivalent, "kgce"),
];

/// Spellings accepted besides the canonical symbol (config files, firmware payloads).
const ALIASES: &[(&str, Unit)] = &[
    ("wh", Unit::WattHour),
    ("kwh", Unit::KilowattHour),
    ("mwh", Unit::MegawattHour),
    ("m3", Unit::CubicMetre),
    ("m^3", Unit::CubicMetre),
    ("m3/h", Unit::CubicMetrePerHour),
    ("l", Unit::Litre),
    ("degc", Unit::Celsius),
    ("c", Unit::Celsius),
    ("℃", Unit::Celsius),
    ("kwh(th)", Unit::KilowattHourThermal),
    ("mwh(th)", Unit::MegawattHourThermal),
    ("", Unit::One),
    ("pf", Unit::One),
    ("mj", Unit::Megajoule),
    ("gj", Unit::Gigajoule),
];

impl Unit {
    pub fn all() -> impl Iterator<Item = Unit> {
        NAMES.iter().map(|(u, _)| *u)
    }

    pub fn symbol(self) -> &'static str {
        NAMES
            .iter()
            .find(|(u, _)| *u == self)
            .map(|(_, s)| *s)
            .unwrap_or("?")
    }

    pub fn parse(s: &str) -> Result<Self, UnitError> {
        if let Some((u, _)) = NAMES.iter().find(|(_, n)| *n == s) {
            return Ok(*u);
        }
        let lower = s.trim().to_ascii_lowercase();
        ALIASES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, u)| *u)
            .ok_or_else(|| UnitError::Unknown(s.to_owned()))
    }

    fn dimension(self) -> Dimension {
        use Unit::*;
        match self {
            WattHour | KilowattHour | MegawattHour => Dimension::ElectricEnergy,
            Megajoule | Gigajoule | KilowattHourThermal | MegawattHourThermal => {
                Dimension::ThermalEnergy
            }
            Watt | Kilowatt | Megawatt => Dimension::ActivePower,
            Var | Kilovar => Dimension::ReactivePower,
            VoltAmpere | KilovoltAmpere => Dimension::ApparentPower,
            Volt => Dimension::Voltage,
            Ampere | Milliampere => Dimension::Current,
            Hertz => Dimension::Frequency,
            One => Dimension::Ratio,
            Litre | CubicMetre => Dimension::Volume,
            CubicMetrePerHour | LitrePerHour => Dimension::VolumeFlow,
            Kilogram | Tonne => Dimension::Mass,
            Celsius => Dimension::Temperature,
            KilogramCoalEquivalent => Dimension::CoalEquivalent,
        }
    }

    /// The canonical unit of this unit's dimension and the factor to multiply a value by.
    pub fn canonical(self) -> (Unit, f64) {
        use Unit::*;
        match self {
            WattHour => (KilowattHour, 1e-3),
            MegawattHour => (KilowattHour, 1e3),
            Megajoule => (Gigajoule, 1e-3),
            // 1 kWh = 3.6 MJ.
            KilowattHourThermal => (Gigajoule, 3.6e-3),
            MegawattHourThermal => (Gigajoule, 3.6),
            Watt => (Kilowatt, 1e-3),
            Megawatt => (Kilowatt, 1e3),
            Var => (Kilovar, 1e-3),
            VoltAmpere => (KilovoltAmpere, 1e-3),
            Milliampere => (Ampere, 1e-3),
            Litre => (CubicMetre, 1e-3),
            LitrePerHour => (CubicMetrePerHour, 1e-3),
            Tonne => (Kilogram, 1e3),
            other => (other, 1.0),
        }
    }

    pub fn is_canonical(self) -> bool {
        self.canonical().0 == self
    }

    /// Converts `value` in `self` to `to`; both must measure the same dimension.
    pub fn convert(self, value: f64, to: Unit) -> Result<f64, UnitError> {
        if self == to {
            return Ok(value);
        }
        if self.dimension() != to.dimension() {
            return Err(UnitError::Dimension { from: self, to });
        }
        let (_, f_from) = self.canonical();
        let (_, f_to) = to.canonical();
        Ok(value * f_from / f_to)
    }

    /// Converts `value` to this dimension's canonical unit.
    pub fn to_canonical(self, value: f64) -> (f64, Unit) {
        let (unit, factor) = self.canonical();
        if factor == 1.0 {
            (value, unit)
        } else {
            (value * factor, unit)
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl TryFrom<String> for Unit {
    type Error = UnitError;
    fn try_from(s: String) -> Result<Self, UnitError> {
        Self::parse(&s)
    }
}

impl From<Unit> for String {
    fn from(u: Unit) -> String {
        u.symbol().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: f64, from: &str, to: &str) -> f64 {
        Unit::parse(from)
            .unwrap()
            .convert(v, Unit::parse(to).unwrap())
            .unwrap()
    }

    #[test]
    fn electrical_energy() {
        assert_eq!(conv(1500.0, "Wh", "kWh"), 1.5);
        assert_eq!(conv(2.5, "MWh", "kWh"), 2500.0);
        assert_eq!(conv(1.0, "MWh", "Wh"), 1e6);
    }

    #[test]
    fn volume() {
        assert_eq!(conv(2500.0, "L", "m³"), 2.5);
        assert_eq!(conv(1.0, "m3", "L"), 1000.0);
    }

    #[test]
    fn thermal_energy() {
        // 1 GJ = 1000 MJ; 1 kWh = 3.6 MJ, so 1 GJ = 277.77… kWh(th).
        assert_eq!(conv(1000.0, "MJ", "GJ"), 1.0);
        assert!((conv(1000.0, "kWh_th", "GJ") - 3.6).abs() < 1e-12);
        assert!((conv(1.0, "GJ", "kWh_th") - 277.777_777_777_777_8).abs() < 1e-9);
        assert!((conv(1.0, "MWh_th", "MJ") - 3600.0).abs() < 1e-9);
    }

    #[test]
    fn power_and_more() {
        assert_eq!(conv(1234.0, "W", "kW"), 1.234);
        assert_eq!(conv(1.0, "t", "kg"), 1000.0);
        assert_eq!(conv(250.0, "mA", "A"), 0.25);
    }

    #[test]
    fn dimensions_do_not_mix() {
        // Electrical and thermal kWh are kept apart on purpose: a heat meter stores GJ.
        assert!(Unit::KilowattHour.convert(1.0, Unit::Gigajoule).is_err());
        assert!(Unit::Kilowatt.convert(1.0, Unit::KilowattHour).is_err());
    }

    #[test]
    fn symbols_round_trip() {
        for (u, s) in NAMES {
            assert_eq!(Unit::parse(s).unwrap(), *u);
        }
        assert_eq!(Unit::parse("kwh").unwrap(), Unit::KilowattHour);
        assert!(Unit::parse("furlong").is_err());
    }
}
