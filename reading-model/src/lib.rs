//! The shared vocabulary of jieneng: who consumed (account, meter), what (category and item codes
//! of the 2008 building-energy guideline), how much (quantity, canonical unit, value), how good
//! (quality), and what it means in standard coal and carbon (versioned factor tables).
//!
//! Data enters as values decoded by `device-profiles` / `firmware-bridge` and leaves as [`Batch`]es
//! on the wire to ingest and as rows in storage. This crate does no I/O: factor tables are
//! embedded data (`data/*.toml`) parsed from strings, and config overrides are passed in.

pub mod account;
pub mod code;
pub mod factor;
pub mod quality;
pub mod quantity;
pub mod reading;
pub mod time;
pub mod unit;

pub use account::{AccountCode, BuildingClass, GatewayId, MeterId};
pub use code::{Category, EnergyCode, ItemCatalog, ItemEntry};
pub use factor::{
    BUILTIN_ORIGIN, CarbonFactor, CoalFactor, CoalMethod, FactorError, FactorFileError,
    FactorSelection, FactorTables,
};
pub use quality::Quality;
pub use quantity::Quantity;
pub use reading::{Batch, MAX_ABS_DELTA, MAX_ABS_KG, MAX_ABS_QUANTITY, Reading, WIRE_VERSION};
pub use time::Granularity;
pub use unit::{Unit, UnitError};

/// An error parsing one of the model's codes; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error(
        "account code {0:?}: expected 6-digit division + building letter A-H + 3-digit serial, e.g. 110108A001"
    )]
    Account(String),
    #[error("category code {0:?}: expected two digits 01..13")]
    Category(String),
    #[error("energy item code {0:?}: expected 5 characters CC I S1 S2, e.g. 01A10 or 02000")]
    EnergyCode(String),
    #[error("energy item code {code:?} does not belong to category {category}")]
    ItemCategory { code: String, category: String },
    #[error("{kind} {value:?}: {reason}")]
    Id {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("unknown quantity {0:?}")]
    Quantity(String),
    #[error("unknown quality {0:?}")]
    Quality(String),
}
