//! Consumption reports: energy per account, category and item over a period, with standard
//! coal and carbon.
//!
//! [`Query::consumption`] is the flat sum of stored readings; the modules below build the
//! reports people and the statistics system read ([`Reports`]): the item tree with the
//! unmetered remainder, 同比/环比 and indicators ([`consumption`]), carbon with the factors used
//! ([`carbon`]), their CSV ([`csv`]), over periods in Beijing time (`reading_model::time`, SQL in [`period`]) and account
//! scopes ([`scope`]).
//!
//! Every query reads the `readings` view: the live files of every partition (see
//! [`storage`]) together with the rows the ingest server has acknowledged but not yet
//! written to Parquet ([`LiveReadings`]), deduplicated on the key (account, meter, quantity,
//! ts) so that the highest generation wins — live rows are newer than any file. The live rows
//! are taken before the files are listed: a row flushed in between is then seen twice (and
//! deduplicated), never not at all.

pub mod carbon;
pub mod consumption;
pub mod csv;
pub mod forms;
pub mod period;
pub mod savings;
pub mod scope;
pub mod source;
pub mod status;

pub use source::Reports;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use reading_model::Quantity;

use crate::table::{StoredReadings, layout_4_table};
use storage::layout3::{KGCE_PER_UNIT, KGCO2E_PER_UNIT};
use storage::{
    DataFile, LiveReadings, READINGS, file_layout, partition_files, partitions, readings_schema,
    sort_and_dedupe, to_record_batch,
};

/// The settings of every session over the readings.
///
/// - DataFusion 55's new aggregation streams give a group-by that the input is "partially
///   sorted" on (a column the query filters to one value, such as `category = '01'` or one
///   account, or the files' own sort order) to an ordered stream that emits its groups
///   `batch_size` at a time, each time moving all groups not yet emitted: quadratic in the
///   groups. A year of hourly sums per meter (8.8 M groups) took ~75 s of the savings analysis.
///   The hash aggregation it replaces emits once.
/// - No statistics pass over the files before planning: it reads every footer before each query
///   and only serves to infer that ordering; row groups are still pruned on their statistics
///   while scanning.
pub fn session_config() -> datafusion::prelude::SessionConfig {
    with_session_settings(datafusion::prelude::SessionConfig::new())
}

/// `config` with the settings of [`session_config`] (for benchmarks that start from the
/// environment's settings).
pub fn with_session_settings(
    config: datafusion::prelude::SessionConfig,
) -> datafusion::prelude::SessionConfig {
    let mut config = config.with_collect_statistics(false);
    config.options_mut().execution.enable_migration_aggregate = false;
    config
}

/// The generation live rows carry in queries: newer than any file.
const LIVE_GEN: i64 = i64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("query: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("query: unexpected result column {0}")]
    Shape(&'static str),
    #[error("query: {0}")]
    Storage(#[from] storage::StorageError),
    /// A savings request whose periods do not make sense: the caller's mistake (a 400).
    #[error("savings: {0}")]
    SavingsRequest(String),
    /// The built-in holiday calendar does not load: the build's data is broken (a 500).
    #[error("savings: holiday calendar: {0}")]
    Calendar(#[from] crate::savings::calendar::CalendarError),
    /// The built-in benchmark sets do not load: the build's data is broken (a 500).
    #[error("savings: benchmark sets: {0}")]
    Benchmarks(#[from] crate::savings::benchmark::BenchmarkError),
    /// The built-in reference files do not load: the build's data is broken (a 500).
    #[error("savings: {0}")]
    Reference(#[from] crate::savings::reference::ReferenceError),
}

/// Consumption of one (account, category, item) over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionRow {
    pub account: String,
    pub category: String,
    pub item: String,
    pub unit: String,
    /// Sum of deltas, in `unit`.
    pub consumption: f64,
    /// The gateways' per-reading kgce summed (see [`Query::consumption`]).
    pub kgce: f64,
    pub kgco2e: f64,
    /// Intervals summed.
    pub intervals: i64,
}

/// Queries over one data directory (and, with [`Query::with_live`], a server's memory).
#[derive(Debug, Clone)]
pub struct Query {
    data_dir: PathBuf,
    live: Option<Arc<dyn LiveReadings>>,
    /// Each file's stored layout by (path, modification time, size), read from its footer once:
    /// a compaction that rewrites a file in place changes its time.
    layouts: Arc<std::sync::Mutex<LayoutCache>>,
}

type LayoutCache = std::collections::HashMap<PathBuf, (std::time::SystemTime, u64, u32)>;

pub(crate) use reading_model::time::rfc3339_ms as rfc3339;

/// The consumption quantities as an SQL list: `'energy_import', 'water', …`.
pub(crate) fn consumption_quantities_sql() -> String {
    Quantity::all()
        .filter(|q| q.is_consumption())
        .map(|q| format!("'{}'", q.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Column `i` of a query result as strings; another type is a [`QueryError::Shape`] naming it.
pub(crate) fn column_strings<'a>(
    b: &'a RecordBatch,
    i: usize,
    name: &'static str,
) -> Result<&'a StringArray, QueryError> {
    b.column(i)
        .as_string_opt::<i32>()
        .ok_or(QueryError::Shape(name))
}

/// Column `i` of a query result as f64s.
pub(crate) fn column_floats<'a>(
    b: &'a RecordBatch,
    i: usize,
    name: &'static str,
) -> Result<&'a Float64Array, QueryError> {
    b.column(i)
        .as_primitive_opt::<Float64Type>()
        .ok_or(QueryError::Shape(name))
}

/// Column `i` of a query result as i64s.
pub(crate) fn column_ints<'a>(
    b: &'a RecordBatch,
    i: usize,
    name: &'static str,
) -> Result<&'a Int64Array, QueryError> {
    b.column(i)
        .as_primitive_opt::<Int64Type>()
        .ok_or(QueryError::Shape(name))
}

impl Query {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            live: None,
            layouts: Arc::default(),
        }
    }

    /// The stored layout of `file` ([`storage::file_layout`]), from the cache where current.
    fn layout(&self, file: &DataFile) -> Result<u32, QueryError> {
        let stamp = (file.modified, file.bytes);
        let cached = self
            .layouts
            .lock()
            .ok()
            .and_then(|c| c.get(&file.path).copied());
        if let Some((modified, bytes, layout)) = cached
            && (modified, bytes) == stamp
        {
            return Ok(layout);
        }
        let layout = file_layout(&file.path)?;
        if let Ok(mut cache) = self.layouts.lock() {
            cache.insert(file.path.clone(), (stamp.0, stamp.1, layout));
        }
        Ok(layout)
    }

    /// Also reads the acknowledged rows not yet in Parquet.
    pub fn with_live(mut self, live: Arc<dyn LiveReadings>) -> Self {
        self.live = Some(live);
        self
    }

    /// A session with the `readings` view registered; `None` while there is no reading at all.
    pub async fn session(&self) -> Result<Option<SessionContext>, QueryError> {
        self.session_within(None).await
    }

    /// Like [`Query::session`], but lists only the date partitions `from..=to` (UTC dates, as
    /// `partition_date` names them). The view computes `date` from `ts`, so a filter on it
    /// cannot prune files; a period's queries say which partitions they need here instead.
    pub async fn session_within(
        &self,
        dates: Option<(&str, &str)>,
    ) -> Result<Option<SessionContext>, QueryError> {
        self.session_matching(|date| dates.is_none_or(|(from, to)| date >= from && date <= to))
            .await
    }

    /// Like [`Query::session`], listing only the date partitions `keep` accepts.
    pub async fn session_matching(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Option<SessionContext>, QueryError> {
        let schema = readings_schema();
        let mut live = self.live.as_ref().map(|l| l.snapshot()).unwrap_or_default();
        sort_and_dedupe(&mut live);
        let storage = |e: std::io::Error, path: PathBuf| storage::StorageError {
            path,
            message: e.to_string(),
        };
        let table_dir = std::path::absolute(self.data_dir.join(READINGS))
            .map_err(|e| storage(e, self.data_dir.clone()))?;
        // Keys repeat only within a date partition (its files, and the live rows of its date):
        // a partition of one live file and no live rows holds each key once and is read as it
        // is. Only the others go through the dedupe, whose cost per row (an ordered
        // first-value over every column) made a raw report over 115 k readings take ~10 s.
        // Files of layouts before 4 go through the table that rebuilds their values.
        let live_dates: BTreeSet<String> = live
            .iter()
            .map(|r| storage::partition_date(r.reading.ts))
            .collect();
        let (mut clean, mut mixed, mut old) = (Vec::new(), Vec::new(), Vec::new());
        for date in partitions(&table_dir).map_err(|e| storage(e, table_dir.clone()))? {
            if !keep(&date) {
                continue;
            }
            let dir = table_dir.join(format!("date={date}"));
            let (files, _superseded) =
                partition_files(&dir).map_err(|e| storage(e, dir.clone()))?;
            let alone = files.len() == 1 && !live_dates.contains(&date);
            for f in files {
                let to = match self.layout(&f)? {
                    ..=3 => &mut old,
                    _ if alone => &mut clean,
                    _ => &mut mixed,
                };
                to.push(ListingTableUrl::parse(f.path.to_string_lossy())?);
            }
        }
        if clean.is_empty() && mixed.is_empty() && old.is_empty() && live.is_empty() {
            return Ok(None);
        }
        let ctx = SessionContext::new_with_config(session_config());
        ctx.register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
            crate::table::superseded::FollowSuperseded::new(),
        );
        for (name, urls) in [("readings_clean", clean), ("readings_stored", mixed)] {
            let table: Arc<dyn datafusion::catalog::TableProvider> = if urls.is_empty() {
                Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?)
            } else {
                Arc::new(layout_4_table(urls)?)
            };
            ctx.register_table(name, table)?;
        }
        let table: Arc<dyn datafusion::catalog::TableProvider> = if old.is_empty() {
            Arc::new(MemTable::try_new(
                storage::layout3::stored_schema(),
                vec![vec![]],
            )?)
        } else {
            Arc::new(StoredReadings::try_new(old)?)
        };
        ctx.register_table("readings_old", table)?;
        let live = to_record_batch(&live, LIVE_GEN)?;
        ctx.register_table(
            "readings_live",
            Arc::new(MemTable::try_new(schema.clone(), vec![vec![live]])?),
        )?;
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        // From files before layout 4: value as the table rebuilds it; kgce and kgCO2e are the
        // given value or delta × the row's coefficient (see `storage::layout3`).
        let from_old = columns
            .iter()
            .map(|&c| match c {
                "kgce" => format!("coalesce(kgce, delta * {KGCE_PER_UNIT}) AS kgce"),
                "kgco2e" => format!("coalesce(kgco2e, delta * {KGCO2E_PER_UNIT}) AS kgco2e"),
                c => c.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let columns = columns.join(", ");
        ctx.sql(&format!(
            "CREATE VIEW {READINGS} AS \
             SELECT {columns}, to_char(ts, '%Y-%m-%d') AS date FROM readings_clean \
             UNION ALL \
             SELECT * FROM (\
               SELECT DISTINCT ON (account, meter, quantity, ts) {columns}, \
                      to_char(ts, '%Y-%m-%d') AS date \
               FROM (SELECT {columns} FROM readings_stored \
                     UNION ALL SELECT {from_old} FROM readings_old \
                     UNION ALL SELECT {columns} FROM readings_live) \
               ORDER BY account, meter, quantity, ts, gen DESC)"
        ))
        .await?;
        Ok(Some(ctx))
    }

    /// Consumption per account, category and item in `[from_ms, to_ms)`, with the kgce and
    /// kgCO2e the gateways stored per reading summed: what the edge computed, with its own
    /// factor selection. The reports ([`Reports`]) price the energy with the server's instead.
    pub async fn consumption(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ConsumptionRow>, QueryError> {
        let Some(ctx) = self.session().await? else {
            return Ok(vec![]);
        };
        let consumption = consumption_quantities_sql();
        let sql = format!(
            "SELECT account, category, item, unit, \
                    sum(delta) AS consumption, \
                    coalesce(sum(kgce), 0.0) AS kgce, \
                    coalesce(sum(kgco2e), 0.0) AS kgco2e, \
                    count(delta) AS intervals \
             FROM {READINGS} \
             WHERE quantity IN ({}) AND delta IS NOT NULL \
               AND ts > '{}' AND ts <= '{}' \
             GROUP BY account, category, item, unit \
             ORDER BY account, category, item",
            consumption,
            rfc3339(from_ms),
            rfc3339(to_ms),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let s = |i, name| column_strings(&b, i, name);
            let f = |i, name| column_floats(&b, i, name);
            let (account, category, item, unit) = (
                s(0, "account")?,
                s(1, "category")?,
                s(2, "item")?,
                s(3, "unit")?,
            );
            let (consumption, kgce, kgco2e) =
                (f(4, "consumption")?, f(5, "kgce")?, f(6, "kgco2e")?);
            let intervals = column_ints(&b, 7, "intervals")?;
            for i in 0..b.num_rows() {
                out.push(ConsumptionRow {
                    account: account.value(i).to_owned(),
                    category: category.value(i).to_owned(),
                    item: item.value(i).to_owned(),
                    unit: unit.value(i).to_owned(),
                    consumption: if consumption.is_null(i) {
                        0.0
                    } else {
                        consumption.value(i)
                    },
                    kgce: kgce.value(i),
                    kgco2e: kgco2e.value(i),
                    intervals: intervals.value(i),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use storage::StoredReading;

    use super::*;
    use storage::{file_name, partition_date, partition_dir, write_parquet};

    fn row(meter: &str, item: &str, ts: i64, value: f64, delta: Option<f64>) -> StoredReading {
        let mut reading = test_support::ReadingBuilder::new(meter, ts)
            .item(item)
            .value(value)
            .delta(delta)
            .kgce(delta.map(|d| d * 0.1229))
            .kgco2e(delta.map(|d| d * 0.5))
            .build();
        reading.factor = Some("f".into());
        StoredReading {
            gateway: test_support::gateway(),
            reading,
        }
    }

    #[tokio::test]
    async fn the_view_gives_the_same_numbers_from_files_of_layouts_1_3_and_4() {
        use arrow::array::AsArray;
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        // Day 0: one layout-4 file (read as is); day 1: one layout-1 file; day 2: a layout-3 file
        // and a layout-4 one with overlapping keys (read through the dedupe); day 3: a layout-3
        // file alone. Values are a register whose delta is its step, so layout 3 stores most of
        // them as steps from the row before, and every fourth an arbitrary double.
        let kg = |d: f64, i: usize| match i % 3 {
            0 => (Some(d * 0.1229), Some(d * 0.5366)),
            1 => (Some(d * 0.777_7), Some((d * 0.5 * 100.0).round() / 100.0)),
            _ => (None, None),
        };
        let rows_of = |start: i64, n: usize, seed: f64| -> Vec<StoredReading> {
            let mut hundredths = 10_000_i64;
            (0..n)
                .map(|i| {
                    let d = seed + i as f64 * 0.37;
                    hundredths += (d * 100.0).round() as i64;
                    let register = hundredths as f64 / 100.0;
                    let value = if i % 4 == 3 { register / 7.0 } else { register };
                    let mut r = row("m1", "01A10", start + i as i64 * 900_000, value, Some(d));
                    (r.reading.kgce, r.reading.kgco2e) = kg(d, i);
                    r
                })
                .collect()
        };
        let write = |rows: &[StoredReading], generation: u64, layout: u32| {
            let part = partition_dir(dir.path(), &partition_date(rows[0].reading.ts));
            std::fs::create_dir_all(&part).unwrap();
            let file = std::fs::File::create(part.join(file_name(generation, generation))).unwrap();
            let batch = to_record_batch(rows, generation as i64).unwrap();
            match layout {
                1 => {
                    let mut w =
                        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
                    w.write(&batch).unwrap();
                    w.close().unwrap();
                }
                3 => {
                    storage::layout3::write_row_groups(file, &batch, 1 << 20).unwrap();
                }
                _ => {
                    storage::write_batch(file, &batch).unwrap();
                }
            }
        };
        let (a, b) = (rows_of(t0, 20, 1.0), rows_of(t0 + day, 20, 2.0));
        let (c_old, c_new) = (
            rows_of(t0 + 2 * day, 20, 3.0),
            rows_of(t0 + 2 * day + 9_000_000, 20, 4.0),
        );
        let d = rows_of(t0 + 3 * day, 20, 5.0);
        write(&a, 1, 4);
        write(&b, 2, 1);
        write(&c_old, 3, 3);
        write(&c_new, 4, 4);
        write(&d, 5, 3);
        // Layout-3 files hold most values as steps: neither value nor value_scaled.
        let day_3 = partition_dir(dir.path(), &partition_date(t0 + 3 * day)).join(file_name(5, 5));
        let stored = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(day_3).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
        let column = |name: &str| {
            stored
                .column(stored.schema().index_of(name).unwrap())
                .clone()
        };
        let (value, scaled) = (column("value"), column(storage::layout3::VALUE_SCALED));
        let steps = (0..stored.num_rows())
            .filter(|&i| value.is_null(i) && scaled.is_null(i))
            .count();
        assert!(steps >= 5, "only {steps} of 20 rows are steps");
        // What the view should give: per key the newer generation's row.
        let mut expected: Vec<StoredReading> = [a, b, c_old, c_new, d].concat();
        sort_and_dedupe(&mut expected);
        assert_eq!(expected.len(), 90, "10 keys of day 2 overlap");

        let ctx = Query::new(dir.path()).session().await.unwrap().unwrap();
        let batches = ctx
            .sql("SELECT kgce, kgco2e, value FROM readings ORDER BY ts")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        type Bits = Vec<[Option<u64>; 3]>;
        let got: Bits = batches
            .iter()
            .flat_map(|b| {
                let column = |c: usize| b.column(c).as_primitive::<Float64Type>();
                (0..b.num_rows())
                    .map(|i| {
                        [0, 1, 2]
                            .map(|c| column(c).is_valid(i).then(|| column(c).value(i).to_bits()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Bits = expected
            .iter()
            .map(|r| {
                let r = &r.reading;
                // To the places every layout's rows are built with (`storage::quantize`).
                let kg = |v: Option<f64>| v.map(|v| storage::quantize(v, storage::KG_DECIMALS));
                let value = storage::quantize(r.value, storage::VALUE_DECIMALS);
                [kg(r.kgce), kg(r.kgco2e), Some(value)].map(|v| v.map(f64::to_bits))
            })
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_query_planned_before_a_compaction_moved_its_files_still_reads_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let date = partition_date(t0 + 1);
        let part = partition_dir(dir.path(), &date);
        std::fs::create_dir_all(&part).unwrap();
        let rows: Vec<StoredReading> = (1..=8)
            .map(|i| row("m1", "01A10", t0 + i * 900_000, 100.0 + i as f64, Some(1.0)))
            .collect();
        for (g, half) in [(1, &rows[..4]), (2, &rows[4..])] {
            let file = std::fs::File::create(part.join(file_name(g, g))).unwrap();
            write_parquet(file, half, g as i64).unwrap();
        }
        let ctx = Query::new(dir.path()).session().await.unwrap().unwrap();
        // What compaction does after publishing: the replaced files leave the readings tree.
        let away = storage::superseded_dir(dir.path(), &date);
        std::fs::create_dir_all(&away).unwrap();
        for g in [1, 2] {
            std::fs::rename(part.join(file_name(g, g)), away.join(file_name(g, g))).unwrap();
        }
        let got = ctx
            .sql("SELECT count(*), sum(delta), max(value) FROM readings")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let b = &got[0];
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 8);
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 8.0);
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 108.0);
    }

    #[tokio::test]
    async fn consumption_by_item_over_a_period() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let mut rows = vec![
            row("m1", "01A10", t0, 10.0, None),
            row("m1", "01A10", t0 + 60_000, 12.5, Some(2.5)),
            row("m1", "01A10", t0 + 120_000, 13.0, Some(0.5)),
            row("m2", "01B10", t0 + 60_000, 5.0, Some(1.25)),
            // A duplicate of an earlier row: one stored row per key.
            row("m2", "01B10", t0 + 60_000, 5.0, Some(1.25)),
        ];
        sort_and_dedupe(&mut rows);
        assert_eq!(rows.len(), 4);
        let part = partition_dir(dir.path(), &partition_date(t0));
        std::fs::create_dir_all(&part).unwrap();
        write_parquet(
            std::fs::File::create(part.join(file_name(1, 1))).unwrap(),
            &rows,
            1,
        )
        .unwrap();

        let q = Query::new(dir.path());
        let got = q.consumption(t0, t0 + 3_600_000).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].item.as_str(), got[0].consumption, got[0].intervals),
            ("01A10", 3.0, 2)
        );
        assert!((got[0].kgce - 3.0 * 0.1229).abs() < 1e-12);
        assert_eq!((got[1].item.as_str(), got[1].consumption), ("01B10", 1.25));
        // The period is (from, to]: a reading at `to` closes the interval that ends there.
        let got = q.consumption(t0, t0 + 60_000).await.unwrap();
        assert_eq!(got[0].consumption, 2.5);
        assert!(
            Query::new(dir.path().join("none"))
                .consumption(0, 1)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
