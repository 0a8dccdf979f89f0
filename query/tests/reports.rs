//! Reports over the sample dataset checked against hand computations: carbon and kgce equal the
//! published factor × the consumption exactly, the unmetered remainder is exactly the office's
//! unmetered load, regions roll up, and periods are (from, to] in Beijing time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::NaiveDate;
use query::report::carbon::CarbonRequest;
use query::report::consumption::{ConsumptionRequest, RowKind};
use query::report::scope::{Filter, Region};
use query::sample::{self, METERS, OFFICE_UNMETERED_QUARTERS};
use query::{Query, Reports};
use reading_model::time::Granularity;
use reading_model::{AccountCode, Category, FactorTables};

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// Day index of a local date in the sample.
fn day_index(x: NaiveDate) -> u32 {
    (x - sample::first_day()).num_days() as u32
}

/// Hand sum of a sample meter over local days [from, to): quarters / 4.
fn hand_sum(quarters: impl Fn(u32, u32) -> u32, from: NaiveDate, to: NaiveDate) -> f64 {
    let mut q = 0u64;
    for day in day_index(from)..day_index(to) {
        for slot in 0..4 {
            q += u64::from(quarters(day, slot));
        }
    }
    q as f64 / 4.0
}

async fn reports() -> (tempfile::TempDir, Reports) {
    let dir = tempfile::tempdir().unwrap();
    sample::write(dir.path()).unwrap();
    let r = Reports::new(
        Query::new(dir.path()),
        sample::accounts(),
        FactorTables::builtin().unwrap(),
    );
    (dir, r)
}

#[tokio::test]
async fn carbon_and_kgce_equal_published_factor_times_consumption_exactly() {
    let (_dir, r) = reports().await;
    let rows = r
        .carbon(&CarbonRequest {
            from: d(2026, 1, 1),
            to: d(2026, 2, 1),
            granularity: Granularity::Month,
            filters: vec![],
            category: None,
            group_digits: None,
        })
        .await
        .unwrap();
    // The office (Beijing, 华北 grid): its main meter only, never the sub-meters as well.
    let office = rows
        .iter()
        .find(|r| r.account.as_deref() == Some("110108A001") && r.category == "01")
        .unwrap();
    let kwh = hand_sum(sample::office_main_quarters, d(2026, 1, 1), d(2026, 2, 1));
    assert_eq!(office.consumption, kwh);
    // GB/T 2589-2020 当量值 0.1229 kgce/kWh; MEE/NBS 2023 华北 0.6361 kgCO2/kWh (latest ≤ 2026).
    assert_eq!(office.kgce, Some(kwh * 0.1229));
    assert_eq!(office.kgco2e, Some(kwh * 0.6361));
    let cf = office.carbon_factor.as_ref().unwrap();
    assert_eq!(
        (cf.id.as_str(), cf.value, cf.year),
        ("mee-nbs-2023/grid/华北", 0.6361, 2023)
    );
    assert!(cf.source.contains("公告2025年第47号"));
    let coal = office.coal_factor.as_ref().unwrap();
    assert_eq!(
        (coal.id.as_str(), coal.value),
        ("gbt2589-2020/electricity", 0.1229)
    );
    // Nanjing is on the 华东 grid: 0.55 for 2023.
    let nanjing = rows
        .iter()
        .find(|r| r.account.as_deref() == Some("320102A004") && r.category == "01")
        .unwrap();
    let m = METERS
        .iter()
        .find(|m| m.account == "320102A004" && m.meter == "main")
        .unwrap();
    let kwh = hand_sum(
        |day, slot| sample::quarters(m, day, slot),
        d(2026, 1, 1),
        d(2026, 2, 1),
    );
    assert_eq!(nanjing.consumption, kwh);
    assert_eq!(nanjing.kgco2e, Some(kwh * 0.55));
    assert_eq!(nanjing.kgce, Some(kwh * 0.1229));
    // Water has no standard-coal or carbon factor: native units only.
    let water = rows
        .iter()
        .find(|r| r.account.as_deref() == Some("320102A004") && r.category == "02")
        .unwrap();
    assert_eq!(
        (water.unit.as_str(), water.kgce, water.kgco2e),
        ("m³", None, None)
    );
}

#[tokio::test]
async fn a_year_of_2025_uses_the_2023_factor_and_regions_roll_up() {
    let (_dir, r) = reports().await;
    let req = |group_digits, filters| CarbonRequest {
        from: d(2025, 1, 1),
        to: d(2026, 1, 1),
        granularity: Granularity::Year,
        filters,
        category: Some(Category::Electricity),
        group_digits,
    };
    let by_account = r.carbon(&req(None, vec![])).await.unwrap();
    assert_eq!(by_account.len(), 4);
    let beijing = r
        .carbon(&req(
            Some(2),
            vec![Filter::Region(Region::parse("11").unwrap())],
        ))
        .await
        .unwrap();
    assert_eq!(beijing.len(), 1, "{beijing:?}");
    let b = &beijing[0];
    assert_eq!(
        (b.region.as_str(), b.account.as_deref(), b.accounts),
        ("11", None, 3)
    );
    let sum: f64 = by_account
        .iter()
        .filter(|r| r.region.starts_with("11"))
        .map(|r| r.consumption)
        .sum();
    assert_eq!(b.consumption, sum);
    assert_eq!(b.kgco2e, Some(sum * 0.6361));
    // A county prefix keeps only its accounts.
    let xicheng = r
        .carbon(&req(
            None,
            vec![Filter::Region(Region::parse("110102").unwrap())],
        ))
        .await
        .unwrap();
    assert_eq!(xicheng.len(), 1);
    assert_eq!(xicheng[0].account.as_deref(), Some("110102E003"));
}

#[tokio::test]
async fn unmetered_remainder_is_shown_and_exact() {
    let (_dir, r) = reports().await;
    let office = AccountCode::parse("110108A001").unwrap();
    let rep = r
        .consumption_report(&ConsumptionRequest {
            from: d(2026, 2, 1),
            to: d(2026, 3, 1),
            granularity: Granularity::Month,
            filters: vec![Filter::Accounts([office].into())],
            category: None,
        })
        .await
        .unwrap();
    let find = |item: &str, kind: RowKind| {
        rep.rows
            .iter()
            .find(|r| r.item == item && r.kind == kind)
            .unwrap_or_else(|| panic!("{item} {kind:?} in {:#?}", rep.rows))
    };
    let days = (d(2026, 3, 1) - d(2026, 2, 1)).num_days() as f64;
    let unmetered = find("01000", RowKind::Unmetered);
    assert_eq!(
        unmetered.consumption,
        f64::from(OFFICE_UNMETERED_QUARTERS) / 4.0 * 4.0 * days
    );
    assert_eq!(unmetered.name_zh, "缺口量(未分项计量)");
    let total = find("01000", RowKind::Total);
    let items: f64 = ["01A00", "01B00", "01C00", "01D00"]
        .iter()
        .map(|i| find(i, RowKind::Subtotal).consumption)
        .sum();
    assert_eq!(total.consumption, items + unmetered.consumption);
    assert_eq!(find("01A10", RowKind::Item).level, 2);
    // 同比 and 环比 come from the same report's earlier periods.
    let jan = hand_sum(sample::office_main_quarters, d(2026, 1, 1), d(2026, 2, 1));
    let feb_2025 = hand_sum(sample::office_main_quarters, d(2025, 2, 1), d(2025, 3, 1));
    assert_eq!(total.previous, Some(jan));
    assert_eq!(total.year_before, Some(feb_2025));
    let ind = &rep.indicators[0];
    assert_eq!(
        ind.kgce_per_m2,
        Some(((total.consumption * 0.1229 / 12_000.0) * 1e6).round() / 1e6)
    );
    assert!(ind.water_m3.is_none());
}

#[tokio::test]
async fn days_are_beijing_days_and_end_at_midnight() {
    let (_dir, r) = reports().await;
    let school = AccountCode::parse("110108D002").unwrap();
    let rep = r
        .consumption_report(&ConsumptionRequest {
            from: d(2025, 6, 1),
            to: d(2025, 6, 3),
            granularity: Granularity::Day,
            filters: vec![Filter::Accounts([school].into())],
            category: Some(Category::Water),
        })
        .await
        .unwrap();
    let m = METERS
        .iter()
        .find(|m| m.account == "110108D002" && m.meter == "water")
        .unwrap();
    let want: Vec<(String, f64)> = [d(2025, 6, 1), d(2025, 6, 2)]
        .into_iter()
        .map(|x| {
            (
                x.format("%Y-%m-%d").to_string(),
                hand_sum(
                    |day, slot| sample::quarters(m, day, slot),
                    x,
                    x.succ_opt().unwrap(),
                ),
            )
        })
        .collect();
    let got: Vec<(String, f64)> = rep
        .rows
        .iter()
        .map(|r| (r.period.clone(), r.consumption))
        .collect();
    assert_eq!(got, want);
    // Per person: 1250 pupils and staff.
    assert_eq!(
        rep.indicators[0].water_m3_per_person,
        Some(((want[0].1 / 1250.0) * 1e6).round() / 1e6)
    );
}

#[tokio::test]
async fn the_accounts_table_is_queryable_with_sql() {
    let (_dir, r) = reports().await;
    let (ctx, has) = r.session().await.unwrap();
    assert!(has);
    let batches = ctx
        .sql(
            "SELECT a.code, a.floor_area_m2, count(*) AS n FROM readings r JOIN accounts a ON r.account = a.code \
             WHERE a.institution_type = 'state_organ' GROUP BY a.code, a.floor_area_m2 ORDER BY a.code",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("110108A001") && text.contains("320102A004"),
        "{text}"
    );
    assert!(!text.contains("110108D002"), "{text}");
}

#[tokio::test]
async fn a_slice_of_the_dataset_has_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    sample::write_days(dir.path(), d(2026, 1, 1), d(2026, 2, 1)).unwrap();
    let r = Reports::new(
        Query::new(dir.path()),
        sample::accounts(),
        FactorTables::builtin().unwrap(),
    );
    let rows = r
        .carbon(&CarbonRequest {
            from: d(2025, 12, 1),
            to: d(2026, 3, 1),
            granularity: Granularity::Month,
            filters: vec![Filter::Accounts(
                [AccountCode::parse("110108A001").unwrap()].into(),
            )],
            category: None,
            group_digits: None,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].consumption,
        hand_sum(sample::office_main_quarters, d(2026, 1, 1), d(2026, 2, 1))
    );
}

#[tokio::test]
async fn statistics_forms_by_edition() {
    let (_dir, r) = reports().await;
    let school = AccountCode::parse("110108D002").unwrap();
    let rows = r
        .statistics_forms(2025, 2025, &[Filter::Accounts([school].into())])
        .await
        .unwrap();
    let get = |k: &str| rows.iter().find(|f| f.field == k).map(|f| f.value.clone());
    let m = METERS
        .iter()
        .find(|m| m.account == "110108D002" && m.meter == "water")
        .unwrap();
    let water = hand_sum(
        |day, slot| sample::quarters(m, day, slot),
        d(2025, 1, 1),
        d(2026, 1, 1),
    );
    assert_eq!(get("water"), Some(Some(water.to_string())));
    assert_eq!(get("headcount"), Some(Some("1250".into())));
    assert_eq!(get("institution_type"), Some(Some("02".into())));
    // Dropped in 2025; not collected by jieneng.
    assert_eq!(get("land_area"), None);
    assert_eq!(get("credit_code"), Some(None));
    assert!(
        rows.iter()
            .all(|f| f.account == "110108D002" && !f.verified)
    );
    let old = r.statistics_forms(2015, 2025, &[]).await.unwrap();
    assert!(old.iter().any(|f| f.field == "land_area"));
    assert!(r.statistics_forms(2020, 2025, &[]).await.is_err());
}

/// An account on 等价 (`[account.factors] coal_method = "等价"`): the consumption report, the
/// carbon report, the statistics forms and the dashboard's day totals all give its energy ×
/// the published 等价 factor (0.404 kgce/kWh, the only one the built-in table has), and the
/// other accounts stay on 当量 (0.1229).
#[tokio::test]
async fn an_equivalent_account_gets_one_kgce_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    sample::write(dir.path()).unwrap();
    let mut accounts = sample::accounts();
    accounts[0].factors = toml::from_str("coal_method = \"等价\"").unwrap();
    let r = Reports::new(
        Query::new(dir.path()),
        accounts,
        FactorTables::builtin().unwrap(),
    );
    let office = AccountCode::parse("110108A001").unwrap();
    let (from, to) = (d(2025, 1, 1), d(2026, 1, 1));
    let kwh = hand_sum(sample::office_main_quarters, from, to);
    let hand = kwh * 0.404;
    let round6 = |x: f64| (x * 1e6).round() / 1e6;

    let carbon = r
        .carbon(&CarbonRequest {
            from,
            to,
            granularity: Granularity::Year,
            filters: vec![Filter::Accounts([office.clone()].into())],
            category: Some(Category::Electricity),
            group_digits: None,
        })
        .await
        .unwrap();
    assert_eq!(carbon.len(), 1);
    assert_eq!(carbon[0].consumption, kwh);
    assert_eq!(carbon[0].kgce, Some(hand));
    let coal = carbon[0].coal_factor.as_ref().unwrap();
    assert_eq!(
        (coal.id.as_str(), coal.value, coal.origin.as_str()),
        ("stats-table/electricity-equivalent", 0.404, "builtin")
    );

    let report = r
        .consumption_report(&ConsumptionRequest {
            from,
            to,
            granularity: Granularity::Year,
            filters: vec![],
            category: None,
        })
        .await
        .unwrap();
    let total = |account: &str| {
        report
            .rows
            .iter()
            .find(|row| {
                row.account == account
                    && row.period == "2025"
                    && row.category == "01"
                    && row.level == 0
                    && matches!(row.kind, RowKind::Total | RowKind::Subtotal)
            })
            .unwrap()
    };
    let t = total("110108A001");
    assert_eq!(t.consumption, kwh);
    assert_eq!(t.kgce, round6(hand));
    assert_eq!(
        t.coal_factor.as_ref().unwrap().version,
        coal.version,
        "the report names the carbon report's factor"
    );
    // The school is on 当量.
    let school = total("110108D002");
    assert_eq!(school.kgce, round6(school.consumption * 0.1229));
    assert_eq!(
        school.coal_factor.as_ref().unwrap().id,
        "gbt2589-2020/electricity"
    );

    let forms = r
        .statistics_forms(2025, 2025, &[Filter::Accounts([office.clone()].into())])
        .await
        .unwrap();
    let total_energy = forms
        .iter()
        .find(|f| f.field == "total_energy")
        .and_then(|f| f.value.as_deref())
        .unwrap();
    assert_eq!(total_energy.parse::<f64>().unwrap(), round6(hand));

    // The dashboard's day tiles: one day of the office.
    let day = d(2025, 6, 3);
    let tiles = r
        .category_totals(day, day.succ_opt().unwrap(), Granularity::Day, &[])
        .await
        .unwrap();
    let tile = tiles
        .iter()
        .find(|t| t.account == office && t.category == Category::Electricity)
        .unwrap();
    let day_kwh = hand_sum(sample::office_main_quarters, day, day.succ_opt().unwrap());
    assert_eq!(tile.consumption, day_kwh);
    assert_eq!(tile.kgce, round6(day_kwh * 0.404));
}

/// February 2026 through the 10th: its 环比 and 同比 compare 1–10 January 2026 and 1–10
/// February 2025, not the whole months, and the report says so; January stays whole.
#[tokio::test]
async fn a_period_in_progress_is_compared_with_the_same_days() {
    let (_dir, r) = reports().await;
    let req = ConsumptionRequest {
        from: d(2026, 1, 1),
        to: d(2026, 3, 1),
        granularity: Granularity::Month,
        filters: vec![Filter::Accounts(
            [AccountCode::parse("110108A001").unwrap()].into(),
        )],
        category: Some(Category::Electricity),
    };
    let as_of = d(2026, 2, 11);
    let report = r.consumption_report_as_of(&req, Some(as_of)).await.unwrap();
    let total = |period: &str| {
        report
            .rows
            .iter()
            .find(|row| row.period == period && row.kind == RowKind::Total)
            .unwrap()
    };
    let main = sample::office_main_quarters;
    let feb = total("2026-02");
    assert_eq!(
        feb.previous,
        Some(hand_sum(main, d(2026, 1, 1), d(2026, 1, 11)))
    );
    assert_eq!(
        feb.year_before,
        Some(hand_sum(main, d(2025, 2, 1), d(2025, 2, 11)))
    );
    let jan = total("2026-01");
    assert_eq!(
        jan.previous,
        Some(hand_sum(main, d(2025, 12, 1), d(2026, 1, 1)))
    );
    assert_eq!(
        jan.year_before,
        Some(hand_sum(main, d(2025, 1, 1), d(2025, 2, 1)))
    );
    let c = report.comparison.as_ref().unwrap();
    assert_eq!(
        (c.period.as_str(), c.through, c.days),
        ("2026-02", d(2026, 2, 10), 10)
    );
    assert_eq!(c.previous, Some((d(2026, 1, 1), d(2026, 1, 11))));
    assert_eq!(c.year_before, Some((d(2025, 2, 1), d(2025, 2, 11))));
    assert!(
        c.note_zh.contains("2025-02-01 – 2025-02-10"),
        "{}",
        c.note_zh
    );
    assert!(c.note_en.contains("same days"), "{}", c.note_en);
    // Whole periods when nothing is in progress.
    let whole = r
        .consumption_report_as_of(&req, Some(d(2026, 3, 1)))
        .await
        .unwrap();
    assert!(whole.comparison.is_none());
    let feb_whole = whole
        .rows
        .iter()
        .find(|row| row.period == "2026-02" && row.kind == RowKind::Total)
        .unwrap();
    assert_eq!(
        feb_whole.year_before,
        Some(hand_sum(main, d(2025, 2, 1), d(2025, 3, 1)))
    );
}
