//! The consumption report through rollups equals the report over the raw readings: the same
//! sample data, rolled up the way the store's maintenance does it, with some dates not rolled
//! up, one date whose rollup is older than a later file, unflushed rows in memory and an
//! account whose main meter is configured — by day, month and year. Once the raw partitions
//! of rolled-up dates are gone (retention), the rollup path still gives the same answer, so it
//! does read the rollups. Monthly rollups are built where a month is wholly rolled up; a late
//! reading makes its month read by date until the month is rebuilt, and a month report does
//! read them (a tampered one shows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use query::accounts::MainMeter;
use query::report::consumption::{ConsumptionReport, ConsumptionRequest, RowKind};
use query::{LiveReadings, Query, Reports, sample};
use reading_model::time::{Granularity, local_midnight_ms};
use reading_model::{Category, FactorTables, GatewayId, MeterId};
use storage::rollup::{
    DAY_MS, FILE, Period, month_rollup, month_rollup_current, month_rollup_dir, rollup, rollup_dir,
    write_month_rollup, write_rollup,
};
use storage::{
    StoredReading, dedupe_batch, file_name, partition_date, partition_dir, partition_files,
    partitions, read_files, write_parquet,
};
use test_support::ReadingBuilder;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// What the store's maintenance does after rolling up dates: the monthly rollups of the Beijing
/// months `months` whose dates are all rolled up and current; which months it wrote.
fn roll_up_months(data_dir: &Path, months: &[NaiveDate]) -> Vec<NaiveDate> {
    let mut written = Vec::new();
    for &m in months {
        if let Some((rows, inputs)) = month_rollup(data_dir, m).unwrap() {
            let dir = month_rollup_dir(data_dir, m);
            std::fs::create_dir_all(&dir).unwrap();
            write_month_rollup(
                std::fs::File::create(dir.join(FILE)).unwrap(),
                &rows,
                &inputs,
            )
            .unwrap();
            written.push(m);
        }
    }
    written
}

fn months_2025() -> Vec<NaiveDate> {
    (1..=12)
        .map(|m| d(2025, m, 1))
        .chain([d(2026, 1, 1)])
        .collect()
}

/// What the store's maintenance does for one date: its readings and the next date's, deduped,
/// rolled up hourly and daily.
fn roll_up(data_dir: &Path, date: &str) {
    let from = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let mut batches = Vec::new();
    for ms in [from, from + DAY_MS] {
        let (live, _) = partition_files(&partition_dir(data_dir, &partition_date(ms))).unwrap();
        if !live.is_empty() {
            batches.push(dedupe_batch(&read_files(&live).unwrap()).unwrap());
        }
    }
    for period in Period::ALL {
        let rows = rollup(&batches, from, period).unwrap();
        let dir = rollup_dir(data_dir, period, date);
        std::fs::create_dir_all(&dir).unwrap();
        write_rollup(std::fs::File::create(dir.join(FILE)).unwrap(), &rows).unwrap();
    }
}

fn reading(meter: &str, item: &str, ts: i64, value: f64, delta: f64) -> StoredReading {
    let mut reading = ReadingBuilder::new(meter, ts)
        .item(item)
        .value(value)
        .delta(Some(delta))
        .kgce(Some(delta * 0.1229))
        .kgco2e(Some(delta * 0.5))
        .build();
    reading.factor = Some("late".into());
    StoredReading {
        gateway: GatewayId::parse("gw-late").unwrap(),
        reading,
    }
}

#[derive(Debug)]
struct Memory(Vec<StoredReading>);

impl LiveReadings for Memory {
    fn snapshot(&self) -> Vec<StoredReading> {
        self.0.clone()
    }
}

fn reports(dir: &Path, accounts: Vec<query::Account>, rollups: bool) -> Reports {
    // Unflushed rows: a late reading of a rolled-up date, and one at exactly local midnight.
    let live = Memory(vec![
        reading(
            "lighting",
            "01A10",
            local_midnight_ms(d(2025, 7, 14)) + 3 * 3_600_000 + 60_000,
            1.0,
            7.25,
        ),
        reading("extra", "01E10", local_midnight_ms(d(2025, 9, 1)), 1.0, 3.5),
    ]);
    Reports::new(
        Query::new(dir).with_live(Arc::new(live)),
        accounts,
        FactorTables::builtin().unwrap(),
    )
    .with_rollups(rollups)
}

async fn all(r: &Reports) -> Vec<ConsumptionReport> {
    let mut out = Vec::new();
    for (from, to, granularity) in [
        (d(2025, 1, 1), d(2026, 3, 1), Granularity::Month),
        (d(2025, 3, 17), d(2025, 9, 9), Granularity::Month),
        (d(2025, 1, 1), d(2026, 1, 1), Granularity::Year),
        (d(2025, 6, 25), d(2025, 7, 20), Granularity::Day),
    ] {
        out.push(
            r.consumption_report(&ConsumptionRequest {
                from,
                to,
                granularity,
                filters: vec![],
                category: None,
            })
            .await
            .unwrap(),
        );
    }
    out
}

/// Equal reports; on a difference, the first differing row.
fn same(want: &ConsumptionReport, got: &ConsumptionReport) {
    let what = format!("{:?} {}..{}", want.granularity, want.from, want.to);
    for (w, g) in want.rows.iter().zip(&got.rows) {
        assert_eq!(w, g, "{what}");
    }
    for (w, g) in want.indicators.iter().zip(&got.indicators) {
        assert_eq!(w, g, "{what}");
    }
    assert_eq!(want.rows.len(), got.rows.len(), "{what}");
    assert_eq!(want.indicators.len(), got.indicators.len(), "{what}");
}

/// Rewrites the monthly rollup of `month` with its energy doubled and its inputs unchanged, so
/// that it still counts as current.
fn double_month_rollup_energy(data: &Path, month: NaiveDate) {
    let (rows, inputs) = month_rollup(data, month).unwrap().unwrap();
    let energy = rows
        .column(5)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap();
    let doubled: arrow::array::Float64Array = energy.iter().map(|v| v.map(|v| v * 2.0)).collect();
    let mut cols = rows.columns().to_vec();
    cols[5] = Arc::new(doubled);
    let rows = arrow::record_batch::RecordBatch::try_new(rows.schema(), cols).unwrap();
    write_month_rollup(
        std::fs::File::create(month_rollup_dir(data, month).join(FILE)).unwrap(),
        &rows,
        &inputs,
    )
    .unwrap();
}

#[tokio::test]
async fn reports_through_rollups_equal_the_raw_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    sample::write(data).unwrap();
    let table = data.join(storage::READINGS);
    let dates = partitions(&table).unwrap();
    // 2025-07-01..2025-07-05 are not rolled up yet.
    for date in &dates {
        if !("2025-07-01".."2025-07-06").contains(&date.as_str()) {
            roll_up(data, date);
        }
    }
    // Monthly rollups where every date of the month is rolled up: not July (unrolled dates).
    let monthly = roll_up_months(data, &months_2025());
    assert!(monthly.contains(&d(2025, 3, 1)) && monthly.contains(&d(2025, 8, 1)));
    assert!(!monthly.contains(&d(2025, 7, 1)));
    // A late file for 2025-08-10 after its rollup: that rollup is stale, and with it August's
    // monthly rollup.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let late_ts = local_midnight_ms(d(2025, 8, 10)) + 3_600_000;
    let late_dir = partition_dir(data, &partition_date(late_ts));
    write_parquet(
        std::fs::File::create(late_dir.join(file_name(2, 2))).unwrap(),
        &[reading("late", "01A20", late_ts, 1.0, 11.5)],
        2,
    )
    .unwrap();

    let mut configured = sample::accounts();
    configured[0].main_meter = vec![MainMeter {
        meter: MeterId::parse("main").unwrap(),
        category: Category::Electricity,
        sub_meters: ["lighting", "chiller-1", "elevators"]
            .iter()
            .map(|m| MeterId::parse(m).unwrap())
            .collect(),
    }];
    for accounts in [sample::accounts(), configured] {
        let raw = all(&reports(data, accounts.clone(), false)).await;
        let rolled = all(&reports(data, accounts.clone(), true)).await;
        for (r, o) in raw.iter().zip(&rolled) {
            assert!(!r.rows.is_empty());
            same(r, o);
        }
    }

    // The late file's date (2025-08-09 UTC) and the date before rolled up again, as maintenance
    // does: their rollups are current, August's
    // monthly rollup was built from their old contents and must not be read until rebuilt.
    let late_days = ["2025-08-08", "2025-08-09"];
    let all_current = |_: i64| true;
    assert!(month_rollup_current(data, d(2025, 8, 1), &mut {
        all_current
    }));
    for date in late_days {
        roll_up(data, date);
    }
    assert!(!month_rollup_current(data, d(2025, 8, 1), &mut {
        all_current
    }));
    let raw = all(&reports(data, sample::accounts(), false)).await;
    for (r, o) in raw
        .iter()
        .zip(&all(&reports(data, sample::accounts(), true)).await)
    {
        same(r, o);
    }
    assert_eq!(roll_up_months(data, &[d(2025, 8, 1)]), [d(2025, 8, 1)]);
    assert!(month_rollup_current(data, d(2025, 8, 1), &mut {
        all_current
    }));
    for (r, o) in raw
        .iter()
        .zip(&all(&reports(data, sample::accounts(), true)).await)
    {
        same(r, o);
    }

    // Retention removes the raw partitions the rollups cover (not the unrolled, stale or live
    // ones, which the rollup path reads raw): the raw path loses them, the rollup path still answers as before.
    let before = all(&reports(data, sample::accounts(), true)).await;
    for date in &dates {
        let keep = ("2025-06-30".."2025-07-07").contains(&date.as_str())
            // The late file's date, and the date before (whose last instant it could close).
            || ("2025-08-08".."2025-08-10").contains(&date.as_str())
            || ("2025-08-31".."2025-09-02").contains(&date.as_str())
            || ("2025-07-13".."2025-07-15").contains(&date.as_str());
        if !keep {
            std::fs::remove_dir_all(table.join(format!("date={date}"))).unwrap();
        }
    }
    let after = all(&reports(data, sample::accounts(), true)).await;
    for (b, a) in before.iter().zip(&after) {
        same(b, a);
    }
    let raw_after = all(&reports(data, sample::accounts(), false)).await;
    assert_ne!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&raw_after).unwrap()
    );

    // March's monthly rollup is what month reports read: doubled, March doubles and April does
    // not (its inputs are unchanged, so it still counts as current).
    double_month_rollup_energy(data, d(2025, 3, 1));
    let tampered = all(&reports(data, sample::accounts(), true)).await;
    let march_total = |r: &ConsumptionReport| {
        r.rows
            .iter()
            .filter(|row| row.period == "2025-03" && row.kind == RowKind::Total)
            .map(|row| row.consumption)
            .sum::<f64>()
    };
    assert!(march_total(&before[0]) > 0.0);
    assert!((march_total(&tampered[0]) - 2.0 * march_total(&before[0])).abs() < 1e-6);
    // April's own amounts (its 环比 is March's).
    let april = |r: &ConsumptionReport| {
        r.rows
            .iter()
            .filter(|row| row.period == "2025-04")
            .map(|row| {
                (
                    row.account.clone(),
                    row.item.clone(),
                    row.kind,
                    row.consumption,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(april(&tampered[0]), april(&before[0]));
}

/// A deployment's factor file with a 华北 grid factor for data year 2026.
const FACTOR_FILE_2026: &str = r#"
[[carbon_factor]]
id = "test-2026/grid/华北"
category = "01"
region = "华北"
year = 2026
value = 0.6
per = "kWh"
source = "a newer announcement (test)"
verified = true
"#;

/// The office's electricity total row of `period`.
fn office_total<'a>(
    r: &'a ConsumptionReport,
    period: &str,
) -> &'a query::report::consumption::ItemRow {
    r.rows
        .iter()
        .find(|row| {
            row.account == "110108A001"
                && row.period == period
                && row.category == "01"
                && row.kind == RowKind::Total
        })
        .unwrap()
}

#[tokio::test]
async fn a_factor_file_restates_its_years_through_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    sample::write(data).unwrap();
    let table = data.join(storage::READINGS);
    let dates = partitions(&table).unwrap();
    for date in &dates {
        roll_up(data, date);
    }
    let monthly = roll_up_months(data, &months_2025());
    assert!(monthly.contains(&d(2025, 12, 1)) && monthly.contains(&d(2026, 1, 1)));
    // Only the rollups are left for what they cover: the figures below come from them.
    for date in &dates {
        if date.as_str() < "2026-02-27" {
            std::fs::remove_dir_all(table.join(format!("date={date}"))).unwrap();
        }
    }
    let with = |tables: FactorTables| {
        Reports::new(Query::new(data), sample::accounts(), tables).with_rollups(true)
    };
    let builtin = with(FactorTables::builtin().unwrap());
    let file = FactorTables::builtin()
        .unwrap()
        .with_file("mee-2026.toml", FACTOR_FILE_2026)
        .unwrap();
    let restated = with(file);
    let req = ConsumptionRequest {
        from: d(2025, 11, 1),
        to: d(2026, 3, 1),
        granularity: Granularity::Month,
        filters: vec![],
        category: None,
    };
    let before = builtin.consumption_report(&req).await.unwrap();
    let after = restated.consumption_report(&req).await.unwrap();
    // 2025: the built-in 2023 factor (latest not after 2025), before and after.
    for period in ["2025-11", "2025-12"] {
        let (b, a) = (office_total(&before, period), office_total(&after, period));
        assert_eq!(b, a, "{period}");
        assert_eq!(
            a.carbon_factor.as_ref().unwrap().id,
            "mee-nbs-2023/grid/华北"
        );
        assert_eq!(a.kgco2e, ((a.consumption * 0.6361) * 1e6).round() / 1e6);
    }
    // 2026: restated with the file's factor, named with its version.
    let version = restated
        .factors
        .version_of(false, "test-2026/grid/华北")
        .unwrap();
    assert_eq!(version.0, "mee-2026.toml");
    for period in ["2026-01", "2026-02"] {
        let (b, a) = (office_total(&before, period), office_total(&after, period));
        assert_eq!(b.consumption, a.consumption, "{period}");
        assert_eq!(b.kgce, a.kgce, "{period}: standard coal does not change");
        assert_eq!(
            b.carbon_factor.as_ref().unwrap().id,
            "mee-nbs-2023/grid/华北"
        );
        let cf = a.carbon_factor.as_ref().unwrap();
        assert_eq!(
            (cf.id.as_str(), cf.version.as_str()),
            ("test-2026/grid/华北", version.1)
        );
        assert_eq!(
            a.kgco2e,
            ((a.consumption * 0.6) * 1e6).round() / 1e6,
            "{period}"
        );
        assert_ne!(a.kgco2e, b.kgco2e);
    }
    // The carbon report says the same, with the file as the factor's origin.
    let carbon = restated
        .carbon(&query::report::carbon::CarbonRequest {
            from: d(2026, 1, 1),
            to: d(2026, 2, 1),
            granularity: Granularity::Month,
            filters: vec![],
            category: Some(Category::Electricity),
            group_digits: None,
        })
        .await
        .unwrap();
    let office = carbon
        .iter()
        .find(|r| r.account.as_deref() == Some("110108A001"))
        .unwrap();
    let cf = office.carbon_factor.as_ref().unwrap();
    assert_eq!(
        (cf.origin.as_str(), cf.version.as_str()),
        ("mee-2026.toml", version.1)
    );
    assert_eq!(office.kgco2e, Some(office.consumption * 0.6));
    assert_eq!(
        office.consumption,
        office_total(&after, "2026-01").consumption
    );
}
