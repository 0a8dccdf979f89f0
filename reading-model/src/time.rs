//! Beijing time, the clock of every report: days, months and years in UTC+8. China keeps no
//! daylight saving, so a fixed offset is exact and no time-zone database is needed. Instants are
//! UTC milliseconds everywhere else (`Reading::ts`); this is the one place that turns them into
//! local dates and back.
//!
//! Intervals are `(from, to]` (docs/ARCHITECTURE.md): a reading at midnight closes the last
//! interval of the day before, so the period of a consumption reading is taken of `ts − 1 ms`.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

/// Beijing time's offset from UTC, in hours.
pub const OFFSET_HOURS: i64 = 8;
/// Beijing time's offset from UTC, in milliseconds.
pub const OFFSET_MS: i64 = OFFSET_HOURS * 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The Beijing wall-clock time of UTC milliseconds; `None` outside chrono's range.
pub fn local_datetime(ts_ms: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ts_ms.checked_add(OFFSET_MS)?).map(|t| t.naive_utc())
}

/// The Beijing date of UTC milliseconds; `None` outside chrono's range.
pub fn local_date(ts_ms: i64) -> Option<NaiveDate> {
    local_datetime(ts_ms).map(|t| t.date())
}

/// The Beijing date whose consumption a reading at `ts_ms` closes: the date of `ts − 1 ms`.
pub fn interval_date(ts_ms: i64) -> Option<NaiveDate> {
    local_date(ts_ms.checked_sub(1)?)
}

/// `2026-11-27 14:05` in Beijing time; empty outside chrono's range.
pub fn local_minute(ts_ms: i64) -> String {
    local_datetime(ts_ms).map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M").to_string())
}

/// UTC milliseconds as RFC 3339 with milliseconds and `Z` (`2026-11-27T06:05:00.000Z`), how the
/// API writes instants; empty outside chrono's range.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    DateTime::from_timestamp_millis(ts_ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

/// Midnight of Beijing date `d` as UTC milliseconds.
pub fn local_midnight_ms(d: NaiveDate) -> i64 {
    d.and_time(NaiveTime::MIN).and_utc().timestamp_millis() - OFFSET_MS
}

/// The date of UTC seconds that were already shifted to Beijing time (an SQL bucket).
pub fn local_date_of_shifted_secs(secs: i64) -> Option<NaiveDate> {
    local_datetime_of_shifted_secs(secs).map(|t| t.date())
}

/// The wall-clock time of UTC seconds that were already shifted to Beijing time.
pub fn local_datetime_of_shifted_secs(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|t| t.naive_utc())
}

/// A report period's length: a Beijing day, month or year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    #[default]
    Month,
    Year,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The label of the period starting at local date `d`: `2026-01-05`, `2026-01`, `2026`.
    pub fn label(self, d: NaiveDate) -> String {
        match self {
            Self::Day => d.format("%Y-%m-%d").to_string(),
            Self::Month => d.format("%Y-%m").to_string(),
            Self::Year => d.format("%Y").to_string(),
        }
    }

    /// First local date of the period containing `d`.
    pub fn start(self, d: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => d,
            Self::Month => d.with_day(1).unwrap_or(d),
            Self::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d),
        }
    }

    /// The period before (环比, month-on-month for months); `None` for years, where it would
    /// be the same as year-on-year.
    pub fn previous(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::Day => start.pred_opt(),
            Self::Month => start.checked_sub_months(Months::new(1)),
            Self::Year => None,
        }
    }

    /// The same period a year before (同比); `None` for 29 February.
    pub fn year_before(self, start: NaiveDate) -> Option<NaiveDate> {
        start.with_year(start.year() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn labels_and_neighbours() {
        let g = Granularity::Month;
        assert_eq!(g.label(d(2026, 3, 1)), "2026-03");
        assert_eq!(g.previous(d(2026, 1, 1)), Some(d(2025, 12, 1)));
        assert_eq!(g.year_before(d(2026, 3, 1)), Some(d(2025, 3, 1)));
        assert_eq!(Granularity::Day.year_before(d(2024, 2, 29)), None);
        assert_eq!(Granularity::Year.previous(d(2026, 1, 1)), None);
        // 2026-01-01 00:00 Beijing is 2025-12-31 16:00 UTC.
        assert_eq!(
            local_midnight_ms(d(2026, 1, 1)),
            1_767_225_600_000 - 8 * 3_600_000
        );
    }

    #[test]
    fn local_dates_of_instants_around_midnight() {
        let midnight = local_midnight_ms(d(2026, 1, 1));
        assert_eq!(local_date(midnight), Some(d(2026, 1, 1)));
        assert_eq!(local_date(midnight - 1), Some(d(2025, 12, 31)));
        // A reading at midnight closes the day before.
        assert_eq!(interval_date(midnight), Some(d(2025, 12, 31)));
        assert_eq!(interval_date(midnight + 1), Some(d(2026, 1, 1)));
        assert_eq!(
            local_datetime(midnight + 3_600_000).map(|t| t.to_string()),
            Some("2026-01-01 01:00:00".to_owned())
        );
        assert_eq!(local_date(i64::MAX), None);
        assert_eq!(local_minute(midnight + 65 * 60_000), "2026-01-01 01:05");
        assert_eq!(rfc3339_ms(midnight), "2025-12-31T16:00:00.000Z");
    }
}
