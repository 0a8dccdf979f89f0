//! A deployment's own reference data through the running server: a benchmark file with
//! values and `verified = true`, named in `[reference]`, reaches both the savings report
//! (a benchmark-gap opportunity on the verified set) and the dashboard's alert rules (the
//! over-constraint alert), because both read the same reference data. Without the file, the
//! same data gives no judgement, only "no verified value".
//!
//! The office's data are written relative to today (the alert rules look at the last 12
//! complete months of the real clock), one reading per local midnight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, Utc};
use http_contract::token_hash;
use jieneng::config::ServeConfig;
use reading_model::time::local_midnight_ms;
use reading_model::{
    AccountCode, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use storage::{
    StoredReading, file_name, partition_date, partition_dir, sort_and_dedupe, write_parquet,
};

const OFFICE: &str = "110108A001";
const KEY: &str = "admin-key-0123456789";
/// Daily electricity: 146,000 kWh a year on 12,000 m², 12.17 kWh/(m²·a).
const KWH_PER_DAY: f64 = 400.0;

/// The deployment's benchmark file: GB/T 51161's office set under its shipped id, with
/// values. A **test fixture**: the numbers are made up (far below the standard's), chosen so
/// the office is over both; it is not the standard's table.
const BENCHMARKS: &str = r#"
[[set]]
id = "gbt51161-2016/office"
name = "测试用 GB/T 51161-2016 办公建筑（非标准数值）"
name_en = "test fixture for GB/T 51161-2016 offices (made-up values, not the standard's)"
source = "test fixture: made-up values"
unit = "kWh/(m²·a)"
exclude = ["heating"]
verified = true

[[set.type]]
id = "A-government"
name = "A类 党政机关办公建筑"
name_en = "class A government office"
building_class = "A"

[[set.value]]
type = "A-government"
climate_zones = ["cold"]
constraint = 10.0
guide = 6.0
"#;

/// The office's main meter, one reading per local midnight over `[from, to)`.
fn write_office(dir: &Path, from: NaiveDate, to: NaiveDate) {
    let gateway = GatewayId::parse("gw-1").unwrap();
    let reading = |ts: i64, value: f64, delta: Option<f64>| StoredReading {
        gateway: gateway.clone(),
        reading: Reading {
            ts,
            account: AccountCode::parse(OFFICE).unwrap(),
            meter: MeterId::parse("main").unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse("01000").unwrap(),
            quantity: Quantity::EnergyImport,
            unit: Unit::KilowattHour,
            value,
            delta,
            kgce: delta.map(|d| d * 0.1229),
            kgco2e: delta.map(|d| d * 0.5),
            factor: delta.map(|_| "test".to_owned()),
            quality: Quality::Good,
        },
    };
    let mut by_date: BTreeMap<String, Vec<StoredReading>> = BTreeMap::new();
    let mut total = 1_000.0;
    let first = local_midnight_ms(from);
    by_date
        .entry(partition_date(first))
        .or_default()
        .push(reading(first, total, None));
    let mut d = from;
    while d < to {
        d = d.succ_opt().unwrap();
        total += KWH_PER_DAY;
        // The reading at the day's end closes it: (from, to].
        let ts = local_midnight_ms(d);
        by_date
            .entry(partition_date(ts))
            .or_default()
            .push(reading(ts, total, Some(KWH_PER_DAY)));
    }
    for (date, mut rows) in by_date {
        sort_and_dedupe(&mut rows);
        let part = partition_dir(dir, &date);
        std::fs::create_dir_all(&part).unwrap();
        write_parquet(
            std::fs::File::create(part.join(file_name(1, 1))).unwrap(),
            &rows,
            1,
        )
        .unwrap();
    }
}

fn config_text(data_dir: &Path, reference: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[mqtt]\nenabled = false\n\n\
         [[account]]\ncode = \"{OFFICE}\"\nname_zh = \"海淀区机关办公楼\"\n\
         institution_type = \"state_organ\"\nfloor_area_m2 = 12000.0\nheadcount = 480\n\
         climate_zone = \"cold\"\noffice_class = \"A\"\n\n\
         [[api_key]]\nname = \"admin\"\nkey_sha256 = \"{}\"\nrole = \"admin\"\n\n{reference}",
        data_dir.display().to_string(),
        token_hash(KEY)
    )
}

/// `/api/v1/savings` over the six months before this month, and `/api/v1/alerts`, from a
/// server started with `reference` (the `[reference]` section, or nothing).
async fn savings_and_alerts(
    dir: &Path,
    reference: &str,
    reporting: (NaiveDate, NaiveDate),
) -> (serde_json::Value, serde_json::Value) {
    let server_file = dir.join("server.toml");
    std::fs::write(&server_file, config_text(&dir.join("data"), reference)).unwrap();
    let config = ServeConfig::load(&server_file).unwrap();
    let server = jieneng::serve::start(&config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let get = |path: String| {
        let req = client.get(format!("{base}{path}")).bearer_auth(KEY);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let savings = get(format!(
        "/api/v1/savings?from={}&to={}&temperature=none",
        reporting.0, reporting.1
    ))
    .await;
    let alerts = get("/api/v1/alerts".into()).await;
    server.stop().await.unwrap();
    (savings, alerts)
}

fn kinds(alerts: &serde_json::Value) -> Vec<&str> {
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_deployment_benchmark_file_reaches_savings_and_alerts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let today = reading_model::time::local_date(Utc::now().timestamp_millis()).unwrap();
    let this_month = today.with_day(1).unwrap();
    let year_ago = this_month
        .checked_sub_months(chrono::Months::new(13))
        .unwrap();
    write_office(
        &dir.path().join("data"),
        year_ago,
        today - Duration::days(1),
    );
    let reporting = (
        this_month
            .checked_sub_months(chrono::Months::new(6))
            .unwrap(),
        this_month,
    );
    std::fs::write(dir.path().join("benchmarks.toml"), BENCHMARKS).unwrap();

    let (savings, alerts) = savings_and_alerts(
        dir.path(),
        "[reference]\nbenchmarks = \"benchmarks.toml\"\n",
        reporting,
    )
    .await;
    let rows = savings["accounts"][0]["benchmarks"].as_array().unwrap();
    let set = rows
        .iter()
        .find(|b| b["set_id"] == "gbt51161-2016/office")
        .unwrap_or_else(|| panic!("{savings:#}"));
    assert_eq!(set["set_verified"], true, "{set:#}");
    assert_eq!(set["verified"], true, "{set:#}");
    assert_eq!(set["constraint"], 10.0);
    assert_eq!(set["rating_en"], "above constraint value", "{set:#}");
    // The shipped sets have no values: a gap can only come from the deployment's set.
    let gap = savings["opportunities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "benchmark_gap")
        .unwrap_or_else(|| panic!("no benchmark gap on the deployment's set: {savings:#}"));
    // The year's 146,000 kWh down to the guide value of 6 kWh/(m²·a) × 12,000 m².
    let kwh = gap["kwh_per_year"].as_f64().unwrap();
    assert!((kwh - (146_000.0 - 72_000.0)).abs() < 1_000.0, "{gap:#}");

    let over: Vec<_> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "over_constraint")
        .collect();
    assert_eq!(over.len(), 1, "{alerts:#}");
    assert_eq!(over[0]["severity"], "critical");
    assert_eq!(over[0]["details"]["set"], "gbt51161-2016/office");
    assert_eq!(over[0]["details"]["verified"], true);

    // The same data without the deployment's file: the shipped set has no values, so the
    // office is not judged, and nothing says it is over a constraint.
    let (savings, alerts) = savings_and_alerts(dir.path(), "", reporting).await;
    assert!(!kinds(&alerts).contains(&"over_constraint"), "{alerts:#}");
    assert!(
        kinds(&alerts).contains(&"benchmark_unverified"),
        "{alerts:#}"
    );
    let rows = savings["accounts"][0]["benchmarks"].as_array().unwrap();
    assert!(rows.iter().all(|b| b["verified"] == false), "{savings:#}");
}
