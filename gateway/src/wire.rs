//! Batch bodies as ingest accepts them: wire format v1, an Arrow IPC stream whose schema,
//! encoder and decoder live in the [`wire`](::wire) crate (its crate doc is the contract).
//!
//! The normalizer encodes a batch once, when it is cut ([`StreamEncoder`]); the spool stores
//! those bytes and the forwarder sends them as they are, over HTTP or MQTT, without parsing
//! or encoding again. [`decode`] reads a stored body back (for the spool's replay of counters
//! at open and for tests).

use reading_model::Batch;

pub use ::wire::{ARROW_STREAM, StreamEncoder, encode};

/// Reads a stream [`encode`] wrote back into its batch.
pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
    ::wire::decode(bytes).map_err(|e| e.to_string())
}
