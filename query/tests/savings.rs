//! The savings report over stored data: an office whose hourly load, heating and outdoor
//! temperature are generated from known parameters, so the report must find the night load,
//! the heating balance point and the rise in the reporting period — and fall back to a
//! day-type-only baseline, saying so, when told to ignore temperature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use query::report::csv;
use query::report::savings::{SavingsReport, SavingsRequest, TemperatureSource};
use query::savings::Calendar;
use query::{Account, Query, Reports};
use reading_model::time::local_midnight_ms;
use reading_model::{
    AccountCode, Category, EnergyCode, FactorTables, GatewayId, MeterId, Quality, Quantity,
    Reading, Unit,
};
use storage::{
    StoredReading, file_name, partition_date, partition_dir, sort_and_dedupe, write_parquet,
};

const OFFICE: &str = "110108A001";
const BASE_KW: f64 = 20.0;
/// Lights and PCs left on: working-day evenings 18–23 and all day on weekends and holidays.
const WASTE_KW: f64 = 30.0;
const OCCUPIED_KW: f64 = 100.0;
/// Heating on working days: kWh per °C below the balance point, per day.
const HEATING_KWH_PER_DEGREE_DAY: f64 = 96.0;
const BALANCE_C: f64 = 14.0;
/// The occupied load rises by this factor from the reporting period on.
const DRIFT: f64 = 1.2;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn temperature(d: NaiveDate) -> f64 {
    // Coldest mid-January, warmest mid-July, with a little day-to-day noise.
    let phase = f64::from(d.ordinal0()) - 15.0;
    12.0 - 16.0 * (phase / 365.0 * std::f64::consts::TAU).cos() + f64::from(d.ordinal() % 7) * 0.5
        - 1.5
}

fn kw(
    d: NaiveDate,
    hour: u32,
    calendar: &Calendar,
    reporting_from: NaiveDate,
    heating: f64,
) -> f64 {
    let working = calendar.day_type(d).is_working();
    let mut kw = BASE_KW;
    if working && (8..18).contains(&hour) {
        let occupied = if d >= reporting_from {
            OCCUPIED_KW * DRIFT
        } else {
            OCCUPIED_KW
        };
        kw += occupied + heating * (BALANCE_C - temperature(d)).max(0.0) / 10.0;
    } else if !working && (6..23).contains(&hour) || working && (18..23).contains(&hour) {
        kw += WASTE_KW;
    }
    kw
}

fn account() -> Account {
    Account {
        code: AccountCode::parse(OFFICE).unwrap(),
        name_zh: "海淀区机关办公楼".into(),
        name_en: "Haidian district government office".into(),
        institution_type: query::accounts::InstitutionType::StateOrgan,
        institution: None,
        floor_area_m2: Some(12_000.0),
        headcount: Some(480),
        climate_zone: Some(query::accounts::ClimateZone::Cold),
        office_class: Some(query::accounts::OfficeClass::A),
        main_meter: vec![],
        factors: Default::default(),
    }
}

/// Hourly energy counter and outdoor temperature, local days `[from, to)`; `heating` kWh per
/// °C·day below the balance point on working days.
fn write(
    dir: &std::path::Path,
    from: NaiveDate,
    to: NaiveDate,
    reporting_from: NaiveDate,
    heating: f64,
) {
    let calendar = Calendar::builtin().unwrap();
    let gateway = GatewayId::parse("gw-1").unwrap();
    let reading = |meter: &str, q: Quantity, unit, ts, value, delta: Option<f64>| StoredReading {
        gateway: gateway.clone(),
        reading: Reading {
            ts,
            account: AccountCode::parse(OFFICE).unwrap(),
            meter: MeterId::parse(meter).unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse("01000").unwrap(),
            quantity: q,
            unit,
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
    let mut d = from;
    let mut ts = local_midnight_ms(from);
    by_date.entry(partition_date(ts)).or_default().push(reading(
        "main",
        Quantity::EnergyImport,
        Unit::KilowattHour,
        ts,
        total,
        None,
    ));
    while d < to {
        for hour in 0..24 {
            let load = kw(d, hour, &calendar, reporting_from, heating);
            total += load;
            // The reading at the end of the hour closes it: (from, to].
            ts += 3_600_000;
            let rows = by_date.entry(partition_date(ts)).or_default();
            rows.push(reading(
                "main",
                Quantity::EnergyImport,
                Unit::KilowattHour,
                ts,
                total,
                Some(load),
            ));
            rows.push(reading(
                "weather",
                Quantity::OutdoorTemperature,
                Unit::Celsius,
                ts - 1_800_000,
                temperature(d),
                None,
            ));
        }
        d = d.succ_opt().unwrap();
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

async fn report(dir: &std::path::Path, temperature: TemperatureSource) -> SavingsReport {
    let reports = Reports::new(
        Query::new(dir),
        vec![account()],
        FactorTables::builtin().unwrap(),
    );
    reports
        .savings(&SavingsRequest {
            baseline_from: day(2025, 1, 1),
            baseline_to: day(2025, 7, 1),
            from: day(2025, 7, 1),
            to: day(2025, 10, 1),
            filters: vec![],
            temperature,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn finds_night_load_heating_and_drift_in_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        day(2025, 1, 1),
        day(2025, 10, 1),
        day(2025, 7, 1),
        HEATING_KWH_PER_DEGREE_DAY,
    );
    let rep = report(dir.path(), TemperatureSource::Auto).await;
    assert_eq!(rep.accounts.len(), 1);
    let a = &rep.accounts[0];
    assert_eq!(a.temperature.source, "readings:outdoor_temperature");
    assert_eq!(a.temperature.days_without_temperature, 0);

    // The baseline recovers the heating model of working days from the stored readings.
    let b = a.baseline.as_ref().expect("a baseline");
    assert_eq!(b.model, "weather");
    assert_eq!(b.days, 181);
    let working = b.models.iter().find(|m| m.group == "working").unwrap();
    assert_eq!(working.model, "heating");
    assert!(
        (working.heating_balance_point_c.unwrap() - BALANCE_C).abs() <= 1.0,
        "{working:?}"
    );
    assert!(
        (working.heating_kwh_per_degree_day.unwrap() - HEATING_KWH_PER_DEGREE_DAY).abs() < 10.0,
        "{working:?}"
    );
    assert!(b.passes_ashrae14, "{b:?}");

    // The rise of the occupied load shows as drift: 20 kW × 10 h on each working day.
    let calendar = Calendar::builtin().unwrap();
    let working_days = (0..92)
        .map(|i| day(2025, 7, 1) + chrono::Duration::days(i))
        .filter(|d| calendar.day_type(*d).is_working())
        .count() as f64;
    let rise = OCCUPIED_KW * (DRIFT - 1.0) * 10.0 * working_days;
    assert!(
        (-b.reporting_avoided_kwh - rise).abs() < 0.02 * rise,
        "avoided {} vs rise {rise}",
        b.reporting_avoided_kwh
    );
    let drift = rep
        .opportunities
        .iter()
        .find(|o| o.kind == "baseline_drift")
        .expect("a drift opportunity");
    assert!((drift.kwh_per_year - rise * 365.0 / 92.0).abs() < 0.02 * drift.kwh_per_year);

    // Night and weekend load above the 20 kW base is found, and turned into kgce and CO2 with
    // the factors the opportunity names.
    let off = a.off_hours.as_ref().expect("off-hours analysis");
    assert!((off.base_load_kw - BASE_KW).abs() < 1e-9, "{off:?}");
    let o = rep
        .opportunities
        .iter()
        .find(|o| o.kind == "off_hours")
        .expect("an off-hours opportunity");
    assert!((o.kwh_per_year - off.excess_kwh_per_year).abs() < 1e-3);
    assert!(o.kwh_per_year > WASTE_KW * 5.0 * 200.0, "{o:?}");
    let f = &o.factors[0];
    assert_eq!(f.category, "01");
    assert!((o.kgce_per_year - o.kwh_per_year * f.kgce_per_unit).abs() < 1e-3);
    assert!((o.kgco2e_per_year - o.kwh_per_year * f.kgco2e_per_unit).abs() < 1e-3);

    // Ranked by kgce, largest first, numbered from 1.
    for (i, w) in rep.opportunities.windows(2).enumerate() {
        assert!(w[0].kgce_per_year >= w[1].kgce_per_year);
        assert_eq!(w[0].rank, i + 1);
    }
    // The shipped benchmark sets have no values and are never shown as verified.
    assert!(!a.benchmarks.is_empty());
    assert!(a.benchmarks.iter().all(|b| !b.verified && !b.set_verified));
    assert!(
        rep.opportunities
            .iter()
            .filter(|o| o.kind == "benchmark_gap")
            .all(|o| !o.verified)
    );
    // One account alone has no peers; the report says so.
    assert!(
        a.notes.iter().any(|n| n.analysis == "peer"),
        "{:?}",
        a.notes
    );

    // CSV: a header and one line per opportunity.
    let text = csv::savings(&rep.opportunities);
    assert!(text.starts_with(csv::SAVINGS_HEADER));
    assert_eq!(text.lines().count(), rep.opportunities.len() + 1);
}

#[tokio::test]
async fn without_temperature_the_baseline_uses_day_types_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // No heating: a model without weather can then see the rise for what it is.
    write(
        dir.path(),
        day(2025, 1, 1),
        day(2025, 10, 1),
        day(2025, 7, 1),
        0.0,
    );
    let rep = report(dir.path(), TemperatureSource::None).await;
    let a = &rep.accounts[0];
    assert_eq!(a.temperature.source, "none");
    assert!(a.temperature.note_en.contains("day types"));
    let b = a.baseline.as_ref().unwrap();
    assert_eq!(b.model, "day_type_only");
    assert!(b.models.iter().all(|m| m.model == "intercept_only"));
    let drift = rep
        .opportunities
        .iter()
        .find(|o| o.kind == "baseline_drift")
        .unwrap();
    assert!(
        drift
            .explanation_en
            .contains("without weather normalisation")
    );
    assert!(drift.explanation_zh.contains("未做气象修正"));
}
