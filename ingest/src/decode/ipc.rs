//! The Arrow IPC stream encoding of a batch, wire format v1
//! (`Content-Type: application/vnd.apache.arrow.stream`).
//!
//! # Contract
//!
//! An [Arrow IPC stream](https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format):
//! a schema message, then zero or more record batches (and the dictionary batches they need),
//! and the end-of-stream marker (`0xFFFFFFFF 0x00000000`, written when the writer is closed),
//! so that a body cut short is never taken for a smaller batch. Nothing may follow the marker.
//!
//! **Schema metadata** (the batch): `jieneng.gateway` — the gateway id, which must be the
//! token's; `jieneng.seq` — the batch's sequence number, decimal u64; `jieneng.version` —
//! decimal, `1` when absent.
//!
//! **Columns** (one row per reading; matched by name, in any order; an unknown column is
//! refused, so a client cannot believe a field was stored that was not):
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
//! Before arrow-rs sees the bytes, [`check_framing`] walks the messages: every length must lie
//! inside the body, so no length field can make the reader allocate more than was sent.

use std::collections::HashMap;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, StringArray, StringDictionaryBuilder,
    TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::ipc::{CompressionType, MessageHeader, root_as_message};
use arrow::record_batch::RecordBatch;
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
    WIRE_VERSION,
};

use super::{DecodeError, check_envelope, clip};

/// Schema metadata keys.
pub const META_GATEWAY: &str = "jieneng.gateway";
pub const META_SEQ: &str = "jieneng.seq";
pub const META_VERSION: &str = "jieneng.version";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ts,
    Str,
    F64,
}

/// (name, kind, required)
const COLUMNS: [(&str, Kind, bool); 13] = [
    ("ts", Kind::Ts, true),
    ("account", Kind::Str, true),
    ("meter", Kind::Str, true),
    ("category", Kind::Str, true),
    ("item", Kind::Str, true),
    ("quantity", Kind::Str, true),
    ("unit", Kind::Str, true),
    ("value", Kind::F64, true),
    ("delta", Kind::F64, false),
    ("kgce", Kind::F64, false),
    ("kgco2e", Kind::F64, false),
    ("factor", Kind::Str, false),
    ("quality", Kind::Str, false),
];

const CONTINUATION: u32 = 0xFFFF_FFFF;

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

/// Decodes an Arrow IPC stream batch sent with `token_gateway`'s token; IPC-compressed buffers
/// may declare at most `max_decoded` uncompressed bytes in all.
pub fn decode(
    bytes: &[u8],
    token_gateway: &GatewayId,
    max_decoded: usize,
) -> Result<Batch, DecodeError> {
    check_framing(bytes, max_decoded)?;
    // The framing is sound; a panic inside arrow-rs on some other corner of the format must
    // still cost only this request.
    catch_unwind(AssertUnwindSafe(|| read(bytes, token_gateway))).unwrap_or_else(|_| {
        Err(malformed(
            "Arrow IPC stream: the reader failed on this input (please report it)",
        ))
    })
}

/// Walks the stream's messages without decoding them: every metadata and body length lies
/// inside `bytes`, only ZSTD body compression is used, and compressed buffers declare at most
/// `max_decoded` uncompressed bytes in all.
pub fn check_framing(bytes: &[u8], max_decoded: usize) -> Result<(), DecodeError> {
    let word = |pos: usize| -> Result<u32, DecodeError> {
        bytes
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| malformed(format!("Arrow IPC stream: truncated at byte {pos}")))
    };
    if bytes.is_empty() {
        return Err(malformed("Arrow IPC stream: empty body"));
    }
    let mut pos = 0usize;
    let mut declared: u64 = 0;
    while pos < bytes.len() {
        let start = pos;
        let mut len = word(pos)?;
        pos += 4;
        if len == CONTINUATION {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            if pos != bytes.len() {
                return Err(malformed(format!(
                    "Arrow IPC stream: {} bytes after the end-of-stream marker at byte {start}",
                    bytes.len() - pos
                )));
            }
            return Ok(());
        }
        let len = i32::from_le_bytes(len.to_le_bytes());
        let left = bytes.len() - pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                malformed(format!(
                    "Arrow IPC stream: the message at byte {start} declares {len} metadata bytes, {left} remain"
                ))
            })?;
        let message = root_as_message(&bytes[pos..pos + len]).map_err(|e| {
            malformed(format!(
                "Arrow IPC stream: the message at byte {start} is not an Arrow message: {e}"
            ))
        })?;
        pos += len;
        let left = bytes.len() - pos;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                malformed(format!(
                    "Arrow IPC stream: the message at byte {start} declares a {} byte body, {left} remain",
                    message.bodyLength()
                ))
            })?;
        let body = &bytes[pos..pos + body_len];
        pos += body_len;
        let batch = match message.header_type() {
            MessageHeader::Schema => None,
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => {
                message.header_as_dictionary_batch().and_then(|d| d.data())
            }
            other => {
                return Err(malformed(format!(
                    "Arrow IPC stream: unexpected {other:?} message at byte {start}"
                )));
            }
        };
        let Some(compression) = batch.and_then(|b| b.compression()) else {
            continue;
        };
        if compression.codec() != CompressionType::ZSTD {
            return Err(malformed(format!(
                "Arrow IPC stream: {:?} body compression is not accepted (its size is unbounded until decompressed); use ZSTD",
                compression.codec()
            )));
        }
        for buffer in batch.and_then(|b| b.buffers()).into_iter().flatten() {
            let range = usize::try_from(buffer.offset()).ok().and_then(|o| {
                let l = usize::try_from(buffer.length()).ok()?;
                (o.checked_add(l)? <= body.len()).then_some(o..o + l)
            });
            let Some(range) = range else {
                return Err(malformed(format!(
                    "Arrow IPC stream: a buffer of the message at byte {start} lies outside its body"
                )));
            };
            // Each compressed buffer starts with its uncompressed length, i64 LE (-1: stored).
            if let Some(prefix) = body[range].get(..8) {
                let n = i64::from_le_bytes(prefix.try_into().unwrap_or_default());
                declared = declared.saturating_add(u64::try_from(n).unwrap_or(0));
                if declared > max_decoded as u64 {
                    return Err(DecodeError::TooLarge {
                        what: "the uncompressed size of the Arrow stream's buffers",
                        limit: max_decoded,
                    });
                }
            }
        }
    }
    Err(malformed(
        "Arrow IPC stream: no end-of-stream marker; the body was cut short or the writer not closed",
    ))
}

fn read(bytes: &[u8], token_gateway: &GatewayId) -> Result<Batch, DecodeError> {
    let arrow_err = |e: ArrowError| malformed(format!("Arrow IPC stream: {e}"));
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow_err)?;
    let schema = reader.schema();
    let meta = schema.metadata();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| malformed(format!("schema metadata {key} is missing")))
    };
    let gateway = get(META_GATEWAY)?;
    let gateway = GatewayId::parse(gateway)
        .map_err(|e| malformed(format!("schema metadata {META_GATEWAY}: {e}")))?;
    let version = match meta.get(META_VERSION) {
        None => WIRE_VERSION,
        Some(v) => v.trim().parse::<u16>().map_err(|_| {
            malformed(format!(
                "schema metadata {META_VERSION}: {:?} is not a version number",
                clip(v)
            ))
        })?,
    };
    check_envelope(token_gateway, &gateway, version)?;
    let seq = get(META_SEQ)?;
    let seq = seq.trim().parse::<u64>().map_err(|_| {
        malformed(format!(
            "schema metadata {META_SEQ}: {:?} is not an unsigned 64-bit integer",
            clip(seq)
        ))
    })?;
    check_schema(&schema)?;

    let mut readings = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err)?;
        let base = readings.len();
        rows(&batch, base, &mut readings)?;
    }
    Ok(Batch {
        version,
        gateway,
        seq,
        readings,
    })
}

fn check_schema(schema: &Schema) -> Result<(), DecodeError> {
    let mut seen = HashMap::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let Some((_, kind, _)) = COLUMNS.iter().find(|(n, ..)| *n == name) else {
            let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
            return Err(malformed(format!(
                "column {:?} is not part of wire format v1 ({})",
                clip(name),
                names.join(", ")
            )));
        };
        if seen.insert(name, ()).is_some() {
            return Err(malformed(format!("column {name} appears twice")));
        }
        let dt = field.data_type();
        let ok = match kind {
            Kind::Ts => matches!(
                dt,
                DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)
            ),
            Kind::F64 => *dt == DataType::Float64,
            Kind::Str => match dt {
                DataType::Dictionary(key, value) => {
                    key.is_dictionary_key_type() && is_string(value)
                }
                other => is_string(other),
            },
        };
        if !ok {
            let expected = match kind {
                Kind::Ts => "timestamp[ms] or int64 (ms since the epoch, UTC)",
                Kind::F64 => "float64",
                Kind::Str => "utf8, large_utf8, utf8_view or a dictionary of them",
            };
            return Err(malformed(format!(
                "column {name}: {dt} is not accepted; expected {expected}"
            )));
        }
    }
    for (name, _, required) in COLUMNS {
        if required && !seen.contains_key(name) {
            return Err(malformed(format!("column {name} is missing")));
        }
    }
    Ok(())
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// A string column as UTF-8 values, seen through dictionary keys when it has them.
struct StrCol {
    values: StringArray,
    keys: Option<Vec<usize>>,
    nulls: Option<NullBuffer>,
}

impl StrCol {
    fn new(col: &ArrayRef) -> Result<Self, DecodeError> {
        let utf8 = |a: &ArrayRef| -> Result<StringArray, DecodeError> {
            let a = arrow::compute::cast(a, &DataType::Utf8)
                .map_err(|e| malformed(format!("Arrow IPC stream: {e}")))?;
            a.as_string_opt::<i32>()
                .cloned()
                .ok_or_else(|| malformed("Arrow IPC stream: a string column is not utf8"))
        };
        let nulls = col.logical_nulls();
        match col.as_any_dictionary_opt() {
            Some(d) => {
                let values = utf8(d.values())?;
                let keys = if values.is_empty() {
                    // Only valid when every key is null; `normalized_keys` needs a value.
                    if nulls.as_ref().map_or(0, NullBuffer::null_count) != col.len() {
                        return Err(malformed(
                            "Arrow IPC stream: a dictionary without values has non-null keys",
                        ));
                    }
                    vec![0; col.len()]
                } else {
                    d.normalized_keys()
                };
                Ok(Self {
                    values,
                    keys: Some(keys),
                    nulls,
                })
            }
            None => Ok(Self {
                values: utf8(col)?,
                keys: None,
                nulls,
            }),
        }
    }

    /// Parses every row with `parse` (once per dictionary value), `on_null` for nulls.
    fn parse<T: Clone>(
        &self,
        field: &'static str,
        base: usize,
        parse: impl Fn(&str) -> Result<T, String>,
        on_null: impl Fn() -> Result<T, String>,
        len: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let invalid = |i: usize, message: String| DecodeError::Invalid {
            row: base + i,
            field: field.to_owned(),
            message,
        };
        let mut cache: Vec<Option<T>> = match &self.keys {
            Some(_) => vec![None; self.values.len()],
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                out.push(on_null().map_err(|m| invalid(i, m))?);
                continue;
            }
            let slot = self.keys.as_ref().map_or(Some(i), |k| k.get(i).copied());
            let Some(slot) = slot.filter(|&s| s < self.values.len()) else {
                return Err(invalid(i, "dictionary key out of range".into()));
            };
            if let Some(Some(v)) = cache.get(slot) {
                out.push(v.clone());
                continue;
            }
            let v = parse(self.values.value(slot)).map_err(|m| invalid(i, m))?;
            if let Some(c) = cache.get_mut(slot) {
                *c = Some(v.clone());
            }
            out.push(v);
        }
        Ok(out)
    }
}

fn code<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E>,
) -> impl Fn(&str) -> Result<T, String> {
    move |s| parse(s).map_err(|e| format!("{:?}: {e}", clip(s)))
}

fn null<T>() -> Result<T, String> {
    Err("null".into())
}

fn rows(batch: &RecordBatch, base: usize, out: &mut Vec<Reading>) -> Result<(), DecodeError> {
    let n = batch.num_rows();
    let col = |name: &str| batch.column_by_name(name);
    let required =
        |name: &str| col(name).ok_or_else(|| malformed(format!("column {name} is missing")));
    let strings = |name: &str| required(name).and_then(StrCol::new);

    let ts_col = required("ts")?;
    let ts_values: &[i64] = match ts_col.as_primitive_opt::<Int64Type>() {
        Some(a) => a.values(),
        None => ts_col
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| malformed("column ts: not timestamp[ms]"))?
            .values(),
    };
    let ts: Vec<i64> = (0..n)
        .map(|i| {
            if ts_col.is_null(i) {
                Err(DecodeError::Invalid {
                    row: base + i,
                    field: "ts".into(),
                    message: "null".into(),
                })
            } else {
                Ok(ts_values[i])
            }
        })
        .collect::<Result<_, _>>()?;

    let account = strings("account")?.parse("account", base, code(AccountCode::parse), null, n)?;
    let meter = strings("meter")?.parse("meter", base, code(MeterId::parse), null, n)?;
    let category = strings("category")?.parse("category", base, code(Category::parse), null, n)?;
    let item = strings("item")?.parse("item", base, code(EnergyCode::parse), null, n)?;
    let quantity = strings("quantity")?.parse("quantity", base, code(Quantity::parse), null, n)?;
    let unit = strings("unit")?.parse("unit", base, code(Unit::parse), null, n)?;
    let factor = match col("factor") {
        None => vec![None; n],
        Some(c) => {
            StrCol::new(c)?.parse("factor", base, |s| Ok(Some(s.to_owned())), || Ok(None), n)?
        }
    };
    let quality = match col("quality") {
        None => vec![Quality::Good; n],
        Some(c) => StrCol::new(c)?.parse(
            "quality",
            base,
            code(Quality::parse),
            || Ok(Quality::Good),
            n,
        )?,
    };
    let floats = |name: &'static str, required: bool| -> Result<Vec<Option<f64>>, DecodeError> {
        let Some(c) = col(name) else {
            return Ok(vec![None; n]);
        };
        let a = c
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| malformed(format!("column {name}: not float64")))?;
        (0..n)
            .map(|i| {
                if a.is_valid(i) {
                    Ok(Some(a.value(i)))
                } else if required {
                    Err(DecodeError::Invalid {
                        row: base + i,
                        field: name.into(),
                        message: "null".into(),
                    })
                } else {
                    Ok(None)
                }
            })
            .collect()
    };
    let value = floats("value", true)?;
    let delta = floats("delta", false)?;
    let kgce = floats("kgce", false)?;
    let kgco2e = floats("kgco2e", false)?;

    out.reserve(n);
    let mut factor = factor.into_iter();
    for i in 0..n {
        out.push(Reading {
            ts: ts[i],
            account: account[i].clone(),
            meter: meter[i].clone(),
            category: category[i],
            item: item[i],
            quantity: quantity[i],
            unit: unit[i],
            value: value[i].unwrap_or(f64::NAN),
            delta: delta[i],
            kgce: kgce[i],
            kgco2e: kgco2e[i],
            factor: factor.next().flatten(),
            quality: quality[i],
        });
    }
    Ok(())
}

/// The reference encoder: `batch` as a wire v1 Arrow IPC stream, one record batch, with
/// dictionary-encoded code columns, optionally ZSTD-compressed buffers. For tests, benchmarks
/// and forwarders; the decoder accepts any encoding the contract allows, not only this one.
pub fn encode(batch: &Batch, zstd: bool) -> Result<Vec<u8>, ArrowError> {
    let n = batch.readings.len();
    let dict = || Field::new_dictionary("", DataType::Int32, DataType::Utf8, false);
    let named = |f: Field, name: &str| f.with_name(name);
    let metadata = HashMap::from([
        (META_GATEWAY.to_owned(), batch.gateway.to_string()),
        (META_SEQ.to_owned(), batch.seq.to_string()),
        (META_VERSION.to_owned(), batch.version.to_string()),
    ]);
    let schema = Arc::new(
        Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            named(dict(), "account"),
            Field::new("meter", DataType::Utf8, false),
            named(dict(), "category"),
            named(dict(), "item"),
            named(dict(), "quantity"),
            named(dict(), "unit"),
            Field::new("value", DataType::Float64, false),
            Field::new("delta", DataType::Float64, true),
            Field::new("kgce", DataType::Float64, true),
            Field::new("kgco2e", DataType::Float64, true),
            Field::new("factor", DataType::Utf8, true),
            named(dict(), "quality"),
        ])
        .with_metadata(metadata),
    );
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
        (0..6).map(|_| StringDictionaryBuilder::new()).collect();
    let mut meter = arrow::array::StringBuilder::with_capacity(n, n * 8);
    let mut floats: Vec<Float64Builder> =
        (0..4).map(|_| Float64Builder::with_capacity(n)).collect();
    let mut factor = arrow::array::StringBuilder::with_capacity(n, n * 16);
    for r in &batch.readings {
        ts.append_value(r.ts);
        dicts[0].append_value(r.account.as_str());
        meter.append_value(r.meter.as_str());
        dicts[1].append_value(r.category.code());
        dicts[2].append_value(r.item.as_str());
        dicts[3].append_value(r.quantity.name());
        dicts[4].append_value(r.unit.symbol());
        dicts[5].append_value(r.quality.name());
        floats[0].append_value(r.value);
        floats[1].append_option(r.delta);
        floats[2].append_option(r.kgce);
        floats[3].append_option(r.kgco2e);
        factor.append_option(r.factor.as_deref());
    }
    let mut d: Vec<ArrayRef> = dicts
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let mut f: Vec<ArrayRef> = floats
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let quality = d.remove(5);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ts.finish())];
    columns.push(d.remove(0)); // account
    columns.push(Arc::new(meter.finish()));
    columns.append(&mut d); // category, item, quantity, unit
    columns.append(&mut f); // value, delta, kgce, kgco2e
    columns.push(Arc::new(factor.finish()));
    columns.push(quality);
    let rb = RecordBatch::try_new(schema.clone(), columns)?;
    let options =
        IpcWriteOptions::default().try_with_compression(zstd.then_some(CompressionType::ZSTD))?;
    let mut w = StreamWriter::try_new_with_options(Vec::new(), &schema, options)?;
    w.write(&rb)?;
    w.finish()?;
    w.into_inner()
}

#[cfg(test)]
mod tests;
