//! Bytes on disk per reading for 15-minute meter data, through the real store: a year (by
//! default) of energy readings for 1,000 meters, as the gateway normalizes them (cumulative
//! value, delta, kgce, kgCO2e, factor id), appended batch by batch (one day of one gateway's
//! 100 meters per batch, ten gateways catching up concurrently), then flushed. Prints Parquet
//! bytes / rows, each column's share, and the WAL bytes written on the way.
//!
//! ```sh
//! cargo run --release -p ingest --example disk_bytes -- [--meters 1000] [--days 365] \
//!     [--flush-rows 500000] [--dir /var/tmp]
//! ```
//!
//! Loads follow an office day (low at night, a daytime plateau, weekends lower) with ±5 %
//! noise, and values are rounded to the 0.01 kWh a typical meter register resolves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use ingest::store::Store;
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

const STEP_MS: i64 = 900_000;
const PER_DAY: i64 = 96;
const METERS_PER_GATEWAY: usize = 100;
const METERS_PER_ACCOUNT: usize = 20;

#[derive(Debug)]
struct Args {
    meters: usize,
    days: i64,
    flush_rows: usize,
    dir: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        meters: 1000,
        days: 365,
        flush_rows: 500_000,
        dir: PathBuf::from("/var/tmp"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--meters" => a.meters = value()?.parse()?,
            "--days" => a.days = value()?.parse()?,
            "--flush-rows" => a.flush_rows = value()?.parse()?,
            "--dir" => a.dir = value()?.into(),
            other => anyhow::bail!("unknown argument {other}; see the example's doc comment"),
        }
    }
    anyhow::ensure!(
        a.meters > 0 && a.days > 0 && a.flush_rows > 0,
        "positive values only"
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

/// Average kW of an office meter at `step` of the day (0..96) on weekday `dow` (0 = Monday).
fn load(base_kw: f64, step: i64, dow: i64) -> f64 {
    let hour = step as f64 / 4.0;
    let day = if (8.0..18.0).contains(&hour) {
        1.0
    } else if (7.0..8.0).contains(&hour) || (18.0..20.0).contains(&hour) {
        0.6
    } else {
        0.25
    };
    let week = if dow >= 5 { 0.45 } else { 1.0 };
    base_kw * day * week
}

struct Meter {
    account: AccountCode,
    id: MeterId,
    item: EnergyCode,
    base_kw: f64,
    total: f64,
    rng: u64,
}

fn meters(n: usize) -> anyhow::Result<Vec<Meter>> {
    let items = [EnergyCode::parse("01000")?, EnergyCode::parse("01A10")?];
    (0..n)
        .map(|m| {
            Ok(Meter {
                account: AccountCode::parse(&format!("110108A{:03}", m / METERS_PER_ACCOUNT + 1))?,
                id: MeterId::parse(&format!("m{m:04}"))?,
                item: items[m % items.len()],
                base_kw: 5.0 + (m % 37) as f64 * 1.5,
                total: 10_000.0 + m as f64 * 123.45,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (m as u64 + 1),
            })
        })
        .collect()
}

/// One day of readings of `meters`, from `day_start`.
fn day_batch(gateway: &GatewayId, seq: u64, meters: &mut [Meter], day_start: i64) -> Batch {
    let dow = (day_start / 86_400_000 + 3) % 7; // 1970-01-01 was a Thursday
    let mut readings = Vec::with_capacity(meters.len() * PER_DAY as usize);
    for m in meters.iter_mut() {
        for step in 0..PER_DAY {
            let kw = load(m.base_kw, step, dow) * (0.95 + 0.1 * noise(&mut m.rng));
            let before = m.total;
            m.total = ((m.total + kw * 0.25) * 100.0).round() / 100.0;
            let delta = ((m.total - before) * 100.0).round() / 100.0;
            readings.push(Reading {
                ts: day_start + (step + 1) * STEP_MS,
                account: m.account.clone(),
                meter: m.id.clone(),
                category: Category::Electricity,
                item: m.item,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: m.total,
                delta: Some(delta),
                kgce: Some(delta * 0.1229),
                kgco2e: Some(delta * 0.5366),
                factor: Some("mee-nbs-2023/grid/华北".to_owned()),
                quality: Quality::Good,
            });
        }
    }
    Batch::new(gateway.clone(), seq, readings)
}

/// Parquet bytes and files under `dir`, adding each column's compressed bytes to `columns`.
fn parquet_bytes(dir: &Path, columns: &mut BTreeMap<String, i64>) -> anyhow::Result<(u64, usize)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut bytes = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            let (b, f) = parquet_bytes(&p, columns)?;
            bytes += b;
            files += f;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            bytes += e.metadata()?.len();
            files += 1;
            let reader = SerializedFileReader::new(std::fs::File::open(&p)?)?;
            for rg in reader.metadata().row_groups() {
                for c in rg.columns() {
                    *columns.entry(c.column_path().string()).or_default() += c.compressed_size();
                }
            }
        }
    }
    Ok((bytes, files))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir_in(&a.dir)?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let (store, threads) = Store::open(
        &data,
        a.flush_rows,
        ingest::config::StorageConfig::default(),
    )?;
    let start_ms = 1_735_660_800_000; // 2025-01-01T00:00+08:00
    let started = Instant::now();
    let mut all = meters(a.meters)?;
    let mut tasks = Vec::new();
    let mut g = 0;
    while !all.is_empty() {
        let mut mine: Vec<Meter> = all.drain(..METERS_PER_GATEWAY.min(all.len())).collect();
        let gateway = GatewayId::parse(&format!("gw-{g:02}"))?;
        let store = store.clone();
        let days = a.days;
        tasks.push(tokio::spawn(async move {
            for day in 0..days {
                let b = day_batch(
                    &gateway,
                    day as u64 + 1,
                    &mut mine,
                    start_ms + day * 86_400_000,
                );
                store.append(b).await?;
            }
            anyhow::Ok(())
        }));
        g += 1;
    }
    for t in tasks {
        t.await??;
    }
    let report = store.flush().await?;
    // What stays on disk: each date partition compacted into one file.
    store.maintain(true).await?;
    let elapsed = started.elapsed();
    let rows = store.metrics.rows.load(Ordering::Relaxed);
    let wal = store.metrics.wal_bytes.load(Ordering::Relaxed);
    drop(store);
    tokio::task::spawn_blocking(move || threads.join()).await?;
    let mut columns = BTreeMap::new();
    let (bytes, files) = parquet_bytes(&data.join("readings"), &mut columns)?;
    println!(
        "{rows} readings ({} meters x {} days of 15-min energy) in {:.1} s; Parquet {bytes} bytes in {files} files = {:.3} bytes/reading; WAL written {:.1} bytes/reading; last flush {} rows",
        a.meters,
        a.days,
        elapsed.as_secs_f64(),
        bytes as f64 / rows as f64,
        wal as f64 / rows as f64,
        report.rows,
    );
    for (name, b) in &columns {
        println!("  {name:<10} {:.3} bytes/reading", *b as f64 / rows as f64);
    }
    Ok(())
}
