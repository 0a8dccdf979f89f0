//! What a reading measures.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CodeError;
use crate::unit::Unit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Quantity {
    /// Cumulative active energy imported (consumed), kWh.
    EnergyImport,
    /// Cumulative active energy exported (generated), kWh.
    EnergyExport,
    PowerActive,
    PowerReactive,
    PowerApparent,
    PowerFactor,
    Voltage,
    Current,
    Frequency,
    /// Cumulative volume (water, gas), m³.
    Volume,
    /// Cumulative heat delivered, GJ.
    Heat,
    /// Cumulative cooling delivered, GJ.
    Cooling,
    /// Cumulative mass (coal, LPG), kg.
    Mass,
    /// Instantaneous volume flow, m³/h.
    Flow,
    /// Instantaneous thermal power, kW.
    HeatPower,
    Temperature,
    /// Outdoor air temperature (a weather reading for baselines), °C.
    OutdoorTemperature,
}

const NAMES: &[(Quantity, &str)] = &[
    (Quantity::EnergyImport, "energy_import"),
    (Quantity::EnergyExport, "energy_export"),
    (Quantity::PowerActive, "power_active"),
    (Quantity::PowerReactive, "power_reactive"),
    (Quantity::PowerApparent, "power_apparent"),
    (Quantity::PowerFactor, "power_factor"),
    (Quantity::Voltage, "voltage"),
    (Quantity::Current, "current"),
    (Quantity::Frequency, "frequency"),
    (Quantity::Volume, "volume"),
    (Quantity::Heat, "heat"),
    (Quantity::Cooling, "cooling"),
    (Quantity::Mass, "mass"),
    (Quantity::Flow, "flow"),
    (Quantity::HeatPower, "heat_power"),
    (Quantity::Temperature, "temperature"),
    (Quantity::OutdoorTemperature, "outdoor_temperature"),
];

impl Quantity {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(q, _)| *q == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    pub fn parse(s: &str) -> Result<Self, CodeError> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(q, _)| *q)
            .ok_or_else(|| CodeError::Quantity(s.to_owned()))
    }

    /// Cumulative quantities are counters: consumption is the delta between readings.
    pub fn is_cumulative(self) -> bool {
        matches!(
            self,
            Self::EnergyImport
                | Self::EnergyExport
                | Self::Volume
                | Self::Heat
                | Self::Cooling
                | Self::Mass
        )
    }

    /// Whether the delta of this quantity is consumption that counts toward kgce and carbon.
    /// Exported energy is generation, not consumption.
    pub fn is_consumption(self) -> bool {
        self.is_cumulative() && self != Self::EnergyExport
    }

    /// The canonical unit this quantity is stored in.
    pub fn canonical_unit(self) -> Unit {
        match self {
            Self::EnergyImport | Self::EnergyExport => Unit::KilowattHour,
            Self::PowerActive | Self::HeatPower => Unit::Kilowatt,
            Self::PowerReactive => Unit::Kilovar,
            Self::PowerApparent => Unit::KilovoltAmpere,
            Self::PowerFactor => Unit::One,
            Self::Voltage => Unit::Volt,
            Self::Current => Unit::Ampere,
            Self::Frequency => Unit::Hertz,
            Self::Volume => Unit::CubicMetre,
            Self::Heat | Self::Cooling => Unit::Gigajoule,
            Self::Mass => Unit::Kilogram,
            Self::Flow => Unit::CubicMetrePerHour,
            Self::Temperature | Self::OutdoorTemperature => Unit::Celsius,
        }
    }

    pub fn all() -> impl Iterator<Item = Quantity> {
        NAMES.iter().map(|(q, _)| *q)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Quantity {
    type Error = CodeError;
    fn try_from(s: String) -> Result<Self, CodeError> {
        Self::parse(&s)
    }
}

impl From<Quantity> for String {
    fn from(q: Quantity) -> String {
        q.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_units_are_canonical() {
        for q in Quantity::all() {
            assert_eq!(Quantity::parse(q.name()).unwrap(), q);
            assert!(q.canonical_unit().is_canonical(), "{q}");
        }
        assert!(Quantity::EnergyImport.is_consumption());
        assert!(!Quantity::EnergyExport.is_consumption());
        assert!(!Quantity::PowerActive.is_cumulative());
    }
}
