//! Declarative vendor register maps ("profiles") and everything that can be done with them
//! without I/O: parsing and validating `profiles/<vendor>/<model>.toml`, planning the fewest
//! Modbus requests that cover a device's registers, and decoding register words into values in
//! canonical units (and back, for simulators and fixtures).
//!
//! Data enters as TOML text and register words; it leaves as [`ReadPlan`]s for the gateway's
//! poller and [`DecodedValue`]s for its normalizer.

// In tests a panic is the failure report; the workspace's unwrap/expect lints guard library code,
// which `cargo clippy --all-targets` still checks in the non-test build.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod decode;
pub mod library;
pub mod planner;
pub mod profile;

pub use decode::{DecodeError, DecodedValue, decode_register, decode_total, encode_register};
pub use library::Library;
pub use planner::{PlanLimits, ReadPlan, ReadRequest, plan_reads};
pub use profile::{
    DataType, FunctionCode, Phase, Profile, ProfileError, RatioKind, RegisterDef, Sentinel,
    WordOrder,
};
