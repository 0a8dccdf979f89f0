//! The storage contract: the readings table's Arrow schema, its Hive-style date partitions,
//! and the Parquet writer settings. Ingest writes with these; query, DuckDB, pyarrow and Polars
//! read them.
//!
//! Layout: `<data_dir>/readings/date=YYYY-MM-DD/part-<lo>-<hi>.parquet` (UTC date of `ts`);
//! rows in a file sorted by (account, meter, quantity, ts); ZSTD; dictionary-encoded strings;
//! statistics on every column; a bloom filter on `meter`. Files being written are named
//! `.<name>.tmp` and are invisible to readers until renamed ([`publish`]).
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
//! covers: `part-<lo>-<hi>`. It publishes the new file first and then moves the old ones out of
//! the readings tree, to `<data_dir>/superseded/date=…/` ([`SUPERSEDED`]), where they stay for
//! the grace period (a query of ours that listed them may still open them there) and are
//! removed after it. A glob over `readings/` so sees each compacted row once, but for the few
//! renames between publishing and moving. After a crash in between, both are in the partition:
//! our readers take a partition's files through [`partition_files`], which skips a file whose
//! generation range lies inside another file's (*superseded*), and the next start moves them out.
//!
//! Until a partition is compacted, a key can be in two of its files only if two batches carried
//! it (a gateway resending under a new sequence number, a corrected reading): a plain reader
//! that must be right before compaction keeps, per key, the row with the highest `gen`
//! (`QUALIFY row_number() OVER (PARTITION BY account, meter, quantity, ts ORDER BY gen DESC) = 1`
//! in DuckDB). Compaction (at the latest `compact_after` after the flush) leaves one row per key.
//!
//! # Stored layout 4
//!
//! Every column of a file means what its name says, row by row, to a reader that knows nothing
//! of jieneng ([`stored_schema`]): `sum(delta)`, `sum(kgce)` or the latest `value` are plain SQL.
//!
//! - `ts` timestamp (ms, UTC), the end of the interval `delta` covers;
//! - `account`, `meter`, `category` (分类), `item` (分项), `quantity`, `unit`, `factor` (the carbon
//!   factor's id), `quality`, `gateway`: strings, dictionary-encoded;
//! - `value`: the reading in `unit`, DECIMAL(18, 3) ([`VALUE_DECIMALS`]), never null: for a
//!   cumulative quantity the register;
//! - `delta`: consumption since the previous good reading, DECIMAL(18, 6) ([`DELTA_DECIMALS`]),
//!   null for non-cumulative quantities and for the first reading of a register;
//! - `kgce`, `kgco2e`: the standard coal and CO2 of `delta` as the gateway computed them (with
//!   the factor in `factor`), DECIMAL(18, 7) ([`KG_DECIMALS`]), null where the gateway sent none;
//! - `gen`: the generation (see above).
//!
//! **Precision.** Readings arrive as doubles. The store keeps `value` to 0.001 of its unit (1 Wh,
//! 1 L, 1 g, 0.001 °C), `delta` to 1e-6 of it, and kgce and kgCO2e to 0.1 mg, rounding half away
//! from zero when a reading enters it ([`ReadingsBatchBuilder`], which builds both the flushed rows
//! and the rows of memory a query reads, so a reading has one value before and after its flush).
//! `delta` has more places than `value` because deltas are summed: a register rounded to 0.001
//! errs by at most 0.0005 once, but deltas rounded so would drift from the register's rise by up
//! to that per reading (a firmware counting 0.0625 kWh steps); six places hold every delta of a
//! register of up to six. The seven places of kgce hold exactly any kgce a gateway computes from a
//! delta of up to three places and a four-place factor (the built-in tables); a finer product is
//! rounded to 0.1 mg. Places cost nothing in `delta`, `kgce` and `kgco2e`, which are
//! dictionary-encoded; in `value`, delta-encoded, each decimal place costs about 3.3 bits. A
//! double read back is `integer / 10^places`, the nearest double to the decimal, as
//! DuckDB, pyarrow and Polars convert it. Magnitudes are bounded by
//! [`reading_model::MAX_ABS_QUANTITY`], [`reading_model::MAX_ABS_DELTA`] and
//! [`reading_model::MAX_ABS_KG`], checked at ingest, so
//! every stored integer is below 2^53 and converts to a double exactly. -0.0 is stored as 0.
//!
//! One decimal type per column in every file, whatever the quantity: a glob or dataset over many
//! files needs one schema. The integers are encoded so that a row costs about what its delta
//! carries (6.2 bytes per 15-minute reading, against layout 3's 1.6 that no outside reader could
//! sum, see `docs/BENCHMARKS.md`): `value` is
//! DELTA_BINARY_PACKED (a register's steps are its deltas), `delta`, `kgce` and `kgco2e` are
//! dictionary-encoded (a series repeats its few hundred distinct deltas, and kgce is delta times
//! one factor, so their dictionaries are as small as delta's), and the file is sorted by series.
//! The file's key-value metadata says `jieneng.readings.layout = 4` ([`LAYOUT_KEY`]) and
//! describes the columns (`jieneng.readings.columns`).
//!
//! Files of layouts 1 to 3 are read by [`layout3`] until compaction rewrites them;
//! [`read_files`] reads every layout.

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

pub mod layout3;
pub mod publish;
pub mod rollup;

pub const READINGS: &str = "readings";

/// Acknowledged readings that are not in Parquet yet: the ingest store's memory, which
/// queries read so that a reading is visible as soon as it is acknowledged.
pub trait LiveReadings: Send + Sync + std::fmt::Debug {
    /// The rows in arrival order (a later row with the same key replaces an earlier one).
    fn snapshot(&self) -> Vec<StoredReading>;
}

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

/// The layout version written to each file's key-value metadata under [`LAYOUT_KEY`] (see
/// "Stored layout 4" in the module doc). Files without the key are layout 1.
pub const LAYOUT: &str = "4";
pub const LAYOUT_KEY: &str = "jieneng.readings.layout";
/// The key of the column descriptions in a file's key-value metadata.
pub const COLUMNS_KEY: &str = "jieneng.readings.columns";

/// What each column of a layout-4 file means, written into every file ([`COLUMNS_KEY`]).
pub const COLUMNS_DOC: &str = "ts: end of the interval delta covers (UTC); \
account, meter, category (GB/T 分类 code), item (分项 code), quantity, unit: what was read; \
value: the reading in unit, for cumulative quantities the register, to 0.001 unit; \
delta: consumption since the previous good reading, to 1e-6 unit, null if none; \
kgce: standard coal equivalent of delta in kg as the gateway computed it, to 1e-7 kg; \
kgco2e: CO2 of delta in kg with the carbon factor named in factor, to 1e-7 kg; \
quality, gateway: as sent; gen: flush generation, the highest gen of a key is the current row, \
and within one partition directory every key is once after compaction.";

/// Decimal places of `value` in the files: 0.001 of the unit.
pub const VALUE_DECIMALS: i8 = 3;
/// Decimal places of `delta` in the files: 1e-6 of the unit.
pub const DELTA_DECIMALS: i8 = 6;
/// Decimal places of `kgce` and `kgco2e` in the files: 0.1 mg.
pub const KG_DECIMALS: i8 = 7;
/// The decimal precision of every stored number: the integers fit in a Parquet INT64.
pub const DECIMAL_PRECISION: u8 = 18;

/// Where compaction moves the files it replaced, outside the readings tree that tools glob:
/// `<data_dir>/superseded/date=YYYY-MM-DD/`.
pub const SUPERSEDED: &str = "superseded";

/// The directory holding the replaced files of a partition during the grace period.
pub fn superseded_dir(data_dir: &Path, date: &str) -> PathBuf {
    data_dir.join(SUPERSEDED).join(format!("date={date}"))
}

/// The decimal places a stored column keeps: [`VALUE_DECIMALS`] for `value`, [`DELTA_DECIMALS`]
/// for `delta`, [`KG_DECIMALS`] for `kgce` and `kgco2e`, `None` for the others.
pub fn decimals_of(column: &str) -> Option<i8> {
    match column {
        "value" => Some(VALUE_DECIMALS),
        "delta" => Some(DELTA_DECIMALS),
        "kgce" | "kgco2e" => Some(KG_DECIMALS),
        _ => None,
    }
}

/// The Arrow schema of layout-4 files: [`readings_schema`] with `value`, `delta`, `kgce` and
/// `kgco2e` as decimals (see "Stored layout 4" in the module doc).
pub fn stored_schema() -> SchemaRef {
    let fields: Vec<Field> = readings_schema()
        .fields()
        .iter()
        .map(|f| match decimals_of(f.name()) {
            Some(places) => Field::new(
                f.name(),
                DataType::Decimal128(DECIMAL_PRECISION, places),
                f.is_nullable(),
            ),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Integers up to 2^53 convert to f64 and back exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

// Every reading `Reading::check` lets through has integers that convert back exactly.
const _: () = assert!(reading_model::MAX_ABS_QUANTITY * 1e3 < EXACT);
const _: () = assert!(reading_model::MAX_ABS_DELTA * 1e6 < EXACT);
const _: () = assert!(reading_model::MAX_ABS_KG * 1e7 < EXACT);

/// `v` as an integer count of `10^-places`, rounded half away from zero; `None` where that
/// integer would not convert back to a double exactly (|v| too large, or not finite).
pub fn to_decimal(v: f64, places: i8) -> Option<i64> {
    let n = (v * 10f64.powi(i32::from(places))).round();
    (n.abs() < EXACT).then_some(n as i64)
}

/// The double a reader gets back from a stored decimal: the nearest to `n / 10^places`, as
/// Arrow's, DuckDB's and Polars' decimal-to-double casts compute it.
pub fn from_decimal(n: i64, places: i8) -> f64 {
    n as f64 / 10f64.powi(i32::from(places))
}

/// `v` as the files keep it: rounded to `places` decimals (see "Precision"). A value beyond
/// what a decimal holds is returned as it is, and the writer refuses it ([`to_stored`]).
pub fn quantize(v: f64, places: i8) -> f64 {
    // +0.0 for -0.0 too: a decimal has no negative zero.
    to_decimal(v, places).map_or(v, |n| from_decimal(n, places))
}

/// A batch of [`readings_schema`] as a layout-4 file stores it ([`stored_schema`]): the numbers
/// as decimals. A number no decimal of its column holds is an error naming the column and row
/// (ingest refuses such readings before, see [`reading_model::MAX_ABS_QUANTITY`]).
pub fn to_stored(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    let logical = batch.schema();
    let schema = stored_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column(logical.index_of(f.name())?);
            let Some(places) = decimals_of(f.name()) else {
                return Ok(column.clone());
            };
            let floats = column.as_primitive_opt::<Float64Type>().ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "readings column {} is not float64",
                    f.name()
                ))
            })?;
            let mut out = arrow::array::Decimal128Builder::with_capacity(floats.len());
            for (row, v) in floats.iter().enumerate() {
                match v.map(|v| (v, to_decimal(v, places))) {
                    None => out.append_null(),
                    Some((_, Some(n))) => out.append_value(i128::from(n)),
                    Some((v, None)) => {
                        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
                            "row {row}: {} {v} does not fit DECIMAL({DECIMAL_PRECISION}, {places})",
                            f.name()
                        )));
                    }
                }
            }
            Ok(Arc::new(
                out.finish()
                    .with_precision_and_scale(DECIMAL_PRECISION, places)?,
            ) as ArrayRef)
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// A batch read from a file of any layout as a batch of [`readings_schema`]. Layout 4 (decimal
/// `value`) converts its decimals to doubles ([`from_decimal`]); older files go through
/// [`layout3::from_stored`] with the file's `values` reader.
pub fn from_stored(
    batch: &RecordBatch,
    values: &mut layout3::ValueReader,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let stored = batch.schema();
    let value = stored.field_with_name("value")?;
    if !matches!(value.data_type(), DataType::Decimal128(..)) {
        return layout3::from_stored(batch, values);
    }
    let schema = readings_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column(stored.index_of(f.name())?);
            if decimals_of(f.name()).is_some() {
                arrow::compute::cast(column, &DataType::Float64)
            } else {
                Ok(column.clone())
            }
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// The stored layout of a readings file, from its footer: 1 for files without [`LAYOUT_KEY`].
pub fn file_layout(path: &Path) -> Result<u32, StorageError> {
    let err = |message: String| StorageError {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader =
        parquet::file::reader::SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
    let layout = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == LAYOUT_KEY))
        .and_then(|k| k.value.clone());
    match layout {
        None => Ok(1),
        Some(v) => v
            .parse()
            .map_err(|_| err(format!("{LAYOUT_KEY} is {v:?}, not a layout number"))),
    }
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
        // To the precision of the files (see "Precision" in the module doc), here where every
        // row a reader sees is built, flushed or still in memory.
        self.value.append_value(quantize(r.value, VALUE_DECIMALS));
        self.delta
            .append_option(r.delta.map(|v| quantize(v, DELTA_DECIMALS)));
        self.kgce
            .append_option(r.kgce.map(|v| quantize(v, KG_DECIMALS)));
        self.kgco2e
            .append_option(r.kgco2e.map(|v| quantize(v, KG_DECIMALS)));
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
        // A cumulative register is different in nearly every row, and steps by its delta:
        // delta-encoded, a row costs the bits of its delta, where a dictionary would add its
        // indices to the values.
        .set_column_dictionary_enabled(col("value"), false)
        .set_column_encoding(col("value"), parquet::basic::Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("meter"), true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new(LAYOUT_KEY.to_owned(), LAYOUT.to_owned()),
            parquet::file::metadata::KeyValue::new(COLUMNS_KEY.to_owned(), COLUMNS_DOC.to_owned()),
        ]))
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

/// Rows per row group of a readings file.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Writes rows (already sorted) of generation `generation` as one Parquet file to `w`.
pub fn write_parquet<W: std::io::Write + Send>(
    w: W,
    rows: &[StoredReading],
    generation: i64,
) -> Result<W, parquet::errors::ParquetError> {
    write_batch(w, &to_record_batch(rows, generation)?)
}

/// Writes a batch of [`readings_schema`] (already sorted) as one Parquet file to `w`, in stored
/// layout 4 ([`to_stored`]).
pub fn write_batch<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
) -> Result<W, parquet::errors::ParquetError> {
    let mut writer = ArrowWriter::try_new(w, stored_schema(), Some(writer_properties()))?;
    writer.write(&to_stored(batch)?)?;
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

/// Reads readings files (of either layout) into one batch of [`readings_schema`] (empty if
/// there are none).
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
        let mut values = layout3::ValueReader::default();
        for b in reader {
            let b = b.map_err(|e| err(e.to_string()))?;
            batches.push(from_stored(&b, &mut values).map_err(|e| err(e.to_string()))?);
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
pub(crate) mod tests {
    use reading_model::Reading;

    use super::*;

    fn rows(seed: u64, n: usize) -> Vec<StoredReading> {
        test_support::random_readings(seed, n)
            .into_iter()
            .map(|(gateway, reading)| StoredReading { gateway, reading })
            .collect()
    }

    /// Rows whose kgce/kgCO2e are what a gateway computes (delta × a table factor, or a
    /// deployment's own), plus the cases the derivation cannot express.
    pub(crate) fn derived_rows() -> Vec<StoredReading> {
        let mut rows = rows(4242, 400);
        for (i, row) in rows.iter_mut().enumerate() {
            let r = &mut row.reading;
            let d = r.delta.unwrap_or(0.0) * 1.37 + 0.01;
            r.delta = Some(d);
            r.value = match i % 5 {
                // A register in hundredths, and one in thousandths: stored as decimals.
                0 => (r.value * 100.0 + 7.0).round() / 100.0,
                1 => (r.value * 1000.0 + 3.0) / 1000.0,
                // No decimal of at most six places gives these bits: kept as given.
                2 => r.value + 0.1 + 0.2 + 1e-9,
                3 => -0.0,
                _ => r.value * std::f64::consts::PI,
            };
            (r.kgce, r.kgco2e) = match i % 7 {
                // A deployment's own coefficient: not in the tables, found by division.
                0 => (Some(d * 0.123_456_7), Some(d * 0.9876)),
                // A sender that rounded: no coefficient reproduces the bits, kept as given.
                1 => (Some((d * 0.1229 * 1000.0).round() / 1000.0), None),
                // No delta, but a kgce: kept as given.
                2 => {
                    r.delta = None;
                    (Some(1.5), Some(-0.0))
                }
                // Zero consumption, negative zero carbon.
                3 => {
                    r.delta = Some(0.0);
                    (Some(0.0), Some(-0.0))
                }
                _ => (Some(d * 0.1229), Some(d * 0.5366)),
            };
        }
        sort_and_dedupe(&mut rows);
        rows
    }

    pub(crate) fn bits(batch: &RecordBatch, name: &str) -> Vec<Option<u64>> {
        use arrow::array::AsArray;
        use arrow::datatypes::Float64Type;
        let i = batch.schema().index_of(name).unwrap();
        batch
            .column(i)
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(f64::to_bits))
            .collect()
    }

    /// Cumulative registers as gateways send them (value in hundredths or thousandths, delta
    /// the difference), with what breaks a run of steps: a counter reset without delta, a delta
    /// that disagrees with the difference, a value with no short decimal, a new scale.
    /// [`test_support::register_series`] as stored rows, in key order.
    pub(crate) fn register_rows() -> Vec<StoredReading> {
        let mut rows: Vec<_> = test_support::register_series()
            .into_iter()
            .map(stored)
            .collect();
        sort_and_dedupe(&mut rows);
        rows
    }

    /// A reading from [`test_support::reading`], delivered by gateway `gw`.
    pub(crate) fn reading(meter: &str, ts: i64, value: f64, delta: Option<f64>) -> StoredReading {
        stored(test_support::reading(meter, ts, value, delta))
    }

    pub(crate) fn stored(reading: Reading) -> StoredReading {
        StoredReading {
            gateway: test_support::gateway(),
            reading,
        }
    }

    #[test]
    fn layout_4_stores_every_number_as_a_decimal_that_reads_back_as_the_quantized_double() {
        let rows = derived_rows();
        let logical = to_record_batch(&rows, 3).unwrap();
        let file = write_batch(tempfile::tempfile().unwrap(), &logical).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let kv = |key: &str| {
            reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == key))
                .and_then(|k| k.value.clone())
        };
        assert_eq!(kv(LAYOUT_KEY).as_deref(), Some("4"));
        assert!(kv(COLUMNS_KEY).is_some_and(|d| d.contains("kgce: standard coal")));
        assert_eq!(reader.schema().fields(), stored_schema().fields());
        let stored: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let stored = arrow::compute::concat_batches(&stored_schema(), &stored).unwrap();
        // Materialized: a number is null in the file exactly where the reading has none.
        for name in ["value", "delta", "kgce", "kgco2e"] {
            let (s, l) = (
                stored.column_by_name(name).unwrap(),
                logical.column_by_name(name).unwrap(),
            );
            assert_eq!(s.logical_nulls(), l.logical_nulls(), "{name}");
        }
        let back = from_stored(&stored, &mut layout3::ValueReader::default()).unwrap();
        assert_eq!(back, logical);
        // And the doubles are the readings' to the documented places, half away from zero.
        assert_eq!(back.num_rows(), rows.len());
        for (row, r) in rows.iter().enumerate() {
            let value = bits(&back, "value")[row].map(f64::from_bits);
            let want = (r.reading.value * 1000.0).round() / 1000.0 + 0.0;
            assert_eq!(value.map(f64::to_bits), Some(want.to_bits()), "row {row}");
            let kgce = bits(&back, "kgce")[row].map(f64::from_bits);
            let want = r.reading.kgce.map(|k| (k * 1e7).round() / 1e7 + 0.0);
            assert_eq!(kgce.map(f64::to_bits), want.map(f64::to_bits), "row {row}");
        }
    }

    #[test]
    fn a_kgce_of_a_table_factor_is_stored_exactly_so_its_sum_is_the_factor_times_the_delta_sum() {
        // delta to 0.01 kWh, factor to four places: the product has six, which seven hold.
        let deltas = [0.37, 12.05, 3.99, 0.01, 7.43];
        let stored: Vec<i64> = deltas
            .iter()
            .map(|&d| to_decimal(quantize(d * 0.1229, KG_DECIMALS), KG_DECIMALS).unwrap())
            .collect();
        let exact: Vec<i64> = deltas
            .iter()
            .map(|&d| (d * 100.0_f64).round() as i64 * 1229 * 10)
            .collect();
        assert_eq!(stored, exact);
    }

    #[test]
    fn deltas_keep_the_places_of_a_register_step_so_they_add_up_to_its_rise() {
        // A firmware counting 1/16 kWh: a delta to three places would drift 0.0005 a reading.
        let step = 0.0625;
        let stored: i64 = (0..9)
            .map(|_| to_decimal(quantize(step, DELTA_DECIMALS), DELTA_DECIMALS).unwrap())
            .sum();
        assert_eq!(from_decimal(stored, DELTA_DECIMALS), 9.0 * step);
    }

    #[test]
    fn a_number_no_decimal_holds_is_an_error_naming_the_column_not_a_rounded_guess() {
        let mut rows = derived_rows();
        rows.truncate(3);
        rows[1].reading.value = 2e13;
        let err = to_stored(&to_record_batch(&rows, 1).unwrap()).unwrap_err();
        assert!(err.to_string().contains("row 1: value"), "{err}");
        rows[1].reading.value = 1.0;
        rows[2].reading.kgce = Some(1e9);
        let err = to_stored(&to_record_batch(&rows, 1).unwrap()).unwrap_err();
        assert!(err.to_string().contains("row 2: kgce"), "{err}");
        // Ingest refuses both before: the bounds are the reading's own check.
        let mut r = rows[0].reading.clone();
        r.value = 2e13;
        assert_eq!(r.check(0).unwrap_err().field, "value");
        r.value = 1.0;
        r.kgce = Some(1e9);
        assert_eq!(r.check(0).unwrap_err().field, "kgce");
    }

    #[test]
    fn a_partition_of_layout_1_3_and_4_files_reads_as_one() {
        let rows = register_rows();
        let third = rows.len() / 3;
        let dir = tempfile::tempdir().unwrap();
        let create = |lo, hi| std::fs::File::create(dir.path().join(file_name(lo, hi))).unwrap();
        let (a, b, c) = (
            to_record_batch(&rows[..third], 1).unwrap(),
            to_record_batch(&rows[third..2 * third], 2).unwrap(),
            to_record_batch(&rows[2 * third..], 3).unwrap(),
        );
        let mut w = ArrowWriter::try_new(create(1, 1), readings_schema(), None).unwrap();
        w.write(&a).unwrap();
        w.close().unwrap();
        layout3::write_row_groups(create(2, 2), &b, 5).unwrap();
        write_batch(create(3, 3), &c).unwrap();
        let (files, _) = partition_files(dir.path()).unwrap();
        let layouts: Vec<u32> = files
            .iter()
            .map(|f| file_layout(&f.path).unwrap())
            .collect();
        assert_eq!(layouts, [1, 3, 4]);
        let all = arrow::compute::concat_batches(&readings_schema(), &[a, b, c]).unwrap();
        assert_eq!(read_files(&files).unwrap(), all);
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
