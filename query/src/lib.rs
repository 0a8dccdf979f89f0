//! DataFusion over jieneng's Parquet: the storage layout (schema, partitions, writer settings,
//! in one place for ingest and query) and the reports energy officers and the statistics system
//! read. Data enters as Parquet files under the data directory; it leaves as report rows.

pub mod accounts;
pub mod report;
pub mod rollup;
pub mod sample;
pub mod savings;
pub mod storage;

pub use accounts::Account;
pub use report::{ConsumptionRow, LiveReadings, Query, QueryError, Reports};
pub use storage::{StoredReading, readings_schema};
