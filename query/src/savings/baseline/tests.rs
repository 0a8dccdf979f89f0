use super::*;

/// Deterministic normal noise (xorshift64* + Box–Muller), so the tests never flake.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self, sd: f64) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A building's true behaviour on one kind of day.
#[derive(Clone, Copy)]
struct Truth {
    intercept: f64,
    heating: Option<(f64, f64)>,
    cooling: Option<(f64, f64)>,
}

impl Truth {
    fn usage(&self, t: f64) -> f64 {
        self.intercept
            + self.heating.map_or(0.0, |(bp, s)| s * (bp - t).max(0.0))
            + self.cooling.map_or(0.0, |(bp, s)| s * (t - bp).max(0.0))
    }
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A year of days from `start` with a seasonal temperature (Wuhan-like: ~4 °C in January,
/// ~30 °C in July, ±3 °C weather noise) and usage from `working`/`off` plus noise of `sd`.
fn synth(
    start: &str,
    days: u32,
    working: Truth,
    off: Truth,
    sd: f64,
    seed: u64,
) -> Vec<DailyUsage> {
    let cal = Calendar::builtin().unwrap();
    let mut n = Noise(seed);
    d(start)
        .iter_days()
        .take(days as usize)
        .map(|date| {
            let doy = f64::from(date.ordinal());
            let t = 17.0 - 13.0 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos()
                + n.normal(3.0);
            let truth = if cal.day_type(date).is_working() {
                working
            } else {
                off
            };
            DailyUsage {
                date,
                usage: (truth.usage(t) + n.normal(sd)).max(0.0),
                temperature_c: t,
            }
        })
        .collect()
}

const OFFICE_WORKING: Truth = Truth {
    intercept: 800.0,
    heating: Some((14.0, 40.0)),
    cooling: Some((22.0, 60.0)),
};
const OFFICE_OFF: Truth = Truth {
    intercept: 300.0,
    heating: Some((10.0, 12.0)),
    cooling: Some((25.0, 20.0)),
};

fn model(b: &Baseline, g: DayGroup) -> &GroupModel {
    b.models.iter().find(|m| m.group == g).unwrap()
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn recovers_known_parameters_per_day_type() {
    let cal = Calendar::builtin().unwrap();
    let data = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 7);
    let b = Baseline::fit(&data, &cal, &BaselineConfig::default()).unwrap();
    assert!(b.caltrack_sufficient);
    assert!(b.uncovered_years.is_empty());

    let w = model(&b, DayGroup::Working);
    assert_eq!(w.kind, ModelKind::HeatingAndCooling);
    let h = w.heating.unwrap();
    let c = w.cooling.unwrap();
    assert_close(
        "working heating balance point",
        h.balance_point_c,
        14.0,
        1.0,
    );
    assert_close(
        "working cooling balance point",
        c.balance_point_c,
        22.0,
        1.0,
    );
    assert_close("working heating slope", h.slope, 40.0, 4.0);
    assert_close("working cooling slope", c.slope, 60.0, 6.0);
    assert_close("working intercept", w.intercept, 800.0, 24.0);
    assert!(h.p_value < 1e-6 && c.p_value < 1e-6);
    // 2025: 261 weekdays − 18 weekday holidays + 5 调休 Saturdays/Sundays = 248 working days;
    // the split follows the calendar, not just Monday–Friday.
    let working_days = data
        .iter()
        .filter(|x| cal.day_type(x.date).is_working())
        .count();
    assert_eq!(working_days, 248);
    assert_eq!(w.days, working_days);

    let o = model(&b, DayGroup::NonWorking);
    assert_eq!(o.days, 365 - working_days);
    assert_eq!(o.kind, ModelKind::HeatingAndCooling);
    assert_close(
        "off heating balance point",
        o.heating.unwrap().balance_point_c,
        10.0,
        1.5,
    );
    assert_close(
        "off cooling balance point",
        o.cooling.unwrap().balance_point_c,
        25.0,
        1.5,
    );
    assert_close("off heating slope", o.heating.unwrap().slope, 12.0, 3.0);
    assert_close("off cooling slope", o.cooling.unwrap().slope, 20.0, 4.0);
    assert_close("off intercept", o.intercept, 300.0, 20.0);

    // Low noise: passes both ASHRAE checks; in-sample NMBE is ~0 by construction.
    assert!(b.fit.passes_ashrae14, "{:?}", b.fit);
    assert!(b.fit.daily.nmbe.abs() < 1e-9);
    assert_eq!(b.fit.monthly.unwrap().n, 12);
}

#[test]
fn pooled_model_with_holidays_as_workdays_fits_worse() {
    // The same office fitted as if every day were alike: the day-type split must matter.
    let cal = Calendar::builtin().unwrap();
    let data = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 7);
    let split = Baseline::fit(&data, &cal, &BaselineConfig::default()).unwrap();
    let pooled = Baseline::fit(
        &data,
        &cal,
        &BaselineConfig {
            grouping: DayGrouping::Pooled,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(pooled.models.len(), 1);
    assert!(pooled.fit.daily.cv_rmse > 3.0 * split.fit.daily.cv_rmse);
}

#[test]
fn heating_only_for_gas() {
    let cal = Calendar::builtin().unwrap();
    let gas = Truth {
        intercept: 50.0,
        heating: Some((16.0, 9.0)),
        cooling: None,
    };
    let data = synth("2024-01-01", 366, gas, gas, 5.0, 11);
    let cfg = BaselineConfig {
        grouping: DayGrouping::Pooled,
        fit_cooling: false,
        ..Default::default()
    };
    let b = Baseline::fit(&data, &cal, &cfg).unwrap();
    let m = &b.models[0];
    assert_eq!(m.kind, ModelKind::HeatingOnly);
    assert!(m.cooling.is_none());
    assert_close(
        "gas balance point",
        m.heating.unwrap().balance_point_c,
        16.0,
        1.0,
    );
    assert_close("gas slope", m.heating.unwrap().slope, 9.0, 0.5);
    assert_close("gas intercept", m.intercept, 50.0, 4.0);
}

#[test]
fn cooling_only_building() {
    let cal = Calendar::builtin().unwrap();
    let t = Truth {
        intercept: 400.0,
        heating: None,
        cooling: Some((20.0, 30.0)),
    };
    let data = synth("2025-01-01", 365, t, t, 10.0, 3);
    let b = Baseline::fit(
        &data,
        &cal,
        &BaselineConfig {
            grouping: DayGrouping::Pooled,
            ..Default::default()
        },
    )
    .unwrap();
    let m = &b.models[0];
    assert_eq!(m.kind, ModelKind::CoolingOnly, "{m:?}");
    assert_close(
        "cooling balance point",
        m.cooling.unwrap().balance_point_c,
        20.0,
        1.0,
    );
    assert_close("cooling slope", m.cooling.unwrap().slope, 30.0, 2.0);
}

#[test]
fn weather_independent_usage_gives_intercept_only() {
    let cal = Calendar::builtin().unwrap();
    let flat = Truth {
        intercept: 500.0,
        heating: None,
        cooling: None,
    };
    let data = synth("2025-01-01", 365, flat, flat, 0.0, 5);
    let b = Baseline::fit(
        &data,
        &cal,
        &BaselineConfig {
            grouping: DayGrouping::Pooled,
            ..Default::default()
        },
    )
    .unwrap();
    let m = &b.models[0];
    assert_eq!(m.kind, ModelKind::InterceptOnly);
    assert_eq!(m.intercept, 500.0);
    assert_eq!(b.predict(d("2025-07-01"), 35.0, &cal), 500.0);
}

#[test]
fn insignificant_slopes_are_disqualified() {
    // A tiny heating effect buried in noise: with the p-value check at 0.1 the heating term must
    // not be kept unless it is significant; with the check off (CalTRACK 2 / OpenEEmeter default 1)
    // more candidates qualify.
    let cal = Calendar::builtin().unwrap();
    let weak = Truth {
        intercept: 500.0,
        heating: Some((5.0, 0.5)),
        cooling: None,
    };
    let data = synth("2025-01-01", 365, weak, weak, 60.0, 21);
    let pooled = BaselineConfig {
        grouping: DayGrouping::Pooled,
        ..Default::default()
    };
    let strict = Baseline::fit(&data, &cal, &pooled).unwrap();
    let loose = Baseline::fit(
        &data,
        &cal,
        &BaselineConfig {
            max_p_value: 1.0,
            ..pooled
        },
    )
    .unwrap();
    for m in &strict.models {
        for t in m.heating.iter().chain(m.cooling.iter()) {
            assert!(t.p_value <= 0.1, "{m:?}");
        }
    }
    assert!(loose.models[0].qualified_candidates > strict.models[0].qualified_candidates);
}

#[test]
fn noisy_usage_fails_ashrae() {
    let cal = Calendar::builtin().unwrap();
    let data = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 400.0, 9);
    let b = Baseline::fit(&data, &cal, &BaselineConfig::default()).unwrap();
    assert!(b.fit.daily.cv_rmse > ASHRAE14_HOURLY.cv_rmse, "{:?}", b.fit);
    assert!(!b.fit.passes_ashrae14);
}

#[test]
fn avoided_energy_of_a_ten_percent_base_load_cut() {
    let cal = Calendar::builtin().unwrap();
    let baseline = synth("2024-01-01", 366, OFFICE_WORKING, OFFICE_OFF, 25.0, 13);
    let b = Baseline::fit(&baseline, &cal, &BaselineConfig::default()).unwrap();
    // Reporting year 2025: intercepts cut by 10 %, different weather noise.
    let cut = |t: Truth| Truth {
        intercept: t.intercept * 0.9,
        ..t
    };
    let reporting = synth(
        "2025-01-01",
        365,
        cut(OFFICE_WORKING),
        cut(OFFICE_OFF),
        25.0,
        17,
    );
    let working_days = reporting
        .iter()
        .filter(|x| cal.day_type(x.date).is_working())
        .count() as f64;
    let expected = 80.0 * working_days + 30.0 * (365.0 - working_days);
    let a = b.avoided_energy(&reporting, &cal).unwrap();
    assert_eq!(a.days, 365);
    assert_close("avoided", a.avoided, expected, 0.08 * expected);
    assert_close("per year", a.avoided_per_year(), a.avoided, 1e-6);
    assert!(a.avoided_fraction > 0.05 && a.avoided_fraction < 0.15);
    // Out of sample the unchanged building has small bias; the cut one is biased by ~−10 %.
    let same = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 17);
    assert!(b.evaluate(&same, &cal).unwrap().nmbe.abs() < 0.02);
    assert!(b.evaluate(&reporting, &cal).unwrap().nmbe < -0.08);
    let same_avoided = b.avoided_energy(&same, &cal).unwrap();
    assert!(same_avoided.avoided_fraction.abs() < 0.02);
}

#[test]
fn uncovered_years_are_reported() {
    let cal = Calendar::builtin().unwrap();
    let data = synth("2022-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 7);
    let b = Baseline::fit(&data, &cal, &BaselineConfig::default()).unwrap();
    assert_eq!(b.uncovered_years, vec![2022]);
}

#[test]
fn degenerate_inputs_give_typed_errors() {
    let cal = Calendar::builtin().unwrap();
    let cfg = BaselineConfig::default();
    assert_eq!(
        Baseline::fit(&[], &cal, &cfg).unwrap_err(),
        BaselineError::Empty
    );

    let few = synth("2025-01-01", 20, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    assert!(matches!(
        Baseline::fit(&few, &cal, &cfg).unwrap_err(),
        BaselineError::TooFewDays { group: DayGroup::Working, days, min: 30 } if days < 30
    ));

    let mut constant = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    for x in &mut constant {
        x.temperature_c = 21.5;
    }
    assert_eq!(
        Baseline::fit(&constant, &cal, &cfg).unwrap_err(),
        BaselineError::ConstantTemperature { value: 21.5 }
    );

    let mut nan = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    nan[40].temperature_c = f64::NAN;
    assert!(matches!(
        Baseline::fit(&nan, &cal, &cfg).unwrap_err(),
        BaselineError::NotFinite { date, field: "temperature", .. } if date == d("2025-02-10")
    ));
    let mut nan = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    nan[3].usage = f64::INFINITY;
    assert!(matches!(
        Baseline::fit(&nan, &cal, &cfg).unwrap_err(),
        BaselineError::NotFinite { field: "usage", .. }
    ));

    let mut neg = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    neg[5].usage = -3.0;
    assert_eq!(
        Baseline::fit(&neg, &cal, &cfg).unwrap_err(),
        BaselineError::Negative {
            date: d("2025-01-06"),
            usage: -3.0
        }
    );

    let mut dup = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    dup[9].date = dup[8].date;
    assert_eq!(
        Baseline::fit(&dup, &cal, &cfg).unwrap_err(),
        BaselineError::DuplicateDate(d("2025-01-09"))
    );

    let bad_grid = BaselineConfig {
        heating_grid: BalancePointGrid {
            min_c: 10.0,
            max_c: 5.0,
            step_c: 1.0,
        },
        ..Default::default()
    };
    let ok = synth("2025-01-01", 365, OFFICE_WORKING, OFFICE_OFF, 25.0, 1);
    assert!(matches!(
        Baseline::fit(&ok, &cal, &bad_grid).unwrap_err(),
        BaselineError::Grid { .. }
    ));
}

#[test]
fn metrics_follow_guideline_14_formulae() {
    // y = [10, 12, 14], ŷ = [11, 11, 15], p = 1: SSE = 3, Σ(y−ŷ) = −1, ȳ = 12, n−p = 2.
    let m = metrics(&[(10.0, 11.0), (12.0, 11.0), (14.0, 15.0)], 1);
    assert_close("cv", m.cv_rmse, (3.0_f64 / 2.0).sqrt() / 12.0, 1e-12);
    assert_close("nmbe", m.nmbe, -1.0 / (2.0 * 12.0), 1e-12);
    assert!(m.within(&ASHRAE14_MONTHLY) == (m.cv_rmse <= 0.15 && m.nmbe.abs() <= 0.05));
}

mod school;
