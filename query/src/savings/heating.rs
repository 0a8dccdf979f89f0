//! Heating seasons (供暖期) of northern China by region, as data (`data/heating_seasons.toml`,
//! format documented there), extended by a deployment's file (`[reference] heating_seasons`).
//!
//! District heating runs on the dates a city sets, so in a district-heated building heating
//! load (and the pumps and fans that come with it) follows the season, not only the weather:
//! the baseline ([`super::baseline`]) tries heating terms counted only inside the season
//! beside the usual ones and keeps whichever fits better. A season has a rule (`start`/`end`
//! as month-day) and years that differed from it (a cold autumn's early start).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use reading_model::AccountCode;
use serde::Deserialize;

use super::calendar::{flat, line_of};
use super::terms::valid_region;

/// Why a heating-season file was rejected; names the line, the season and the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeatingError {
    #[error("heating seasons: {0}")]
    Parse(String),
    #[error("heating seasons, line {line}, season {season}, `{key}`: {reason}")]
    Invalid {
        line: usize,
        season: String,
        key: &'static str,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeasonFile {
    #[serde(default)]
    season: Vec<toml::Spanned<SeasonEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeasonEntry {
    id: String,
    name: String,
    name_en: String,
    regions: Vec<String>,
    start: String,
    end: String,
    source: String,
    #[serde(default)]
    verified: bool,
    #[serde(default)]
    year: Vec<SeasonYear>,
}

/// One season that differed from the rule, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonYear {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// A region's heating season.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeatingSeason {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub regions: Vec<String>,
    /// (month, day) the season starts in autumn, inclusive.
    pub start: (u32, u32),
    /// (month, day) it ends in spring, inclusive.
    pub end: (u32, u32),
    pub source: String,
    pub verified: bool,
    /// Seasons that differed from the rule, by the year they started in.
    pub years: BTreeMap<i32, SeasonYear>,
}

impl HeatingSeason {
    /// Whether district heating runs on `date`.
    pub fn contains(&self, date: NaiveDate) -> bool {
        let md = (date.month(), date.day());
        // The season that could contain `date` started in its autumn: this year's after
        // midsummer, last year's before.
        let started = if md >= (7, 1) {
            date.year()
        } else {
            date.year() - 1
        };
        if let Some(y) = self.years.get(&started) {
            return y.from <= date && date <= y.to;
        }
        md >= self.start || md <= self.end
    }

    /// Why figures resting on this season are not verified (`None` when it is).
    pub fn unverified_reason(&self) -> Option<String> {
        (!self.verified).then(|| {
            format!(
                "heating season {} is not verified ({})",
                self.id, self.source
            )
        })
    }
}

/// All regions' heating seasons by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeatingSeasons {
    seasons: BTreeMap<String, HeatingSeason>,
}

const BUILTIN: &str = include_str!("../../data/heating_seasons.toml");

impl HeatingSeasons {
    /// The shipped seasons (`data/heating_seasons.toml`, all unverified).
    pub fn builtin() -> Result<Self, HeatingError> {
        Self::from_toml(BUILTIN)
    }

    pub fn from_toml(text: &str) -> Result<Self, HeatingError> {
        let file: SeasonFile =
            toml::from_str(text).map_err(|e| HeatingError::Parse(flat(&e.to_string())))?;
        let mut seasons = BTreeMap::new();
        for entry in file.season {
            let line = line_of(text, entry.span().start);
            let s = check(line, entry.into_inner())?;
            if seasons.contains_key(&s.id) {
                return Err(HeatingError::Invalid {
                    line,
                    season: s.id,
                    key: "id",
                    reason: "defined twice in the file".into(),
                });
            }
            seasons.insert(s.id.clone(), s);
        }
        Ok(Self { seasons })
    }

    /// Adds a deployment's seasons, replacing those with the same id. All or nothing.
    pub fn extend_from_toml(&mut self, text: &str) -> Result<(), HeatingError> {
        let more = Self::from_toml(text)?;
        self.seasons.extend(more.seasons);
        Ok(())
    }

    pub fn seasons(&self) -> impl Iterator<Item = &HeatingSeason> {
        self.seasons.values()
    }

    /// The season of the region with the longest prefix of `account`'s code; `None` where no
    /// region has one (the south, or a region not entered).
    pub fn for_account(&self, account: &AccountCode) -> Option<&HeatingSeason> {
        self.seasons()
            .filter_map(|s| {
                s.regions
                    .iter()
                    .filter(|r| account.as_str().starts_with(r.as_str()))
                    .map(String::len)
                    .max()
                    .map(|len| (len, s))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
    }
}

/// `MM-DD` → (month, day), a real day of a leap year.
fn month_day(s: &str) -> Option<(u32, u32)> {
    let (m, d) = s.split_once('-')?;
    let (m, d) = (m.parse().ok()?, d.parse().ok()?);
    NaiveDate::from_ymd_opt(2024, m, d).map(|_| (m, d))
}

fn check(line: usize, e: SeasonEntry) -> Result<HeatingSeason, HeatingError> {
    let invalid = |key: &'static str, reason: String| HeatingError::Invalid {
        line,
        season: e.id.clone(),
        key,
        reason,
    };
    if e.regions.is_empty() {
        return Err(invalid("regions", "names no region".into()));
    }
    if let Some(r) = e.regions.iter().find(|r| !valid_region(r)) {
        return Err(invalid(
            "regions",
            format!("{r:?} is not a 2-, 4- or 6-digit region code"),
        ));
    }
    let start = month_day(&e.start)
        .ok_or_else(|| invalid("start", format!("{:?} is not MM-DD", e.start)))?;
    let end =
        month_day(&e.end).ok_or_else(|| invalid("end", format!("{:?} is not MM-DD", e.end)))?;
    // A season runs from autumn into spring; anything else is a swapped pair.
    if !(start >= (7, 1) && end < (7, 1)) {
        return Err(invalid(
            "start",
            format!(
                "a season starts in autumn and ends in spring; {} to {} does not",
                e.start, e.end
            ),
        ));
    }
    let mut years = BTreeMap::new();
    for y in &e.year {
        let ok = y.from < y.to
            && (y.from.month(), y.from.day()) >= (7, 1)
            && (y.to - y.from).num_days() < 240;
        if !ok || years.insert(y.from.year(), *y).is_some() {
            return Err(invalid(
                "year",
                format!(
                    "{}..{} is not one autumn-to-spring season, or its year is given twice",
                    y.from, y.to
                ),
            ));
        }
    }
    Ok(HeatingSeason {
        id: e.id,
        name: e.name,
        name_en: e.name_en,
        regions: e.regions,
        start,
        end,
        source: e.source,
        verified: e.verified,
        years,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn seasons_follow_the_rule_and_the_years_that_differed() {
        let mut h = HeatingSeasons::builtin().unwrap();
        let code = AccountCode::parse("110108A001").unwrap();
        let beijing = h.for_account(&code).unwrap();
        assert!(!beijing.verified);
        assert!(!beijing.contains(d("2025-11-14")));
        assert!(beijing.contains(d("2025-11-15")));
        assert!(beijing.contains(d("2026-01-10")));
        assert!(beijing.contains(d("2026-03-15")));
        assert!(!beijing.contains(d("2026-03-16")));
        assert!(!beijing.contains(d("2026-07-01")));
        assert!(
            h.for_account(&AccountCode::parse("320102A004").unwrap())
                .is_none()
        );
        h.extend_from_toml(
            "[[season]]\nid = \"beijing\"\nname = \"x\"\nname_en = \"x\"\nregions = [\"11\"]\nstart = \"11-15\"\nend = \"03-15\"\nsource = \"s\"\nverified = true\n[[season.year]]\nfrom = \"2025-11-05\"\nto = \"2026-03-20\"\n",
        )
        .unwrap();
        let beijing = h.for_account(&code).unwrap();
        assert!(beijing.contains(d("2025-11-05")));
        assert!(beijing.contains(d("2026-03-20")));
        assert!(
            !beijing.contains(d("2024-11-05")),
            "other years keep the rule"
        );
    }

    #[test]
    fn bad_seasons_name_line_and_key() {
        let e = HeatingSeasons::from_toml(
            "\n[[season]]\nid = \"x\"\nname = \"x\"\nname_en = \"x\"\nregions = [\"11\"]\nstart = \"03-15\"\nend = \"11-15\"\nsource = \"s\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(
                &e,
                HeatingError::Invalid {
                    line: 2,
                    key: "start",
                    ..
                }
            ),
            "{e}"
        );
        let e = HeatingSeasons::from_toml(
            "[[season]]\nid = \"x\"\nname = \"x\"\nname_en = \"x\"\nregions = [\"11\"]\nstart = \"11-31\"\nend = \"03-15\"\nsource = \"s\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(&e, HeatingError::Invalid { key: "start", .. }),
            "{e}"
        );
    }
}
