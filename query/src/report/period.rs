//! Report periods: days, months and years in Beijing time (UTC+8, no daylight saving, so a fixed
//! offset is exact). Intervals are `(from, to]` (docs/ARCHITECTURE.md): a reading at midnight
//! closes the last interval of the day before, so buckets are taken of `ts − 1 ms`.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Beijing time's offset from UTC, in hours.
pub const OFFSET_HOURS: i64 = 8;

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

/// SQL for the local (Beijing) time of the timestamp column `column` less `minus_ms`, as a
/// timestamp without a zone: integer arithmetic on the milliseconds. The same instant as
/// `ts + INTERVAL '8 hours' - INTERVAL …` on the `Timestamp(ms, "UTC")` column, which DataFusion
/// computes row by row through the time-zone database and `date_trunc` through it again: that
/// was ~60 % of a raw aggregate's time over a year of readings.
pub(crate) fn local_ts_sql(column: &str, minus_ms: i64) -> String {
    format!(
        "to_timestamp_millis(CAST({column} AS BIGINT) + {})",
        OFFSET_HOURS * 3_600_000 - minus_ms
    )
}

/// Midnight of local date `d` as UTC milliseconds.
pub fn local_midnight_ms(d: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN))
        .timestamp_millis()
        - OFFSET_HOURS * 3_600_000
}

/// The local date of UTC seconds that were already shifted to local time (the SQL bucket).
pub(crate) fn local_date_of_shifted_secs(secs: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp(secs, 0).map(|t| t.date_naive())
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
}
