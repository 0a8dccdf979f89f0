//! Outdoor temperature for the baseline. It arrives either as readings like any other
//! (`outdoor_temperature` samples at any interval, local time) or as a CSV file's text, and
//! leaves as daily means joined with daily usage.
//!
//! Daily means follow CalTRACK (2.2.2.3 as implemented by OpenEEmeter): samples are averaged per
//! hour, the day's mean is the mean of its hourly means, and a day needs at least half of its
//! 24 hours. Days that fail are returned, not dropped silently, and so are usage days without a
//! temperature.
//!
//! CSV format (UTF-8, `#` comment lines and blank lines ignored, header required):
//!
//! ```text
//! date,temperature_c          daily means: 2025-01-01,3.4
//! time,temperature_c          samples:     2025-01-01T08:00,3.4   (or "2025-01-01 08:00[:00]")
//! ```

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, Timelike};

use super::baseline::DailyUsage;

/// Plausible outdoor air temperatures, °C; outside this a value is a unit or sensor error
/// (a Fahrenheit column, −999 as "missing").
const PLAUSIBLE_C: std::ops::RangeInclusive<f64> = -70.0..=60.0;

/// One day's mean outdoor temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyTemperature {
    pub date: NaiveDate,
    pub mean_c: f64,
    /// Hours with at least one sample (24 for a CSV of daily means).
    pub hours: u8,
}

/// Bad temperature input; names the CSV line or the sample time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeatherError {
    #[error("temperature CSV: empty (no header)")]
    Empty,
    #[error("temperature CSV line {line}: {reason}")]
    Csv { line: usize, reason: String },
    #[error("temperature sample at {time}: {value} °C is not a plausible outdoor temperature")]
    Implausible { time: NaiveDateTime, value: f64 },
}

/// What the CSV held.
#[derive(Debug, Clone, PartialEq)]
pub enum TemperatureCsv {
    Daily(Vec<DailyTemperature>),
    Samples(Vec<(NaiveDateTime, f64)>),
}

/// Parses a temperature CSV (format in the module doc).
pub fn parse_csv(text: &str) -> Result<TemperatureCsv, WeatherError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (hline, header) = lines.next().ok_or(WeatherError::Empty)?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let daily = match cols
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["date", "temperature_c"] => true,
        ["time", "temperature_c"] => false,
        _ => {
            return Err(WeatherError::Csv {
                line: hline,
                reason: format!(
                    "header {header:?}: expected \"date,temperature_c\" or \"time,temperature_c\""
                ),
            });
        }
    };
    let mut days = Vec::new();
    let mut samples = Vec::new();
    let mut seen_days = BTreeMap::new();
    for (line, l) in lines {
        let err = |reason: String| WeatherError::Csv { line, reason };
        let mut f = l.split(',').map(str::trim);
        let (Some(when), Some(value), None) = (f.next(), f.next(), f.next()) else {
            return Err(err(format!("{l:?}: expected two fields")));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| err(format!("temperature {value:?} is not a number")))?;
        if !value.is_finite() || !PLAUSIBLE_C.contains(&value) {
            return Err(err(format!(
                "{value} °C is not a plausible outdoor temperature (°F column? missing-value code?)"
            )));
        }
        if daily {
            let date = NaiveDate::parse_from_str(when, "%Y-%m-%d")
                .map_err(|e| err(format!("date {when:?}: {e}")))?;
            if let Some(first) = seen_days.insert(date, line) {
                return Err(err(format!("{date} already given on line {first}")));
            }
            days.push(DailyTemperature {
                date,
                mean_c: value,
                hours: 24,
            });
        } else {
            let time = [
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%d %H:%M",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(when, f).ok())
            .ok_or_else(|| err(format!("time {when:?}: expected YYYY-MM-DDTHH:MM[:SS]")))?;
            samples.push((time, value));
        }
    }
    Ok(if daily {
        TemperatureCsv::Daily(days)
    } else {
        TemperatureCsv::Samples(samples)
    })
}

/// Daily means of temperature samples.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyMeans {
    pub days: Vec<DailyTemperature>,
    /// Days with samples in fewer than 12 hours: no mean is given for them.
    pub insufficient: Vec<(NaiveDate, u8)>,
}

/// Averages samples per hour, then hours per day; a day needs samples in at least 12 hours.
pub fn daily_means(samples: &[(NaiveDateTime, f64)]) -> Result<DailyMeans, WeatherError> {
    let mut hours: BTreeMap<(NaiveDate, u32), (f64, u32)> = BTreeMap::new();
    for &(time, value) in samples {
        if !value.is_finite() || !PLAUSIBLE_C.contains(&value) {
            return Err(WeatherError::Implausible { time, value });
        }
        let e = hours.entry((time.date(), time.hour())).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
    }
    let mut per_day: BTreeMap<NaiveDate, (f64, u8)> = BTreeMap::new();
    for ((date, _), (sum, n)) in hours {
        let e = per_day.entry(date).or_insert((0.0, 0));
        e.0 += sum / f64::from(n);
        e.1 += 1;
    }
    let mut out = DailyMeans {
        days: Vec::new(),
        insufficient: Vec::new(),
    };
    for (date, (sum, n)) in per_day {
        if n >= 12 {
            out.days.push(DailyTemperature {
                date,
                mean_c: sum / f64::from(n),
                hours: n,
            });
        } else {
            out.insufficient.push((date, n));
        }
    }
    Ok(out)
}

/// Daily usage joined with daily temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub days: Vec<DailyUsage>,
    /// Usage days without a temperature: left out of the model, reported here.
    pub missing_temperature: Vec<NaiveDate>,
}

/// Joins daily usage `(date, usage)` with temperatures by date.
pub fn join(usage: &[(NaiveDate, f64)], temperatures: &[DailyTemperature]) -> Joined {
    let t: BTreeMap<NaiveDate, f64> = temperatures.iter().map(|d| (d.date, d.mean_c)).collect();
    let mut out = Joined {
        days: Vec::with_capacity(usage.len()),
        missing_temperature: Vec::new(),
    };
    for &(date, u) in usage {
        match t.get(&date) {
            Some(&temperature_c) => out.days.push(DailyUsage {
                date,
                usage: u,
                temperature_c,
            }),
            None => out.missing_temperature.push(date),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn daily_csv() {
        let csv = "# Wuhan station, daily means\ndate,temperature_c\n2025-01-01, 3.5\n\n2025-01-02,-1.25\n";
        let TemperatureCsv::Daily(days) = parse_csv(csv).unwrap() else {
            panic!("daily expected");
        };
        assert_eq!(days.len(), 2);
        assert_eq!((days[1].date, days[1].mean_c), (d("2025-01-02"), -1.25));
    }

    #[test]
    fn sample_csv_to_daily_means() {
        let mut csv = String::from("time,temperature_c\n");
        // 2025-07-01: two samples an hour for 24 hours (hour mean = h + 0.25 … mean 11.75 + 20);
        // 2025-07-02: only 6 hours.
        for h in 0..24 {
            csv += &format!(
                "2025-07-01T{h:02}:00,{}\n2025-07-01 {h:02}:30:00,{}\n",
                20 + h,
                20.5 + f64::from(h)
            );
        }
        for h in 0..6 {
            csv += &format!("2025-07-02T{h:02}:00,25\n");
        }
        let TemperatureCsv::Samples(s) = parse_csv(&csv).unwrap() else {
            panic!("samples expected");
        };
        let m = daily_means(&s).unwrap();
        assert_eq!(m.days.len(), 1);
        assert_eq!(m.days[0].hours, 24);
        assert!((m.days[0].mean_c - (20.0 + 11.5 + 0.25)).abs() < 1e-12);
        assert_eq!(m.insufficient, vec![(d("2025-07-02"), 6)]);
    }

    #[test]
    fn bad_csv_names_the_line() {
        assert_eq!(parse_csv("# nothing\n").unwrap_err(), WeatherError::Empty);
        let e = parse_csv("day,temp\n").unwrap_err();
        assert!(matches!(e, WeatherError::Csv { line: 1, .. }), "{e}");
        let e = parse_csv("date,temperature_c\n2025-01-01,3\n2025-01-02,x\n").unwrap_err();
        assert!(matches!(e, WeatherError::Csv { line: 3, .. }), "{e}");
        let e = parse_csv("date,temperature_c\n2025-01-01,88.0\n").unwrap_err();
        assert!(
            matches!(&e, WeatherError::Csv { line: 2, reason } if reason.contains("°F")),
            "{e}"
        );
        let e = parse_csv("date,temperature_c\n2025-01-01,1\n2025-01-01,2\n").unwrap_err();
        assert!(
            matches!(&e, WeatherError::Csv { line: 3, reason } if reason.contains("line 2")),
            "{e}"
        );
        let e = parse_csv("time,temperature_c\n2025-01-01,1\n").unwrap_err();
        assert!(matches!(e, WeatherError::Csv { line: 2, .. }), "{e}");
        let e = parse_csv("date,temperature_c\n2025-01-01,1,2\n").unwrap_err();
        assert!(matches!(e, WeatherError::Csv { line: 2, .. }), "{e}");
        let t = d("2025-01-01").and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(
            daily_means(&[(t, -999.0)]).unwrap_err(),
            WeatherError::Implausible {
                time: t,
                value: -999.0
            }
        );
    }

    #[test]
    fn join_reports_days_without_temperature() {
        let temps = [DailyTemperature {
            date: d("2025-01-01"),
            mean_c: 2.0,
            hours: 24,
        }];
        let j = join(
            &[(d("2025-01-01"), 100.0), (d("2025-01-02"), 110.0)],
            &temps,
        );
        assert_eq!(j.days.len(), 1);
        assert_eq!(j.days[0].temperature_c, 2.0);
        assert_eq!(j.missing_temperature, vec![d("2025-01-02")]);
    }
}
