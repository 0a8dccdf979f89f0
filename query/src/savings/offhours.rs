//! Off-hours and base-load waste from hourly load: how much energy is used at night and on
//! weekends and holidays above the building's own minimum.
//!
//! The building's **base load** is a low percentile (default the 5th) of all its hourly loads:
//! what it draws when (nearly) everything that can be off is off — servers, fridges, security
//! lighting. Any off-hours load above it is equipment, lighting or HVAC left running, or a
//! schedule that starts too early or ends too late. The **excess** is
//! Σ over off-hours of max(0, load − base load), annualised by 8 760 ÷ hours observed.
//!
//! It is an upper bound of what a schedule change can save: some off-hours load above the base is
//! legitimate (cleaning, night security rounds, pre-cooling before opening), which is why the
//! opportunity built from it is marked medium confidence at best.
//!
//! Off-hours are the hours of working days outside `occupied_from..occupied_to`, and all hours of
//! weekends and holidays (day types from [`super::calendar`]; an hour belongs to the day it
//! starts on).

use std::collections::BTreeSet;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::calendar::Calendar;
use super::stats::percentile;

/// Energy used in the hour starting at `start` (local time), kWh — numerically the hour's mean kW.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourlyLoad {
    pub start: NaiveDateTime,
    pub kwh: f64,
}

/// Bad hourly input; names the hour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OffHoursError {
    #[error("off-hours analysis: no hours given")]
    Empty,
    #[error("off-hours analysis: hour {start}: load {kwh} is not a finite number")]
    NotFinite { start: NaiveDateTime, kwh: f64 },
    #[error("off-hours analysis: hour {start}: load {kwh} kWh is negative")]
    Negative { start: NaiveDateTime, kwh: f64 },
    #[error("off-hours analysis: hour {0} appears more than once")]
    Duplicate(NaiveDateTime),
    #[error("off-hours analysis: {0} does not start on the hour")]
    NotOnTheHour(NaiveDateTime),
    #[error("off-hours analysis: {days} days of data, at least {min} needed")]
    TooFewDays { days: usize, min: usize },
    #[error("off-hours analysis: {0}")]
    Config(String),
}

/// When the building is occupied and how the base load is taken.
#[derive(Debug, Clone, PartialEq)]
pub struct OffHoursConfig {
    /// Start of occupied hours on working days (inclusive).
    pub occupied_from: NaiveTime,
    /// End of occupied hours on working days (exclusive).
    pub occupied_to: NaiveTime,
    /// Quantile (0..1) of all hourly loads taken as the base load.
    pub base_quantile: f64,
    /// Fewest distinct days of data accepted.
    pub min_days: usize,
}

impl Default for OffHoursConfig {
    /// 08:00–18:00: Chinese government offices typically work 08:30/09:00–17:30/18:00; an hour
    /// of margin either side keeps arrival and departure out of the waste estimate.
    fn default() -> Self {
        Self {
            occupied_from: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN),
            occupied_to: NaiveTime::from_hms_opt(18, 0, 0).unwrap_or(NaiveTime::MIN),
            base_quantile: 0.05,
            min_days: 14,
        }
    }
}

/// Result of the off-hours analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct OffHoursAnalysis {
    pub hours: usize,
    pub days: usize,
    pub base_load_kw: f64,
    pub occupied_mean_kw: f64,
    /// Mean load on working days outside occupied hours.
    pub night_mean_kw: f64,
    /// Mean load on weekends and holidays.
    pub non_working_mean_kw: f64,
    /// Excess above the base load in the observed hours, kWh.
    pub night_excess_kwh: f64,
    pub non_working_excess_kwh: f64,
    /// Both excesses scaled to a year (8 760 h).
    pub excess_kwh_per_year: f64,
    pub total_kwh: f64,
    /// Share of all energy that is base load (base kW × hours ÷ total).
    pub base_load_share: f64,
    /// Share of all energy used off-hours.
    pub off_hours_share: f64,
    pub uncovered_years: Vec<i32>,
    pub explanation_zh: String,
    pub explanation_en: String,
}

/// Analyses hourly load (any order, gaps allowed; each hour at most once).
pub fn analyse(
    load: &[HourlyLoad],
    calendar: &Calendar,
    config: &OffHoursConfig,
) -> Result<OffHoursAnalysis, OffHoursError> {
    if !(0.0..=0.5).contains(&config.base_quantile) {
        return Err(OffHoursError::Config(format!(
            "base quantile {} must be between 0 and 0.5",
            config.base_quantile
        )));
    }
    if config.occupied_from >= config.occupied_to {
        return Err(OffHoursError::Config(format!(
            "occupied hours {}–{} are empty",
            config.occupied_from, config.occupied_to
        )));
    }
    if load.is_empty() {
        return Err(OffHoursError::Empty);
    }
    let mut seen = BTreeSet::new();
    let mut days: BTreeSet<NaiveDate> = BTreeSet::new();
    for h in load {
        if !h.kwh.is_finite() {
            return Err(OffHoursError::NotFinite {
                start: h.start,
                kwh: h.kwh,
            });
        }
        if h.kwh < 0.0 {
            return Err(OffHoursError::Negative {
                start: h.start,
                kwh: h.kwh,
            });
        }
        if h.start.minute() != 0 || h.start.second() != 0 || h.start.nanosecond() != 0 {
            return Err(OffHoursError::NotOnTheHour(h.start));
        }
        if !seen.insert(h.start) {
            return Err(OffHoursError::Duplicate(h.start));
        }
        days.insert(h.start.date());
    }
    if days.len() < config.min_days {
        return Err(OffHoursError::TooFewDays {
            days: days.len(),
            min: config.min_days,
        });
    }
    let values: Vec<f64> = load.iter().map(|h| h.kwh).collect();
    let base = percentile(&values, config.base_quantile).unwrap_or(0.0);

    #[derive(Default)]
    struct Acc {
        kwh: f64,
        hours: usize,
        excess: f64,
    }
    let (mut occupied, mut night, mut off) = (Acc::default(), Acc::default(), Acc::default());
    for h in load {
        let working = calendar.day_type(h.start.date()).is_working();
        let t = h.start.time();
        let acc = if !working {
            &mut off
        } else if t >= config.occupied_from && t < config.occupied_to {
            &mut occupied
        } else {
            &mut night
        };
        acc.kwh += h.kwh;
        acc.hours += 1;
        acc.excess += (h.kwh - base).max(0.0);
    }
    let mean = |a: &Acc| {
        if a.hours > 0 {
            a.kwh / a.hours as f64
        } else {
            0.0
        }
    };
    let hours = load.len();
    let total = occupied.kwh + night.kwh + off.kwh;
    let per_year = 8760.0 / hours as f64;
    let excess_kwh_per_year = (night.excess + off.excess) * per_year;
    let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    let a = OffHoursAnalysis {
        hours,
        days: days.len(),
        base_load_kw: base,
        occupied_mean_kw: mean(&occupied),
        night_mean_kw: mean(&night),
        non_working_mean_kw: mean(&off),
        night_excess_kwh: night.excess,
        non_working_excess_kwh: off.excess,
        excess_kwh_per_year,
        total_kwh: total,
        base_load_share: share(base * hours as f64),
        off_hours_share: share(night.kwh + off.kwh),
        uncovered_years: calendar.uncovered_years(days.iter().copied()),
        explanation_zh: String::new(),
        explanation_en: String::new(),
    };
    Ok(explain(a, config))
}

fn explain(mut a: OffHoursAnalysis, c: &OffHoursConfig) -> OffHoursAnalysis {
    let from = c.occupied_from.format("%H:%M");
    let to = c.occupied_to.format("%H:%M");
    let pct = c.base_quantile * 100.0;
    a.explanation_zh = format!(
        "非工作时段（工作日{from}—{to}以外及周末、节假日）平均负荷：工作日夜间 {:.1} kW，周末和节假日 {:.1} kW；\
         建筑自身基础负荷（全部小时负荷的第{pct:.0}百分位）为 {:.1} kW，工作时段平均 {:.1} kW。\
         高出基础负荷的部分折合每年约 {:.0} kWh，多为设备、照明或空调未关闭，或开关机时间过早、过晚；\
         其中部分可能是保洁、安保等必要用电，应现场核实。基于 {} 天、{} 小时的数据。",
        a.night_mean_kw,
        a.non_working_mean_kw,
        a.base_load_kw,
        a.occupied_mean_kw,
        a.excess_kwh_per_year,
        a.days,
        a.hours
    );
    a.explanation_en = format!(
        "Outside occupied hours ({from}–{to} on working days) the load averaged {:.1} kW on \
         working-day nights and {:.1} kW on weekends and holidays, against the building's own base \
         load of {:.1} kW (the {pct:.0}th percentile of all hours) and {:.1} kW when occupied. The \
         load above the base comes to about {:.0} kWh a year: equipment, lighting or HVAC left \
         running, or schedules starting too early or ending too late; part of it may be needed \
         (cleaning, security) and should be checked on site. Based on {} days, {} hours of data.",
        a.night_mean_kw,
        a.non_working_mean_kw,
        a.base_load_kw,
        a.occupied_mean_kw,
        a.excess_kwh_per_year,
        a.days,
        a.hours
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Four weeks of an office from Monday 2 March 2026: 20 kW base, 100 kW when occupied,
    /// and `night_kw` at night / on non-working days.
    fn office(night_kw: f64, off_kw: f64) -> Vec<HourlyLoad> {
        let cal = Calendar::builtin().unwrap();
        let mut out = Vec::new();
        for day in d("2026-03-02").iter_days().take(28) {
            let working = cal.day_type(day).is_working();
            for h in 0..24 {
                let kwh = match (working, (8..18).contains(&h), (2..5).contains(&h)) {
                    // 02:00–05:00 every day everything is off: the true base.
                    (_, _, true) => 20.0,
                    (true, true, _) => 100.0,
                    (true, false, _) => night_kw,
                    (false, _, _) => off_kw,
                };
                out.push(HourlyLoad {
                    start: day.and_hms_opt(h, 0, 0).unwrap(),
                    kwh,
                });
            }
        }
        out
    }

    #[test]
    fn excess_above_base_load_is_counted_and_annualised() {
        let cal = Calendar::builtin().unwrap();
        let a = analyse(&office(50.0, 35.0), &cal, &OffHoursConfig::default()).unwrap();
        assert_eq!((a.days, a.hours), (28, 672));
        assert_eq!(a.base_load_kw, 20.0);
        // 20 working days × 11 night hours (14 off-hours − 3 base hours) × 30 kW above base,
        // 8 weekend days × 21 hours × 15 kW.
        assert_eq!(a.night_excess_kwh, 20.0 * 11.0 * 30.0);
        assert_eq!(a.non_working_excess_kwh, 8.0 * 21.0 * 15.0);
        let expected_year = (6600.0 + 2520.0) * 8760.0 / 672.0;
        assert!((a.excess_kwh_per_year - expected_year).abs() < 1e-6);
        assert_eq!(a.occupied_mean_kw, 100.0);
        assert!(a.explanation_zh.contains("kWh") && a.explanation_en.contains("kWh"));
        assert!(a.explanation_en.contains(&format!("{:.0}", expected_year)));
    }

    #[test]
    fn a_building_that_switches_off_has_no_excess() {
        let cal = Calendar::builtin().unwrap();
        let a = analyse(&office(20.0, 20.0), &cal, &OffHoursConfig::default()).unwrap();
        assert_eq!(a.excess_kwh_per_year, 0.0);
        assert!(a.base_load_share > 0.3);
    }

    #[test]
    fn holidays_count_as_off_hours() {
        // Labour Day 2026 (1–5 May) falls on Friday–Tuesday; Saturday 9 May is worked.
        let cal = Calendar::builtin().unwrap();
        let load: Vec<HourlyLoad> = d("2026-04-27")
            .iter_days()
            .take(14)
            .flat_map(|day| (0..24).map(move |h| (day, h)))
            .map(|(day, h)| HourlyLoad {
                start: day.and_hms_opt(h, 0, 0).unwrap(),
                kwh: if (8..18).contains(&h) { 100.0 } else { 20.0 },
            })
            .collect();
        let a = analyse(&load, &cal, &OffHoursConfig::default()).unwrap();
        // 14 days = 8 working (27–30 Apr, 6–9 May incl. 调休 Saturday) + 6 off (1–5, 10 May).
        // The 10 daytime hours of each off day count as excess above the 20 kW base.
        assert_eq!(a.non_working_excess_kwh, 6.0 * 10.0 * 80.0);
        assert_eq!(a.night_excess_kwh, 0.0);
    }

    #[test]
    fn bad_input_is_rejected_with_the_hour() {
        let cal = Calendar::builtin().unwrap();
        let cfg = OffHoursConfig::default();
        assert_eq!(analyse(&[], &cal, &cfg).unwrap_err(), OffHoursError::Empty);
        let mut l = office(50.0, 35.0);
        l[5].kwh = f64::NAN;
        assert!(matches!(
            analyse(&l, &cal, &cfg).unwrap_err(),
            OffHoursError::NotFinite { start, .. } if start == d("2026-03-02").and_hms_opt(5, 0, 0).unwrap()
        ));
        let mut l = office(50.0, 35.0);
        l[6].kwh = -1.0;
        assert!(matches!(
            analyse(&l, &cal, &cfg).unwrap_err(),
            OffHoursError::Negative { .. }
        ));
        let mut l = office(50.0, 35.0);
        l[7].start = l[6].start;
        assert!(matches!(
            analyse(&l, &cal, &cfg).unwrap_err(),
            OffHoursError::Duplicate(_)
        ));
        let mut l = office(50.0, 35.0);
        l[7].start = d("2026-03-02").and_hms_opt(7, 30, 0).unwrap();
        assert!(matches!(
            analyse(&l, &cal, &cfg).unwrap_err(),
            OffHoursError::NotOnTheHour(_)
        ));
        let l = office(50.0, 35.0);
        assert_eq!(
            analyse(&l[..24 * 5], &cal, &cfg).unwrap_err(),
            OffHoursError::TooFewDays { days: 5, min: 14 }
        );
        let inverted = OffHoursConfig {
            occupied_from: NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
            occupied_to: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            ..Default::default()
        };
        assert!(matches!(
            analyse(&l, &cal, &inverted).unwrap_err(),
            OffHoursError::Config(_)
        ));
    }
}
