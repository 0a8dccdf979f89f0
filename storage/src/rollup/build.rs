//! Building rollups: a UTC date's hourly and daily sums from its raw readings, and a Beijing
//! month's sums from its daily and hourly rollups, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::Float64Type;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{Months, NaiveDate};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use reading_model::Quantity;

use super::read::{RollupFile, RollupQuery, report_period, sum_rollup_files};
use super::schema::*;
use crate::{StorageError, partition_date, partition_dir, partition_files};
use reading_model::time::{Granularity, local_midnight_ms};

/// Rolls up the readings of `batches` (of [`crate::readings_schema`], deduplicated) whose
/// `ts` lies in `(from_ms, from_ms + 1 day]`, in periods of `period` starting at `from_ms`.
/// Rows sorted by (ts, account, category, item, unit).
pub fn rollup(
    batches: &[RecordBatch],
    from_ms: i64,
    period: Period,
) -> Result<RecordBatch, ArrowError> {
    let to_ms = from_ms + DAY_MS;
    let len = period.millis();
    let consumption: Vec<&str> = Quantity::all()
        .filter(|q| q.is_consumption())
        .map(|q| q.name())
        .collect();
    let mut groups: BTreeMap<(i64, String, String, String, String), Sums> = BTreeMap::new();
    for b in batches {
        let schema = b.schema();
        let col = |name: &str| -> Result<&dyn Array, ArrowError> {
            Ok(b.column(schema.index_of(name)?).as_ref())
        };
        let shape = |name: &str| ArrowError::SchemaError(format!("rollup: column {name}"));
        let string = |name: &str| col(name)?.as_string_opt::<i32>().ok_or_else(|| shape(name));
        let float = |name: &str| {
            col(name)?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| shape(name))
        };
        let ts = col("ts")?
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| shape("ts"))?;
        let (account, category, item, unit, quantity) = (
            string("account")?,
            string("category")?,
            string("item")?,
            string("unit")?,
            string("quantity")?,
        );
        let (delta, kgce, kgco2e) = (float("delta")?, float("kgce")?, float("kgco2e")?);
        for i in 0..b.num_rows() {
            let t = ts.value(i);
            if t <= from_ms || t > to_ms || delta.is_null(i) {
                continue;
            }
            if !consumption.contains(&quantity.value(i)) {
                continue;
            }
            let start = from_ms + (t - from_ms - 1).div_euclid(len) * len;
            let d = delta.value(i);
            let key = (
                start,
                account.value(i).to_owned(),
                category.value(i).to_owned(),
                item.value(i).to_owned(),
                unit.value(i).to_owned(),
            );
            let opt = |a: &Float64Array| if a.is_null(i) { 0.0 } else { a.value(i) };
            groups
                .entry(key)
                .or_default()
                .add_interval(d, opt(kgce), opt(kgco2e));
        }
    }
    let n = groups.len();
    let mut ts = Vec::with_capacity(n);
    let mut strings: [Vec<String>; 4] = Default::default();
    let mut floats: [Vec<f64>; 5] = Default::default();
    let mut intervals = Vec::with_capacity(n);
    for ((start, account, category, item, unit), a) in groups {
        ts.push(start);
        for (v, s) in strings.iter_mut().zip([account, category, item, unit]) {
            v.push(s);
        }
        for (v, x) in floats
            .iter_mut()
            .zip([a.energy, a.kgce, a.kgco2e, a.min, a.max])
        {
            v.push(x);
        }
        intervals.push(a.intervals);
    }
    let mut cols: Vec<Arc<dyn Array>> = vec![Arc::new(
        TimestampMillisecondArray::from(ts).with_timezone("UTC"),
    )];
    for v in strings {
        cols.push(Arc::new(StringArray::from(v)));
    }
    for v in floats {
        cols.push(Arc::new(Float64Array::from(v)));
    }
    cols.push(Arc::new(Int64Array::from(intervals)));
    RecordBatch::try_new(rollup_schema(), cols)
}

/// Writes a rollup batch as one Parquet file to `w`.
///
/// Snappy, not ZSTD as the readings: a report reads hundreds of these small files, and the
/// Parquet reader builds a ZSTD codec (a compression and a decompression context, each a large
/// zeroed allocation) for every column chunk it opens. That setup was a fifth of a monthly
/// report's time; Snappy's codec costs nothing to create, and the files grow by about 8 %.
/// Files written before this stay ZSTD and read the same, only slower.
pub fn write_rollup<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
) -> Result<W, parquet::errors::ParquetError> {
    write_rollup_with(w, batch, None)
}

fn write_rollup_with<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
    metadata: Option<Vec<KeyValue>>,
) -> Result<W, parquet::errors::ParquetError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_key_value_metadata(metadata)
        .build();
    let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.into_inner()
}

/// Monthly rollups: `<data_dir>/rollups/monthly/month=YYYY-MM/rollup.parquet`, the sums of one
/// Beijing month per (account, category, item, unit), in the columns of the other rollups (`ts`
/// the month's first local midnight as a UTC instant). They are built from the month's daily
/// rollups and, for the two UTC dates the month's bounds cut, its hourly rollups, so that a
/// year report reads 25 files instead of ~760.
///
/// The file's key-value metadata `jieneng.rollup_inputs` records each input file's
/// modification time. A monthly rollup is current only while every input still has the time
/// recorded and is itself current (see [`rollups_current`]): a late reading makes its date's
/// rollups stale, recomputing them changes their times, and either way the report reads that
/// month per date until the month is rebuilt.
pub const MONTHLY: &str = "monthly";
const INPUTS_KEY: &str = "jieneng.rollup_inputs";

pub fn month_rollup_path(data_dir: &Path, month: NaiveDate) -> PathBuf {
    month_rollup_dir(data_dir, month).join(FILE)
}

pub fn month_rollup_dir(data_dir: &Path, month: NaiveDate) -> PathBuf {
    data_dir
        .join(ROLLUPS)
        .join(MONTHLY)
        .join(format!("month={}", month.format("%Y-%m")))
}

/// The Beijing month starting at local date `month` (its first day) as UTC instants
/// `(start, end]`.
pub fn month_bounds(month: NaiveDate) -> Option<(i64, i64)> {
    let next = month.checked_add_months(Months::new(1))?;
    Some((local_midnight_ms(month), local_midnight_ms(next)))
}

/// The UTC dates (days since the epoch) a Beijing month touches, the first and last cut by
/// its bounds.
pub fn month_days(month: NaiveDate) -> Option<std::ops::RangeInclusive<i64>> {
    let (start, end) = month_bounds(month)?;
    Some(start.div_euclid(DAY_MS)..=(end - 1).div_euclid(DAY_MS))
}

/// The Beijing months (first days) whose sums the rollups of UTC `day` feed: the day's
/// instants `(day 00:00, day+1 00:00]` lie in one or two of them.
pub fn months_of_day(day: i64) -> Vec<NaiveDate> {
    let mut out: Vec<NaiveDate> = [day * DAY_MS + 1, (day + 1) * DAY_MS]
        .into_iter()
        .filter_map(|end| report_period(end, Granularity::Month))
        .collect();
    out.dedup();
    out
}

/// The modification time of the newest live readings file of UTC `day`: `Some(None)` when
/// the date has none, `None` when it cannot be listed.
pub fn newest_readings(data_dir: &Path, day: i64) -> Option<Option<SystemTime>> {
    let dir = partition_dir(data_dir, &partition_date(day * DAY_MS));
    partition_files(&dir)
        .ok()
        .map(|(live, _)| live.iter().map(|f| f.modified).max())
}

/// Whether the hourly and daily rollups of UTC `day` hold everything its readings say: both
/// files exist and neither is older than a readings file of the date or of the next one
/// (whose first instant closes the date's last interval). `newest` is [`newest_readings`],
/// possibly cached.
pub fn rollups_current(
    data_dir: &Path,
    day: i64,
    newest: &mut impl FnMut(i64) -> Option<Option<SystemTime>>,
) -> bool {
    let date = partition_date(day * DAY_MS);
    let mut oldest_rollup: Option<SystemTime> = None;
    for period in Period::ALL {
        match modified(&rollup_dir(data_dir, period, &date).join(FILE)) {
            Some(t) => oldest_rollup = Some(oldest_rollup.map_or(t, |o| o.min(t))),
            None => return false,
        }
    }
    let Some(rolled) = oldest_rollup else {
        return false;
    };
    [day, day + 1].into_iter().all(|d| match newest(d) {
        Some(Some(t)) => t <= rolled,
        Some(None) => true,
        None => false,
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The rollup files a month's sums are built from, each with the part of its rows that lies in
/// the month: the daily rollups of the dates wholly inside it, the hourly rollups of the two
/// it cuts.
fn month_inputs(data_dir: &Path, month: NaiveDate) -> Option<Vec<RollupFile>> {
    let (start, end) = month_bounds(month)?;
    Some(
        month_days(month)?
            .map(|day| {
                let (a, b) = (day * DAY_MS, (day + 1) * DAY_MS);
                let date = partition_date(a);
                if a >= start && b <= end {
                    RollupFile::new(
                        rollup_dir(data_dir, Period::Daily, &date).join(FILE),
                        Period::Daily,
                        (a, b),
                    )
                } else {
                    RollupFile::new(
                        rollup_dir(data_dir, Period::Hourly, &date).join(FILE),
                        Period::Hourly,
                        (a.max(start), b.min(end)),
                    )
                }
            })
            .collect(),
    )
}

/// A month's rollup and the metadata to store with it, or `None` when a date of the month has
/// no current rollups (the month is not over, or has late readings not rolled up yet).
pub fn month_rollup(
    data_dir: &Path,
    month: NaiveDate,
) -> Result<Option<(RecordBatch, String)>, StorageError> {
    let (Some(inputs), Some(days), Some((start, _))) = (
        month_inputs(data_dir, month),
        month_days(month),
        month_bounds(month),
    ) else {
        return Ok(None);
    };
    let mut newest = |day| newest_readings(data_dir, day);
    if !days
        .into_iter()
        .all(|day| rollups_current(data_dir, day, &mut newest))
    {
        return Ok(None);
    }
    // The times before reading: a file replaced after this reads as a changed input later,
    // so the month is never taken as current with contents older than its inputs.
    let mut recorded = String::new();
    for f in &inputs {
        let Some(t) = modified(&f.path) else {
            return Ok(None);
        };
        recorded.push_str(&format!("{} {}\n", input_name(data_dir, &f.path), nanos(t)));
    }
    let all = |_: &str| true;
    let sums = sum_rollup_files(
        &inputs,
        &RollupQuery {
            granularity: Granularity::Month,
            account_in_scope: &all,
        },
    )?;
    let n = sums.len();
    let mut strings: [Vec<String>; 4] = Default::default();
    let mut floats: [Vec<f64>; 5] = Default::default();
    let mut intervals = Vec::with_capacity(n);
    for ((account, category, item, unit, _), s) in sums {
        for (v, x) in strings.iter_mut().zip([account, category, item, unit]) {
            v.push(x);
        }
        for (v, x) in floats
            .iter_mut()
            .zip([s.energy, s.kgce, s.kgco2e, s.min, s.max])
        {
            v.push(x);
        }
        intervals.push(s.intervals);
    }
    let mut cols: Vec<Arc<dyn Array>> = vec![Arc::new(
        TimestampMillisecondArray::from(vec![start; n]).with_timezone("UTC"),
    )];
    for v in strings {
        cols.push(Arc::new(StringArray::from(v)));
    }
    for v in floats {
        cols.push(Arc::new(Float64Array::from(v)));
    }
    cols.push(Arc::new(Int64Array::from(intervals)));
    let batch = RecordBatch::try_new(rollup_schema(), cols).map_err(|e| StorageError {
        path: month_rollup_path(data_dir, month),
        message: e.to_string(),
    })?;
    Ok(Some((batch, recorded)))
}

/// `daily/date=2026-01-02/rollup.parquet`: an input's path under the rollups directory.
fn input_name(data_dir: &Path, path: &Path) -> String {
    path.strip_prefix(data_dir.join(ROLLUPS))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Writes a month's rollup with the record of its inputs (see [`month_rollup`]).
pub fn write_month_rollup<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
    inputs: &str,
) -> Result<W, parquet::errors::ParquetError> {
    write_rollup_with(
        w,
        batch,
        Some(vec![KeyValue::new(
            INPUTS_KEY.to_owned(),
            inputs.to_owned(),
        )]),
    )
}

/// Whether the month's rollup exists and still sums what its inputs hold: every input has
/// the modification time recorded when it was read, and `day_current` accepts every UTC date
/// of the month (its rollups are current and no rows of it wait in memory).
pub fn month_rollup_current(
    data_dir: &Path,
    month: NaiveDate,
    day_current: &mut impl FnMut(i64) -> bool,
) -> bool {
    let Ok(file) = std::fs::File::open(month_rollup_path(data_dir, month)) else {
        return false;
    };
    let Ok(reader) = SerializedFileReader::new(file) else {
        return false;
    };
    let Some(recorded) = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == INPUTS_KEY))
        .and_then(|k| k.value.clone())
    else {
        return false;
    };
    let (Some(inputs), Some(days)) = (month_inputs(data_dir, month), month_days(month)) else {
        return false;
    };
    let mut lines = recorded.lines();
    for f in &inputs {
        let Some(t) = modified(&f.path) else {
            return false;
        };
        if lines.next() != Some(&format!("{} {}", input_name(data_dir, &f.path), nanos(t))) {
            return false;
        }
    }
    lines.next().is_none() && days.into_iter().all(day_current)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{StoredReading, to_record_batch};

    fn row(meter: &str, ts: i64, delta: Option<f64>, quantity: Quantity) -> StoredReading {
        let mut r = crate::tests::reading(meter, ts, 1.0, delta);
        r.reading.quantity = quantity;
        r.reading.kgce = delta.map(|d| d * 0.125);
        r
    }

    #[test]
    fn periods_end_inclusive_and_only_consumption_counts() {
        let day = 1_767_225_600_000; // 2026-01-01T00:00Z
        let e = Quantity::EnergyImport;
        let rows = vec![
            // Midnight closes the previous day's last interval: not this day's.
            row("m1", day, Some(100.0), e),
            row("m1", day + HOUR_MS, Some(1.0), e),
            row("m2", day + HOUR_MS, Some(3.0), e),
            row("m1", day + HOUR_MS + 1, Some(2.0), e),
            row("m1", day + DAY_MS, Some(4.0), e),
            row("m1", day + DAY_MS + 1, Some(1000.0), e),
            row("m1", day + 2 * HOUR_MS, None, e),
            row("m1", day + 2 * HOUR_MS, Some(50.0), Quantity::EnergyExport),
        ];
        let b = to_record_batch(&rows, 1).unwrap();
        let hourly = rollup(std::slice::from_ref(&b), day, Period::Hourly).unwrap();
        let ts = hourly
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let energy = hourly.column(5).as_primitive::<Float64Type>();
        let got: Vec<(i64, f64)> = (0..hourly.num_rows())
            .map(|i| (ts.value(i) - day, energy.value(i)))
            .collect();
        assert_eq!(got, vec![(0, 4.0), (HOUR_MS, 2.0), (DAY_MS - HOUR_MS, 4.0)]);
        let daily = rollup(&[b], day, Period::Daily).unwrap();
        assert_eq!(daily.num_rows(), 1);
        let col = |i: usize| daily.column(i).as_primitive::<Float64Type>().value(0);
        assert_eq!(
            (col(5), col(6), col(7), col(8), col(9)),
            (10.0, 1.25, 0.0, 1.0, 4.0)
        );
        assert_eq!(
            daily
                .column(10)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            4
        );
    }
}
