//! Savings-potential analysis: where an account could use less, in kWh, kgce and kgCO2e a year,
//! and why.
//!
//! Pure functions over plain series (daily usage with temperature, hourly load, annual totals
//! per account) so a caller can feed them from DataFusion queries, a CSV or a test. The only
//! inputs besides those series are data files — the holiday calendar (`data/holidays.toml`) and
//! the benchmark sets (`data/benchmarks.toml`) — embedded at build time or passed in as text.
//!
//! - [`calendar`]: public holidays and 调休 working days as data; the day type of a date.
//! - [`baseline`]: CalTRACK-style weather-normalised daily baseline by day type; ASHRAE
//!   Guideline 14 fit checks; avoided energy.
//! - [`offhours`]: night and non-working-day load above the building's own base load.
//! - [`benchmark`]: GB/T 51161 and provincial quota comparisons, with the use-time and
//!   occupancy corrections; every value carries its source and whether it is verified.
//! - [`ranking`]: intensity ranking among accounts of the same institution type.
//! - [`opportunity`]: the common result type and its ranking.
//! - [`weather`]: outdoor temperature from readings or a CSV to daily means, joined with usage.

pub mod baseline;
pub mod benchmark;
pub mod calendar;
pub mod offhours;
pub mod opportunity;
pub mod ranking;
mod stats;
pub mod weather;

pub use baseline::{AvoidedEnergy, Baseline, BaselineConfig, BaselineError, DailyUsage};
pub use benchmark::{
    AccountEnergy, BenchmarkError, BenchmarkSet, BenchmarkSets, Comparison, Rating, Verification,
};
pub use calendar::{Calendar, CalendarError, DayType};
pub use offhours::{HourlyLoad, OffHoursAnalysis, OffHoursConfig, OffHoursError};
pub use opportunity::{Confidence, Opportunity, OpportunityError, OpportunityKind, rank};
pub use ranking::{PeerIntensity, Ranked, RankingError, rank_by_intensity};
pub use weather::{DailyTemperature, WeatherError};
