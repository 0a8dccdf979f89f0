//! Golden files: reports over the fixed sample dataset (`query::sample`) compared with the
//! expected CSV and JSON checked in under `tests/golden/`. After a deliberate change, rerun with
//! `JIENENG_UPDATE_GOLDEN=1` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use query::report::carbon::CarbonRequest;
use query::report::consumption::ConsumptionRequest;
use query::report::csv;
use query::report::savings::{SavingsRequest, TemperatureSource};
use query::report::scope::{Filter, Region};
use query::{Query, Reports, sample};
use reading_model::time::Granularity;
use reading_model::{AccountCode, Category, FactorTables};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, got: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("JIENENG_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (JIENENG_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  want: {:?}\n  got:  {:?}\n(JIENENG_UPDATE_GOLDEN=1 rewrites it)",
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

async fn reports() -> (tempfile::TempDir, Reports) {
    let dir = tempfile::tempdir().unwrap();
    let n = sample::write(dir.path()).unwrap();
    assert!(n > 10_000, "{n}");
    let r = Reports::new(
        Query::new(dir.path()),
        sample::accounts(),
        FactorTables::builtin().unwrap(),
    );
    (dir, r)
}

#[tokio::test]
async fn golden_reports() {
    let (_dir, r) = reports().await;
    let month = r
        .consumption_report(&ConsumptionRequest {
            from: d(2026, 1, 1),
            to: d(2026, 3, 1),
            granularity: Granularity::Month,
            filters: vec![],
            category: None,
        })
        .await
        .unwrap();
    check("consumption_month.csv", &csv::items(&month.rows));
    check("indicators_month.csv", &csv::indicators(&month.indicators));
    check(
        "consumption_month.json",
        &(serde_json::to_string_pretty(&month).unwrap() + "\n"),
    );

    let days = r
        .consumption_report(&ConsumptionRequest {
            from: d(2026, 2, 27),
            to: d(2026, 3, 1),
            granularity: Granularity::Day,
            filters: vec![Filter::Accounts(
                [AccountCode::parse("110108A001").unwrap()].into(),
            )],
            category: Some(Category::Electricity),
        })
        .await
        .unwrap();
    check("consumption_day_office.csv", &csv::items(&days.rows));

    let year = r
        .consumption_report(&ConsumptionRequest {
            from: d(2025, 1, 1),
            to: d(2026, 1, 1),
            granularity: Granularity::Year,
            filters: vec![],
            category: None,
        })
        .await
        .unwrap();
    check("consumption_year.csv", &csv::items(&year.rows));
    check("indicators_year.csv", &csv::indicators(&year.indicators));

    let carbon = r
        .carbon(&CarbonRequest {
            from: d(2025, 11, 1),
            to: d(2026, 3, 1),
            granularity: Granularity::Month,
            filters: vec![],
            category: None,
            group_digits: None,
        })
        .await
        .unwrap();
    check("carbon_month.csv", &csv::carbon(&carbon));
    check(
        "carbon_month.json",
        &(serde_json::to_string_pretty(&carbon).unwrap() + "\n"),
    );
    let provinces = r
        .carbon(&CarbonRequest {
            from: d(2025, 1, 1),
            to: d(2026, 1, 1),
            granularity: Granularity::Year,
            filters: vec![Filter::Region(Region::parse("11").unwrap())],
            category: Some(Category::Electricity),
            group_digits: Some(4),
        })
        .await
        .unwrap();
    check("carbon_year_city_11.csv", &csv::carbon(&provinces));
}

/// The savings report over the sample: readings every six hours (so no off-hours analysis,
/// which the notes say), day-type baselines without temperature, the peer ranks within each
/// institution type, and the shipped benchmark sets — all marked unverified.
#[tokio::test]
async fn golden_savings() {
    let (_dir, r) = reports().await;
    let report = r
        .savings(&SavingsRequest {
            baseline_from: d(2025, 1, 1),
            baseline_to: d(2025, 9, 1),
            from: d(2025, 9, 1),
            to: d(2026, 3, 1),
            filters: vec![],
            temperature: TemperatureSource::Auto,
        })
        .await
        .unwrap();
    assert!(!report.opportunities.is_empty());
    check("savings.csv", &csv::savings(&report.opportunities));
    check(
        "savings_accounts.csv",
        &csv::savings_accounts(&report.accounts),
    );
    check(
        "savings.json",
        &(serde_json::to_string_pretty(&report).unwrap() + "\n"),
    );
}
