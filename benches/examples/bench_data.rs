//! Generates the report benchmark's data set straight into the store layout (not through HTTP):
//! 15-minute readings of `--accounts` × `--meters` meters for `--days` days ending at `--end`
//! (Beijing midnight), one Parquet file per UTC date under `readings/date=…/`, and the hourly
//! and daily rollups of every date under `rollups/{hourly,daily}/date=…/`, computed by the same
//! function the store's maintenance uses, then the monthly rollups of the Beijing months it
//! covers whole. `--monthly-only` adds only those to a set written before they existed.
//!
//! ```sh
//! cargo run --release -p jieneng-benches --example bench_data -- \
//!     --dir /var/tmp/jieneng-bench-data [--accounts 100] [--meters 10] [--days 1042] [--end 2026-11-01] \
//!     [--monthly-only]
//! ```
//!
//! The defaults make 100 accounts × 10 meters × 96 readings × 1 042 days ≈ 100 M readings.
//! Each account has a main meter (item 01000), nine sub-meters over five items, and one of the
//! ten is a water meter; loads follow an office day with deterministic noise.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use reading_model::time::{Granularity, local_midnight_ms};
use reading_model::{
    AccountCode, Category, EnergyCode, FactorSelection, FactorTables, GatewayId, MeterId, Quality,
    Quantity, Reading, Unit,
};
use storage::rollup::{
    DAY_MS, FILE, Period, month_bounds, month_rollup, month_rollup_dir, rollup, rollup_dir,
    write_month_rollup, write_rollup,
};
use storage::{
    StoredReading, file_name, partition_date, partition_dir, to_record_batch, write_batch,
};

const STEP_MS: i64 = 900_000;

/// Meter name, item, base kW (or m³/h for water).
const METERS: [(&str, &str, f64); 10] = [
    ("m00-main", "01000", 180.0),
    ("m01-light-1", "01A10", 12.0),
    ("m02-light-2", "01A10", 10.0),
    ("m03-light-3", "01A10", 8.0),
    ("m04-sockets", "01A20", 15.0),
    ("m05-chiller-1", "01B10", 45.0),
    ("m06-chiller-2", "01B10", 40.0),
    ("m07-lifts", "01C10", 6.0),
    ("m08-it", "01D10", 20.0),
    ("m09-water", "02000", 1.5),
];

struct Args {
    dir: PathBuf,
    accounts: usize,
    meters: usize,
    days: i64,
    end: NaiveDate,
    /// Only (re)build the monthly rollups of a data set written before they existed.
    monthly_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        dir: PathBuf::from("/var/tmp/jieneng-bench-data"),
        accounts: 100,
        meters: 10,
        days: 1042,
        end: NaiveDate::from_ymd_opt(2026, 11, 1).context("date")?,
        monthly_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = value()?.into(),
            "--accounts" => a.accounts = value()?.parse()?,
            "--meters" => a.meters = value()?.parse()?,
            "--days" => a.days = value()?.parse()?,
            "--end" => a.end = value()?.parse()?,
            "--monthly-only" => a.monthly_only = true,
            other => anyhow::bail!("unknown argument {other}; see the example's doc comment"),
        }
    }
    anyhow::ensure!(
        (1..=999).contains(&a.accounts) && (1..=METERS.len()).contains(&a.meters),
        "--accounts 1..=999, --meters 1..=10"
    );
    Ok(a)
}

/// xorshift64*: deterministic noise without a dependency.
fn noise(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// Share of the base load at a local quarter hour of a weekday (0 = Monday).
fn shape(step: i64, dow: u32) -> f64 {
    let hour = step as f64 / 4.0;
    let day = if (8.0..18.0).contains(&hour) {
        1.0
    } else if (7.0..8.0).contains(&hour) || (18.0..20.0).contains(&hour) {
        0.6
    } else {
        0.25
    };
    if dow >= 5 { 0.3 * day + 0.1 } else { day }
}

struct Meter {
    account: AccountCode,
    meter: MeterId,
    item: EnergyCode,
    category: Category,
    base: f64,
    total: f64,
    rng: u64,
}

/// The monthly rollups of every Beijing month wholly inside `(first_ms, end_ms]`, built from
/// the daily and hourly ones as the store's maintenance builds them; how many.
fn monthly_rollups(dir: &std::path::Path, first_ms: i64, end_ms: i64) -> anyhow::Result<usize> {
    let mut n = 0;
    // The Beijing month of the first instant.
    let mut month =
        reading_model::time::local_date(first_ms + 1).map(|d| Granularity::Month.start(d));
    while let Some(m) = month {
        let Some((start, end)) = month_bounds(m) else {
            break;
        };
        if end > end_ms {
            break;
        }
        if start >= first_ms
            && let Some((rows, inputs)) = month_rollup(dir, m)?
        {
            let d = month_rollup_dir(dir, m);
            std::fs::create_dir_all(&d)?;
            write_month_rollup(std::fs::File::create(d.join(FILE))?, &rows, &inputs)?;
            n += 1;
        }
        month = m.checked_add_months(chrono::Months::new(1));
    }
    Ok(n)
}

/// The meters of the set: `a.meters` of [`METERS`] in each of `a.accounts` Haidian offices,
/// each with its own base load.
fn bench_meters(a: &Args) -> anyhow::Result<Vec<Meter>> {
    let mut meters = Vec::new();
    for i in 0..a.accounts {
        // 110108A001…: offices in Beijing's Haidian district.
        let account = AccountCode::parse(&format!("110108A{:03}", i + 1))?;
        for (k, (name, item, base)) in METERS.iter().take(a.meters).enumerate() {
            let item = EnergyCode::parse(item)?;
            meters.push(Meter {
                account: account.clone(),
                meter: MeterId::parse(name)?,
                item,
                category: item.category(),
                base: base * (0.7 + 0.6 * ((i * 7 + k * 3) % 10) as f64 / 10.0),
                total: 1_000.0,
                rng: 0x9E37_79B9_7F4A_7C15 ^ ((i as u64) << 8 | k as u64),
            });
        }
    }
    Ok(meters)
}

/// Writes each date's readings (in date order) as the store would, and its hourly and daily
/// rollups once the next date's first instant is known; returns the readings and bytes written.
fn write_dates(
    dir: &std::path::Path,
    rx: &mpsc::Receiver<(String, RecordBatch)>,
) -> anyhow::Result<(usize, u64)> {
    let mut rows = 0;
    let mut bytes = 0;
    let mut previous: Option<(String, RecordBatch, i64)> = None;
    let roll = |date: &str, from: i64, batches: &[RecordBatch]| -> anyhow::Result<()> {
        for period in Period::ALL {
            let out = rollup(batches, from, period)?;
            let d = rollup_dir(dir, period, date);
            std::fs::create_dir_all(&d)?;
            write_rollup(std::fs::File::create(d.join(FILE))?, &out)?;
        }
        Ok(())
    };
    for (date, batch) in rx.iter() {
        let part = partition_dir(dir, &date);
        std::fs::create_dir_all(&part).with_context(|| format!("creating {}", part.display()))?;
        let path = part.join(file_name(1, 1));
        write_batch(std::fs::File::create(&path)?, &batch)
            .with_context(|| format!("writing {}", path.display()))?;
        rows += batch.num_rows();
        bytes += std::fs::metadata(&path)?.len();
        let from = NaiveDate::parse_from_str(&date, "%Y-%m-%d")?
            .and_hms_opt(0, 0, 0)
            .context("midnight")?
            .and_utc()
            .timestamp_millis();
        // A date's rollup needs the next date's first instant.
        if let Some((d, b, f)) = previous.take() {
            roll(&d, f, &[b, batch.clone()])?;
        }
        previous = Some((date, batch, from));
    }
    if let Some((d, b, f)) = previous {
        roll(&d, f, &[b])?;
    }
    Ok((rows, bytes))
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let started = Instant::now();
    if a.monthly_only {
        let end_ms = local_midnight_ms(a.end);
        let n = monthly_rollups(&a.dir, end_ms - a.days * DAY_MS, end_ms)?;
        println!(
            "wrote {n} monthly rollups under {} in {:.1} s",
            a.dir.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let tables = FactorTables::builtin()?;
    let sel = FactorSelection::default();
    let gateway = GatewayId::parse("gw-bench")?;
    let mut meters = bench_meters(&a)?;
    let first_ms = local_midnight_ms(a.end) - a.days * DAY_MS;
    let end_ms = local_midnight_ms(a.end);
    // Generation here, Parquet and rollups on a second thread.
    let (tx, rx) = mpsc::sync_channel::<(String, RecordBatch)>(2);
    let dir = a.dir.clone();
    let writer = std::thread::spawn(move || write_dates(&dir, &rx));

    let mut coal = std::collections::HashMap::new();
    let mut carbon = std::collections::HashMap::new();
    let mut day_start = first_ms.div_euclid(DAY_MS) * DAY_MS;
    while day_start < end_ms {
        let day_end = day_start + DAY_MS;
        let mut rows: Vec<StoredReading> = Vec::new();
        for m in &mut meters {
            let mut ts = day_start.max(first_ms);
            // Readings fall on the quarter hours; the first one of all has no delta.
            ts += (STEP_MS - (ts - first_ms).rem_euclid(STEP_MS)) % STEP_MS;
            while ts < day_end && ts <= end_ms {
                let delta = if ts == first_ms {
                    None
                } else {
                    let local = reading_model::time::local_datetime(ts - 1).context("time")?;
                    let step =
                        ((ts - 1 + reading_model::time::OFFSET_MS).rem_euclid(DAY_MS)) / STEP_MS;
                    let kw = m.base
                        * shape(step, local.weekday().num_days_from_monday())
                        * (0.95 + 0.1 * noise(&mut m.rng));
                    Some((kw * 0.25 * 100.0).round() / 100.0)
                };
                m.total += delta.unwrap_or(0.0);
                let year = reading_model::time::interval_date(ts).map_or(2026, |d| d.year());
                let c = *coal
                    .entry((m.category, year))
                    .or_insert_with(|| tables.coal(m.category, year, &sel).map(|f| f.per_unit));
                let (carbon_id, carbon_value) = carbon
                    .entry((m.account.clone(), m.category, year))
                    .or_insert_with(|| {
                        tables
                            .carbon(&m.account, m.category, year, &sel)
                            .map(|f| (f.id.to_owned(), f.per_unit))
                            .unzip()
                    })
                    .clone();
                let (quantity, unit) = if m.category == Category::Water {
                    (Quantity::Volume, Unit::CubicMetre)
                } else {
                    (Quantity::EnergyImport, Unit::KilowattHour)
                };
                rows.push(StoredReading {
                    gateway: gateway.clone(),
                    reading: Reading {
                        ts,
                        account: m.account.clone(),
                        meter: m.meter.clone(),
                        category: m.category,
                        item: m.item,
                        quantity,
                        unit,
                        value: (m.total * 100.0).round() / 100.0,
                        delta,
                        kgce: delta.zip(c).map(|(d, f)| d * f),
                        kgco2e: delta.zip(carbon_value).map(|(d, f)| d * f),
                        factor: delta.and(carbon_id),
                        quality: Quality::Good,
                    },
                });
                ts += STEP_MS;
            }
        }
        if !rows.is_empty() {
            // Accounts and meters were generated in key order: the rows are sorted already.
            tx.send((partition_date(day_start), to_record_batch(&rows, 1)?))
                .context("the writer thread stopped")?;
        }
        day_start = day_end;
    }
    drop(tx);
    let (rows, bytes) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    let months = monthly_rollups(&a.dir, first_ms, end_ms)?;
    println!(
        "wrote {rows} readings ({:.1} M) of {} meters in {:.1} s: {:.0} MB of readings Parquet ({:.2} bytes/reading) plus rollups ({months} monthly), under {}",
        rows as f64 / 1e6,
        meters.len(),
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / rows as f64,
        a.dir.display()
    );
    Ok(())
}
