//! The rollup files' names, paths and columns, and the sums of one rollup row: what both the
//! builder ([`super::build`]) and the reader ([`super::read`]) of rollups agree on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const ROLLUPS: &str = "rollups";
pub const FILE: &str = "rollup.parquet";

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The length of a rollup's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Hourly, Period::Daily];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Self::Hourly => HOUR_MS,
            Self::Daily => DAY_MS,
        }
    }
}

/// `<data_dir>/rollups/<period>/date=<date>`.
pub fn rollup_dir(data_dir: &Path, period: Period, date: &str) -> PathBuf {
    data_dir
        .join(ROLLUPS)
        .join(period.name())
        .join(format!("date={date}"))
}

pub fn rollup_schema() -> SchemaRef {
    let s = |name| Field::new(name, DataType::Utf8, false);
    let f = |name| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        s("account"),
        s("category"),
        s("item"),
        s("unit"),
        f("energy"),
        f("kgce"),
        f("kgco2e"),
        f("min_delta"),
        f("max_delta"),
        Field::new("intervals", DataType::Int64, false),
    ]))
}

/// The amounts of one rollup row: summed while rolling up readings, and again when a report
/// or a monthly rollup adds rollup rows together.
///
/// `kgce` and `kgco2e` are the sums of the gateway's per-reading figures, what the edge
/// computed with its own factor selection. The server's reports do not use them: they price
/// `energy` with the factors the server selects for the account (`query::report::source`),
/// so rollups never need rebuilding when a factor or a selection changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sums {
    pub energy: f64,
    pub kgce: f64,
    pub kgco2e: f64,
    /// The smallest and largest interval delta.
    pub min: f64,
    pub max: f64,
    pub intervals: i64,
}

impl Default for Sums {
    fn default() -> Self {
        Self {
            energy: 0.0,
            kgce: 0.0,
            kgco2e: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            intervals: 0,
        }
    }
}

impl Sums {
    /// Adds one interval's delta and its kgce and kgCO2e.
    pub(crate) fn add_interval(&mut self, delta: f64, kgce: f64, kgco2e: f64) {
        self.energy += delta;
        self.kgce += kgce;
        self.kgco2e += kgco2e;
        self.min = self.min.min(delta);
        self.max = self.max.max(delta);
        self.intervals += 1;
    }

    /// Adds the amounts of another row of the same group.
    pub(crate) fn add(&mut self, o: &Sums) {
        self.energy += o.energy;
        self.kgce += o.kgce;
        self.kgco2e += o.kgco2e;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.intervals += o.intervals;
    }
}
