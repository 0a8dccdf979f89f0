//! Savings-potential analysis: where an account could use less, in kWh, kgce and kgCO2e a year,
//! and why.
//!
//! Pure functions over plain series (daily usage with temperature, hourly load, annual totals
//! per account) so a caller can feed them from DataFusion queries, a CSV or a test. The only
//! inputs besides those series are data files — the holiday calendar (`data/holidays.toml`), the
//! benchmark sets (`data/benchmarks.toml`), the school terms (`data/school_terms.toml`) and the
//! heating seasons (`data/heating_seasons.toml`) — embedded at build time and extended by a
//! deployment's files ([`reference`]).
//!
//! - [`calendar`]: public holidays and 调休 working days as data; the day type of a date.
//! - [`terms`]: school vacations (寒假/暑假) by region or account, as data.
//! - [`heating`]: northern China's heating seasons by region, as data.
//! - [`reference`]: those files and the benchmark sets, built in and extended by a deployment.
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
pub mod heating;
pub mod offhours;
pub mod opportunity;
pub mod ranking;
pub mod reference;
mod stats;
pub mod terms;
pub mod weather;

pub use baseline::{AvoidedEnergy, Baseline, BaselineConfig, BaselineError, DailyUsage};
pub use benchmark::{
    AccountEnergy, BenchmarkError, BenchmarkSet, BenchmarkSets, Comparison, Rating, Verification,
};
pub use calendar::{Calendar, CalendarError, DayType};
pub use heating::{HeatingSeason, HeatingSeasons};
pub use offhours::{HourlyLoad, OffHoursAnalysis, OffHoursConfig, OffHoursError};
pub use opportunity::{Confidence, Opportunity, OpportunityError, OpportunityKind, rank};
pub use ranking::{PeerIntensity, Ranked, RankingError, rank_by_intensity};
pub use reference::{ReferenceData, ReferenceError, ReferenceFiles};
pub use terms::{TermCalendar, TermCalendars};
pub use weather::{DailyTemperature, WeatherError};
