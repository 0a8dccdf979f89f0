//! The working calendar of Chinese public institutions: public holidays and adjusted working days
//! (调休) as data (`data/holidays.toml`, one State Council notice per year), and the day type of
//! any date. A 调休 weekend day is a working day; a weekday inside a holiday is a holiday.
//!
//! The built-in file holds the notices jieneng ships; a deployment adds later years (a new
//! notice each December) in its own file of the same format ([`Calendar::extend_from_toml`],
//! named by `[reference] holidays` in the server file). A deployment file may only add years:
//! a year already known is refused, so a typo cannot silently replace a checked notice.
//!
//! Years without a notice in the data fall back to Monday–Friday working days; callers must ask
//! [`Calendar::covers`] and report such days, since a Spring Festival counted as working days
//! would distort any baseline.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;

/// Why a holiday file was rejected; names the line, the key, the year and the date at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalendarError {
    /// Not TOML, or a key that is unknown, missing or of the wrong type (the message names the
    /// line, the column and the key).
    #[error("holiday calendar: {0}")]
    Parse(String),
    #[error("holiday calendar, line {line}, year {year}, {holiday}, `{key}`: {reason}")]
    Invalid {
        line: usize,
        key: &'static str,
        year: i32,
        holiday: String,
        reason: String,
    },
    #[error(
        "holiday calendar, line {line}, `year`: year {year} is already in the calendar (built in or given before); a file may only add years"
    )]
    DuplicateYear { line: usize, year: i32 },
    #[error("holiday calendar, line {line}: {date} is listed twice ({first} and {second})")]
    DuplicateDate {
        line: usize,
        date: NaiveDate,
        first: String,
        second: String,
    },
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let at = offset.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// How a day counts for energy analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayType {
    /// Monday–Friday outside holidays, and 调休 weekend days.
    Working,
    /// Saturday or Sunday that is neither a holiday nor a 调休 working day.
    Weekend,
    /// A day off under a holiday notice (weekend days inside the holiday range included).
    Holiday,
}

impl DayType {
    pub fn is_working(self) -> bool {
        self == Self::Working
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            Self::Working => "工作日",
            Self::Weekend => "周末",
            Self::Holiday => "节假日",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Self::Working => "working day",
            Self::Weekend => "weekend",
            Self::Holiday => "holiday",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    #[serde(default)]
    year: Vec<toml::Spanned<YearFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    source: String,
    url: String,
    #[serde(default)]
    checked_against: Option<String>,
    #[serde(default)]
    verified: bool,
    #[serde(default)]
    holiday: Vec<toml::Spanned<HolidayEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayEntry {
    name: String,
    name_en: String,
    from: NaiveDate,
    to: NaiveDate,
    #[serde(default)]
    work: Vec<NaiveDate>,
}

/// Where one year's dates come from.
#[derive(Debug, Clone, PartialEq)]
pub struct YearSource {
    pub year: i32,
    pub source: String,
    pub url: String,
    pub checked_against: Option<String>,
    pub verified: bool,
}

/// One holiday of a notice, e.g. 春节 2026.
#[derive(Debug, Clone, PartialEq)]
pub struct Holiday {
    pub year: i32,
    pub name_zh: String,
    pub name_en: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub work: Vec<NaiveDate>,
}

/// Holidays and 调休 working days by date.
#[derive(Debug, Clone)]
pub struct Calendar {
    years: BTreeMap<i32, YearSource>,
    holidays: Vec<Holiday>,
    /// Date → index into `holidays`, for days off.
    off: BTreeMap<NaiveDate, usize>,
    /// Date → index into `holidays`, for 调休 working days.
    work: BTreeMap<NaiveDate, usize>,
}

const BUILTIN: &str = include_str!("../../data/holidays.toml");

/// No notice has had a holiday longer than 9 days off; a longer range is a typo in the file.
const MAX_HOLIDAY_DAYS: i64 = 10;

impl Calendar {
    /// The built-in calendar (`data/holidays.toml`).
    pub fn builtin() -> Result<Self, CalendarError> {
        Self::from_toml(BUILTIN)
    }

    /// Parses and checks a holiday file in the format of `data/holidays.toml`.
    pub fn from_toml(text: &str) -> Result<Self, CalendarError> {
        let mut cal = Calendar {
            years: BTreeMap::new(),
            holidays: Vec::new(),
            off: BTreeMap::new(),
            work: BTreeMap::new(),
        };
        cal.extend_from_toml(text)?;
        Ok(cal)
    }

    /// Adds the years of a holiday file (a deployment's later notices). All or nothing: on an
    /// error the calendar is unchanged. A year the calendar already has is refused.
    pub fn extend_from_toml(&mut self, text: &str) -> Result<(), CalendarError> {
        let file: HolidayFile =
            toml::from_str(text).map_err(|e| CalendarError::Parse(flat(&e.to_string())))?;
        let mut next = self.clone();
        for y in file.year {
            let line = line_of(text, y.span().start);
            let y = y.into_inner();
            if next.years.contains_key(&y.year) {
                return Err(CalendarError::DuplicateYear { line, year: y.year });
            }
            for h in y.holiday {
                let line = line_of(text, h.span().start);
                next.add(y.year, line, h.into_inner())?;
            }
            next.years.insert(
                y.year,
                YearSource {
                    year: y.year,
                    source: y.source,
                    url: y.url,
                    checked_against: y.checked_against,
                    verified: y.verified,
                },
            );
        }
        *self = next;
        Ok(())
    }

    fn add(&mut self, year: i32, line: usize, h: HolidayEntry) -> Result<(), CalendarError> {
        let invalid = |key: &'static str, reason: String| CalendarError::Invalid {
            line,
            key,
            year,
            holiday: h.name.clone(),
            reason,
        };
        let days = (h.to - h.from).num_days() + 1;
        if days < 1 {
            return Err(invalid(
                "to",
                format!("`to` {} is before `from` {}", h.to, h.from),
            ));
        }
        if days > MAX_HOLIDAY_DAYS {
            return Err(invalid(
                "to",
                format!(
                    "{days} days off from {} to {} is longer than any notice has given",
                    h.from, h.to
                ),
            ));
        }
        // Notices only move weekend days into the week; a weekday here is a typo.
        if let Some(d) = h.work.iter().find(|d| !is_weekend(**d)) {
            return Err(invalid(
                "work",
                format!(
                    "adjusted working day {d} is a {:?}, not a weekend day",
                    d.weekday()
                ),
            ));
        }
        let index = self.holidays.len();
        let name = |i: usize, holidays: &[Holiday]| {
            holidays
                .get(i)
                .map_or_else(|| h.name.clone(), |o| format!("{} {}", o.year, o.name_zh))
        };
        let listed = h
            .from
            .iter_days()
            .take(days as usize)
            .chain(h.work.iter().copied());
        for (k, d) in listed.enumerate() {
            if let Some(&other) = self.off.get(&d).or_else(|| self.work.get(&d)) {
                return Err(CalendarError::DuplicateDate {
                    line,
                    date: d,
                    first: name(other, &self.holidays),
                    second: format!("{year} {}", h.name),
                });
            }
            if k < days as usize {
                self.off.insert(d, index);
            } else {
                self.work.insert(d, index);
            }
        }
        self.holidays.push(Holiday {
            year,
            name_zh: h.name,
            name_en: h.name_en,
            from: h.from,
            to: h.to,
            work: h.work,
        });
        Ok(())
    }

    /// Working day, weekend or holiday.
    pub fn day_type(&self, date: NaiveDate) -> DayType {
        if self.off.contains_key(&date) {
            DayType::Holiday
        } else if self.work.contains_key(&date) || !is_weekend(date) {
            DayType::Working
        } else {
            DayType::Weekend
        }
    }

    /// The holiday a day off or a 调休 working day belongs to.
    pub fn holiday_of(&self, date: NaiveDate) -> Option<&Holiday> {
        let i = self.off.get(&date).or_else(|| self.work.get(&date))?;
        self.holidays.get(*i)
    }

    /// Whether `date` is a weekend day worked under a holiday notice (调休上班).
    pub fn is_adjusted_working_day(&self, date: NaiveDate) -> bool {
        self.work.contains_key(&date)
    }

    /// Whether the calendar has the notice for `date`'s year; if not, [`Calendar::day_type`]
    /// only knows weekends.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.years.contains_key(&date.year())
    }

    /// The source of a year's dates, if the year is covered.
    pub fn source(&self, year: i32) -> Option<&YearSource> {
        self.years.get(&year)
    }

    pub fn years(&self) -> impl Iterator<Item = &YearSource> {
        self.years.values()
    }

    pub fn holidays(&self) -> &[Holiday] {
        &self.holidays
    }

    /// Years among `dates` that the calendar does not cover, in order.
    pub fn uncovered_years(&self, dates: impl IntoIterator<Item = NaiveDate>) -> Vec<i32> {
        let years: BTreeSet<i32> = dates
            .into_iter()
            .filter(|d| !self.covers(*d))
            .map(|d| d.year())
            .collect();
        years.into_iter().collect()
    }
}

/// A TOML error message on one line, for logs and config errors.
pub(crate) fn flat(message: &str) -> String {
    message.trim_end().replace('\n', " | ")
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn cal() -> Calendar {
        Calendar::builtin().unwrap()
    }

    #[test]
    fn builtin_covers_2023_to_2026_all_verified() {
        let c = cal();
        let years: Vec<i32> = c.years().map(|y| y.year).collect();
        assert_eq!(years, vec![2023, 2024, 2025, 2026]);
        assert!(c.years().all(|y| y.verified && !y.url.is_empty()));
        assert!(!c.covers(d("2022-06-01")));
        assert!(c.covers(d("2026-12-31")));
    }

    #[test]
    fn days_off_and_adjusted_days_per_year_match_the_notices() {
        // Totals of the notices' "共N天" and the listed 上班 days.
        let c = cal();
        for (year, off, work) in [(2023, 27, 7), (2024, 28, 8), (2025, 28, 5), (2026, 33, 6)] {
            let hs: Vec<&Holiday> = c.holidays().iter().filter(|h| h.year == year).collect();
            let days: i64 = hs.iter().map(|h| (h.to - h.from).num_days() + 1).sum();
            let adjusted: usize = hs.iter().map(|h| h.work.len()).sum();
            assert_eq!((days, adjusted), (off, work), "{year}");
        }
    }

    #[test]
    fn weekdays_named_in_the_notices_match_the_dates() {
        // The 2025 and 2026 notices print the weekday of each boundary day; a date typo in the
        // file would break these.
        for (date, wd) in [
            ("2025-01-28", Weekday::Tue),
            ("2025-02-04", Weekday::Tue),
            ("2025-10-08", Weekday::Wed),
            ("2026-01-01", Weekday::Thu),
            ("2026-02-15", Weekday::Sun),
            ("2026-02-23", Weekday::Mon),
            ("2026-05-05", Weekday::Tue),
            ("2026-06-19", Weekday::Fri),
            ("2026-10-07", Weekday::Wed),
        ] {
            assert_eq!(d(date).weekday(), wd, "{date}");
        }
    }

    #[test]
    fn day_types() {
        let c = cal();
        // Spring Festival 2026: Sunday 15 Feb to Monday 23 Feb off; Saturdays 14 and 28 Feb worked.
        assert_eq!(c.day_type(d("2026-02-13")), DayType::Working); // Friday
        assert_eq!(c.day_type(d("2026-02-14")), DayType::Working); // Saturday, 调休
        assert!(c.is_adjusted_working_day(d("2026-02-14")));
        assert_eq!(c.day_type(d("2026-02-15")), DayType::Holiday); // Sunday inside the range
        assert_eq!(c.day_type(d("2026-02-18")), DayType::Holiday); // Wednesday
        assert_eq!(c.day_type(d("2026-02-23")), DayType::Holiday); // Monday
        assert_eq!(c.day_type(d("2026-02-24")), DayType::Working);
        assert_eq!(c.day_type(d("2026-02-28")), DayType::Working); // Saturday, 调休
        assert_eq!(c.day_type(d("2026-03-07")), DayType::Weekend);
        let h = c.holiday_of(d("2026-02-28")).unwrap();
        assert_eq!((h.name_zh.as_str(), h.year), ("春节", 2026));
        // 2023 New Year started on 31 December 2022, under the 2023 notice.
        assert_eq!(c.day_type(d("2022-12-31")), DayType::Holiday);
        assert_eq!(c.holiday_of(d("2022-12-31")).unwrap().year, 2023);
        // 2024: "1月1日放假，与周末连休": the weekend before stays a weekend.
        assert_eq!(c.day_type(d("2023-12-30")), DayType::Weekend);
        assert_eq!(c.day_type(d("2024-01-01")), DayType::Holiday);
        // National Day 2025 merged with Mid-Autumn: 8 days, Sunday 28 Sep worked.
        assert_eq!(c.day_type(d("2025-09-28")), DayType::Working);
        assert_eq!(c.day_type(d("2025-10-08")), DayType::Holiday);
        assert_eq!(c.day_type(d("2025-10-11")), DayType::Working);
        // Uncovered year: weekends only.
        assert_eq!(c.day_type(d("2022-10-03")), DayType::Working);
        assert_eq!(c.day_type(d("2022-10-01")), DayType::Weekend);
        assert_eq!(
            c.uncovered_years([d("2022-10-01"), d("2024-01-01"), d("2027-01-01")]),
            vec![2022, 2027]
        );
    }

    fn one(holiday: &str) -> String {
        format!("[[year]]\nyear = 2030\nsource = \"s\"\nurl = \"u\"\n[[year.holiday]]\n{holiday}")
    }

    #[test]
    fn bad_files_are_rejected_with_the_place() {
        let e = Calendar::from_toml(&one(
            "name = \"x\"\nname_en = \"x\"\nfrom = \"2030-01-01\"\nto = \"2030-01-01\"\nwork = [\"2030-01-02\"]",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CalendarError::Invalid { year: 2030, reason, .. } if reason.contains("2030-01-02")),
            "{e}"
        );
        let e = Calendar::from_toml(&one(
            "name = \"x\"\nname_en = \"x\"\nfrom = \"2030-01-05\"\nto = \"2030-01-01\"",
        ))
        .unwrap_err();
        assert!(matches!(e, CalendarError::Invalid { .. }), "{e}");
        let e = Calendar::from_toml(&one(
            "name = \"x\"\nname_en = \"x\"\nfrom = \"2030-01-01\"\nto = \"2030-01-20\"",
        ))
        .unwrap_err();
        assert!(matches!(e, CalendarError::Invalid { .. }), "{e}");
        let overlap = one(
            "name = \"a\"\nname_en = \"a\"\nfrom = \"2030-01-01\"\nto = \"2030-01-03\"\n[[year.holiday]]\nname = \"b\"\nname_en = \"b\"\nfrom = \"2030-01-03\"\nto = \"2030-01-04\"",
        );
        let e = Calendar::from_toml(&overlap).unwrap_err();
        assert!(
            matches!(&e, CalendarError::DuplicateDate { date, .. } if *date == d("2030-01-03")),
            "{e}"
        );
        let e =
            Calendar::from_toml("[[year]]\nyear = 2030\nsource = \"s\"\nurl = \"u\"\nextra = 1")
                .unwrap_err();
        assert!(matches!(e, CalendarError::Parse(_)), "{e}");
        let twice = "[[year]]\nyear = 2030\nsource = \"s\"\nurl = \"u\"\n[[year]]\nyear = 2030\nsource = \"s\"\nurl = \"u\"";
        assert_eq!(
            Calendar::from_toml(twice).unwrap_err(),
            CalendarError::DuplicateYear {
                line: 5,
                year: 2030
            }
        );
    }

    #[test]
    fn unverified_years_say_so() {
        let c =
            Calendar::from_toml("[[year]]\nyear = 2031\nsource = \"memory\"\nurl = \"\"").unwrap();
        assert!(!c.source(2031).unwrap().verified);
    }

    /// A deployment file for 2027 in the format of `data/holidays.toml`. A test fixture, not
    /// the State Council's notice: its dates are made up, so it says `verified = false`.
    pub(crate) const FIXTURE_2027: &str = "\
[[year]]
year = 2027
source = \"test fixture, not the notice\"
url = \"\"
verified = false

[[year.holiday]]
name = \"春节\"
name_en = \"Spring Festival\"
from = \"2027-02-06\"
to = \"2027-02-12\"
work = [\"2027-02-14\"]
";

    #[test]
    fn a_deployment_file_adds_later_years() {
        let mut c = cal();
        assert!(!c.covers(d("2027-02-08")));
        // Without the notice a Spring Festival Monday is a working day: what callers must report.
        assert_eq!(c.day_type(d("2027-02-08")), DayType::Working);
        c.extend_from_toml(FIXTURE_2027).unwrap();
        assert!(c.covers(d("2027-02-08")));
        assert_eq!(c.day_type(d("2027-02-08")), DayType::Holiday);
        assert_eq!(c.day_type(d("2027-02-14")), DayType::Working); // a Sunday, 调休
        assert!(!c.source(2027).unwrap().verified);
        assert!(c.source(2026).unwrap().verified, "built-in years stay");
        assert!(c.uncovered_years([d("2027-06-01")]).is_empty());
    }

    #[test]
    fn a_deployment_file_cannot_replace_a_year_and_leaves_the_calendar_unchanged() {
        let mut c = cal();
        let again = FIXTURE_2027.replace("2027", "2026");
        let e = c.extend_from_toml(&again).unwrap_err();
        assert_eq!(
            e,
            CalendarError::DuplicateYear {
                line: 1,
                year: 2026
            },
            "{e}"
        );
        // A bad holiday after a good year: nothing of the file is taken.
        let bad = format!(
            "{FIXTURE_2027}\n[[year]]\nyear = 2028\nsource = \"s\"\nurl = \"\"\n\n[[year.holiday]]\nname = \"x\"\nname_en = \"x\"\nfrom = \"2028-01-03\"\nto = \"2028-01-03\"\nwork = [\"2028-01-04\"]\n"
        );
        let e = c.extend_from_toml(&bad).unwrap_err();
        assert!(
            matches!(
                &e,
                CalendarError::Invalid {
                    line: 19,
                    key: "work",
                    year: 2028,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("line 19"), "{e}");
        assert!(
            !c.covers(d("2027-02-08")),
            "the good year was not taken either"
        );
        // A date of a later notice that an earlier one already lists (National Day 2026).
        let clash = FIXTURE_2027
            .replace("2027-02-06", "2026-10-01")
            .replace("2027-02-12", "2026-10-02");
        let e = c.extend_from_toml(&clash).unwrap_err();
        assert!(
            matches!(&e, CalendarError::DuplicateDate { line: 7, date, .. } if *date == d("2026-10-01")),
            "{e}"
        );
        let e = c
            .extend_from_toml(
                "[[year]]\nyear = 2027\nsource = \"s\"\nurl = \"u\"\nverifed = true\n",
            )
            .unwrap_err();
        assert!(
            matches!(&e, CalendarError::Parse(m) if m.contains("line 5") && m.contains("verifed")),
            "{e}"
        );
    }
}
