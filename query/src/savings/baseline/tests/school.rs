//! A school whose vacations cut its load, and a district-heated office: the baseline with the
//! institution's calendar (term calendar, heating season) against the same data without it.

use reading_model::AccountCode;

use super::*;
use crate::savings::heating::HeatingSeasons;
use crate::savings::terms::TermCalendars;

/// The test school's term calendar (a fixture in the format of `data/school_terms.toml`).
const TERMS: &str = r#"
[[terms]]
id = "test-school"
name = "测试学校校历"
name_en = "test school calendar"
source = "test fixture"
verified = true
accounts = ["110108D002"]

[[terms.year]]
school_year = "2023-2024"
from = "2023-09-01"
to = "2024-08-31"
[[terms.year.vacation]]
name = "寒假"
name_en = "winter vacation"
from = "2024-01-20"
to = "2024-02-25"
[[terms.year.vacation]]
name = "暑假"
name_en = "summer vacation"
from = "2024-07-06"
to = "2024-08-31"

[[terms.year]]
school_year = "2024-2025"
from = "2024-09-01"
to = "2025-08-31"
[[terms.year.vacation]]
name = "寒假"
name_en = "winter vacation"
from = "2025-01-18"
to = "2025-02-16"
[[terms.year.vacation]]
name = "暑假"
name_en = "summer vacation"
from = "2025-07-05"
to = "2025-08-31"

[[terms.year]]
school_year = "2025-2026"
from = "2025-09-01"
to = "2026-08-31"
[[terms.year.vacation]]
name = "寒假"
name_en = "winter vacation"
from = "2026-01-24"
to = "2026-03-01"
"#;

fn terms() -> TermCalendar {
    let t = TermCalendars::from_toml(TERMS).unwrap();
    t.get("test-school").unwrap().clone()
}

/// How the school uses energy on each kind of day.
#[derive(Clone, Copy)]
struct School {
    term_working: Truth,
    term_off: Truth,
    vacation: Truth,
}

const BEFORE: School = School {
    term_working: Truth {
        intercept: 600.0,
        heating: Some((14.0, 30.0)),
        cooling: Some((22.0, 50.0)),
    },
    term_off: Truth {
        intercept: 250.0,
        heating: Some((10.0, 10.0)),
        cooling: Some((25.0, 15.0)),
    },
    // Empty classrooms: the offices and the server room.
    vacation: Truth {
        intercept: 180.0,
        heating: Some((8.0, 8.0)),
        cooling: Some((26.0, 10.0)),
    },
};

/// After a lighting and air-conditioning retrofit: less base load on school days, a smaller
/// cooling slope, and less left on in the vacations.
const AFTER: School = School {
    term_working: Truth {
        intercept: 510.0,
        heating: Some((14.0, 30.0)),
        cooling: Some((22.0, 40.0)),
    },
    term_off: BEFORE.term_off,
    vacation: Truth {
        intercept: 150.0,
        heating: Some((8.0, 8.0)),
        cooling: Some((26.0, 10.0)),
    },
};

impl School {
    fn truth(&self, date: NaiveDate, cal: &Calendar, terms: &TermCalendar) -> Truth {
        if terms.vacation_of(date).is_some() {
            self.vacation
        } else if cal.day_type(date).is_working() {
            self.term_working
        } else {
            self.term_off
        }
    }
}

/// Beijing-like weather: about −3 °C in January, 27 °C in July, ±3 °C from day to day.
fn beijing_temperature(date: NaiveDate, n: &mut Noise) -> f64 {
    let doy = f64::from(date.ordinal());
    12.0 - 15.0 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos() + n.normal(3.0)
}

/// Daily usage of `school` over `days` from `start`, and the usage its behaviour before the
/// retrofit would have given on the same days in the same weather (no noise).
fn school_days(start: &str, days: usize, school: School, seed: u64) -> (Vec<DailyUsage>, Vec<f64>) {
    let (cal, terms) = (Calendar::builtin().unwrap(), terms());
    let mut n = Noise(seed);
    d(start)
        .iter_days()
        .take(days)
        .map(|date| {
            let t = beijing_temperature(date, &mut n);
            let usage = (school.truth(date, &cal, &terms).usage(t) + n.normal(15.0)).max(0.0);
            let before = BEFORE.truth(date, &cal, &terms).usage(t);
            (
                DailyUsage {
                    date,
                    usage,
                    temperature_c: t,
                },
                before,
            )
        })
        .unzip()
}

#[test]
fn a_school_with_vacations_needs_its_term_calendar() {
    let cal = Calendar::builtin().unwrap();
    let (baseline, _) = school_days("2024-01-01", 366, BEFORE, 21);
    // May to October 2025: a summer of cooling, the summer vacation in the middle of it.
    let (reporting, counterfactual) = school_days("2025-05-01", 184, AFTER, 23);
    // The true avoided energy: what the school would have used had it not changed, in the
    // reporting period's weather, minus what it did use.
    let actual: f64 = reporting.iter().map(|x| x.usage).sum();
    let truth = counterfactual.iter().sum::<f64>() - actual;
    assert!(
        truth > 0.1 * actual,
        "the retrofit saves {truth} of {actual}"
    );

    let with_terms = BaselineConfig {
        terms: Some(terms()),
        ..BaselineConfig::default()
    };
    let b = Baseline::fit(&baseline, &cal, &with_terms).unwrap();
    let groups: Vec<DayGroup> = b.models.iter().map(|m| m.group).collect();
    assert_eq!(
        groups,
        [DayGroup::Working, DayGroup::NonWorking, DayGroup::Vacation]
    );
    let vacation = model(&b, DayGroup::Vacation);
    assert_eq!(vacation.days, 37 + 57, "2024's winter and summer vacations");
    assert_close("vacation intercept", vacation.intercept, 180.0, 18.0);
    assert_eq!(b.days_outside_terms, 0);
    assert!(
        b.unverified_reasons().is_empty(),
        "{:?}",
        b.unverified_reasons()
    );
    let a = b.avoided_energy(&reporting, &cal).unwrap();
    let error = (a.avoided - truth) / truth;
    println!(
        "with the term calendar: avoided {:.0} kWh, truth {truth:.0} kWh, error {:+.2} %",
        a.avoided,
        error * 100.0
    );
    assert!(
        error.abs() <= 0.03,
        "avoided {} vs truth {truth}",
        a.avoided
    );
    // September and October 2025 belong to the 2025-2026 school year of the calendar; none
    // of the reporting days is outside it.
    assert_eq!(a.days_outside_terms, 0);

    // The same data without the term calendar: the vacations are fitted as term days and the
    // summer vacation is predicted as a term summer, so the savings are overstated.
    let b = Baseline::fit(&baseline, &cal, &BaselineConfig::default()).unwrap();
    let without = b.avoided_energy(&reporting, &cal).unwrap();
    let error_without = (without.avoided - truth) / truth;
    println!(
        "without it: avoided {:.0} kWh, error {:+.2} %",
        without.avoided,
        error_without * 100.0
    );
    assert!(
        error_without.abs() > 0.03 && error_without.abs() > 3.0 * error.abs(),
        "without terms {error_without}, with {error}"
    );
}

#[test]
fn days_outside_the_term_calendar_are_counted_and_unverified_terms_said() {
    let cal = Calendar::builtin().unwrap();
    let (baseline, _) = school_days("2024-01-01", 366, BEFORE, 21);
    let mut t = terms();
    t.verified = false;
    // Without the 2024-2025 school year, September to December 2024 have no known vacations.
    t.years.remove(1);
    let config = BaselineConfig {
        terms: Some(t),
        ..BaselineConfig::default()
    };
    let b = Baseline::fit(&baseline, &cal, &config).unwrap();
    assert_eq!(b.days_outside_terms, 122, "1 September to 31 December 2024");
    let reasons = b.unverified_reasons();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("not verified"), "{reasons:?}");
    assert!(reasons[1].contains("122 baseline days"), "{reasons:?}");
    assert!(
        b.calendar_notes(None)
            .iter()
            .any(|n| n.contains("UNVERIFIED")),
        "{:?}",
        b.calendar_notes(None)
    );
}

/// A Beijing office heated by the city's network: heating load (pumps, fans, the share of
/// heat paid by use) only inside the heating season, whatever the weather outside it.
fn district_heated(start: &str, days: usize, season: &HeatingSeason, seed: u64) -> Vec<DailyUsage> {
    let cal = Calendar::builtin().unwrap();
    let mut n = Noise(seed);
    d(start)
        .iter_days()
        .take(days)
        .map(|date| {
            let t = beijing_temperature(date, &mut n);
            let working = cal.day_type(date).is_working();
            let mut usage = if working { 700.0 } else { 250.0 };
            if season.contains(date) {
                usage += 35.0 * (16.0 - t).max(0.0);
            }
            if working {
                usage += 45.0 * (t - 24.0).max(0.0);
            }
            DailyUsage {
                date,
                usage: (usage + n.normal(20.0)).max(0.0),
                temperature_c: t,
            }
        })
        .collect()
}

#[test]
fn a_district_heated_office_gets_a_seasonal_heating_term() {
    let cal = Calendar::builtin().unwrap();
    let seasons = HeatingSeasons::builtin().unwrap();
    let season = seasons
        .for_account(&AccountCode::parse("110108A001").unwrap())
        .unwrap()
        .clone();
    let baseline = district_heated("2024-01-01", 366, &season, 31);
    let reporting = district_heated("2025-01-01", 365, &season, 37);
    let with_season = BaselineConfig {
        heating_season: Some(season.clone()),
        ..BaselineConfig::default()
    };
    let b = Baseline::fit(&baseline, &cal, &with_season).unwrap();
    let w = model(&b, DayGroup::Working);
    let h = w.heating.unwrap();
    assert!(h.in_season_only, "{w:?}");
    assert_close("heating balance point", h.balance_point_c, 16.0, 1.0);
    assert_close("heating slope", h.slope, 35.0, 3.5);
    // The shipped season is unverified, and the model rests on it.
    assert!(
        b.unverified_reasons()
            .iter()
            .any(|r| r.contains("heating season beijing")),
        "{:?}",
        b.unverified_reasons()
    );
    let seasonal = b.evaluate(&reporting, &cal).unwrap();
    let plain = Baseline::fit(&baseline, &cal, &BaselineConfig::default())
        .unwrap()
        .evaluate(&reporting, &cal)
        .unwrap();
    println!(
        "heating season: CV(RMSE) {:.2} % with it, {:.2} % without",
        seasonal.cv_rmse * 100.0,
        plain.cv_rmse * 100.0
    );
    assert!(seasonal.nmbe.abs() < 0.01, "{seasonal:?}");
    assert!(
        plain.cv_rmse > 1.3 * seasonal.cv_rmse,
        "without the season {plain:?}, with {seasonal:?}"
    );
}

#[test]
fn too_few_vacation_days_leave_a_flagged_baseline_without_a_vacation_model() {
    let cal = Calendar::builtin().unwrap();
    // September to December 2024: no vacation at all.
    let (baseline, _) = school_days("2024-09-01", 122, BEFORE, 41);
    let config = BaselineConfig {
        terms: Some(terms()),
        ..BaselineConfig::default()
    };
    let b = Baseline::fit(&baseline, &cal, &config).unwrap();
    assert_eq!(b.too_few_vacation_days, Some(0));
    assert!(b.models.iter().all(|m| m.group != DayGroup::Vacation));
    assert!(
        b.unverified_reasons()
            .iter()
            .any(|r| r.contains("only 0 vacation days")),
        "{:?}",
        b.unverified_reasons()
    );
    // A vacation day is predicted by its day type's model, as without the term calendar.
    let plain = Baseline::fit(&baseline, &cal, &BaselineConfig::default()).unwrap();
    let summer = d("2025-07-15");
    assert_close(
        "vacation day",
        b.predict(summer, 28.0, &cal),
        plain.predict(summer, 28.0, &cal),
        1e-9,
    );
}
