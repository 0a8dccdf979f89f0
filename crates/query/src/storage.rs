//! The storage contract: the readings table's Arrow schema, its Hive-style date partitions,
//! and the Parquet writer settings. Ingest writes with these; query and DuckDB read them.
//!
//! Layout: `<data_dir>/readings/date=YYYY-MM-DD/<name>.parquet` (UTC date of `ts`); rows in a
//! file sorted by (account, meter, quantity, ts); ZSTD; dictionary-encoded strings; statistics
//! on every column; a bloom filter on `meter`. Files being written are named `.<name>.tmp` and
//! are invisible to readers until renamed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use parquet::arrow::ArrowWriter;
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

pub fn to_record_batch(rows: &[StoredReading]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut strings: Vec<StringBuilder> = (0..7)
        .map(|_| StringBuilder::with_capacity(n, n * 8))
        .collect();
    let mut value = Float64Builder::with_capacity(n);
    let mut delta = Float64Builder::with_capacity(n);
    let mut kgce = Float64Builder::with_capacity(n);
    let mut kgco2e = Float64Builder::with_capacity(n);
    let mut factor = StringBuilder::with_capacity(n, n * 16);
    let mut quality = StringBuilder::with_capacity(n, n * 4);
    let mut gateway = StringBuilder::with_capacity(n, n * 8);
    for row in rows {
        let r = &row.reading;
        ts.append_value(r.ts);
        strings[0].append_value(r.account.as_str());
        strings[1].append_value(r.meter.as_str());
        strings[2].append_value(r.category.code());
        strings[3].append_value(r.item.as_str());
        strings[4].append_value(r.quantity.name());
        strings[5].append_value(r.unit.symbol());
        value.append_value(r.value);
        delta.append_option(r.delta);
        kgce.append_option(r.kgce);
        kgco2e.append_option(r.kgco2e);
        factor.append_option(r.factor.as_deref());
        quality.append_value(r.quality.name());
        gateway.append_value(row.gateway.as_str());
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish())];
    for b in strings.iter_mut().take(6) {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(value.finish()));
    cols.push(Arc::new(delta.finish()));
    cols.push(Arc::new(kgce.finish()));
    cols.push(Arc::new(kgco2e.finish()));
    cols.push(Arc::new(factor.finish()));
    cols.push(Arc::new(quality.finish()));
    cols.push(Arc::new(gateway.finish()));
    RecordBatch::try_new(readings_schema(), cols)
}

pub fn writer_properties() -> WriterProperties {
    let col = |name: &str| parquet::schema::types::ColumnPath::from(name);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
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

/// Writes rows (already sorted) as one Parquet file to `w`.
pub fn write_parquet<W: std::io::Write + Send>(
    w: W,
    rows: &[StoredReading],
) -> Result<W, parquet::errors::ParquetError> {
    let batch = to_record_batch(rows)?;
    let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(writer_properties()))?;
    writer.write(&batch)?;
    writer.into_inner()
}
