//! Hourly and daily rollups of consumption per (account, category, item): the tables reports
//! over long periods read instead of the raw readings, which retention removes sooner.
//!
//! Layout: `<data_dir>/rollups/{hourly,daily}/date=YYYY-MM-DD/rollup.parquet`, one file per UTC
//! date, replaced atomically (temp file, fsync, rename over the old one, fsync directory) each
//! time the date is recomputed from the raw readings.
//!
//! Columns: `ts` (start of the period), `account`, `category`, `item`, `unit`, `energy` (sum of
//! deltas, in `unit`), `kgce`, `kgco2e` (sums; 0 where no factor applied), `min_delta`,
//! `max_delta` (the smallest and largest interval delta), `intervals` (deltas summed).
//!
//! Periods follow the reports' convention `(start, end]`: a reading at `ts` closes the interval
//! ending at `ts`, so a reading at exactly 01:00 counts in the hour 00:00–01:00, and one at
//! midnight in the previous day. A date's rollup therefore reads the first instant of the next
//! date's partition too. Only consumption quantities with a delta are rolled up, as in
//! [`crate::Query::consumption`], so a daily rollup sums to what the report says for that day.

mod build;
mod read;
mod schema;

pub use build::*;
pub use read::{GroupKey, RollupFile, RollupQuery, Span, report_period, sum_rollup_files};
pub use schema::*;
