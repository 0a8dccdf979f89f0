//! The storage contract: the readings table's Arrow schema, its Hive-style date partitions,
//! and the Parquet writer settings. Ingest writes with these; query and DuckDB read them.
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
//! covers: `part-<lo>-<hi>`. It publishes the new file first and removes the old ones after, so
//! for a while (or after a crash in between) both are on disk. Readers therefore take a
//! partition's files through [`live_files`]: a file whose generation range lies inside another
//! file's range is *superseded* and skipped. Tools that glob the directory (DuckDB, pyarrow)
//! see exactly one row per key once superseded files are removed (at the latest when the server
//! stops); before that they may see a compacted row twice.
//!
//! # Stored layout
//!
//! The files do not hold [`readings_schema`] column for column ([`stored_schema`]); each
//! number is stored in the form that encodes smallest, and a reader gives back the exact bits
//! that were sent ([`from_stored`]).
//!
//! `value`: a register counts in decimal steps (0.01 kWh), but as a double a reading costs 3.4
//! bytes, since its low mantissa bits differ in every row; and the step from one reading to the
//! next is the delta, which the file holds anyway. So per row, one of:
//!
//! - a *step*: only `value_scale` set (`value`, `value_scaled` null). The row's decimal is the
//!   row before's plus `round(delta × value_scale)`, and the value that decimal over
//!   `value_scale`. The writer chooses this only where the row before is the same series in the
//!   same row group with a decimal of the same scale, `delta × value_scale` lies within a
//!   quarter of an integer (so any rounding rule agrees) and the result has the exact bits.
//! - a *decimal*: `value_scaled` and `value_scale` set: the value is `value_scaled as f64 /
//!   value_scale` (an integer below 2^53 over a power of ten up to 10^6), chosen where that
//!   quotient has the exact bits. The first row of each series in each row group, and a row
//!   after a counter reset, a meter swap or a delta that does not match.
//! - `value` set: that is the value (a double with no short decimal, -0.0, NaN).
//!
//! A value therefore depends on the rows before it in its row group: a reader reads whole row
//! groups, in order ([`ValueReader`]; [`StoredReadings`] for DataFusion, which reads files that
//! way wherever a query wants `value`). Row groups hold [`ROW_GROUP_ROWS`] rows and may be
//! skipped whole. Every other number is per row, so queries that do not read `value` prune as
//! they like.
//!
//! kgce and kgCO2e are a delta times a coefficient, and stored as such they cost as much as the
//! delta itself (1.4 bytes per reading each, against a 2-byte budget for everything). So a file
//! has two more columns, `kgce_per_unit` and `kgco2e_per_unit`, and per row:
//!
//! - `kgce` null and `kgce_per_unit` set: the reading's kgce is `delta * kgce_per_unit`, one
//!   f64 multiplication, bit for bit the number that was sent. The writer only chooses this
//!   where it reproduces the exact bits (trying the previous row's coefficient, the built-in
//!   factor tables', then the quotient), so nothing is lost whatever the sender computed.
//! - `kgce` set: that is the reading's kgce (a sender that rounded, a kgce without delta).
//! - both null: no kgce.
//!
//! Likewise `kgco2e` with `kgco2e_per_unit`. A series keeps its factor, so the coefficient
//! columns are a few runs per row group and cost next to nothing. The file's key-value metadata
//! says `jieneng.readings.layout = 3` ([`LAYOUT_KEY`]). Layout 2 is the same without steps (every
//! decimal given), and reads alike. Files written before (layout 1, no key) have none of these
//! columns and every number given: readers take columns by name and treat a missing column as
//! null, so all layouts read alike ([`from_stored`], and the query layer's `readings` view,
//! which selects the `coalesce`s below over [`StoredReadings`]).
//!
//! A DuckDB user reading the files directly gets the numbers the same way, in file order:
//!
//! ```sql
//! SELECT * EXCLUDE (step, run),
//!        coalesce(value, (first_value(value_scaled) OVER r + sum(step) OVER r) / value_scale)
//!            AS value_as_sent,
//!        coalesce(kgce, delta * kgce_per_unit) AS kgce_as_sent,
//!        coalesce(kgco2e, delta * kgco2e_per_unit) AS kgco2e_as_sent
//! FROM (SELECT *, count(value_scaled) OVER (PARTITION BY filename ORDER BY file_row_number) AS run
//!       FROM (SELECT *, CASE WHEN value IS NULL AND value_scaled IS NULL
//!                            THEN CAST(round(delta * value_scale) AS BIGINT) ELSE 0 END AS step
//!             FROM read_parquet('readings/*/*.parquet', hive_partitioning = true,
//!                               union_by_name = true, filename = true, file_row_number = true)))
//! WINDOW r AS (PARTITION BY filename, run ORDER BY file_row_number
//!              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
//! ```
//!
//! (`union_by_name` only matters while layout-1 files remain; `tests/peers/dump_parquet.py` does
//! the same in Python), or reads the rollups, whose kgce and kgCO2e are plain sums. `delta` and
//! every other column are stored as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int64Array, StringArray, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use reading_model::{Category, FactorTables, GatewayId, Reading};

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
/// "Stored layout" in the module doc). Files without the key are layout 1.
pub const LAYOUT: &str = "3";
pub const LAYOUT_KEY: &str = "jieneng.readings.layout";

/// The coefficient columns of the stored layout: `kgce = delta × kgce_per_unit` where `kgce` is
/// null and the coefficient is not, likewise for kgCO2e.
pub const KGCE_PER_UNIT: &str = "kgce_per_unit";
pub const KGCO2E_PER_UNIT: &str = "kgco2e_per_unit";

/// The decimal columns of the stored layout: `value = value_scaled / value_scale` where `value`
/// is null.
pub const VALUE_SCALED: &str = "value_scaled";
pub const VALUE_SCALE: &str = "value_scale";

/// The Arrow schema of the files: [`readings_schema`] with `value` nullable, the decimal
/// columns after it and the coefficient columns after `kgco2e` (see "Stored layout" in the
/// module doc).
pub fn stored_schema() -> SchemaRef {
    let mut fields = Vec::new();
    for f in readings_schema().fields() {
        match f.name().as_str() {
            "value" => {
                fields.push(Field::new("value", DataType::Float64, true));
                fields.push(Field::new(VALUE_SCALED, DataType::Int64, true));
                fields.push(Field::new(VALUE_SCALE, DataType::Float64, true));
            }
            "kgco2e" => {
                fields.push(f.as_ref().clone());
                fields.push(Field::new(KGCE_PER_UNIT, DataType::Float64, true));
                fields.push(Field::new(KGCO2E_PER_UNIT, DataType::Float64, true));
            }
            _ => fields.push(f.as_ref().clone()),
        }
    }
    Arc::new(Schema::new(fields))
}

/// Scales tried for a value: a register resolves whole units down to 0.000001 of one.
const SCALES: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Integers below 2^53 convert to f64 and back exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Rows per row group of a readings file. Each row group starts every series with a full
/// decimal (see "Stored layout"), so a reader may skip row groups but never part of one.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// The step, in units of `1 / scale`, that `delta` stands for: `round(delta × scale)`, where
/// that product lies within a quarter of an integer below 2^53. The margin makes every rounding
/// rule (Rust's half away from zero, NumPy's half to even, DuckDB's) give the same integer, so
/// a peer rebuilding values gets the same bits.
fn decimal_step(delta: f64, scale: f64) -> Option<i64> {
    let x = delta * scale;
    let k = x.round();
    (k.abs() < EXACT && (x - k).abs() <= 0.25).then_some(k as i64)
}

/// Splits `value` into what the file stores (see "Stored layout" in the module doc): per row a
/// step (only `value_scale` set), a full decimal (`value_scaled` and `value_scale`) or the value
/// itself. `continues[i]` says row `i` is the same series as row `i - 1`; the first row of the
/// batch never does, so a batch written as one row group starts every series in full.
fn split_value(
    value: &Float64Array,
    delta: &Float64Array,
    continues: &[bool],
) -> (Float64Array, Int64Array, Float64Array) {
    let n = value.len();
    let mut stored = Float64Builder::with_capacity(n);
    let mut scaled = arrow::array::Int64Builder::with_capacity(n);
    let mut scale = Float64Builder::with_capacity(n);
    // The previous row's decimal, if it had one.
    let mut previous: Option<(i64, f64)> = None;
    for (i, &same_series) in continues.iter().enumerate().take(n) {
        if value.is_null(i) {
            stored.append_null();
            scaled.append_null();
            scale.append_null();
            previous = None;
            continue;
        }
        let v = value.value(i);
        // The previous row's scale first, so that a series keeps one scale.
        let found = previous
            .map(|(_, s)| s)
            .into_iter()
            .chain(SCALES)
            .find_map(|s| {
                // Checked through the integer, as it is read back: -0.0 has no integer.
                let m = (v * s).round();
                let n = m as i64;
                (m.abs() < EXACT && (n as f64 / s).to_bits() == v.to_bits()).then_some((n, s))
            });
        match found {
            Some((m, s)) => {
                let step =
                    previous
                        .filter(|&(_, ps)| same_series && ps == s)
                        .and_then(|(pm, _)| {
                            let d = (!delta.is_null(i)).then(|| delta.value(i))?;
                            (decimal_step(d, s)? == m.checked_sub(pm)?).then_some(())
                        });
                stored.append_null();
                match step {
                    Some(()) => scaled.append_null(),
                    None => scaled.append_value(m),
                }
                scale.append_value(s);
                previous = Some((m, s));
            }
            None => {
                stored.append_value(v);
                scaled.append_null();
                scale.append_null();
                previous = None;
            }
        }
    }
    (stored.finish(), scaled.finish(), scale.finish())
}

/// Rebuilds the `value` column of a file from its stored form, row after row. One reader per
/// file, fed the file's rows in order: the rows of whole row groups, none skipped inside one.
#[derive(Debug, Default, Clone)]
pub struct ValueReader {
    /// The previous row's decimal, if it had one.
    previous: Option<(i64, f64)>,
}

impl ValueReader {
    /// The values of the next rows. `scaled` and `scale` are the file's decimal columns (absent
    /// in layout-1 files, whose values are all given); `delta` is needed for steps.
    pub fn read(
        &mut self,
        given: &Float64Array,
        scaled: Option<&Int64Array>,
        scale: Option<&Float64Array>,
        delta: Option<&Float64Array>,
    ) -> Result<Float64Array, arrow::error::ArrowError> {
        let (Some(scaled), Some(scale)) = (scaled, scale) else {
            self.previous = None;
            return Ok(given.clone());
        };
        let mut out = Float64Builder::with_capacity(given.len());
        for i in 0..given.len() {
            if given.is_valid(i) {
                out.append_value(given.value(i));
                self.previous = None;
                continue;
            }
            if scale.is_null(i) {
                out.append_null();
                self.previous = None;
                continue;
            }
            let s = scale.value(i);
            let m = if scaled.is_valid(i) {
                scaled.value(i)
            } else {
                // A step from the row before (same series, same scale, by the writer's rule).
                let d = delta.filter(|d| d.is_valid(i)).map(|d| d.value(i));
                self.previous
                    .filter(|&(_, ps)| ps == s)
                    .zip(d.and_then(|d| decimal_step(d, s)))
                    .and_then(|((pm, _), k)| pm.checked_add(k))
                    .ok_or_else(|| {
                        arrow::error::ArrowError::InvalidArgumentError(format!(
                            "row {i} of a batch: value stored as a step from the row before, \
                             but the row before has no decimal of scale {s} or the row no \
                             usable delta (rows of a row group read out of order?)"
                        ))
                    })?
            };
            self.previous = Some((m, s));
            out.append_value(m as f64 / s);
        }
        Ok(out.finish())
    }
}

/// The coefficients tried first for a category: the built-in factor tables' (see
/// [`FactorTables::per_unit_values`]). A deployment's own factors are found by division.
fn table_coefficients(category: &str) -> &'static [f64] {
    static TABLES: OnceLock<HashMap<&'static str, Vec<f64>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let Ok(t) = FactorTables::builtin() else {
            return HashMap::new();
        };
        Category::ALL
            .into_iter()
            .map(|c| (c.code(), t.per_unit_values(c)))
            .collect()
    });
    tables.get(category).map_or(&[], Vec::as_slice)
}

/// Splits a derived column (`kgce` or `kgco2e`) into what the file stores: per row either the
/// coefficient `c` with `delta × c` bit-identical to the value (and the value null), or the
/// value itself (and no coefficient). Null stays null.
fn split_derived(
    delta: &Float64Array,
    derived: &Float64Array,
    category: &StringArray,
) -> (Float64Array, Float64Array) {
    let n = derived.len();
    let (mut stored, mut coefficient) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut previous: Option<f64> = None;
    for i in 0..n {
        if derived.is_null(i) {
            stored.append_null();
            coefficient.append_null();
            continue;
        }
        let value = derived.value(i);
        let found = (!delta.is_null(i)).then(|| delta.value(i)).and_then(|d| {
            // The previous row's coefficient first (a series keeps its factor), then the
            // tables', then the quotient: whichever reproduces the exact bits.
            // The tables are looked up only when the previous coefficient fails: nearly every
            // row takes the first test, and the lookup hashes the category.
            let exact = |c: &f64| c.is_finite() && (d * c).to_bits() == value.to_bits();
            previous.filter(exact).or_else(|| {
                table_coefficients(category.value(i))
                    .iter()
                    .copied()
                    .chain(std::iter::once(value / d))
                    .find(exact)
            })
        });
        match found {
            Some(c) => {
                stored.append_null();
                coefficient.append_value(c);
                previous = Some(c);
            }
            None => {
                stored.append_value(value);
                coefficient.append_null();
            }
        }
    }
    (stored.finish(), coefficient.finish())
}

/// A batch of [`readings_schema`] as the file stores it ([`stored_schema`]).
pub fn to_stored(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    let logical = batch.schema();
    let column = |name: &str| -> Result<&ArrayRef, arrow::error::ArrowError> {
        Ok(batch.column(logical.index_of(name)?))
    };
    let float = |name: &str| -> Result<&Float64Array, arrow::error::ArrowError> {
        column(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "readings column {name} is not float64"
                ))
            })
    };
    let string = |name: &str| -> Result<&StringArray, arrow::error::ArrowError> {
        column(name)?.as_string_opt::<i32>().ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("readings column {name} is not utf8"))
        })
    };
    let category = string("category")?;
    let delta = float("delta")?;
    let (kgce, kgce_per_unit) = split_derived(delta, float("kgce")?, category);
    let (kgco2e, kgco2e_per_unit) = split_derived(delta, float("kgco2e")?, category);
    let series = [string("account")?, string("meter")?, string("quantity")?];
    let continues: Vec<bool> = (0..batch.num_rows())
        .map(|i| i > 0 && series.iter().all(|c| c.value(i) == c.value(i - 1)))
        .collect();
    let (value, value_scaled, value_scale) = split_value(float("value")?, delta, &continues);
    let schema = stored_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(match f.name().as_str() {
                "value" => Arc::new(value.clone()) as ArrayRef,
                VALUE_SCALED => Arc::new(value_scaled.clone()),
                VALUE_SCALE => Arc::new(value_scale.clone()),
                "kgce" => Arc::new(kgce.clone()),
                "kgco2e" => Arc::new(kgco2e.clone()),
                KGCE_PER_UNIT => Arc::new(kgce_per_unit.clone()),
                KGCO2E_PER_UNIT => Arc::new(kgco2e_per_unit.clone()),
                name => column(name)?.clone(),
            })
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// A batch read from a file of either layout as a batch of [`readings_schema`]: values rebuilt
/// by `values` (the file's reader, see [`ValueReader`]), `kgce` and `kgco2e` filled in from their
/// coefficients where the file left them to the derivation. Columns are taken by name; a
/// layout-1 file has no coefficient or decimal columns and every value given.
pub fn from_stored(
    batch: &RecordBatch,
    values: &mut ValueReader,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    let stored = batch.schema();
    let float = |name: &str| -> Option<&Float64Array> {
        let i = stored.index_of(name).ok()?;
        batch.column(i).as_primitive_opt::<Float64Type>()
    };
    let derive = |name: &str, per_unit: &str| -> Option<Float64Array> {
        let (given, per_unit, delta) = (float(name)?, float(per_unit)?, float("delta")?);
        Some(
            (0..batch.num_rows())
                .map(|i| {
                    if given.is_valid(i) {
                        Some(given.value(i))
                    } else if per_unit.is_valid(i) && delta.is_valid(i) {
                        Some(delta.value(i) * per_unit.value(i))
                    } else {
                        None
                    }
                })
                .collect(),
        )
    };
    let given = float("value").ok_or_else(|| {
        arrow::error::ArrowError::SchemaError("readings file has no float64 value column".into())
    })?;
    let scaled = stored
        .index_of(VALUE_SCALED)
        .ok()
        .and_then(|i| batch.column(i).as_primitive_opt::<Int64Type>());
    let value = values.read(given, scaled, float(VALUE_SCALE), float("delta"))?;
    let schema = readings_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let derived = match f.name().as_str() {
                "value" => Some(value.clone()),
                "kgce" => derive("kgce", KGCE_PER_UNIT),
                "kgco2e" => derive("kgco2e", KGCO2E_PER_UNIT),
                _ => None,
            };
            match derived {
                Some(d) => Ok(Arc::new(d) as ArrayRef),
                None => Ok(batch.column(stored.index_of(f.name())?).clone()),
            }
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
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
        // A register in hundredths steps by the delta in hundredths: delta-encoded, that is a
        // few bits a row where a dictionary or plain int64s would be a byte or more.
        .set_column_dictionary_enabled(col(VALUE_SCALED), false)
        .set_column_encoding(
            col(VALUE_SCALED),
            parquet::basic::Encoding::DELTA_BINARY_PACKED,
        )
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(col("meter"), true)
        // account, meter, quantity, ts: the sort order of every file.
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            LAYOUT_KEY.to_owned(),
            LAYOUT.to_owned(),
        )]))
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

/// Writes a batch of [`readings_schema`] (already sorted) as one Parquet file to `w`, in the
/// stored layout ([`to_stored`]).
pub fn write_batch<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
) -> Result<W, parquet::errors::ParquetError> {
    write_row_groups(w, batch, ROW_GROUP_ROWS)
}

/// [`write_batch`] with row groups of `rows` rows: each is stored on its own ([`to_stored`]),
/// so that its series start in full.
pub fn write_row_groups<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
    rows: usize,
) -> Result<W, parquet::errors::ParquetError> {
    let properties = writer_properties()
        .into_builder()
        .set_max_row_group_row_count(Some(rows.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(w, stored_schema(), Some(properties))?;
    let mut start = 0;
    loop {
        let len = rows.max(1).min(batch.num_rows() - start);
        writer.write(&to_stored(&batch.slice(start, len))?)?;
        // Ends the row group here, whatever the writer's own limits would do.
        writer.flush()?;
        start += len;
        if start >= batch.num_rows() {
            break;
        }
    }
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
        let mut values = ValueReader::default();
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
    fn derived_rows() -> Vec<StoredReading> {
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

    fn bits(batch: &RecordBatch, name: &str) -> Vec<Option<u64>> {
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

    #[test]
    fn stored_layout_gives_back_every_kgce_and_kgco2e_bit_for_bit() {
        let rows = derived_rows();
        let logical = to_record_batch(&rows, 3).unwrap();
        let stored = to_stored(&logical).unwrap();
        assert_eq!(stored.schema(), stored_schema());
        // Most values are left to the derivation; the ones it cannot express are kept.
        let given = |name: &str| {
            let c = stored.column(stored.schema().index_of(name).unwrap());
            c.len() - c.null_count()
        };
        assert!(
            given("kgce") > 0 && given("kgce") < rows.len() / 3,
            "{}",
            given("kgce")
        );
        assert!(given(KGCE_PER_UNIT) > rows.len() / 2);
        assert!(given("value") > 0 && given(VALUE_SCALED) > rows.len() / 3);
        // Through a real file and back.
        let file = write_batch(tempfile::tempfile().unwrap(), &logical).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == LAYOUT_KEY))
                .and_then(|k| k.value.clone())
                .as_deref(),
            Some(LAYOUT)
        );
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let back = from_stored(
            &arrow::compute::concat_batches(&stored_schema(), &batches).unwrap(),
            &mut ValueReader::default(),
        )
        .unwrap();
        for name in ["kgce", "kgco2e", "delta", "value"] {
            assert_eq!(bits(&back, name), bits(&logical, name), "{name}");
        }
        assert_eq!(back, logical);
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
    fn values_stored_as_steps_read_back_bit_for_bit_from_any_row_group() {
        let logical = to_record_batch(&register_rows(), 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(2, 2));
        write_row_groups(std::fs::File::create(&path).unwrap(), &logical, 7).unwrap();
        // Most rows are steps: neither the value nor its decimal is in the file.
        let stored = to_stored(&logical).unwrap();
        let column = |name: &str| {
            stored
                .column(stored.schema().index_of(name).unwrap())
                .clone()
        };
        let steps = (0..stored.num_rows())
            .filter(|&i| {
                column("value").is_null(i)
                    && column(VALUE_SCALED).is_null(i)
                    && column(VALUE_SCALE).is_valid(i)
            })
            .count();
        assert!(steps > logical.num_rows() * 3 / 4, "{steps}");
        // The whole file.
        let (files, _) = partition_files(dir.path()).unwrap();
        let back = read_files(&files).unwrap();
        assert_eq!(bits(&back, "value"), bits(&logical, "value"));
        assert_eq!(back, logical);
        // Each row group on its own, read in small batches: every one starts its series in full.
        let open = || {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap()
        };
        let groups = open().metadata().num_row_groups();
        assert_eq!(groups, logical.num_rows().div_ceil(7));
        for g in 0..groups {
            let mut values = ValueReader::default();
            let read: Vec<RecordBatch> = open()
                .with_row_groups(vec![g])
                .with_batch_size(3)
                .build()
                .unwrap()
                .map(|b| from_stored(&b.unwrap(), &mut values).unwrap())
                .collect();
            let read = arrow::compute::concat_batches(&readings_schema(), &read).unwrap();
            assert_eq!(read, logical.slice(g * 7, read.num_rows()), "row group {g}");
        }
    }

    #[test]
    fn a_step_without_the_row_before_is_an_error_not_a_guess() {
        let logical = to_record_batch(&register_rows(), 2).unwrap();
        let stored = to_stored(&logical).unwrap();
        // Rows 1.. of a series, without row 0 that holds its decimal.
        let err = from_stored(&stored.slice(1, 10), &mut ValueReader::default()).unwrap_err();
        assert!(
            err.to_string().contains("step from the row before"),
            "{err}"
        );
    }

    #[test]
    fn a_layout_1_file_reads_as_given() {
        // Today's schema with every column full, as files before the stored layout were.
        let logical = to_record_batch(&derived_rows(), 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1, 1));
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            readings_schema(),
            None,
        )
        .unwrap();
        w.write(&logical).unwrap();
        w.close().unwrap();
        let (files, _) = partition_files(dir.path()).unwrap();
        assert_eq!(read_files(&files).unwrap(), logical);
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
