//! The encoders: the gateway's [`StreamEncoder`] (dictionaries, ZSTD level 1, written a chunk
//! at a time) and [`encode_reference`], the plainest stream of the contract.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, StringBuilder, StringDictionaryBuilder, TimestampMillisecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::{CompressionType, MetadataVersion};
use arrow_schema::{ArrowError, Schema};
use reading_model::{Batch, GatewayId, Reading};

use crate::schema;

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

/// The batch `(gateway, epoch, seq, readings)` of wire version `version` as an Arrow IPC stream.
pub fn encode(
    gateway: &GatewayId,
    epoch: Option<u64>,
    seq: u64,
    version: u16,
    readings: &[Reading],
) -> Result<Vec<u8>, ArrowError> {
    let mut stream = StreamEncoder::new(gateway, epoch, seq, version)?;
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
    pub fn new(
        gateway: &GatewayId,
        epoch: Option<u64>,
        seq: u64,
        version: u16,
    ) -> Result<Self, ArrowError> {
        let schema = Arc::new(schema(gateway, epoch, seq, version, &[]));
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

/// The reference encoder: `batch` as a wire v1 Arrow IPC stream, one record batch, with
/// dictionary-encoded code columns, optionally ZSTD-compressed buffers. For tests, benchmarks
/// and forwarders; the decoder accepts any encoding the contract allows, not only this one.
pub fn encode_reference(batch: &Batch, zstd: bool) -> Result<Vec<u8>, ArrowError> {
    let n = batch.readings.len();
    // The codes as dictionaries; meter ids and factors as plain strings, so the decoder's
    // tests see both.
    let schema = Arc::new(schema(
        &batch.gateway,
        batch.epoch,
        batch.seq,
        batch.version,
        &["meter", "factor"],
    ));
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
        (0..6).map(|_| StringDictionaryBuilder::new()).collect();
    let mut meter = StringBuilder::with_capacity(n, n * 8);
    let mut floats: Vec<Float64Builder> =
        (0..4).map(|_| Float64Builder::with_capacity(n)).collect();
    let mut factor = StringBuilder::with_capacity(n, n * 16);
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
