//! Report periods in SQL: the Beijing-time bucket of a timestamp column. Beijing time itself
//! (dates, midnights, `Granularity`) lives in `reading_model::time`.

use reading_model::time::OFFSET_MS;

/// SQL for the local (Beijing) time of the timestamp column `column` less `minus_ms`, as a
/// timestamp without a zone: integer arithmetic on the milliseconds. The same instant as
/// `ts + INTERVAL '8 hours' - INTERVAL …` on the `Timestamp(ms, "UTC")` column, which DataFusion
/// computes row by row through the time-zone database and `date_trunc` through it again: that
/// was ~60 % of a raw aggregate's time over a year of readings.
pub(crate) fn local_ts_sql(column: &str, minus_ms: i64) -> String {
    format!(
        "to_timestamp_millis(CAST({column} AS BIGINT) + {})",
        OFFSET_MS - minus_ms
    )
}
