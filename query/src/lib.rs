//! DataFusion over jieneng's Parquet: the reports energy officers and the statistics system read,
//! the carbon figures, the savings analysis and the dashboard's alert rules. Data enters as the
//! Parquet files of the `storage` layout under the data directory (plus the rows ingest holds in
//! memory, [`storage::LiveReadings`]); it leaves as report rows and alerts. Nothing here knows
//! about HTTP.

pub mod accounts;
pub mod alert;
pub mod live;
pub mod meters;
pub mod report;
pub mod sample;
pub mod savings;
pub mod table;

pub use accounts::Account;
pub use report::{ConsumptionRow, Query, QueryError, Reports};
pub use storage::{LiveReadings, StoredReading, readings_schema};
