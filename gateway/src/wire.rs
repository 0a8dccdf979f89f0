//! Batch bodies as ingest accepts them: wire format v1 as an Arrow IPC stream
//! (`application/vnd.apache.arrow.stream`), the contract ingest documents in
//! `ingest/src/decode/ipc.rs`.
//!
//! The normalizer encodes a batch once, when it is cut; the spool stores those bytes and the
//! forwarder sends them as they are, over HTTP or MQTT, without parsing or encoding again.
//! Every string column is a dictionary (a batch repeats a handful of accounts, meters, items
//! and quantities thousands of times), and the buffers are ZSTD-compressed at level 1: the
//! body is a tenth of its JSON and costs less CPU to make than JSON does.
//!
//! [`decode`] reads back what [`encode`] wrote (for the spool's replay of counters at open and
//! for tests); it is not a general reader of the contract.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::{CompressionType, MetadataVersion};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

/// `Content-Type` of the bodies [`encode`] makes.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

const META_GATEWAY: &str = "jieneng.gateway";
const META_SEQ: &str = "jieneng.seq";
const META_VERSION: &str = "jieneng.version";

/// ZSTD level of the buffers: level 1 compresses these columns almost as well as the default
/// (3) at about half the CPU, which on a gateway matters more than a few bytes.
const ZSTD_LEVEL: i32 = 1;

/// Up to this many distinct values a dictionary is searched by a scan rather than a hash.
const SCAN_MAX: usize = 16;

/// Dictionary-encodes one string column, remembering the previous value: readings of one
/// sample arrive together, so most rows repeat the row before and skip the hash lookup.
#[derive(Default)]
struct Dict<'a> {
    values: Vec<&'a str>,
    index: HashMap<&'a str, i32>,
    keys: Vec<i32>,
    /// Validity per row, kept only once a row is null (most columns never are).
    valid: Option<Vec<bool>>,
    last: Option<(&'a str, i32)>,
}

/// Whether two short strings are equal: the same pointer, or the same bytes compared in
/// place (codes like `01A10` live in each reading, and a call to memcmp for five bytes cost
/// more than the compare).
#[inline]
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || (a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y))
}

impl<'a> Dict<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            keys: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    fn push(&mut self, v: Option<&'a str>) {
        let Some(v) = v else {
            let rows = self.keys.len();
            self.valid
                .get_or_insert_with(|| vec![true; rows])
                .push(false);
            self.keys.push(0);
            return;
        };
        // Ids are shared `Arc<str>`s and codes `&'static str`s, so a repeat is usually the very
        // same pointer: compared before the bytes.
        let key = match self.last {
            Some((l, k)) if same(l, v) => k,
            _ => {
                let k = self.lookup(v);
                self.last = Some((v, k));
                k
            }
        };
        self.keys.push(key);
        if let Some(valid) = &mut self.valid {
            valid.push(true);
        }
    }

    /// The key of `v`, added if new. Columns that change from row to row (quantity, unit) have
    /// a handful of values, mostly the same `&'static str`s: a scan of those compares pointers
    /// and is cheaper than hashing the string. Larger dictionaries (meters) are hashed.
    fn lookup(&mut self, v: &'a str) -> i32 {
        if self.values.len() <= SCAN_MAX {
            // Pointers first: the `&'static str` codes are found without reading a byte.
            if let Some(k) = self
                .values
                .iter()
                .position(|&s| std::ptr::eq(s, v))
                .or_else(|| self.values.iter().position(|&s| same(s, v)))
            {
                return k as i32;
            }
            let k = self.values.len() as i32;
            self.values.push(v);
            if self.values.len() > SCAN_MAX {
                // From now on the hash index answers: fill it with every value so far.
                self.index = self
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (s, i as i32))
                    .collect();
            }
            return k;
        }
        let next = self.values.len() as i32;
        let k = *self.index.entry(v).or_insert(next);
        if k == next {
            self.values.push(v);
        }
        k
    }

    fn finish(self) -> ArrayRef {
        let keys = match self.valid {
            None => Int32Array::from(self.keys),
            Some(valid) => self
                .keys
                .iter()
                .zip(valid)
                .map(|(&k, v)| v.then_some(k))
                .collect(),
        };
        let values = Arc::new(StringArray::from(self.values));
        // Keys are indices into `values` by construction.
        match DictionaryArray::<Int32Type>::try_new(keys, values) {
            Ok(d) => Arc::new(d),
            Err(e) => unreachable_dictionary(e),
        }
    }
}

#[cold]
fn unreachable_dictionary(e: ArrowError) -> ArrayRef {
    debug_assert!(false, "dictionary keys out of range: {e}");
    Arc::new(DictionaryArray::<Int32Type>::from_iter(std::iter::empty::<
        &str,
    >()))
}

fn schema(gateway: &GatewayId, seq: u64, version: u16) -> Schema {
    let dict = |name: &str, nullable| {
        Field::new_dictionary(name, DataType::Int32, DataType::Utf8, nullable)
    };
    let f64 = |name: &str, nullable| Field::new(name, DataType::Float64, nullable);
    Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        dict("account", false),
        dict("meter", false),
        dict("category", false),
        dict("item", false),
        dict("quantity", false),
        dict("unit", false),
        f64("value", false),
        f64("delta", true),
        f64("kgce", true),
        f64("kgco2e", true),
        dict("factor", true),
        dict("quality", false),
    ])
    .with_metadata(HashMap::from([
        (META_GATEWAY.to_owned(), gateway.to_string()),
        (META_SEQ.to_owned(), seq.to_string()),
        (META_VERSION.to_owned(), version.to_string()),
    ]))
}

/// The batch `(gateway, seq, readings)` of wire version `version` as an Arrow IPC stream.
pub fn encode(
    gateway: &GatewayId,
    seq: u64,
    version: u16,
    readings: &[Reading],
) -> Result<Vec<u8>, ArrowError> {
    let mut stream = StreamEncoder::new(gateway, seq, version)?;
    stream.write(readings)?;
    stream.finish()
}

/// One batch body being written: its readings are added a chunk at a time, each chunk a record
/// batch of the stream (the contract allows any number; rows count across them). The
/// normalizer so holds a poll cycle's readings as compressed columns, not as [`Reading`]s,
/// until the batch is cut. Dictionaries equal to the previous chunk's are not written again;
/// a changed one (the meters of the next devices) is written as a replacement.
pub struct StreamEncoder {
    schema: Arc<Schema>,
    writer: StreamWriter<Vec<u8>>,
    rows: usize,
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl StreamEncoder {
    pub fn new(gateway: &GatewayId, seq: u64, version: u16) -> Result<Self, ArrowError> {
        let schema = Arc::new(schema(gateway, seq, version));
        // 8-byte alignment (the format's minimum) rather than the default 64: the stream is
        // sent, not memory-mapped, and the padding of 13 columns and 8 dictionaries would be
        // kilobytes.
        let options = IpcWriteOptions::try_new(8, false, MetadataVersion::V5)?
            .try_with_compression(Some(CompressionType::ZSTD))?
            .try_with_compression_level(Some(ZSTD_LEVEL))?;
        let writer = StreamWriter::try_new_with_options(Vec::new(), &schema, options)?;
        Ok(Self {
            schema,
            writer,
            rows: 0,
        })
    }

    /// Readings written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes `readings` as one record batch.
    pub fn write(&mut self, readings: &[Reading]) -> Result<(), ArrowError> {
        let batch = record_batch(&self.schema, readings)?;
        self.writer.write(&batch)?;
        self.rows += readings.len();
        Ok(())
    }

    /// Ends the stream (its end-of-stream marker) and gives the body.
    pub fn finish(mut self) -> Result<Vec<u8>, ArrowError> {
        self.writer.finish()?;
        self.writer.into_inner()
    }
}

fn record_batch(schema: &Arc<Schema>, readings: &[Reading]) -> Result<RecordBatch, ArrowError> {
    let n = readings.len();
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut account = Dict::with_capacity(n);
    let mut meter = Dict::with_capacity(n);
    let mut category = Dict::with_capacity(n);
    let mut item = Dict::with_capacity(n);
    let mut quantity = Dict::with_capacity(n);
    let mut unit = Dict::with_capacity(n);
    let mut factor = Dict::with_capacity(n);
    let mut quality = Dict::with_capacity(n);
    let mut floats: [Float64Builder; 4] = std::array::from_fn(|_| Float64Builder::with_capacity(n));
    for r in readings {
        ts.append_value(r.ts);
        account.push(Some(r.account.as_str()));
        meter.push(Some(r.meter.as_str()));
        category.push(Some(r.category.code()));
        item.push(Some(r.item.as_str()));
        quantity.push(Some(r.quantity.name()));
        unit.push(Some(r.unit.symbol()));
        factor.push(r.factor.as_deref());
        quality.push(Some(r.quality.name()));
        floats[0].append_value(r.value);
        floats[1].append_option(r.delta);
        floats[2].append_option(r.kgce);
        floats[3].append_option(r.kgco2e);
    }
    let [value, delta, kgce, kgco2e] = floats.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        account.finish(),
        meter.finish(),
        category.finish(),
        item.finish(),
        quantity.finish(),
        unit.finish(),
        value,
        delta,
        kgce,
        kgco2e,
        factor.finish(),
        quality.finish(),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

/// Reads a stream [`encode`] wrote back into its batch.
pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
    let arrow = |e: ArrowError| format!("Arrow IPC stream: {e}");
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow)?;
    let meta = reader.schema().metadata().clone();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| format!("schema metadata {key} is missing"))
    };
    let gateway = GatewayId::parse(get(META_GATEWAY)?).map_err(|e| e.to_string())?;
    let seq = get(META_SEQ)?
        .parse::<u64>()
        .map_err(|e| format!("{META_SEQ}: {e}"))?;
    let version = get(META_VERSION)?
        .parse::<u16>()
        .map_err(|e| format!("{META_VERSION}: {e}"))?;
    let mut readings = Vec::new();
    for batch in reader {
        rows(&batch.map_err(arrow)?, &mut readings)?;
    }
    Ok(Batch {
        version,
        gateway,
        seq,
        readings,
    })
}

/// A dictionary string column, row by row.
fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<Vec<Option<&'a str>>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} is missing"))?;
    let dict = col
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| format!("column {name} is not a dictionary of int32 keys"))?;
    let values = dict
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("column {name}: dictionary values are not utf8"))?;
    dict.keys()
        .iter()
        .map(|k| match k {
            None => Ok(None),
            Some(k) => usize::try_from(k)
                .ok()
                .filter(|&k| k < values.len())
                .map(|k| Some(values.value(k)))
                .ok_or_else(|| format!("column {name}: key {k} out of range")),
        })
        .collect()
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} is missing"))?;
    let a = col
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| format!("column {name} is not float64"))?;
    Ok(a.iter().collect())
}

fn rows(batch: &RecordBatch, out: &mut Vec<Reading>) -> Result<(), String> {
    let base = out.len();
    let ts = batch
        .column_by_name("ts")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or("column ts is missing or not timestamp[ms]")?;
    let account = strings(batch, "account")?;
    let meter = strings(batch, "meter")?;
    let category = strings(batch, "category")?;
    let item = strings(batch, "item")?;
    let quantity = strings(batch, "quantity")?;
    let unit = strings(batch, "unit")?;
    let factor = strings(batch, "factor")?;
    let quality = strings(batch, "quality")?;
    let value = floats(batch, "value")?;
    let delta = floats(batch, "delta")?;
    let kgce = floats(batch, "kgce")?;
    let kgco2e = floats(batch, "kgco2e")?;
    for i in 0..batch.num_rows() {
        let row = base + i;
        fn text<'s>(
            col: &[Option<&'s str>],
            i: usize,
            row: usize,
            name: &str,
        ) -> Result<&'s str, String> {
            col[i].ok_or_else(|| format!("readings[{row}].{name}: null"))
        }
        let bad = |name: &str, e: String| format!("readings[{row}].{name}: {e}");
        out.push(Reading {
            ts: ts.value(i),
            account: AccountCode::parse(text(&account, i, row, "account")?)
                .map_err(|e| bad("account", e.to_string()))?,
            meter: MeterId::parse(text(&meter, i, row, "meter")?)
                .map_err(|e| bad("meter", e.to_string()))?,
            category: Category::parse(text(&category, i, row, "category")?)
                .map_err(|e| bad("category", e.to_string()))?,
            item: EnergyCode::parse(text(&item, i, row, "item")?)
                .map_err(|e| bad("item", e.to_string()))?,
            quantity: Quantity::parse(text(&quantity, i, row, "quantity")?)
                .map_err(|e| bad("quantity", e.to_string()))?,
            unit: Unit::parse(text(&unit, i, row, "unit")?)
                .map_err(|e| bad("unit", e.to_string()))?,
            value: value[i].ok_or_else(|| bad("value", "null".into()))?,
            delta: delta[i],
            kgce: kgce[i],
            kgco2e: kgco2e[i],
            factor: factor[i].map(str::to_owned),
            quality: Quality::parse(text(&quality, i, row, "quality")?)
                .map_err(|e| bad("quality", e.to_string()))?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: usize) -> Reading {
        Reading {
            ts: 1_767_225_600_000 + i as i64 * 1000,
            account: AccountCode::parse("110108A001").unwrap(),
            meter: MeterId::parse(&format!("m{}", i % 3)).unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse("01A10").unwrap(),
            quantity: if i.is_multiple_of(2) {
                Quantity::EnergyImport
            } else {
                Quantity::PowerActive
            },
            unit: if i.is_multiple_of(2) {
                Unit::KilowattHour
            } else {
                Unit::Kilowatt
            },
            value: i as f64 * 0.1,
            delta: i.is_multiple_of(2).then_some(0.25),
            kgce: i.is_multiple_of(2).then_some(0.25 * 0.1229),
            kgco2e: i.is_multiple_of(4).then_some(0.25 * 0.6361),
            factor: i
                .is_multiple_of(4)
                .then(|| "mee-nbs-2023/grid/华北".to_owned()),
            quality: if i == 3 { Quality::Gap } else { Quality::Good },
        }
    }

    #[test]
    fn round_trips_exactly() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let readings: Vec<Reading> = (0..50).map(reading).collect();
        let bytes = encode(&gw, 42, 1, &readings).unwrap();
        let batch = decode(&bytes).unwrap();
        assert_eq!(batch, Batch::new(gw.clone(), 42, readings));
        // An empty batch is a schema and the end-of-stream marker.
        assert_eq!(
            decode(&encode(&gw, 1, 1, &[]).unwrap()).unwrap(),
            Batch::new(gw, 1, vec![])
        );
    }

    #[test]
    fn dictionaries_past_the_scan_limit_keep_every_value() {
        // 40 meters revisited out of order: the meter dictionary starts as a scan and goes on
        // as a hash once it holds more than SCAN_MAX values, so both find earlier values.
        let gw = GatewayId::parse("gw-1").unwrap();
        let readings: Vec<Reading> = (0..400)
            .map(|i| Reading {
                meter: MeterId::parse(&format!("m{}", (i * 7) % 40)).unwrap(),
                ..reading(i)
            })
            .collect();
        let batch = decode(&encode(&gw, 7, 1, &readings).unwrap()).unwrap();
        assert_eq!(batch, Batch::new(gw, 7, readings));
    }

    #[test]
    fn a_body_written_in_chunks_reads_back_as_one_batch() {
        // Chunks with different meters (a replaced dictionary) and the same accounts (not
        // written again), one of them empty.
        let gw = GatewayId::parse("gw-1").unwrap();
        let readings: Vec<Reading> = (0..300)
            .map(|i| Reading {
                meter: MeterId::parse(&format!("m{}", i / 7)).unwrap(),
                ..reading(i)
            })
            .collect();
        let mut stream = StreamEncoder::new(&gw, 9, 1).unwrap();
        for chunk in [&readings[..100], &readings[100..100], &readings[100..]] {
            stream.write(chunk).unwrap();
        }
        assert_eq!(stream.rows(), 300);
        let batch = decode(&stream.finish().unwrap()).unwrap();
        assert_eq!(batch, Batch::new(gw, 9, readings));
    }

    #[test]
    fn cut_or_damaged_streams_are_errors_not_panics() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let bytes = encode(&gw, 1, 1, &(0..20).map(reading).collect::<Vec<_>>()).unwrap();
        for cut in [0, 8, bytes.len() / 2] {
            let _ = decode(&bytes[..cut]);
        }
        assert!(decode(b"{\"gateway\":\"gw\"}").is_err());
    }
}
