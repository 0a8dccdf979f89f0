//! Times reports over the data set `bench_data` wrote:
//!
//! 1. a year-long monthly consumption report through the rollups (`Reports::consumption_report`,
//!    the item tree with 同比/环比 and indicators, so it reads two years), and the same report
//!    over the raw readings for comparison;
//! 2. a raw-table aggregate — monthly sum of delta per account and category over a year —
//!    with DataFusion directly over that year's Parquet files. `benches/scripts/duckdb_aggregate.py`
//!    runs the same SQL with DuckDB on the same files.
//!
//! ```sh
//! cargo run --release -p jieneng-benches --example report_timing -- \
//!     --dir /var/tmp/jieneng-bench-data [--from 2025-11-01] [--to 2026-11-01] [--runs 10] [--raw-report] [--tuned] \
//!     [--only report|aggregate] [--list /tmp/jieneng-bench-files-<pid>.txt] [--shape day|int|tz]
//! ```
//!
//! `--shape` is how the aggregate finds a row's Beijing month, the same on both sides: `day`
//! (default) sums per local day, the day taken from the integer milliseconds, then truncates the
//! days to months; `int` truncates each row's local time, taken from the milliseconds; `tz` adds
//! `INTERVAL '8 hours'` to the UTC-zoned column, which both engines compute per row through the
//! time-zone database (DataFusion 14–25 s against 1.2–1.4 s for `day` on 100 M readings).
//!
//! Prints each run's wall time, then the minimum and median. `--list` is where the raw
//! aggregate's file list goes for `duckdb_aggregate.py --files`; by default a file named after
//! the process, so that runs side by side do not overwrite each other's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use query::report::consumption::ConsumptionRequest;
use query::{Query, Reports};
use reading_model::FactorTables;
use reading_model::time::{Granularity, local_midnight_ms};
use storage::{partition_date, partition_dir, partition_files, readings_schema};

struct Args {
    dir: PathBuf,
    from: NaiveDate,
    to: NaiveDate,
    runs: usize,
    raw_report: bool,
    /// Read the files with the inferred schema (string views) and filter pushdown on top of the
    /// product's session settings: the settings of README's side-by-side figures.
    tuned: bool,
    /// Time only the report (`report`) or only the raw aggregate (`aggregate`).
    only: Option<String>,
    list: PathBuf,
    /// How the raw aggregate finds a row's Beijing month (see `duckdb_aggregate.py --shape`).
    shape: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        dir: PathBuf::from("/var/tmp/jieneng-bench-data"),
        from: NaiveDate::from_ymd_opt(2025, 11, 1).context("date")?,
        to: NaiveDate::from_ymd_opt(2026, 11, 1).context("date")?,
        runs: 10,
        raw_report: false,
        tuned: false,
        only: None,
        shape: "day".into(),
        list: std::env::temp_dir().join(format!("jieneng-bench-files-{}.txt", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = value()?.into(),
            "--from" => a.from = value()?.parse()?,
            "--to" => a.to = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--raw-report" => a.raw_report = true,
            "--tuned" => a.tuned = true,
            "--only" => a.only = Some(value()?),
            "--shape" => a.shape = value()?,
            "--list" => a.list = value()?.into(),
            other => anyhow::bail!("unknown argument {other}; see the example's doc comment"),
        }
    }
    anyhow::ensure!(
        a.from < a.to && a.runs > 0,
        "--from before --to, --runs > 0"
    );
    anyhow::ensure!(
        matches!(a.only.as_deref(), None | Some("report" | "aggregate")),
        "--only report or --only aggregate"
    );
    Ok(a)
}

fn summary(name: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: min {:.1} ms, median {:.1} ms over {} runs",
        ms[0],
        ms[ms.len() / 2],
        ms.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    time_report(&a).await?;
    if a.only.as_deref() == Some("report") {
        return Ok(());
    }
    let (from_ms, to_ms) = (local_midnight_ms(a.from), local_midnight_ms(a.to));
    let files = list_files(&a, from_ms, to_ms)?;
    let sql = aggregate_sql(&a.shape, from_ms, to_ms)?;
    time_aggregate(&a, &files, &sql).await
}

/// The year-long monthly consumption report through rollups, `a.runs` times (and once over the
/// raw readings with `--raw-report`).
async fn time_report(a: &Args) -> anyhow::Result<()> {
    let req = ConsumptionRequest {
        from: a.from,
        to: a.to,
        granularity: Granularity::Month,
        filters: vec![],
        category: None,
    };
    let reports = Reports::new(Query::new(&a.dir), vec![], FactorTables::builtin()?);
    let mut times = Vec::new();
    let mut rows = 0;
    let runs = if a.only.as_deref() == Some("aggregate") {
        0
    } else {
        a.runs
    };
    for i in 0..runs {
        let t = Instant::now();
        let r = reports.consumption_report(&req).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        rows = r.rows.len();
        println!("  rollups report run {i}: {ms:.1} ms ({rows} rows)");
        times.push(ms);
    }
    if runs > 0 {
        summary(
            &format!(
                "monthly consumption report {}..{} through rollups ({rows} rows)",
                a.from, a.to
            ),
            &mut times,
        );
    }
    if a.raw_report {
        let raw = reports.clone().with_rollups(false);
        let t = Instant::now();
        let r = raw.consumption_report(&req).await?;
        println!(
            "the same report over the raw readings: {:.1} ms ({} rows, {})",
            t.elapsed().as_secs_f64() * 1e3,
            r.rows.len(),
            if r.rows.len() == rows {
                "same row count"
            } else {
                "DIFFERENT row count"
            }
        );
    }

    Ok(())
}

/// The live files of the dates of `(from_ms, to_ms]`, written to `a.list` for DuckDB.
fn list_files(a: &Args, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<PathBuf>> {
    // The raw aggregate over the year's files, as DuckDB will read them.
    let mut files = Vec::new();
    let mut day = from_ms.div_euclid(86_400_000);
    while day <= to_ms.div_euclid(86_400_000) {
        let (live, _) = partition_files(&partition_dir(&a.dir, &partition_date(day * 86_400_000)))?;
        files.extend(live.into_iter().map(|f| f.path));
        day += 1;
    }
    let list = &a.list;
    std::fs::write(
        list,
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    Ok(files)
}

/// The raw aggregate's SQL in the query form `shape` (`tz`, `int` or `day`).
fn aggregate_sql(shape: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<String> {
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .context("time")
    };
    let (from_s, to_s) = (rfc3339(from_ms)?, rfc3339(to_ms)?);
    let filter = format!("delta IS NOT NULL AND ts > '{from_s}' AND ts <= '{to_s}'");
    Ok(match shape {
        "tz" => format!(
            "SELECT account, category, date_trunc('month', ts + INTERVAL '8 hours' - INTERVAL '1 millisecond') AS month, \
                    sum(delta) AS consumption, count(*) AS n \
             FROM readings WHERE {filter} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ),
        "int" => format!(
            "SELECT account, category, date_trunc('month', to_timestamp_millis(CAST(ts AS BIGINT) + 28799999)) AS month, \
                    sum(delta) AS consumption, count(*) AS n \
             FROM readings WHERE {filter} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ),
        "day" => format!(
            "SELECT account, category, date_trunc('month', to_timestamp_seconds(day * 86400)) AS month, \
                    sum(consumption) AS consumption, sum(n) AS n \
             FROM (SELECT account, category, (CAST(ts AS BIGINT) + 28799999) / 86400000 AS day, \
                          sum(delta) AS consumption, count(*) AS n \
                   FROM readings WHERE {filter} GROUP BY 1, 2, 3) \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ),
        other => anyhow::bail!("--shape {other}: tz, int or day"),
    })
}

/// The raw aggregate with DataFusion over `files`, `a.runs` times.
async fn time_aggregate(a: &Args, files: &[PathBuf], sql: &str) -> anyhow::Result<()> {
    println!(
        "raw aggregate over {} files (list in {}):\n  {sql}",
        files.len(),
        a.list.display()
    );
    let mut times = Vec::new();
    for i in 0..a.runs {
        let t = Instant::now();
        // The product's session settings (`query::report::session_config`). With --tuned,
        // closer to how DuckDB reads: the files' own schema (strings as views, not copied out
        // of the pages) and the filter evaluated inside the Parquet decoder.
        let ctx = if !a.tuned {
            SessionContext::new_with_config(query::report::session_config())
        } else {
            // DATAFUSION_* variables (batch size, partitions, Parquet options) on top, for
            // trying settings without a rebuild.
            let mut config = query::report::with_session_settings(SessionConfig::from_env()?);
            config.options_mut().execution.parquet.pushdown_filters = true;
            SessionContext::new_with_config(config)
        };
        let urls = files
            .iter()
            .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
            .collect::<Result<Vec<_>, _>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let table = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options);
        let table = if !a.tuned {
            table.with_schema(readings_schema())
        } else {
            table.infer_schema(&ctx.state()).await?
        };
        ctx.register_table("readings", Arc::new(ListingTable::try_new(table)?))?;
        let batches = ctx.sql(sql).await?.collect().await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let groups: usize = batches.iter().map(|b| b.num_rows()).sum();
        let total: f64 = batches
            .iter()
            .filter_map(|b| {
                b.column(3)
                    .as_any()
                    .downcast_ref::<arrow::array::Float64Array>()
                    .map(|c| c.iter().flatten().sum::<f64>())
            })
            .sum();
        println!("  DataFusion run {i}: {ms:.1} ms ({groups} groups, total {total:.2})");
        times.push(ms);
    }
    summary("raw aggregate with DataFusion", &mut times);
    Ok(())
}
