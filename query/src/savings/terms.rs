//! School terms (校历): the vacations of schools — 寒假 (winter vacation) and 暑假 (summer
//! vacation) — by region or by account, as data (`data/school_terms.toml`, format documented
//! there), extended or replaced by a deployment's file (`[reference] school_terms`).
//!
//! A school's load drops in its vacations whatever the weekday, so the baseline gives vacation
//! days a model of their own ([`super::baseline`]). A set applies to the accounts it names, and
//! to the accounts of building class D (文化教育建筑, the account code's letter) in its regions
//! (account-code prefixes: province `11`, city `1101`, county `110108`); the most specific
//! match wins. Each set lists the school years it describes; a day outside all of them has no
//! known vacation status, and the analyses say so rather than treating it as term time.
//!
//! The shipped sets are regional defaults, not any school's own calendar, and say
//! `verified = false`; a deployment replaces them (same `id`) with its schools' dates.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use reading_model::AccountCode;
use serde::Deserialize;

use super::calendar::{flat, line_of};

/// Why a school-term file was rejected; names the line, the set and the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TermsError {
    #[error("school terms: {0}")]
    Parse(String),
    #[error("school terms, line {line}, set {set}, `{key}`: {reason}")]
    Invalid {
        line: usize,
        set: String,
        key: &'static str,
        reason: String,
    },
}

/// No school vacation in China runs longer than a summer of about two and a half months; a
/// longer one is a typo in the file.
const MAX_VACATION_DAYS: i64 = 80;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsFile {
    #[serde(default)]
    terms: Vec<toml::Spanned<TermsEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsEntry {
    id: String,
    name: String,
    name_en: String,
    source: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    verified: bool,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    year: Vec<toml::Spanned<YearEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearEntry {
    school_year: String,
    from: NaiveDate,
    to: NaiveDate,
    #[serde(default)]
    vacation: Vec<toml::Spanned<Vacation>>,
}

/// One vacation, both ends inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vacation {
    pub name: String,
    pub name_en: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// One school year (`2025-2026`), `from..=to`, and its vacations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchoolYear {
    pub name: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub vacations: Vec<Vacation>,
}

/// The term calendar of the schools of some regions or accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermCalendar {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub source: String,
    pub url: String,
    pub verified: bool,
    pub regions: Vec<String>,
    pub accounts: Vec<AccountCode>,
    pub years: Vec<SchoolYear>,
}

impl TermCalendar {
    /// The vacation `date` falls in, if any.
    pub fn vacation_of(&self, date: NaiveDate) -> Option<&Vacation> {
        self.years
            .iter()
            .flat_map(|y| &y.vacations)
            .find(|v| v.from <= date && date <= v.to)
    }

    /// Whether one of the school years described contains `date`: outside them, whether the
    /// school is in term or on vacation is not known.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.years.iter().any(|y| y.from <= date && date <= y.to)
    }

    /// Why figures resting on this calendar are not verified (empty when it is).
    pub fn unverified_reason(&self) -> Option<String> {
        (!self.verified).then(|| {
            format!(
                "school term calendar {} is not verified ({})",
                self.id, self.source
            )
        })
    }
}

/// All term calendars by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermCalendars {
    sets: BTreeMap<String, TermCalendar>,
}

const BUILTIN: &str = include_str!("../../data/school_terms.toml");

impl TermCalendars {
    /// The shipped regional defaults (`data/school_terms.toml`, all unverified).
    pub fn builtin() -> Result<Self, TermsError> {
        Self::from_toml(BUILTIN)
    }

    /// Parses and checks a file in the format of `data/school_terms.toml`.
    pub fn from_toml(text: &str) -> Result<Self, TermsError> {
        let file: TermsFile =
            toml::from_str(text).map_err(|e| TermsError::Parse(flat(&e.to_string())))?;
        let mut sets = BTreeMap::new();
        for entry in file.terms {
            let line = line_of(text, entry.span().start);
            let set = check(text, line, entry.into_inner())?;
            if sets.contains_key(&set.id) {
                return Err(TermsError::Invalid {
                    line,
                    set: set.id,
                    key: "id",
                    reason: "defined twice in the file".into(),
                });
            }
            sets.insert(set.id.clone(), set);
        }
        Ok(Self { sets })
    }

    /// Adds a deployment's sets, replacing those with the same id (a school's own calendar in
    /// place of the regional default). All or nothing.
    pub fn extend_from_toml(&mut self, text: &str) -> Result<(), TermsError> {
        let more = Self::from_toml(text)?;
        self.sets.extend(more.sets);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&TermCalendar> {
        self.sets.get(id)
    }

    pub fn sets(&self) -> impl Iterator<Item = &TermCalendar> {
        self.sets.values()
    }

    /// The calendar of `account`: a set naming it, else the set with the longest region prefix
    /// of its code if it is a school building (class D). `None` for other accounts.
    pub fn for_account(&self, account: &AccountCode) -> Option<&TermCalendar> {
        if let Some(s) = self.sets().find(|s| s.accounts.contains(account)) {
            return Some(s);
        }
        if account.building_class().letter() != 'D' {
            return None;
        }
        self.sets()
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

/// Region prefixes are 2, 4 or 6 digits of an account code (province, city, county).
pub(crate) fn valid_region(r: &str) -> bool {
    matches!(r.len(), 2 | 4 | 6) && r.bytes().all(|b| b.is_ascii_digit())
}

fn check(text: &str, line: usize, e: TermsEntry) -> Result<TermCalendar, TermsError> {
    let invalid = |line: usize, key: &'static str, reason: String| TermsError::Invalid {
        line,
        set: e.id.clone(),
        key,
        reason,
    };
    if let Some(r) = e.regions.iter().find(|r| !valid_region(r)) {
        return Err(invalid(
            line,
            "regions",
            format!("{r:?} is not a 2-, 4- or 6-digit region code"),
        ));
    }
    let mut accounts = Vec::new();
    for a in &e.accounts {
        accounts
            .push(AccountCode::parse(a).map_err(|err| invalid(line, "accounts", err.to_string()))?);
    }
    if e.regions.is_empty() && accounts.is_empty() {
        return Err(invalid(
            line,
            "regions",
            "names neither regions nor accounts, so it applies to nobody".into(),
        ));
    }
    let mut years: Vec<SchoolYear> = Vec::new();
    for y in &e.year {
        let line = line_of(text, y.span().start);
        let y = y.get_ref();
        if y.to < y.from {
            return Err(invalid(
                line,
                "to",
                format!(
                    "school year {}: `to` {} is before `from` {}",
                    y.school_year, y.to, y.from
                ),
            ));
        }
        if let Some(o) = years.iter().find(|o| o.from <= y.to && y.from <= o.to) {
            return Err(invalid(
                line,
                "from",
                format!("school year {} overlaps {}", y.school_year, o.name),
            ));
        }
        let mut vacations: Vec<Vacation> = Vec::new();
        for v in &y.vacation {
            let line = line_of(text, v.span().start);
            let v = v.get_ref();
            let days = (v.to - v.from).num_days() + 1;
            let why = if days < 1 {
                Some(format!("`to` {} is before `from` {}", v.to, v.from))
            } else if days > MAX_VACATION_DAYS {
                Some(format!("{days} days is longer than any school vacation"))
            } else if v.from < y.from || v.to > y.to {
                Some(format!("lies outside the school year {}..{}", y.from, y.to))
            } else {
                vacations
                    .iter()
                    .find(|o| o.from <= v.to && v.from <= o.to)
                    .map(|o| format!("overlaps {}", o.name))
            };
            if let Some(why) = why {
                return Err(invalid(
                    line,
                    "vacation",
                    format!(
                        "school year {}, {} {}..{}: {why}",
                        y.school_year, v.name, v.from, v.to
                    ),
                ));
            }
            vacations.push(v.clone());
        }
        years.push(SchoolYear {
            name: y.school_year.clone(),
            from: y.from,
            to: y.to,
            vacations,
        });
    }
    Ok(TermCalendar {
        id: e.id,
        name: e.name,
        name_en: e.name_en,
        source: e.source,
        url: e.url,
        verified: e.verified,
        regions: e.regions,
        accounts,
        years,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn code(s: &str) -> AccountCode {
        AccountCode::parse(s).unwrap()
    }

    #[test]
    fn builtin_defaults_load_and_are_unverified() {
        let t = TermCalendars::builtin().unwrap();
        assert!(t.sets().count() > 0);
        assert!(
            t.sets()
                .all(|s| !s.verified && s.unverified_reason().is_some())
        );
        let beijing = t.for_account(&code("110108D002")).unwrap();
        assert!(beijing.covers(d("2025-10-01")));
        assert_eq!(beijing.vacation_of(d("2025-08-01")).unwrap().name, "暑假");
        assert!(beijing.vacation_of(d("2025-10-20")).is_none());
        // Offices are not schools; a region's calendar does not apply to them.
        assert!(t.for_account(&code("110108A001")).is_none());
    }

    const OWN: &str = r#"
[[terms]]
id = "haidian-no1"
name = "中关村第一小学校历"
name_en = "Zhongguancun No. 1 Primary School calendar"
source = "the school's own 校历 2025-2026"
verified = true
accounts = ["110108D002"]

[[terms.year]]
school_year = "2025-2026"
from = "2025-09-01"
to = "2026-08-31"

[[terms.year.vacation]]
name = "寒假"
name_en = "winter vacation"
from = "2026-01-24"
to = "2026-02-28"
"#;

    #[test]
    fn a_deployment_names_its_school_and_the_most_specific_match_wins() {
        let mut t = TermCalendars::builtin().unwrap();
        t.extend_from_toml(OWN).unwrap();
        let own = t.for_account(&code("110108D002")).unwrap();
        assert_eq!(own.id, "haidian-no1");
        assert!(own.verified);
        assert!(own.vacation_of(d("2026-01-24")).is_some());
        assert!(
            !own.covers(d("2025-06-01")),
            "outside its school years: unknown"
        );
        // Another Beijing school keeps the regional default.
        assert_ne!(
            t.for_account(&code("110102D009")).unwrap().id,
            "haidian-no1"
        );
    }

    #[test]
    fn bad_files_name_line_and_key() {
        let e = TermCalendars::from_toml(&OWN.replace("2026-02-28", "2026-09-28")).unwrap_err();
        assert!(
            matches!(
                &e,
                TermsError::Invalid {
                    line: 15,
                    key: "vacation",
                    ..
                }
            ),
            "{e}"
        );
        let e = TermCalendars::from_toml(
            &OWN.replace("accounts = [\"110108D002\"]", "regions = [\"1\"]"),
        )
        .unwrap_err();
        assert!(
            matches!(&e, TermsError::Invalid { key: "regions", .. }),
            "{e}"
        );
        let e = TermCalendars::from_toml(&OWN.replace("verified = true", "verfied = true"))
            .unwrap_err();
        assert!(
            matches!(&e, TermsError::Parse(m) if m.contains("line 7")),
            "{e}"
        );
    }
}
