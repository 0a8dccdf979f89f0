//! Rollups against the raw readings, both read by DuckDB from the Parquet files: they agree
//! exactly, and late data (a gateway catching up after a day offline) updates the old day.

use ingest::config::StorageConfig;
use ingest::store::Store;
use jieneng_tests::run_json;
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use serde_json::Value;

const DAY: i64 = 86_400_000;
const QUARTER: i64 = 900_000;
const D1: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z: "yesterday"

/// A day of 15-minute readings of one meter, (day, day + 1 day]: deltas are multiples of
/// 1/4 kWh, so every sum is exact whatever the order of addition.
fn day_of(gateway: &str, seq: u64, meter: &str, item: &str, day: i64) -> anyhow::Result<Batch> {
    let (account, meter, item) = (
        AccountCode::parse("110108A001")?,
        MeterId::parse(meter)?,
        EnergyCode::parse(item)?,
    );
    let readings = (1..=96)
        .map(|i| {
            let delta = f64::from((i % 7) as u8 + 1) * 0.25;
            Reading {
                ts: day + i * QUARTER,
                account: account.clone(),
                meter: meter.clone(),
                category: Category::Electricity,
                item,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 1000.0 + i as f64,
                delta: Some(delta),
                kgce: Some(delta * 0.125),
                kgco2e: Some(delta * 0.5),
                factor: Some("test".into()),
                quality: Quality::Good,
            }
        })
        .collect();
    Ok(Batch::new(GatewayId::parse(gateway)?, seq, readings))
}

fn check(data_dir: &std::path::Path) -> anyhow::Result<Value> {
    let out = run_json("check_rollups.py", &[&data_dir.display().to_string()])?;
    for period in ["hourly", "daily"] {
        assert_eq!(
            out[period]["rollup"], out[period]["raw"],
            "{period} rollups equal the raw sums"
        );
    }
    Ok(out)
}

fn daily_energy(out: &Value, day: i64) -> f64 {
    out["daily"]["rollup"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r[3].as_i64() == Some(day))
        .filter_map(|r| r[4].as_f64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_updates_yesterdays_rollups_and_they_match_the_raw_sums() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, threads) = Store::open(dir.path(), 1_000_000, StorageConfig::default())?;
    // gw-a reports yesterday and today; gw-b was offline yesterday and reports today only.
    store
        .append(day_of("gw-a", 1, "a-main", "01000", D1)?)
        .await?;
    store
        .append(day_of("gw-a", 2, "a-main", "01000", D1 + DAY)?)
        .await?;
    store
        .append(day_of("gw-b", 1, "b-light", "01A10", D1 + DAY)?)
        .await?;
    store.flush().await?;
    store.maintain(true).await?;
    let before = check(dir.path())?;
    let yesterday = daily_energy(&before, D1);
    assert!(yesterday > 0.0, "{before}");

    // gw-b catches up: yesterday's readings arrive a day late, in two batches, one of which
    // overlaps what is already there.
    let late = day_of("gw-b", 2, "b-light", "01A10", D1)?;
    let late_energy: f64 = late.readings.iter().filter_map(|r| r.delta).sum();
    store.append(late).await?;
    store.flush().await?;
    store
        .append(day_of("gw-b", 3, "b-light", "01A10", D1)?)
        .await?;
    store.flush().await?;
    store.maintain(true).await?;
    let after = check(dir.path())?;
    assert_eq!(daily_energy(&after, D1), yesterday + late_energy, "{after}");
    assert_eq!(
        daily_energy(&after, D1 + DAY),
        daily_energy(&before, D1 + DAY),
        "today is unchanged"
    );
    // Per item: yesterday now has gw-b's lighting too.
    let items: Vec<&str> = after["daily"]["rollup"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r[3].as_i64() == Some(D1))
        .filter_map(|r| r[2].as_str())
        .collect();
    assert_eq!(items, vec!["01000", "01A10"]);
    drop(store);
    tokio::task::spawn_blocking(move || threads.join()).await?;
    Ok(())
}
