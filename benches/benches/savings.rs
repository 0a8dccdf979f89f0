//! Savings analyses on one account: a year-long CalTRACK-style baseline fit (grid search over
//! every balance-point pair, two day-type models) and an off-hours analysis of a year of hourly
//! load. Throughput is in days (baseline) and hours (off-hours) per second.

use std::hint::black_box;

use chrono::{Datelike, NaiveDate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use query::savings::offhours::{HourlyLoad, OffHoursConfig, analyse};
use query::savings::{Baseline, BaselineConfig, Calendar, DailyUsage};

fn year(cal: &Calendar) -> Vec<DailyUsage> {
    let Some(start) = NaiveDate::from_ymd_opt(2025, 1, 1) else {
        return Vec::new();
    };
    start
        .iter_days()
        .take(365)
        .map(|date| {
            let doy = f64::from(date.ordinal());
            // Deterministic "weather" wiggle instead of a random generator.
            let t = 17.0 - 13.0 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos()
                + 3.0 * (doy * 1.7).sin();
            let base = if cal.day_type(date).is_working() {
                800.0
            } else {
                300.0
            };
            DailyUsage {
                date,
                usage: base
                    + 40.0 * (14.0 - t).max(0.0)
                    + 60.0 * (t - 22.0).max(0.0)
                    + 20.0 * (doy * 3.1).sin(),
                temperature_c: t,
            }
        })
        .collect()
}

fn baseline(c: &mut Criterion) {
    // The built-in calendar is parsed by the query crate's tests; nothing to measure without it.
    let Ok(cal) = Calendar::builtin() else {
        return;
    };
    let data = year(&cal);
    let cfg = BaselineConfig::default();
    let mut g = c.benchmark_group("savings");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("baseline_fit_365_days", |b| {
        b.iter(|| black_box(Baseline::fit(black_box(&data), &cal, &cfg)))
    });
    let hours: Vec<HourlyLoad> = data
        .iter()
        .flat_map(|d| {
            (0..24).filter_map(move |h| {
                Some(HourlyLoad {
                    start: d.date.and_hms_opt(h, 0, 0)?,
                    kwh: if (8..18).contains(&h) {
                        100.0
                    } else {
                        20.0 + f64::from(h % 5)
                    },
                })
            })
        })
        .collect();
    g.throughput(Throughput::Elements(hours.len() as u64));
    g.bench_function("off_hours_8760_hours", |b| {
        b.iter(|| black_box(analyse(black_box(&hours), &cal, &OffHoursConfig::default())))
    });
    g.finish();
}

criterion_group!(benches, baseline);
criterion_main!(benches);
