//! The Arrow IPC stream encoding of a batch, wire format v1
//! (`Content-Type: application/vnd.apache.arrow.stream`): its schema, the gateway's encoder and
//! the decoder ingest accepts bodies with, in one place so the two ends cannot drift apart.
//!
//! Data enters as [`Reading`](reading_model::Reading)s and leaves as stream bytes
//! ([`encode`], [`StreamEncoder`]), or enters as bytes and leaves as a
//! [`Batch`](reading_model::Batch) ([`decode`], [`BatchReader`]). Pure functions over bytes: no
//! I/O, no clocks. The crate links only `arrow-array`, `arrow-schema` and `arrow-ipc` (no
//! compute kernels), so the gateway can use it on a small edge box.
//!
//! # Contract
//!
//! An [Arrow IPC stream](https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format):
//! a schema message, then zero or more record batches (and the dictionary batches they need),
//! and the end-of-stream marker (`0xFFFFFFFF 0x00000000`, written when the writer is closed),
//! so that a body cut short is never taken for a smaller batch. Nothing may follow the marker.
//!
//! **Schema metadata** (the batch): `jieneng.gateway` ([`META_GATEWAY`]) — the gateway id,
//! which must be the token's; `jieneng.seq` ([`META_SEQ`]) — the batch's sequence number,
//! decimal u64; `jieneng.epoch` ([`META_EPOCH`], optional) — the numbering epoch of the
//! gateway's spool, decimal u64: within one epoch `seq` only increases, and a gateway that starts
//! over (an empty spool) starts a new epoch; a stream without it is numbered per gateway across
//! restarts (`reading_model::Batch::epoch`); `jieneng.version` ([`META_VERSION`]) — decimal, `1`
//! ([`VERSION`]) when absent.
//!
//! **Columns** ([`COLUMNS`]; one row per reading; matched by name, in any order; an unknown
//! column is refused, so a client cannot believe a field was stored that was not):
//!
//! | column | Arrow type | null |
//! |---|---|---|
//! | `ts` | `timestamp[ms]` (any time zone; the value is UTC epoch ms) or `int64` ms | no |
//! | `account`, `meter`, `category`, `item`, `quantity`, `unit` | string¹ | no |
//! | `value` | `float64` | no |
//! | `delta`, `kgce`, `kgco2e` | `float64`, column optional | yes |
//! | `factor` | string¹, column optional | yes |
//! | `quality` | string¹, column optional | yes: `good` |
//!
//! ¹ `utf8`, `large_utf8`, `utf8_view`, or a dictionary of any integer key over one of them
//! (the natural choice for `account`, `category`, `item`, `quantity`, `unit`, `quality`; a
//! dictionary value is parsed once per batch, not once per row).
//!
//! Values mean what they mean in JSON: codes as in [`reading_model`] (`110108A001`, `01`,
//! `01A10`, `energy_import`, `kWh`, `good`), checked by [`reading_model::Batch::check`].
//! Nullability flags in the schema are not relied on: a null where none is allowed is an
//! error naming its row. Rows count from 0 across all record batches of the stream.
//!
//! **Compression**: record batches may use the IPC format's ZSTD buffer compression (pyarrow:
//! `IpcWriteOptions(compression="zstd")`). LZ4_FRAME is refused. The uncompressed sizes the
//! buffers declare are summed before anything is decompressed and capped like a compressed
//! request body.
//!
//! A receiver of outside bytes walks the messages before arrow-rs sees them (ingest's
//! `decode::ipc::check_framing`): every length must lie inside the body, so no length field can
//! make the reader allocate more than was sent. That, the size caps and the gateway-token check
//! are the receiver's; this crate reads a stream whose framing is sound.
//!
//! # What the gateway writes
//!
//! The gateway's normalizer encodes a batch once, when it is cut ([`StreamEncoder`]); its spool
//! stores those bytes and the forwarder sends them as they are, over HTTP or MQTT, without
//! parsing or encoding again. Every string column is a dictionary (a batch repeats a handful of
//! accounts, meters, items and quantities thousands of times), and the buffers are
//! ZSTD-compressed at level 1: the body is a tenth of its JSON and costs less CPU to make than
//! JSON does. [`encode_reference`] writes the simplest stream the contract allows, for tests,
//! benchmarks and third-party forwarders.

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use reading_model::GatewayId;

mod decode;
mod encode;

pub use decode::{BatchReader, DecodeError, decode};
pub use encode::{StreamEncoder, encode, encode_reference};
/// The wire format version this crate writes and reads.
pub use reading_model::WIRE_VERSION as VERSION;

/// `Content-Type` of an Arrow IPC stream batch.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Schema metadata key of the batch's gateway id.
pub const META_GATEWAY: &str = "jieneng.gateway";
/// Schema metadata key of the batch's sequence number.
pub const META_SEQ: &str = "jieneng.seq";
/// Schema metadata key of the batch's numbering epoch (optional).
pub const META_EPOCH: &str = "jieneng.epoch";
/// Schema metadata key of the wire format version.
pub const META_VERSION: &str = "jieneng.version";

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTC epoch milliseconds: `timestamp[ms]` (or `int64` from other clients).
    Ts,
    /// A string (a code, an id), usually dictionary-encoded.
    Str,
    /// `float64`.
    F64,
}

/// One column of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// A stream without it is refused.
    pub required: bool,
    /// Whether a reading may lack the value; the encoders declare such fields nullable.
    /// (`quality` is optional in a stream but always written.)
    pub nullable: bool,
}

const fn column(name: &'static str, kind: Kind, required: bool, nullable: bool) -> Column {
    Column {
        name,
        kind,
        required,
        nullable,
    }
}

/// The columns of wire format v1, in the order the encoders write them.
pub const COLUMNS: [Column; 13] = [
    column("ts", Kind::Ts, true, false),
    column("account", Kind::Str, true, false),
    column("meter", Kind::Str, true, false),
    column("category", Kind::Str, true, false),
    column("item", Kind::Str, true, false),
    column("quantity", Kind::Str, true, false),
    column("unit", Kind::Str, true, false),
    column("value", Kind::F64, true, false),
    column("delta", Kind::F64, false, true),
    column("kgce", Kind::F64, false, true),
    column("kgco2e", Kind::F64, false, true),
    column("factor", Kind::Str, false, true),
    column("quality", Kind::Str, false, false),
];

/// The schema the encoders write for batch `(gateway, epoch, seq)` of `version`: string columns
/// are dictionaries of int32 keys, except those named in `plain`, which are `utf8`.
fn schema(
    gateway: &GatewayId,
    epoch: Option<u64>,
    seq: u64,
    version: u16,
    plain: &[&str],
) -> Schema {
    let fields = COLUMNS.iter().map(|c| {
        let data_type = match c.kind {
            Kind::Ts => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Kind::F64 => DataType::Float64,
            Kind::Str if plain.contains(&c.name) => DataType::Utf8,
            Kind::Str => {
                return Field::new_dictionary(c.name, DataType::Int32, DataType::Utf8, c.nullable);
            }
        };
        Field::new(c.name, data_type, c.nullable)
    });
    let mut metadata = HashMap::from([
        (META_GATEWAY.to_owned(), gateway.to_string()),
        (META_SEQ.to_owned(), seq.to_string()),
        (META_VERSION.to_owned(), version.to_string()),
    ]);
    if let Some(epoch) = epoch {
        metadata.insert(META_EPOCH.to_owned(), epoch.to_string());
    }
    Schema::new(fields.collect::<Vec<_>>()).with_metadata(metadata)
}

#[cfg(test)]
mod tests;
