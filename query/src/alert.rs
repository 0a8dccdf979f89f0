//! The dashboard's alert rules (`GET /api/v1/alerts`), as pure functions over what the reports
//! read: a meter offline ([`offline_alerts`]), a gap in a meter's data ([`gap_alerts`]), a day
//! far from the baseline of its day type ([`anomaly_alerts`]), days the holiday calendar does not
//! know ([`calendar_alerts`]) and a year's intensity against the GB/T 51161 constraint value,
//! judged only where a verified value exists ([`constraint_alerts`]). [`rank`] orders and bounds
//! what is returned.
//!
//! Day types and benchmark sets come from the same [`crate::savings::ReferenceData`] the savings
//! report uses (built-in files extended by the deployment's), so a day is a working day, and a
//! set has its values, in both.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use reading_model::time::{local_midnight_ms, local_minute, rfc3339_ms as rfc3339};
use reading_model::{Category, FactorTables};
use serde::Serialize;
use serde_json::json;

use crate::Account;
use crate::accounts::{InstitutionType, OfficeClass};
use crate::live::round6;
use crate::meters::MeterStatus;
use crate::report::status::{CategoryTotal, DataGap};
use crate::savings::benchmark::{
    AccountEnergy, BenchmarkSet, BenchmarkSets, BuildingType, Comparison, Rating, Verification,
    compare,
};
use crate::savings::calendar::Calendar;

/// Days whose gaps and anomalies are alerts.
pub const ALERT_DAYS: i64 = 7;
/// Days before an alert day whose same day type make its baseline.
pub const BASELINE_DAYS: i64 = 28;
/// Fewest same-type days a baseline needs.
const BASELINE_MIN_DAYS: usize = 3;
/// An anomaly is this many standard deviations from the baseline mean …
const ANOMALY_SIGMAS: f64 = 3.0;
/// … and at least this share of it, so a very steady meter's small wobble is not an anomaly.
const ANOMALY_MIN_SHARE: f64 = 0.25;
/// Most alerts of one kind returned; the rest are counted.
pub const MAX_ALERTS_PER_KIND: usize = 100;

/// One alert. Messages are complete sentences in both languages; the fields say the same for
/// programs.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `meter_offline`, `data_gap`, `anomaly`, `calendar_missing`, `over_constraint` or
    /// `benchmark_unverified`.
    pub kind: &'static str,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    pub account: String,
    pub name_zh: String,
    pub name_en: String,
    pub meter: Option<String>,
    /// When it happened (UTC, RFC 3339): the last reading, the gap's end, the day's start.
    pub ts: String,
    pub message_zh: String,
    pub message_en: String,
    pub details: serde_json::Value,
}

pub fn offline_alerts(accounts: &[Account], meters: &[MeterStatus], now_ms: i64) -> Vec<Alert> {
    meters
        .iter()
        .filter(|m| !m.online)
        .filter_map(|m| {
            let a = accounts.iter().find(|a| a.code.as_str() == m.account)?;
            // The message names the last reading's time, not its age, so it reads the same
            // however often it is fetched; the age is in the details.
            let hours = (now_ms - m.last_ts_ms) as f64 / 3_600_000.0;
            Some(Alert {
                kind: "meter_offline",
                severity: "warning",
                account: m.account.clone(),
                name_zh: a.name_zh.clone(),
                name_en: a.name_en.clone(),
                meter: Some(m.meter.clone()),
                ts: m.last_ts.clone(),
                message_zh: format!(
                    "{} 计量表 {} 离线：最后读数 {}",
                    a.name_zh,
                    m.meter,
                    local_minute(m.last_ts_ms),
                ),
                message_en: format!(
                    "{}: meter {} is offline; last reading {}",
                    display_en(a),
                    m.meter,
                    local_minute(m.last_ts_ms),
                ),
                details: json!({ "last_ts": m.last_ts, "silent_hours": round6(hours) }),
            })
        })
        .collect()
}

pub fn display_en(a: &Account) -> &str {
    if a.name_en.is_empty() {
        &a.name_zh
    } else {
        &a.name_en
    }
}

pub fn gap_alerts(accounts: &[Account], gaps: &[DataGap]) -> Vec<Alert> {
    gaps.iter()
        .filter_map(|g| {
            let a = accounts.iter().find(|a| a.code == g.account)?;
            let hours = g.from_ts.map(|f| (g.to_ts - f) as f64 / 3_600_000.0);
            let span = g.from_ts.map_or_else(
                || format!("… – {}", local_minute(g.to_ts)),
                |f| format!("{} – {}", local_minute(f), local_minute(g.to_ts)),
            );
            let (why_zh, why_en) = if g.flagged {
                (
                    "网关标记漏读".to_owned(),
                    "the gateway flagged missed polls".to_owned(),
                )
            } else {
                (
                    format!("通常间隔 {:.0} 分钟", g.usual_interval_ms as f64 / 60_000.0),
                    format!(
                        "usual interval {:.0} min",
                        g.usual_interval_ms as f64 / 60_000.0
                    ),
                )
            };
            Some(Alert {
                kind: "data_gap",
                severity: "warning",
                account: g.account.to_string(),
                name_zh: a.name_zh.clone(),
                name_en: a.name_en.clone(),
                meter: Some(g.meter.to_string()),
                ts: rfc3339(g.to_ts),
                message_zh: format!(
                    "{} 计量表 {} 数据缺失 {}{}（{}）",
                    a.name_zh,
                    g.meter,
                    span,
                    hours.map_or_else(String::new, |h| format!("，{h:.1} 小时")),
                    why_zh
                ),
                message_en: format!(
                    "{}: meter {} has no readings {}{} ({})",
                    display_en(a),
                    g.meter,
                    span,
                    hours.map_or_else(String::new, |h| format!(", {h:.1} h")),
                    why_en
                ),
                details: json!({
                    "quantity": g.quantity.name(),
                    "from": g.from_ts.map(rfc3339),
                    "to": rfc3339(g.to_ts),
                    "hours": hours.map(round6),
                    "flagged_by_gateway": g.flagged,
                    "usual_interval_s": g.usual_interval_ms / 1_000,
                }),
            })
        })
        .collect()
}

/// Each complete day of the last [`ALERT_DAYS`] against the mean of the same day type (working
/// or not, by the holiday calendar) over the [`BASELINE_DAYS`] before it, per account and
/// category.
pub fn anomaly_alerts(
    accounts: &[Account],
    daily: &[CategoryTotal],
    today: NaiveDate,
    calendar: &Calendar,
) -> Vec<Alert> {
    // (account, category) → (daily totals, unit).
    type Series<'a> = BTreeMap<(&'a str, Category), (BTreeMap<NaiveDate, f64>, &'a str)>;
    let mut series: Series = BTreeMap::new();
    for r in daily {
        let e = series
            .entry((r.account.as_str(), r.category))
            .or_insert_with(|| (BTreeMap::new(), r.unit.as_str()));
        *e.0.entry(r.period).or_default() += r.consumption;
    }
    let mut out = Vec::new();
    for ((account, cat), (days, unit)) in &series {
        let Some(a) = accounts.iter().find(|a| a.code.as_str() == *account) else {
            continue;
        };
        let category = cat.code();
        for back in 1..=ALERT_DAYS {
            let day = today - Duration::days(back);
            let Some(&x) = days.get(&day) else { continue };
            let working = calendar.day_type(day).is_working();
            // Without the year's notice the day type knows only weekends; the alert says so
            // (and `calendar_alerts` names the year).
            let known = calendar.covers(day);
            let (caveat_zh, caveat_en) = if known {
                (String::new(), String::new())
            } else {
                (
                    format!("（节假日安排未录入 {} 年，日类型仅按星期判断）", day.year()),
                    format!(
                        " (no holiday notice for {} in the calendar: day type by weekday only)",
                        day.year()
                    ),
                )
            };
            let same: Vec<f64> = (1..=BASELINE_DAYS)
                .map(|k| day - Duration::days(k))
                .filter(|d| calendar.day_type(*d).is_working() == working)
                .filter_map(|d| days.get(&d).copied())
                .collect();
            if same.len() < BASELINE_MIN_DAYS {
                continue;
            }
            let n = same.len() as f64;
            let mean = same.iter().sum::<f64>() / n;
            let sd = (same.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let dev = x - mean;
            if mean <= 0.0
                || dev.abs() <= ANOMALY_SIGMAS * sd
                || dev.abs() <= ANOMALY_MIN_SHARE * mean
            {
                continue;
            }
            let ratio = x / mean;
            let (type_zh, type_en) = if working {
                ("工作日", "working days")
            } else {
                ("非工作日", "non-working days")
            };
            let (dir_zh, dir_en) = if dev > 0.0 {
                ("偏高", "above")
            } else {
                ("偏低", "below")
            };
            out.push(Alert {
                kind: "anomaly",
                severity: "warning",
                account: a.code.to_string(),
                name_zh: a.name_zh.clone(),
                name_en: a.name_en.clone(),
                meter: None,
                ts: rfc3339(local_midnight_ms(day)),
                message_zh: format!(
                    "{} {day} {}用量 {x:.1} {unit}，比基线 {mean:.1} {unit}（前 {BASELINE_DAYS} 天中 {} 个{type_zh}的均值）{dir_zh} {:.0}%{caveat_zh}",
                    a.name_zh,
                    cat.name_zh(),
                    same.len(),
                    (ratio - 1.0).abs() * 100.0
                ),
                message_en: format!(
                    "{}: {} use on {day} was {x:.1} {unit}, {:.0}% {dir_en} the baseline {mean:.1} {unit} (mean of {} {type_en} in the {BASELINE_DAYS} days before){caveat_en}",
                    display_en(a),
                    cat.name_en(),
                    (ratio - 1.0).abs() * 100.0,
                    same.len(),
                ),
                details: json!({
                    "category": category,
                    "date": day,
                    "unit": unit,
                    "consumption": round6(x),
                    "baseline_mean": round6(mean),
                    "baseline_sd": round6(sd),
                    "baseline_days": same.len(),
                    "working_day": working,
                    "calendar_covers": known,
                }),
            });
        }
    }
    out
}

/// One `calendar_missing` alert per account with daily totals on days (of the anomaly rule's
/// window before `today`) whose year the holiday calendar has no notice for: there the
/// anomaly rule's day types know only weekends, so a Spring Festival would count as working
/// days. It names the years and what to add.
pub fn calendar_alerts(
    accounts: &[Account],
    daily: &[CategoryTotal],
    today: NaiveDate,
    calendar: &Calendar,
) -> Vec<Alert> {
    let first = today - Duration::days(ALERT_DAYS + BASELINE_DAYS);
    let mut years: BTreeMap<&str, std::collections::BTreeSet<i32>> = BTreeMap::new();
    for r in daily {
        if r.period >= first && r.period < today && !calendar.covers(r.period) {
            years
                .entry(r.account.as_str())
                .or_default()
                .insert(r.period.year());
        }
    }
    years
        .into_iter()
        .filter_map(|(account, years)| {
            let a = accounts.iter().find(|a| a.code.as_str() == account)?;
            let list: Vec<i32> = years.into_iter().collect();
            let names = list
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Some(Alert {
                kind: "calendar_missing",
                severity: "info",
                account: a.code.to_string(),
                name_zh: a.name_zh.clone(),
                name_en: a.name_en.clone(),
                meter: None,
                ts: rfc3339(local_midnight_ms(today)),
                message_zh: format!(
                    "{}：节假日日历未录入 {names} 年的国务院节假日安排，这些日子的日类型仅按星期判断，异常判断可能有误；请在部署的节假日文件（[reference] holidays）中补充",
                    a.name_zh
                ),
                message_en: format!(
                    "{}: the holiday calendar has no State Council notice for {names}; day types there know only weekends, so anomalies may be misjudged. Add the notice to the deployment's holiday file ([reference] holidays)",
                    display_en(a)
                ),
                details: json!({ "uncovered_years": list }),
            })
        })
        .collect()
}

/// Each account's last 12 complete months against the benchmark sets (`sets`: the built-in
/// ones with the deployment's) for its building class. An alert says "over the constraint
/// value" only when the comparison rests on verified numbers; otherwise it says no verified
/// value exists, with the reasons.
pub fn constraint_alerts(
    accounts: &[Account],
    monthly: &[CategoryTotal],
    months: (NaiveDate, NaiveDate),
    factors: &FactorTables,
    sets: &BenchmarkSets,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for a in accounts {
        let consumption = months_consumption(a, monthly);
        // GB/T 51161 only: provincial quota sets apply in their own province, and the savings
        // view shows every set that applies.
        for set in sets.sets().filter(|s| s.id.starts_with("gbt51161")) {
            let Some(ty) = constraint_type(set, a) else {
                continue;
            };
            let Some(area) = a.floor_area_m2 else {
                continue;
            };
            let input = AccountEnergy {
                account: a.code.clone(),
                year: months.1.year(),
                floor_area_m2: area,
                occupants: a.headcount.map(f64::from),
                operating_hours: None,
                climate_zone: a.climate_zone,
                consumption: consumption.clone(),
                heating: BTreeMap::new(),
                transport: BTreeMap::new(),
            };
            let Ok(c) = compare(set, &ty.id, &input, factors, a.factor_selection()) else {
                continue;
            };
            if let Some(alert) = constraint_alert(a, set, ty, &c, months) {
                out.push(alert);
            }
        }
    }
    out
}

/// The account's consumption per category summed over the months' totals.
fn months_consumption(a: &Account, monthly: &[CategoryTotal]) -> BTreeMap<Category, f64> {
    let mut consumption: BTreeMap<Category, f64> = BTreeMap::new();
    for r in monthly.iter().filter(|r| r.account == a.code) {
        *consumption.entry(r.category).or_default() += r.consumption;
    }
    consumption
}

/// The building type of `set` the account is judged as, among those of its building class:
/// government offices (国家机关) take the government type where a set tells them apart, an
/// office class (A/B) picks among the rest, else the first. `None` when the set has no type
/// of its class.
fn constraint_type<'s>(set: &'s BenchmarkSet, a: &Account) -> Option<&'s BuildingType> {
    let class = a.building_class().letter();
    let types: Vec<_> = set
        .types
        .iter()
        .filter(|t| t.building_class == class)
        .collect();
    let government = a.institution_type == InstitutionType::StateOrgan;
    let office = a.office_class.map(|c| match c {
        OfficeClass::A => "A",
        OfficeClass::B => "B",
    });
    types
        .iter()
        .filter(|t| office.is_none_or(|o| t.id.starts_with(o)))
        .find(|t| t.id.contains("government") == government)
        .or_else(|| types.first())
        .copied()
}

/// The alert for the comparison `c` of the account with `set` as type `ty` over `months`:
/// over the constraint value when that rests on verified numbers, no verified value when it
/// does not; `None` for a verified comparison within the constraint.
fn constraint_alert(
    a: &Account,
    set: &BenchmarkSet,
    ty: &BuildingType,
    c: &Comparison,
    months: (NaiveDate, NaiveDate),
) -> Option<Alert> {
    let unit = c.unit.symbol();
    let period = format!(
        "{} – {}",
        months.0.format("%Y-%m"),
        (months.1 - Duration::days(1)).format("%Y-%m")
    );
    let (kind, severity, zh, en) = match (&c.verification, c.rating) {
        (v, Rating::AboveConstraint) if v.is_verified() => (
            "over_constraint",
            "critical",
            format!(
                "{} {period} 能耗强度 {:.1} {unit}（修正后 {:.1}），超过 {} 约束值 {:.1}",
                a.name_zh,
                c.measured,
                c.corrected,
                set.name,
                c.constraint.unwrap_or_default()
            ),
            format!(
                "{}: intensity {period} {:.1} {unit} (corrected {:.1}) is over the {} constraint value {:.1}",
                display_en(a),
                c.measured,
                c.corrected,
                set.name_en,
                c.constraint.unwrap_or_default()
            ),
        ),
        (v, _) if v.is_verified() => return None,
        _ => (
            "benchmark_unverified",
            "info",
            format!(
                "{} {period} 能耗强度 {:.1} {unit}：无已核实的约束值（{}，{}），未作判断",
                a.name_zh,
                c.measured,
                ty.name,
                if c.rating == Rating::NoValues {
                    "标准限值未录入"
                } else {
                    "数值未核实"
                }
            ),
            format!(
                "{}: intensity {period} {:.1} {unit}; no verified constraint value ({}, {}), so it is not judged",
                display_en(a),
                c.measured,
                ty.name_en,
                if c.rating == Rating::NoValues {
                    "the standard's values are not entered"
                } else {
                    "its values are unverified"
                }
            ),
        ),
    };
    let reasons = match &c.verification {
        Verification::Unverified { reasons } => reasons.clone(),
        _ => vec![],
    };
    Some(Alert {
        kind,
        severity,
        account: a.code.to_string(),
        name_zh: a.name_zh.clone(),
        name_en: a.name_en.clone(),
        meter: None,
        ts: rfc3339(local_midnight_ms(months.1)),
        message_zh: zh,
        message_en: en,
        details: json!({
            "set": set.id,
            "type": ty.id,
            "unit": unit,
            "from": months.0,
            "to": months.1,
            "measured": round6(c.measured),
            "corrected": round6(c.corrected),
            "constraint": c.constraint,
            "guide": c.guide,
            "rating": c.rating.name_en(),
            "verified": c.verification.is_verified(),
            "unverified_reasons": reasons,
        }),
    })
}

/// The alerts of each kind, newest first and at most [`MAX_ALERTS_PER_KIND`] of a kind, then
/// ordered by severity (critical, warning, info; the sort is stable, so kinds keep the order
/// given); and how many of each kind were left out.
pub fn rank(
    by_kind: Vec<(&'static str, Vec<Alert>)>,
) -> (Vec<Alert>, BTreeMap<&'static str, usize>) {
    let mut all = Vec::new();
    let mut omitted = BTreeMap::new();
    for (kind, mut list) in by_kind {
        list.sort_by(|a, b| b.ts.cmp(&a.ts));
        if list.len() > MAX_ALERTS_PER_KIND {
            omitted.insert(kind, list.len() - MAX_ALERTS_PER_KIND);
            list.truncate(MAX_ALERTS_PER_KIND);
        }
        all.extend(list);
    }
    let severity = |s: &str| match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    all.sort_by_key(|a| severity(a.severity));
    (all, omitted)
}

#[cfg(test)]
pub(crate) mod tests {
    use reading_model::AccountCode;

    use super::*;

    /// A primary school (public institution) of Haidian with the config lines `extra`.
    pub(crate) fn account(extra: &str) -> Account {
        toml::from_str(&format!(
            "code = \"110108D002\"\nname_zh = \"小学\"\ninstitution_type = \"public_institution\"\n{extra}"
        ))
        .unwrap()
    }

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    #[test]
    fn a_busy_saturday_is_an_anomaly_and_ordinary_days_are_not() {
        let calendar = Calendar::builtin().unwrap();
        let today = day(11, 27);
        let series = |busy: Option<NaiveDate>| -> Vec<CategoryTotal> {
            (1..=35)
                .map(|k| today - Duration::days(k))
                .map(|d| {
                    let working = calendar.day_type(d).is_working();
                    let base = if working { 100.0 } else { 30.0 };
                    // A little day-to-day wobble, so the spread is not zero.
                    let wobble = f64::from(d.day() % 3);
                    CategoryTotal {
                        account: AccountCode::parse("110108D002").unwrap(),
                        period: d,
                        category: Category::Electricity,
                        unit: "kWh".into(),
                        consumption: if Some(d) == busy { 95.0 } else { base + wobble },
                        kgce: 0.0,
                        kgco2e: 0.0,
                    }
                })
                .collect()
        };
        let accounts = [account("")];
        assert!(anomaly_alerts(&accounts, &series(None), today, &calendar).is_empty());
        let alerts = anomaly_alerts(&accounts, &series(Some(day(11, 21))), today, &calendar);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, "anomaly");
        assert_eq!(alerts[0].details["date"], "2026-11-21");
        assert_eq!(alerts[0].details["working_day"], false);
        assert!(
            alerts[0].message_en.contains("above the baseline"),
            "{}",
            alerts[0].message_en
        );
        // The same use on a working day is ordinary.
        assert!(anomaly_alerts(&accounts, &series(Some(day(11, 20))), today, &calendar).is_empty());
    }

    /// Daily electricity of the school over the 35 days before `today`: 100 on working days,
    /// 30 on other days, by `calendar`.
    fn school_days(today: NaiveDate, calendar: &Calendar) -> Vec<CategoryTotal> {
        (1..=35)
            .map(|k| today - Duration::days(k))
            .map(|d| CategoryTotal {
                account: AccountCode::parse("110108D002").unwrap(),
                period: d,
                category: Category::Electricity,
                unit: "kWh".into(),
                consumption: if calendar.day_type(d).is_working() {
                    100.0
                } else {
                    30.0
                } + f64::from(d.day() % 3),
                kgce: 0.0,
                kgco2e: 0.0,
            })
            .collect()
    }

    #[test]
    fn days_of_a_deployment_year_get_its_day_types_and_unknown_years_are_said() {
        let mut extended = Calendar::builtin().unwrap();
        extended
            .extend_from_toml(crate::savings::calendar::tests::FIXTURE_2027)
            .unwrap();
        let builtin = Calendar::builtin().unwrap();
        // The week after the fixture's Spring Festival (6–12 February 2027, Sunday 14th worked).
        let today = NaiveDate::from_ymd_opt(2027, 2, 16).unwrap();
        let accounts = [account("")];
        // The school closed for the holiday, as the deployment's calendar says.
        let daily = school_days(today, &extended);
        assert!(anomaly_alerts(&accounts, &daily, today, &extended).is_empty());
        assert!(calendar_alerts(&accounts, &daily, today, &extended).is_empty());
        // With the built-in calendar alone the holiday's weekdays look like idle working days:
        // anomalies, each saying the day type knows only weekends, and one alert naming 2027.
        let alerts = anomaly_alerts(&accounts, &daily, today, &builtin);
        assert!(!alerts.is_empty());
        for a in &alerts {
            assert_eq!(a.details["calendar_covers"], false, "{a:?}");
            assert!(
                a.message_en.contains("no holiday notice for 2027"),
                "{}",
                a.message_en
            );
        }
        let missing = calendar_alerts(&accounts, &daily, today, &builtin);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].kind, "calendar_missing");
        assert_eq!(missing[0].details["uncovered_years"], json!([2027]));
    }

    fn alert(kind: &'static str, severity: &'static str, ts: &str) -> Alert {
        Alert {
            kind,
            severity,
            account: "110108D002".into(),
            name_zh: "小学".into(),
            name_en: String::new(),
            meter: None,
            ts: ts.into(),
            message_zh: String::new(),
            message_en: String::new(),
            details: json!({}),
        }
    }

    #[test]
    fn alerts_are_bounded_per_kind_newest_first_then_by_severity() {
        let offline: Vec<_> = (0..MAX_ALERTS_PER_KIND + 3)
            .map(|i| {
                alert(
                    "meter_offline",
                    "warning",
                    &format!("2026-11-{:02}", i % 28 + 1),
                )
            })
            .collect();
        let (all, omitted) = rank(vec![
            ("meter_offline", offline),
            (
                "benchmark_unverified",
                vec![alert("benchmark_unverified", "info", "2026-11-01")],
            ),
            (
                "over_constraint",
                vec![alert("over_constraint", "critical", "2026-10-01")],
            ),
        ]);
        assert_eq!(omitted.get("meter_offline"), Some(&3));
        assert_eq!(all.len(), MAX_ALERTS_PER_KIND + 2);
        assert_eq!(all[0].kind, "over_constraint");
        assert_eq!(all[1].ts, "2026-11-28");
        assert_eq!(all.last().map(|a| a.kind), Some("benchmark_unverified"));
    }
}
