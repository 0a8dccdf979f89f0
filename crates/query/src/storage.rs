//! The storage contract: the readings table's Arrow schema, its Hive-style date partitions,
//! and the Parquet writer settings. Ingest writes with these; query and DuckDB read them.
//!
//! Layout: `<data_dir>/readings/date=YYYY-MM-DD/part-<lo>-<hi>.parquet` (UTC date of `ts`);
//! rows in a file sorted by (account, meter, quantity, ts); ZSTD; dictionary-encoded strings;
//! statistics on every column; a bloom filter on `meter`. Files being written are named
//! `.<name>.tmp` and are invisible to readers until renamed.
//!
//! # Generations
//!
//! Every flush takes the next *generation* number of the data directory and stamps it on its
//! rows (the `gen` column) and on its file name (`part-<g>-<g>`). When two stored rows share
//! the key (account, meter, quantity, ts) — batches that overlap, or a corrected reading — the
//! row with the higher generation arrived later and is the one that counts.
//!
//! Compaction merges the files of a partition into one, keeping per key the row of the highest
//! generation (rows keep their `gen`), and names the result after the range of generations it
//! covers: `part-<lo>-<hi>`. It publishes the new file first and removes the old ones after, so
//! for a while (or after a crash in between) both are on disk. Readers therefore take a
//! partition's files through [`live_files`]: a file whose generation range lies inside another
//! file's range is *superseded* and skipped. Tools that glob the directory (DuckDB, pyarrow)
//! see exactly one row per key once superseded files are removed (at the latest when the server
//! stops); before that they may see a compacted row twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Array, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use reading_model::{GatewayId, Reading};

pub const READINGS: &str = "readings";

/// A reading as stored: the reading and the gateway that delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub gateway: GatewayId,
    pub reading: Reading,
}

impl StoredReading {
    /// The storage key: one row per (account, meter, quantity, ts).
    pub fn key(&self) -> (&str, &str, &str, i64) {
        let r = &self.reading;
        (
            r.account.as_str(),
            r.meter.as_str(),
            r.quantity.name(),
            r.ts,
        )
    }
}

/// The Arrow schema of the readings table (without the `date` partition column).
pub fn readings_schema() -> SchemaRef {
    let s = |name| Field::new(name, DataType::Utf8, false);
    let f = |name, nullable| Field::new(name, DataType::Float64, nullable);
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        s("account"),
        s("meter"),
        s("category"),
        s("item"),
        s("quantity"),
        s("unit"),
        f("value", false),
        f("delta", true),
        f("kgce", true),
        f("kgco2e", true),
        Field::new("factor", DataType::Utf8, true),
        s("quality"),
        s("gateway"),
        Field::new("gen", DataType::Int64, false),
    ]))
}

/// The UTC date partition of a timestamp, `YYYY-MM-DD`.
pub fn partition_date(ts_ms: i64) -> String {
    Utc.timestamp_millis_opt(ts_ms).single().map_or_else(
        || "1970-01-01".to_owned(),
        |t| t.format("%Y-%m-%d").to_string(),
    )
}

pub fn partition_dir(data_dir: &Path, date: &str) -> PathBuf {
    data_dir.join(READINGS).join(format!("date={date}"))
}

/// Sorts rows by the storage key and keeps the last of rows with the same key.
pub fn sort_and_dedupe(rows: &mut Vec<StoredReading>) {
    // Stable sort keeps arrival order within a key, so "last" is the latest arrival.
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut out: Vec<StoredReading> = Vec::with_capacity(rows.len());
    for r in rows.drain(..) {
        match out.last_mut() {
            Some(last) if last.key() == r.key() => *last = r,
            _ => out.push(r),
        }
    }
    *rows = out;
}

/// One row of [`readings_schema`] as borrowed fields, whatever holds it (reading rows here, the
/// ingest buffer's interned columns there): [`ReadingsBatchBuilder`] is the one place that knows
/// the column order.
#[derive(Debug, Clone, Copy)]
pub struct ReadingRowRef<'a> {
    pub ts: i64,
    pub account: &'a str,
    pub meter: &'a str,
    pub category: &'a str,
    pub item: &'a str,
    pub quantity: &'a str,
    pub unit: &'a str,
    pub value: f64,
    pub delta: Option<f64>,
    pub kgce: Option<f64>,
    pub kgco2e: Option<f64>,
    pub factor: Option<&'a str>,
    pub quality: &'a str,
    pub gateway: &'a str,
}

/// Builds a batch of [`readings_schema`] row by row.
#[derive(Debug)]
pub struct ReadingsBatchBuilder {
    len: usize,
    ts: TimestampMillisecondBuilder,
    /// account, meter, category, item, quantity, unit: the schema's string columns in order.
    keys: [StringBuilder; 6],
    value: Float64Builder,
    delta: Float64Builder,
    kgce: Float64Builder,
    kgco2e: Float64Builder,
    factor: StringBuilder,
    quality: StringBuilder,
    gateway: StringBuilder,
}

impl ReadingsBatchBuilder {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            len: 0,
            ts: TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            keys: std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 8)),
            value: Float64Builder::with_capacity(n),
            delta: Float64Builder::with_capacity(n),
            kgce: Float64Builder::with_capacity(n),
            kgco2e: Float64Builder::with_capacity(n),
            factor: StringBuilder::with_capacity(n, n * 16),
            quality: StringBuilder::with_capacity(n, n * 4),
            gateway: StringBuilder::with_capacity(n, n * 8),
        }
    }

    pub fn push(&mut self, r: ReadingRowRef<'_>) {
        self.len += 1;
        self.ts.append_value(r.ts);
        for (b, v) in self
            .keys
            .iter_mut()
            .zip([r.account, r.meter, r.category, r.item, r.quantity, r.unit])
        {
            b.append_value(v);
        }
        self.value.append_value(r.value);
        self.delta.append_option(r.delta);
        self.kgce.append_option(r.kgce);
        self.kgco2e.append_option(r.kgco2e);
        self.factor.append_option(r.factor);
        self.quality.append_value(r.quality);
        self.gateway.append_value(r.gateway);
    }

    /// The rows pushed so far, every one stamped with generation `generation`.
    pub fn finish(mut self, generation: i64) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.ts.finish())];
        for b in &mut self.keys {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.value.finish()));
        cols.push(Arc::new(self.delta.finish()));
        cols.push(Arc::new(self.kgce.finish()));
        cols.push(Arc::new(self.kgco2e.finish()));
        cols.push(Arc::new(self.factor.finish()));
        cols.push(Arc::new(self.quality.finish()));
        cols.push(Arc::new(self.gateway.finish()));
        cols.push(Arc::new(Int64Array::from(vec![generation; self.len])));
        RecordBatch::try_new(readings_schema(), cols)
    }
}

/// Rows as an Arrow batch of [`readings_schema`], every row stamped with generation `generation`.
pub fn to_record_batch(
    rows: &[StoredReading],
    generation: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut batch = ReadingsBatchBuilder::with_capacity(rows.len());
    for row in rows {
        let r = &row.reading;
        batch.push(ReadingRowRef {
            ts: r.ts,
            account: r.account.as_str(),
            meter: r.meter.as_str(),
            category: r.category.code(),
            item: r.item.as_str(),
            quantity: r.quantity.name(),
            unit: r.unit.symbol(),
            value: r.value,
            delta: r.delta,
            kgce: r.kgce,
            kgco2e: r.kgco2e,
            factor: r.factor.as_deref(),
            quality: r.quality.name(),
            gateway: row.gateway.as_str(),
        });
    }
    batch.finish(generation)
}

pub fn writer_properties() -> WriterProperties {
    let col = |name: &str| parquet::schema::types::ColumnPath::from(name);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        // A cumulative register is different in nearly every row: a dictionary of it only adds
        // its indices to the values (5.4 against ~4.5 bytes per reading, see `disk_bytes`).
        .set_column_dictionary_enabled(col("value"), false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("meter"), true)
        // account, meter, quantity, ts: the sort order of every file.
        .set_sorting_columns(Some(
            [1, 2, 5, 0]
                .into_iter()
                .map(|column_idx| SortingColumn {
                    column_idx,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .build()
}

/// Writes rows (already sorted) of generation `generation` as one Parquet file to `w`.
pub fn write_parquet<W: std::io::Write + Send>(
    w: W,
    rows: &[StoredReading],
    generation: i64,
) -> Result<W, parquet::errors::ParquetError> {
    write_batch(w, &to_record_batch(rows, generation)?)
}

/// Writes a batch of [`readings_schema`] (already sorted) as one Parquet file to `w`.
pub fn write_batch<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
) -> Result<W, parquet::errors::ParquetError> {
    let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.into_inner()
}

/// The name of a file holding generations `lo..=hi`.
pub fn file_name(lo: u64, hi: u64) -> String {
    format!("part-{lo:012}-{hi:012}.parquet")
}

/// The generation range of a published file's name; `None` for anything else.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (lo, hi) = rest.split_once('-')?;
    let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// A published Parquet file of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: PathBuf,
    pub lo: u64,
    pub hi: u64,
    pub bytes: u64,
    pub modified: std::time::SystemTime,
}

/// The published files of a partition directory, split into live and superseded ones (see the
/// module doc), each sorted by generation. A missing directory has none.
pub fn partition_files(dir: &Path) -> std::io::Result<(Vec<DataFile>, Vec<DataFile>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(e),
    };
    let mut all = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some((lo, hi)) = parse_file_name(&name.to_string_lossy()) else {
            continue;
        };
        let meta = match e.metadata() {
            Ok(m) => m,
            // Removed by compaction since the listing: it was superseded anyway.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        all.push(DataFile {
            path: e.path(),
            lo,
            hi,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        });
    }
    all.sort_by_key(|f| (f.lo, std::cmp::Reverse(f.hi)));
    let (mut live, mut superseded) = (Vec::<DataFile>::new(), Vec::new());
    for f in all {
        // Sorted by lo, widest first: a file is covered iff some earlier-listed file reaches
        // past its end; the live files' ranges are disjoint, so the last live one decides.
        match live.last() {
            Some(l) if l.hi >= f.hi => superseded.push(f),
            _ => live.push(f),
        }
    }
    Ok((live, superseded))
}

/// The date partitions under `table_dir` (`date=YYYY-MM-DD`), sorted.
pub fn partitions(table_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(table_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(date) = name.strip_prefix("date=")
            && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        {
            out.push(date.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads Parquet files of [`readings_schema`] into one batch (empty if there are none).
pub fn read_files(files: &[DataFile]) -> Result<RecordBatch, StorageError> {
    let schema = readings_schema();
    let mut batches = Vec::new();
    for f in files {
        let err = |message: String| StorageError {
            path: f.path.clone(),
            message,
        };
        let file = std::fs::File::open(&f.path).map_err(|e| err(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| err(e.to_string()))?;
        for b in reader {
            let b = b.map_err(|e| err(e.to_string()))?;
            // Files written before a column was added would differ; ours all match.
            batches.push(
                RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                    .map_err(|e| err(e.to_string()))?,
            );
        }
    }
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| StorageError {
        path: PathBuf::new(),
        message: e.to_string(),
    })
}

/// Each row's position in the sorted order of a string column's distinct values, so that
/// comparing ranks compares the strings: a sort then compares integers, not bytes.
fn string_ranks(column: &ArrayRef) -> Result<Vec<u32>, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    let utf8 = arrow::compute::cast(column, &DataType::Utf8)?;
    let strings = utf8.as_string::<i32>();
    let mut ids: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut last: Option<(&str, u32)> = None;
    let row_ids: Vec<u32> = strings
        .iter()
        .map(|s| {
            let s = s.unwrap_or("");
            match last {
                Some((l, id)) if l == s => id,
                _ => {
                    let id = *ids.entry(s).or_insert_with(|| {
                        distinct.push(s);
                        (distinct.len() - 1) as u32
                    });
                    last = Some((s, id));
                    id
                }
            }
        })
        .collect();
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by_key(|&i| distinct[i as usize]);
    let mut rank = vec![0u32; distinct.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    Ok(row_ids.into_iter().map(|id| rank[id as usize]).collect())
}

/// Sorts a batch of [`readings_schema`] by the key and keeps, per key, the row of the highest
/// generation: the storage rule "exactly one row per key, the latest arrival wins".
pub fn dedupe_batch(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    if batch.num_rows() == 0 {
        return Ok(batch.clone());
    }
    let col = |name: &str| -> Result<ArrayRef, arrow::error::ArrowError> {
        Ok(batch.column(batch.schema().index_of(name)?).clone())
    };
    let (account, meter, quantity) = (
        string_ranks(&col("account")?)?,
        string_ranks(&col("meter")?)?,
        string_ranks(&col("quantity")?)?,
    );
    let ts = arrow::compute::cast(&col("ts")?, &DataType::Int64)?;
    let ts = ts.as_primitive::<Int64Type>();
    let generation = arrow::compute::cast(&col("gen")?, &DataType::Int64)?;
    let generation = generation.as_primitive::<Int64Type>();
    // (account, meter, quantity, ts, newest generation first, then the later row first, as a
    // later arrival within one generation replaces an earlier one): integers only.
    use std::cmp::Reverse;
    type Key = (u32, u32, u32, i64, Reverse<i64>, Reverse<u32>);
    let mut keys: Vec<Key> = (0..batch.num_rows())
        .map(|i| {
            (
                account[i],
                meter[i],
                quantity[i],
                ts.value(i),
                Reverse(generation.value(i)),
                Reverse(i as u32),
            )
        })
        .collect();
    keys.sort_unstable();
    let mut firsts: Vec<u32> = Vec::with_capacity(keys.len());
    let mut previous = None;
    for k in &keys {
        let key = (k.0, k.1, k.2, k.3);
        if previous != Some(key) {
            firsts.push(k.5.0);
            previous = Some(key);
        }
    }
    arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(firsts))
}

/// A storage file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct StorageError {
    pub path: PathBuf,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use reading_model::{AccountCode, Category, EnergyCode, MeterId, Quality, Quantity, Unit};

    use super::*;

    fn rows(seed: u64, n: usize) -> Vec<StoredReading> {
        let mut state = seed;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let accounts = ["110108A001", "110108A002", "310101B001"];
        let meters = ["m10", "m2", "main", "Main", "ahu-3"];
        let quantities = [
            (Quantity::EnergyImport, Unit::KilowattHour),
            (Quantity::PowerActive, Unit::Kilowatt),
            (Quantity::EnergyExport, Unit::KilowattHour),
        ];
        (0..n)
            .map(|_| {
                let (quantity, unit) = quantities[next(3) as usize];
                StoredReading {
                    gateway: GatewayId::parse(["gw-a", "gw-b"][next(2) as usize]).unwrap(),
                    reading: Reading {
                        ts: 1_767_225_600_000 + next(6) as i64 * 900_000,
                        account: AccountCode::parse(accounts[next(3) as usize]).unwrap(),
                        meter: MeterId::parse(meters[next(5) as usize]).unwrap(),
                        category: Category::Electricity,
                        item: EnergyCode::parse("01000").unwrap(),
                        quantity,
                        unit,
                        value: next(1000) as f64,
                        delta: Some(next(10) as f64),
                        kgce: None,
                        kgco2e: None,
                        factor: None,
                        quality: Quality::Good,
                    },
                }
            })
            .collect()
    }

    #[test]
    fn dedupe_batch_keeps_per_key_the_row_of_the_highest_generation_in_key_order() {
        let generations: Vec<Vec<StoredReading>> = (1..=3).map(|g| rows(g * 7919, 200)).collect();
        // Stored out of generation order, as files of a partition may be listed.
        let batches: Vec<RecordBatch> = [2usize, 0, 1]
            .into_iter()
            .map(|g| to_record_batch(&generations[g], g as i64 + 1).unwrap())
            .collect();
        let all = arrow::compute::concat_batches(&readings_schema(), &batches).unwrap();
        let deduped = dedupe_batch(&all).unwrap();
        // The row rule: arrival order is generation order; the last arrival per key counts.
        let mut expected: Vec<StoredReading> = generations.concat();
        sort_and_dedupe(&mut expected);
        assert!(expected.len() < 400, "keys repeat across generations");
        let expected = to_record_batch(&expected, 0).unwrap();
        let without_gen = |b: &RecordBatch| {
            b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>())
                .unwrap()
        };
        assert_eq!(without_gen(&deduped), without_gen(&expected));
    }
}
