//! The reference data every analysis shares — the holiday calendar, the benchmark sets, the
//! school term calendars and the heating seasons — as one value: the built-in files extended
//! by the deployment's own (`[reference]` in the server file, [`ReferenceFiles`]). The savings
//! report and the dashboard's alert rules take the same [`ReferenceData`], so a day has one day
//! type and a set one value everywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::benchmark::{BenchmarkError, BenchmarkSets};
use super::calendar::{Calendar, CalendarError};
use super::heating::{HeatingError, HeatingSeasons};
use super::terms::{TermCalendars, TermsError};

/// `[reference]`: a deployment's own data files, each in the format of the built-in file of
/// the same kind (`query/data/*.toml`), paths relative to the server file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFiles {
    /// Later State Council notices (`data/holidays.toml` format); may only add years.
    pub holidays: Option<PathBuf>,
    /// Benchmark sets with their values (`data/benchmarks.toml`); a set replaces the built-in
    /// set of the same id.
    pub benchmarks: Option<PathBuf>,
    /// School term calendars (`data/school_terms.toml`); replaces sets of the same id.
    pub school_terms: Option<PathBuf>,
    /// Heating seasons (`data/heating_seasons.toml`); replaces regions of the same id.
    pub heating_seasons: Option<PathBuf>,
}

impl ReferenceFiles {
    /// Makes relative paths relative to `base` (the server file's directory).
    pub fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.holidays,
            &mut self.benchmarks,
            &mut self.school_terms,
            &mut self.heating_seasons,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// What is wrong in which reference file (the message names the line and the key).
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Calendar { file: String, source: CalendarError },
    #[error("{file}: {source}")]
    Benchmarks {
        file: String,
        source: BenchmarkError,
    },
    #[error("{file}: {source}")]
    Terms { file: String, source: TermsError },
    #[error("{file}: {source}")]
    Heating { file: String, source: HeatingError },
}

const BUILTIN: &str = "built-in query/data";

/// The holiday calendar, benchmark sets, term calendars and heating seasons in force.
#[derive(Debug, Clone)]
pub struct ReferenceData {
    pub calendar: Calendar,
    pub benchmarks: BenchmarkSets,
    pub terms: TermCalendars,
    pub heating: HeatingSeasons,
}

impl ReferenceData {
    /// The built-in files only.
    pub fn builtin() -> Result<Self, ReferenceError> {
        let file = || BUILTIN.to_owned();
        Ok(Self {
            calendar: Calendar::builtin().map_err(|source| ReferenceError::Calendar {
                file: file(),
                source,
            })?,
            benchmarks: BenchmarkSets::builtin().map_err(|source| ReferenceError::Benchmarks {
                file: file(),
                source,
            })?,
            terms: TermCalendars::builtin().map_err(|source| ReferenceError::Terms {
                file: file(),
                source,
            })?,
            heating: HeatingSeasons::builtin().map_err(|source| ReferenceError::Heating {
                file: file(),
                source,
            })?,
        })
    }

    /// The built-in files extended by the deployment's `files` (read here).
    pub fn load(files: &ReferenceFiles) -> Result<Self, ReferenceError> {
        let mut data = Self::builtin()?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ReferenceError::Read {
                file: p.display().to_string(),
                source,
            })
        };
        let name = |p: &Path| p.display().to_string();
        if let Some(p) = &files.holidays {
            data.calendar
                .extend_from_toml(&read(p)?)
                .map_err(|source| ReferenceError::Calendar {
                    file: name(p),
                    source,
                })?;
        }
        if let Some(p) = &files.benchmarks {
            data.benchmarks
                .extend_from_toml(&read(p)?)
                .map_err(|source| ReferenceError::Benchmarks {
                    file: name(p),
                    source,
                })?;
        }
        if let Some(p) = &files.school_terms {
            data.terms
                .extend_from_toml(&read(p)?)
                .map_err(|source| ReferenceError::Terms {
                    file: name(p),
                    source,
                })?;
        }
        if let Some(p) = &files.heating_seasons {
            data.heating
                .extend_from_toml(&read(p)?)
                .map_err(|source| ReferenceError::Heating {
                    file: name(p),
                    source,
                })?;
        }
        Ok(data)
    }
}
