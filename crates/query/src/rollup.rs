//! Hourly and daily rollups of consumption per (account, category, item): the tables reports
//! over long periods read instead of the raw readings, which retention removes sooner.
//!
//! Layout: `<data_dir>/rollups/{hourly,daily}/date=YYYY-MM-DD/rollup.parquet`, one file per UTC
//! date, replaced atomically (temp file, fsync, rename over the old one, fsync directory) each
//! time the date is recomputed from the raw readings.
//!
//! Columns: `ts` (start of the period), `account`, `category`, `item`, `unit`, `energy` (sum of
//! deltas, in `unit`), `kgce`, `kgco2e` (sums; 0 where no factor applied), `min_delta`,
//! `max_delta` (the smallest and largest interval delta), `intervals` (deltas summed).
//!
//! Periods follow the reports' convention `(start, end]`: a reading at `ts` closes the interval
//! ending at `ts`, so a reading at exactly 01:00 counts in the hour 00:00–01:00, and one at
//! midnight in the previous day. A date's rollup therefore reads the first instant of the next
//! date's partition too. Only consumption quantities with a delta are rolled up, as in
//! [`crate::Query::consumption`], so a daily rollup sums to what the report says for that day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use reading_model::Quantity;

pub const ROLLUPS: &str = "rollups";
pub const FILE: &str = "rollup.parquet";

const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The length of a rollup's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Hourly, Period::Daily];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Self::Hourly => HOUR_MS,
            Self::Daily => DAY_MS,
        }
    }
}

/// `<data_dir>/rollups/<period>/date=<date>`.
pub fn rollup_dir(data_dir: &Path, period: Period, date: &str) -> PathBuf {
    data_dir
        .join(ROLLUPS)
        .join(period.name())
        .join(format!("date={date}"))
}

pub fn rollup_schema() -> SchemaRef {
    let s = |name| Field::new(name, DataType::Utf8, false);
    let f = |name| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        s("account"),
        s("category"),
        s("item"),
        s("unit"),
        f("energy"),
        f("kgce"),
        f("kgco2e"),
        f("min_delta"),
        f("max_delta"),
        Field::new("intervals", DataType::Int64, false),
    ]))
}

#[derive(Debug, Clone, Copy)]
struct Acc {
    energy: f64,
    kgce: f64,
    kgco2e: f64,
    min: f64,
    max: f64,
    intervals: i64,
}

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
    let mut groups: BTreeMap<(i64, String, String, String, String), Acc> = BTreeMap::new();
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
            let acc = groups.entry(key).or_insert(Acc {
                energy: 0.0,
                kgce: 0.0,
                kgco2e: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                intervals: 0,
            });
            acc.energy += d;
            acc.kgce += opt(kgce);
            acc.kgco2e += opt(kgco2e);
            acc.min = acc.min.min(d);
            acc.max = acc.max.max(d);
            acc.intervals += 1;
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
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .build();
    let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use reading_model::{
        AccountCode, Category, EnergyCode, GatewayId, MeterId, Quality, Reading, Unit,
    };

    use super::*;
    use crate::storage::{StoredReading, to_record_batch};

    fn row(meter: &str, ts: i64, delta: Option<f64>, quantity: Quantity) -> StoredReading {
        StoredReading {
            gateway: GatewayId::parse("gw").unwrap(),
            reading: Reading {
                ts,
                account: AccountCode::parse("110108A001").unwrap(),
                meter: MeterId::parse(meter).unwrap(),
                category: Category::Electricity,
                item: EnergyCode::parse("01000").unwrap(),
                quantity,
                unit: Unit::KilowattHour,
                value: 1.0,
                delta,
                kgce: delta.map(|d| d * 0.125),
                kgco2e: None,
                factor: None,
                quality: Quality::Good,
            },
        }
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
