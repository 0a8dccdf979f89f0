//! Pure decoders for the MQTT payloads that device firmwares publish on their own topics —
//! Tasmota, Shelly Gen2+, ESPHome, Zigbee2MQTT, Sparkplug B — and for any other JSON payload
//! through a mapping declared in data.
//!
//! Data enters as an MQTT topic and payload bytes, handed over by the gateway's MQTT source. It
//! leaves as [`FirmwareValue`]s: a channel of the device, a [`Quantity`](reading_model::Quantity),
//! a value already converted to the quantity's canonical unit (kWh, kW, V, A, Hz …), and the
//! device's timestamp in UTC milliseconds when the payload carries one. The gateway's normalizer
//! maps (device, channel, quantity) to a meter and an account; this crate knows nothing of either.
//!
//! There is no I/O, no async and no clock here. Firmwares whose messages only make sense in
//! context (Shelly's `NotifyStatus` deltas, Sparkplug's aliases and sequence numbers, ESPHome's
//! discovery-supplied units) get a small in-memory state struct that the caller owns and feeds;
//! when that state finds it is missing something, it says what to ask the device for instead of
//! asking itself. Decoders never panic on outside data: every problem is a [`DecodeError`] that
//! names the topic and, where it can, the byte offset or JSON pointer.

// Tests may unwrap: a panic there is a failing test, not a crash on outside data.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod error;
pub mod esphome;
pub mod mapping;
pub mod shelly;
pub mod sparkplug;
pub mod tasmota;
pub mod value;
pub mod zigbee2mqtt;

#[cfg(test)]
mod strategies;

pub use error::DecodeError;
pub use esphome::EsphomeRegistry;
pub use mapping::JsonMapping;
pub use shelly::ShellyState;
pub use sparkplug::SparkplugHost;
pub use value::{Basis, FirmwareValue, ValueError};
