use chrono::{Datelike, NaiveDate};
use reading_model::{CarbonFactor, Unit};

use super::*;
use crate::savings::baseline::{BaselineConfig, DailyUsage, DayGrouping};
use crate::savings::benchmark::{AccountEnergy, BenchmarkSets, ClimateZone, compare};
use crate::savings::calendar::Calendar;
use crate::savings::offhours::{HourlyLoad, OffHoursConfig, analyse};
use crate::savings::ranking::{PeerIntensity, rank_by_intensity};

fn acct(s: &str) -> AccountCode {
    AccountCode::parse(s).unwrap()
}

fn tables() -> FactorTables {
    FactorTables::builtin().unwrap()
}

fn finding(kind: OpportunityKind, confidence: Confidence) -> Finding {
    Finding {
        kind,
        explanation_zh: "说明".into(),
        explanation_en: "why".into(),
        confidence,
        verification: Verification::Verified,
    }
}

#[test]
fn electricity_converts_with_the_recorded_factors() {
    // Beijing, 2025: 0.1229 kgce/kWh (GB/T 2589 当量) and the 2023 华北 grid factor 0.6361.
    let o = Opportunity::new(
        acct("110108A001"),
        2025,
        [(Category::Electricity, 10_000.0)].into(),
        finding(OpportunityKind::OffHours, Confidence::Medium),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(o.kwh_per_year, 10_000.0);
    assert!((o.kgce_per_year - 1_229.0).abs() < 1e-9);
    assert!((o.kgco2e_per_year - 6_361.0).abs() < 1e-9);
    assert_eq!(o.factors[0].coal_factor, "gbt2589-2020/electricity");
    assert_eq!(o.factors[0].carbon_factor, "mee-nbs-2023/grid/华北");
    assert!(o.verification.is_verified(), "{:?}", o.verification);
}

#[test]
fn an_unverified_factor_makes_the_opportunity_unverified() {
    let t = tables()
        .with_overrides(
            vec![],
            vec![CarbonFactor {
                id: "province-guide/electricity".into(),
                category: Category::Electricity,
                region: "11".into(),
                year: 2024,
                value: 0.6,
                per: Unit::KilowattHour,
                source: "memory".into(),
                verified: false,
            }],
            BTreeMap::new(),
        )
        .unwrap();
    let sel = FactorSelection {
        carbon_factor: [(Category::Electricity, "province-guide/electricity".into())].into(),
        ..Default::default()
    };
    let o = Opportunity::new(
        acct("110108A001"),
        2025,
        [(Category::Electricity, 1_000.0)].into(),
        finding(OpportunityKind::OffHours, Confidence::Medium),
        &t,
        &sel,
    )
    .unwrap();
    assert!((o.kgco2e_per_year - 600.0).abs() < 1e-9);
    assert_eq!(o.verification.label_en(), "UNVERIFIED");
}

#[test]
fn water_has_no_energy_factor_and_bad_values_are_rejected() {
    let e = Opportunity::new(
        acct("110108A001"),
        2025,
        [(Category::Water, 10.0)].into(),
        finding(OpportunityKind::OffHours, Confidence::Low),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        OpportunityError::NoCoalFactor {
            category: Category::Water,
            ..
        }
    ));
    let e = Opportunity::new(
        acct("110108A001"),
        2025,
        [(Category::Electricity, f64::NAN)].into(),
        finding(OpportunityKind::OffHours, Confidence::Low),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap_err();
    assert!(matches!(e, OpportunityError::Input { .. }));
}

#[test]
fn ranking_orders_by_kgce_then_confidence() {
    let t = tables();
    let s = FactorSelection::default();
    let mk = |code: &str, kwh: f64, c: Confidence, kind: OpportunityKind| {
        Opportunity::new(
            acct(code),
            2025,
            [(Category::Electricity, kwh)].into(),
            finding(kind, c),
            &t,
            &s,
        )
        .unwrap()
    };
    // Gas: 1 000 m³ × 1.33 = 1 330 kgce beats 10 000 kWh × 0.1229 = 1 229 kgce.
    let gas = Opportunity::new(
        acct("320100A001"),
        2025,
        [(Category::Gas, 1_000.0)].into(),
        finding(OpportunityKind::BenchmarkGap, Confidence::Medium),
        &t,
        &s,
    )
    .unwrap();
    let ranked = rank(vec![
        mk(
            "110108A001",
            10_000.0,
            Confidence::Low,
            OpportunityKind::OffHours,
        ),
        mk(
            "110108A002",
            500.0,
            Confidence::High,
            OpportunityKind::BaselineDrift,
        ),
        gas,
        mk(
            "110108A003",
            10_000.0,
            Confidence::High,
            OpportunityKind::OffHours,
        ),
    ]);
    let order: Vec<&str> = ranked.iter().map(|o| o.account.as_str()).collect();
    assert_eq!(
        order,
        vec!["320100A001", "110108A003", "110108A001", "110108A002"]
    );
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[test]
fn off_hours_analysis_becomes_an_electricity_opportunity() {
    let cal = Calendar::builtin().unwrap();
    let mut load = Vec::new();
    for day in d("2026-03-02").iter_days().take(28) {
        let working = cal.day_type(day).is_working();
        for h in 0..24 {
            let kwh = if working && (8..18).contains(&h) {
                100.0
            } else if h < 4 {
                20.0
            } else {
                40.0
            };
            load.push(HourlyLoad {
                start: day.and_hms_opt(h, 0, 0).unwrap(),
                kwh,
            });
        }
    }
    let a = analyse(&load, &cal, &OffHoursConfig::default()).unwrap();
    let o = off_hours(
        acct("110108A001"),
        2026,
        &a,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(o.kind, OpportunityKind::OffHours);
    assert_eq!(o.kwh_per_year, a.excess_kwh_per_year);
    assert_eq!(o.confidence, Confidence::Low); // four weeks extrapolated to a year
    assert_eq!(o.explanation_en, a.explanation_en);
    assert!(o.verification.is_verified());
}

#[test]
fn usage_above_baseline_is_a_drift_opportunity() {
    let cal = Calendar::builtin().unwrap();
    let day = |date: NaiveDate, scale: f64| {
        let t = 16.0 - 12.0 * (f64::from(date.ordinal()) / 58.0).cos();
        let base = if cal.day_type(date).is_working() {
            900.0
        } else {
            300.0
        };
        DailyUsage {
            date,
            usage: scale * (base + 30.0 * (t - 22.0).max(0.0)),
            temperature_c: t,
        }
    };
    let baseline: Vec<DailyUsage> = d("2024-01-01")
        .iter_days()
        .take(366)
        .map(|x| day(x, 1.0))
        .collect();
    let b = Baseline::fit(&baseline, &cal, &BaselineConfig::default()).unwrap();
    let reporting: Vec<DailyUsage> = d("2025-01-01")
        .iter_days()
        .take(365)
        .map(|x| day(x, 1.1))
        .collect();
    let p = b.avoided_energy(&reporting, &cal).unwrap();
    let o = baseline_drift(
        acct("110108A001"),
        2025,
        Category::Electricity,
        &b,
        &p,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap()
    .unwrap();
    let actual: f64 = reporting.iter().map(|x| x.usage).sum();
    // 10 % more than the baseline predicts, over a full year.
    assert!((o.kwh_per_year - actual / 11.0).abs() < 0.01 * actual / 11.0);
    assert!(o.explanation_zh.contains("气象修正基线") && o.explanation_en.contains("baseline"));
    // A year that used less is not an opportunity.
    let saved: Vec<DailyUsage> = d("2025-01-01")
        .iter_days()
        .take(365)
        .map(|x| day(x, 0.9))
        .collect();
    let p = b.avoided_energy(&saved, &cal).unwrap();
    assert!(
        baseline_drift(
            acct("110108A001"),
            2025,
            Category::Electricity,
            &b,
            &p,
            &tables(),
            &FactorSelection::default()
        )
        .unwrap()
        .is_none()
    );
    // The pooled variant exists for buildings that run every day.
    assert!(
        Baseline::fit(
            &baseline,
            &cal,
            &BaselineConfig {
                grouping: DayGrouping::Pooled,
                ..Default::default()
            }
        )
        .is_ok()
    );
}

#[test]
fn benchmark_gap_carries_the_unverified_marker() {
    let sets = BenchmarkSets::from_toml(
        r#"
[[set]]
id = "deployment/office"
name = "某标准"
name_en = "some standard"
source = "typed from memory"
unit = "kWh/(m²·a)"
verified = false
[[set.type]]
id = "office"
name = "办公"
name_en = "office"
building_class = "A"
[[set.value]]
type = "office"
constraint = 100.0
guide = 70.0
"#,
    )
    .unwrap();
    let set = sets.get("deployment/office").unwrap();
    let input = AccountEnergy {
        account: acct("420106A001"),
        year: 2025,
        floor_area_m2: 10_000.0,
        occupants: None,
        operating_hours: None,
        climate_zone: Some(ClimateZone::HotSummerColdWinter),
        consumption: [(Category::Electricity, 1_200_000.0)].into(),
        heating: BTreeMap::new(),
        transport: BTreeMap::new(),
    };
    let c = compare(
        set,
        "office",
        &input,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    let o = benchmark_gap(
        &c,
        &set.name,
        &set.name_en,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(o.kwh_per_year, 500_000.0);
    assert!(!o.verification.is_verified());
    assert!(
        o.explanation_en.contains("UNVERIFIED"),
        "{}",
        o.explanation_en
    );
    assert!(o.explanation_zh.contains("未核实"), "{}", o.explanation_zh);
    assert!(
        o.explanation_en.contains("200000 kWh"),
        "{}",
        o.explanation_en
    );
}

#[test]
fn peer_gap_is_shared_among_energies() {
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Government;
    let r = rank_by_intensity(&[
        PeerIntensity {
            account: acct("110101A001"),
            group: Government,
            intensity: 10.0,
            floor_area_m2: 1_000.0,
        },
        PeerIntensity {
            account: acct("110101A002"),
            group: Government,
            intensity: 14.0,
            floor_area_m2: 1_000.0,
        },
        PeerIntensity {
            account: acct("110101A003"),
            group: Government,
            intensity: 20.0,
            floor_area_m2: 1_000.0,
        },
    ])
    .unwrap();
    let worst = r.iter().find(|x| x.rank == 3).unwrap();
    assert_eq!(worst.gap_to_median, 6_000.0);
    // 20 000 kgce: 100 000 kWh (12 290 kgce) + 5 789.47… m³ gas (7 710 kgce).
    let gas_m3 = 7_710.0 / 1.33;
    let consumption: BTreeMap<Category, f64> =
        [(Category::Electricity, 100_000.0), (Category::Gas, gas_m3)].into();
    let o = peer_median(
        worst,
        2025,
        &consumption,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap()
    .unwrap();
    assert!((o.kgce_per_year - 6_000.0).abs() < 1e-6);
    assert!((o.kwh_per_year - 100_000.0 * 0.3).abs() < 1e-6);
    let best = r.iter().find(|x| x.rank == 1).unwrap();
    assert!(
        peer_median(
            best,
            2025,
            &consumption,
            &tables(),
            &FactorSelection::default()
        )
        .unwrap()
        .is_none()
    );
}
