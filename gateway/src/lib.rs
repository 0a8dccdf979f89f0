//! The edge process: polls meters, normalizes what they say into per-account, per-category,
//! per-item readings, and forwards them to ingest without ever losing an acknowledged one.
//!
//! Data flow: [`source`] polls devices (Modbus TCP today) through `device-profiles` and sends
//! raw samples to the [`normalize`] stage, which turns cumulative registers into interval
//! deltas ([`counter`]), adds kgce and kgCO2e, and writes batches to the on-disk [`spool`]; the
//! [`forward`]er sends spooled batches to ingest over HTTP and deletes each only after a 2xx.
//! [`config`] describes a site; [`run`] wires the stages together.

pub mod backoff;
pub mod broker;
pub mod channel;
pub mod config;
pub mod counter;
pub mod forward;
pub mod normalize;
pub mod run;
pub mod source;
pub mod spool;
pub mod tls;
pub mod wire;

pub use config::{ConfigError, GatewayConfig, SiteConfig};
pub use run::{Gateway, GatewayHandle};
