//! The server side of jieneng: takes batches from gateways, makes them durable, and turns them
//! into Parquet.
//!
//! Data flow: [`http`] authenticates a gateway and validates its batch; the [`store`]'s writer
//! appends it to the [`wal`] and fsyncs (one fsync for all batches waiting at that moment) before
//! the 2xx is sent; acknowledged rows wait in memory until a flush writes them as Parquet
//! (published atomically), after which their WAL segments are deleted. On start the WAL is
//! replayed, so nothing acknowledged is lost to a crash.

pub mod api;
pub mod config;
pub mod dashboard;
pub mod decode;
pub mod http;
pub mod mqtt;
pub mod server;
pub mod store;
pub mod tls;
pub mod wal;

pub use config::ServeConfig;
pub use server::{Server, ServerHandle};
