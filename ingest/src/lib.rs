//! jieneng's write path: takes batches from gateways (HTTP and the embedded MQTT broker), makes
//! them durable, turns them into Parquet in the `storage` layout and keeps that layout
//! maintained (compaction, rollups, retention). It serves no reports and holds no analysis: the
//! read API is the `api` crate, which the binary merges onto the same listener.
//!
//! Data flow: [`http`] authenticates a gateway and validates its batch; the [`store`]'s writer
//! appends it to the [`wal`] and fsyncs (one fsync for all batches waiting at that moment) before
//! the 2xx is sent; acknowledged rows wait in memory until a flush writes them as Parquet
//! (published atomically), after which their WAL segments are deleted. On start the WAL is
//! replayed, so nothing acknowledged is lost to a crash.

pub mod config;
pub mod decode;
pub mod http;
pub mod mqtt;
pub mod server;
pub mod store;
pub mod tls;
pub mod wal;

pub use config::IngestConfig;
pub use server::{Server, ServerHandle};
