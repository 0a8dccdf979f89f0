//! Sums of rollup files per (account, category, item, unit, report period), read with the
//! Parquet reader directly rather than through DataFusion.
//!
//! A year-long monthly report reads ~760 rollup files: the daily rollups of two years (the
//! report's year and the year before, for 同比) and the hourly rollups of the dates a month
//! boundary cuts. Through DataFusion every file costs a listing entry, a planned partition,
//! async hand-offs between threads and a timezone-aware `date_trunc` per row; the work itself
//! (a few hundred rows per daily file) is small. Here each file is opened, its footer read and
//! its nine needed columns decoded, with the strings kept as the files' dictionaries, and the
//! rows are summed in a hash map keyed by small integers. The files are split into one
//! contiguous run per core, and the runs' sums are added in file order, so the result does not
//! depend on thread timing.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, DictionaryArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch,
    StringArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use chrono::{Months, NaiveDate};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use super::schema::{Period, Sums, rollup_schema};
use crate::StorageError;
use reading_model::time::{Granularity, OFFSET_MS, local_midnight_ms};

/// How long a rollup file's row periods are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Hourly or daily: `(ts, ts + length]`.
    Fixed(i64),
    /// A Beijing month starting at `ts`.
    Month,
}

/// One rollup file to read: the rows whose period lies in `window` `(from, to]` count.
#[derive(Debug, Clone)]
pub struct RollupFile {
    pub path: PathBuf,
    pub span: Span,
    pub window: (i64, i64),
}

impl RollupFile {
    pub fn new(path: PathBuf, period: Period, window: (i64, i64)) -> Self {
        Self {
            path,
            span: Span::Fixed(period.millis()),
            window,
        }
    }
}

/// (account, category, item, unit, first local date of the report period).
pub type GroupKey = (String, String, String, String, NaiveDate);

/// What to read: rows of accounts `account_in_scope` accepts, bucketed by `granularity` in
/// Beijing time.
#[allow(missing_debug_implementations)] // holds a closure
pub struct RollupQuery<'a> {
    pub granularity: Granularity,
    pub account_in_scope: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Sums `files` per group; see the module's doc.
pub fn sum_rollup_files(
    files: &[RollupFile],
    q: &RollupQuery<'_>,
) -> Result<BTreeMap<GroupKey, Sums>, StorageError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().div_ceil(32).max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let partials: Vec<Result<Partial, StorageError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|run| {
                s.spawn(move || {
                    let mut p = Partial::default();
                    for f in run {
                        p.read(f, q)?;
                    }
                    Ok(p)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StorageError {
                        path: PathBuf::from("rollups"),
                        message: "a rollup reading thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut out: BTreeMap<GroupKey, Sums> = BTreeMap::new();
    for p in partials {
        let p = p?;
        for ((a, c, i, u, period), sums) in p.groups {
            let key = (
                p.strings[0][a as usize].clone(),
                p.strings[1][c as usize].clone(),
                p.strings[2][i as usize].clone(),
                p.strings[3][u as usize].clone(),
                period,
            );
            out.entry(key).or_default().add(&sums);
        }
    }
    Ok(out)
}

/// A multiply-rotate hash (as in rustc's FxHash) for keys of a few small integers: the
/// default SipHash would cost more than the rest of a row's work.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n as u32));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Ids = BuildHasherDefault<IdHasher>;

/// One thread's sums, with its own numbering of the strings it met.
#[derive(Default)]
struct Partial {
    /// account, category, item, unit: id → string, and string → id.
    strings: [Vec<String>; 4],
    ids: [HashMap<String, u32>; 4],
    groups: HashMap<(u32, u32, u32, u32, NaiveDate), Sums, Ids>,
}

/// The rollup columns as read here: strings as dictionaries (as the files store them), and
/// only the columns a report sums.
fn read_schema() -> SchemaRef {
    let fields: Vec<Field> = rollup_schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Field::new(
                f.name(),
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                f.is_nullable(),
            ),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

const READ_COLUMNS: [&str; 11] = [
    "ts",
    "account",
    "category",
    "item",
    "unit",
    "energy",
    "kgce",
    "kgco2e",
    "min_delta",
    "max_delta",
    "intervals",
];

/// The error for `file`.
fn file_error(file: &RollupFile, message: String) -> StorageError {
    StorageError {
        path: file.path.clone(),
        message,
    }
}

/// Opens `file` to read the [`READ_COLUMNS`] in batches.
fn open(file: &RollupFile) -> Result<ParquetRecordBatchReader, StorageError> {
    let err = |message: String| file_error(file, message);
    // Whole, in one read: the files are small (kilobytes a day, a few hundred for an
    // hour's rows), and the reader given a `File` would duplicate the descriptor, seek and
    // buffer anew for every column chunk.
    let f = bytes::Bytes::from(std::fs::read(&file.path).map_err(|e| err(e.to_string()))?);
    // Our schema, not the one embedded in the file: the files were written with it, and
    // decoding the embedded copy (base64 IPC) would cost more than reading the rows.
    let options = ArrowReaderOptions::new()
        .with_schema(read_schema())
        .with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(f, options)
        .map_err(|e| err(format!("rollup file: {e}")))?;
    let parquet_schema = builder.parquet_schema();
    let mut leaves = Vec::with_capacity(READ_COLUMNS.len());
    for name in READ_COLUMNS {
        let i = parquet_schema
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| err(format!("rollup file has no column {name}")))?;
        leaves.push(i);
    }
    let mask = ProjectionMask::leaves(parquet_schema, leaves);
    builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| err(format!("rollup file: {e}")))
}

/// The columns of one batch a report sums, typed.
struct BatchColumns<'b> {
    ts: &'b PrimitiveArray<TimestampMillisecondType>,
    /// account, category, item, unit.
    dicts: [&'b DictionaryArray<Int32Type>; 4],
    energy: &'b Float64Array,
    kgce: &'b Float64Array,
    kgco2e: &'b Float64Array,
    min: &'b Float64Array,
    max: &'b Float64Array,
    intervals: &'b Int64Array,
}

impl<'b> BatchColumns<'b> {
    /// The columns of `b`, or an error naming a column missing or of another type.
    fn of(b: &'b RecordBatch, file: &RollupFile) -> Result<Self, StorageError> {
        let err = |message: String| file_error(file, message);
        let shape = |name: &str| err(format!("rollup file: column {name} has another type"));
        let col = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| err(format!("rollup file has no column {name}")))
        };
        let ts = col("ts")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| shape("ts"))?;
        let dict = |name: &str| -> Result<&DictionaryArray<Int32Type>, StorageError> {
            col(name)?
                .as_dictionary_opt::<Int32Type>()
                .ok_or_else(|| shape(name))
        };
        let float = |name: &str| {
            col(name)?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| shape(name))
        };
        let dicts = [
            dict("account")?,
            dict("category")?,
            dict("item")?,
            dict("unit")?,
        ];
        let (energy, kgce, kgco2e) = (float("energy")?, float("kgce")?, float("kgco2e")?);
        let (min, max) = (float("min_delta")?, float("max_delta")?);
        let intervals = col("intervals")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| shape("intervals"))?;
        Ok(Self {
            ts,
            dicts,
            energy,
            kgce,
            kgco2e,
            min,
            max,
            intervals,
        })
    }

    /// Row `i`'s amounts.
    fn sums(&self, i: usize) -> Sums {
        Sums {
            energy: self.energy.value(i),
            kgce: self.kgce.value(i),
            kgco2e: self.kgco2e.value(i),
            min: self.min.value(i),
            max: self.max.value(i),
            intervals: self.intervals.value(i),
        }
    }
}

impl Partial {
    fn read(&mut self, file: &RollupFile, q: &RollupQuery<'_>) -> Result<(), StorageError> {
        for batch in open(file)? {
            let b = batch.map_err(|e| file_error(file, format!("rollup file: {e}")))?;
            self.add_batch(&b, file, q)?;
        }
        Ok(())
    }

    /// Adds the rows of one batch of `file` whose period lies in its window to their groups.
    fn add_batch(
        &mut self,
        b: &RecordBatch,
        file: &RollupFile,
        q: &RollupQuery<'_>,
    ) -> Result<(), StorageError> {
        let cols = BatchColumns::of(b, file)?;
        let maps = self.dictionary_ids(&cols.dicts, file, q)?;
        let keys = cols.dicts.map(|d| d.keys());
        // Rows come sorted by ts: the period of the last ts is usually this row's.
        let mut last: Option<(i64, Option<NaiveDate>)> = None;
        for i in 0..b.num_rows() {
            let t = cols.ts.value(i);
            let period = match last {
                Some((lt, p)) if lt == t => p,
                _ => {
                    let p = row_period(file, t, q.granularity);
                    last = Some((t, p));
                    p
                }
            };
            let Some(period) = period else { continue };
            let id = |k: usize| {
                let key = keys[k];
                if key.is_null(i) {
                    return None;
                }
                maps[k].get(key.value(i) as usize).copied().flatten()
            };
            let (Some(a), Some(c), Some(it), Some(u)) = (id(0), id(1), id(2), id(3)) else {
                continue;
            };
            self.groups
                .entry((a, c, it, u, period))
                .or_default()
                .add(&cols.sums(i));
        }
        Ok(())
    }

    /// Each dictionary entry's id here, per column (account, category, item, unit); `None`
    /// for accounts outside the scope.
    fn dictionary_ids(
        &mut self,
        dicts: &[&DictionaryArray<Int32Type>; 4],
        file: &RollupFile,
        q: &RollupQuery<'_>,
    ) -> Result<[Vec<Option<u32>>; 4], StorageError> {
        let mut maps: [Vec<Option<u32>>; 4] = Default::default();
        for (k, d) in dicts.iter().enumerate() {
            let values: &StringArray = d.values().as_string_opt::<i32>().ok_or_else(|| {
                file_error(
                    file,
                    format!(
                        "rollup file: column {} has another type",
                        READ_COLUMNS[k + 1]
                    ),
                )
            })?;
            maps[k] = values
                .iter()
                .map(|v| {
                    let v = v?;
                    if k == 0 && !(q.account_in_scope)(v) {
                        return None;
                    }
                    Some(self.id(k, v))
                })
                .collect();
        }
        Ok(maps)
    }

    fn id(&mut self, k: usize, v: &str) -> u32 {
        if let Some(&id) = self.ids[k].get(v) {
            return id;
        }
        let id = self.strings[k].len() as u32;
        self.strings[k].push(v.to_owned());
        self.ids[k].insert(v.to_owned(), id);
        id
    }
}

/// The first local date of the report period holding the instant `end_ms` (UTC), which closes
/// an interval `(…, end_ms]`: the local date of `end_ms − 1 ms`. Plain arithmetic on the fixed
/// Beijing offset, as the SQL's `date_trunc(ts + 8 hours − 1 ms)` did.
pub fn report_period(end_ms: i64, granularity: Granularity) -> Option<NaiveDate> {
    let local_ms = end_ms + OFFSET_MS - 1;
    let days = local_ms.div_euclid(86_400_000);
    let date = NaiveDate::from_num_days_from_ce_opt(i32::try_from(days + 719_163).ok()?)?;
    Some(granularity.start(date))
}

/// The report period of a row of `file` starting at `t` (UTC ms); `None` when the row's
/// period does not lie in the file's window.
fn row_period(file: &RollupFile, t: i64, granularity: Granularity) -> Option<NaiveDate> {
    let (from, to) = file.window;
    let end = match file.span {
        Span::Fixed(len) => Some(t + len),
        Span::Month => month_end(t),
    };
    end.filter(|&end| t >= from && end <= to)
        .and_then(|end| report_period(end, granularity))
}

/// The end of the Beijing month that starts at the UTC instant `start_ms`.
fn month_end(start_ms: i64) -> Option<i64> {
    let first = report_period(start_ms + 1, Granularity::Month)?;
    Some(local_midnight_ms(first.checked_add_months(Months::new(1))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn periods_take_the_local_date_of_the_instant_before_the_end() {
        // 2026-01-01 00:00 Beijing = 2025-12-31 16:00 UTC closes the last interval of 2025.
        let midnight = 1_767_225_600_000 - 8 * 3_600_000;
        let g = Granularity::Month;
        assert_eq!(report_period(midnight, g), Some(d(2025, 12, 1)));
        assert_eq!(report_period(midnight + 1, g), Some(d(2026, 1, 1)));
        assert_eq!(
            report_period(midnight, Granularity::Year),
            Some(d(2025, 1, 1))
        );
        assert_eq!(
            report_period(midnight + 3_600_000, Granularity::Day),
            Some(d(2026, 1, 1))
        );
        assert_eq!(report_period(0, Granularity::Day), Some(d(1970, 1, 1)));
        assert_eq!(
            month_end(local_midnight_ms(d(2026, 2, 1))),
            Some(local_midnight_ms(d(2026, 3, 1)))
        );
    }
}
