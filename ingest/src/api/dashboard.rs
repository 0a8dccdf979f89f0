//! What the dashboard (驾驶舱) reads besides the reports: `GET /api/v1/live` (today's tiles:
//! current power, energy, kgce, CO2), `GET /api/v1/meters` (each meter's status and last
//! reading) and `GET /api/v1/alerts` (meter offline, data gap, anomaly against the day-type
//! baseline, and the GB/T 51161 constraint value — judged only where a verified value exists).
//!
//! Same keys, scopes and errors as the reports: admin and officer keys (officers see their scope
//! only); the statistics role is refused, it reads consumption and carbon. Today's figures come
//! from the consumption report itself, so a tile always equals `/api/v1/consumption` for the day.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use query::Account;
use query::report::period::{Granularity, OFFSET_HOURS, local_midnight_ms};
use query::report::scope::{Filter, matches_all};
use query::report::status::{CategoryTotal, DataGap, LatestReading};
use query::savings::benchmark::{AccountEnergy, BenchmarkSets, Rating, compare};
use query::savings::calendar::Calendar;
use reading_model::{Category, FactorSelection, Quantity};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::access::Action;
use super::{Api, Refusal};

/// A meter is offline when its last reading is older than this (seconds), unless asked otherwise.
const DEFAULT_OFFLINE_AFTER_S: u64 = 900;
const MAX_OFFLINE_AFTER_S: u64 = 30 * 86_400;
/// How far back meters are looked for: one silent longer than this is no longer listed.
const METER_WINDOW_DAYS: i64 = 31;
/// Days whose gaps and anomalies are alerts.
const ALERT_DAYS: i64 = 7;
/// Days before an alert day whose same day type make its baseline.
const BASELINE_DAYS: i64 = 28;
/// Fewest same-type days a baseline needs.
const BASELINE_MIN_DAYS: usize = 3;
/// An anomaly is this many standard deviations from the baseline mean …
const ANOMALY_SIGMAS: f64 = 3.0;
/// … and at least this share of it, so a very steady meter's small wobble is not an anomaly.
const ANOMALY_MIN_SHARE: f64 = 0.25;
/// Most alerts of one kind returned; the rest are counted.
const MAX_ALERTS_PER_KIND: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusParams {
    account: Option<String>,
    region: Option<String>,
    /// Seconds without a reading after which a meter is offline.
    offline_after: Option<u64>,
}

/// The request's scope and clock, checked.
struct Scope {
    filters: Vec<Filter>,
    offline_after_ms: i64,
    now_ms: i64,
    /// Today in Beijing time.
    today: NaiveDate,
}

impl Api {
    fn status_scope(
        &self,
        headers: &HeaderMap,
        params: Result<Query<StatusParams>, QueryRejection>,
    ) -> Result<Scope, Refusal> {
        let caller = self.authorize(headers, Action::ReadStatus)?;
        let p = self.params(params)?;
        let offline_after = p.offline_after.unwrap_or(DEFAULT_OFFLINE_AFTER_S);
        if !(1..=MAX_OFFLINE_AFTER_S).contains(&offline_after) {
            return Err(self.bad(format!(
                "offline_after={offline_after}: expected 1..={MAX_OFFLINE_AFTER_S} seconds"
            )));
        }
        let now_ms = Utc::now().timestamp_millis();
        Ok(Scope {
            filters: self.filters(&caller, p.account.as_deref(), p.region.as_deref())?,
            offline_after_ms: i64::try_from(offline_after)
                .unwrap_or(i64::MAX / 1_000)
                .saturating_mul(1_000),
            now_ms,
            today: local_date(now_ms),
        })
    }

    /// The configured accounts the scope and the request's filters let through.
    fn accounts_in(&self, filters: &[Filter]) -> Vec<Account> {
        self.reports
            .accounts()
            .filter(|a| matches_all(filters, &a.code))
            .cloned()
            .collect()
    }
}

/// The Beijing date of UTC milliseconds.
fn local_date(ms: i64) -> NaiveDate {
    Utc.timestamp_millis_opt(ms + OFFSET_HOURS * 3_600_000)
        .single()
        .map_or_else(|| Utc::now().date_naive(), |t| t.date_naive())
}

/// `2026-11-27 14:05` in Beijing time.
fn local_minute(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms + OFFSET_HOURS * 3_600_000)
        .single()
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M").to_string())
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
}

/// The meter a channel belongs to: `main:L1` → `main` (per-phase and firmware channels are
/// stored as `<meter>:<channel>`).
fn base_meter(meter: &str) -> &str {
    meter.split(':').next().unwrap_or(meter)
}

/// Today's (or any period's) totals of one account, by category, from the report's rows.
#[derive(Debug, Clone, Default, Serialize)]
struct DayTotals {
    /// Electricity, kWh.
    energy_kwh: f64,
    /// All energy categories (not water), standard coal.
    kgce: f64,
    kgco2e: f64,
    water_m3: Option<f64>,
    categories: Vec<TileCategory>,
}

/// A category's line of today's tiles.
#[derive(Debug, Clone, Serialize)]
struct TileCategory {
    category: String,
    name_zh: &'static str,
    name_en: &'static str,
    unit: String,
    consumption: f64,
    kgce: f64,
    kgco2e: f64,
}

fn totals_of(totals: &[CategoryTotal], account: &reading_model::AccountCode) -> DayTotals {
    let mut t = DayTotals::default();
    for r in totals.iter().filter(|r| &r.account == account) {
        match r.category {
            Category::Water => *t.water_m3.get_or_insert(0.0) += r.consumption,
            c => {
                if c == Category::Electricity {
                    t.energy_kwh += r.consumption;
                }
                t.kgce += r.kgce;
                t.kgco2e += r.kgco2e;
            }
        }
        t.categories.push(TileCategory {
            category: r.category.code().to_owned(),
            name_zh: r.category.name_zh(),
            name_en: r.category.name_en(),
            unit: r.unit.clone(),
            consumption: r.consumption,
            kgce: r.kgce,
            kgco2e: r.kgco2e,
        });
    }
    t.energy_kwh = round6(t.energy_kwh);
    t.kgce = round6(t.kgce);
    t.kgco2e = round6(t.kgco2e);
    t.water_m3 = t.water_m3.map(round6);
    t
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The meters whose power is the account's: configured electricity main meters, else meters on
/// the electricity total item, else every electricity meter.
fn power_meters(account: &Account, latest: &[&LatestReading]) -> Vec<String> {
    let configured: Vec<String> = account
        .main_meter
        .iter()
        .filter(|m| m.category == Category::Electricity)
        .map(|m| m.meter.to_string())
        .collect();
    if !configured.is_empty() {
        return configured;
    }
    let electricity = latest
        .iter()
        .filter(|l| l.category == Category::Electricity);
    let total = Category::Electricity.total_code();
    let mut on_total: Vec<String> = electricity
        .clone()
        .filter(|l| l.item == total)
        .map(|l| base_meter(l.meter.as_str()).to_owned())
        .collect();
    if on_total.is_empty() {
        on_total = electricity
            .map(|l| base_meter(l.meter.as_str()).to_owned())
            .collect();
    }
    on_total.sort();
    on_total.dedup();
    on_total
}

/// Current active power of the meters, kW, from readings fresher than the offline limit: a
/// meter's own total where it has one, else the sum of its phases. `None` when none is fresh.
fn current_power(
    meters: &[String],
    latest: &[&LatestReading],
    fresh_after: i64,
) -> Option<(f64, i64)> {
    let mut sum = None::<(f64, i64)>;
    for m in meters {
        let fresh = |l: &&&LatestReading| {
            l.quantity == Quantity::PowerActive
                && l.ts > fresh_after
                && base_meter(l.meter.as_str()) == m
        };
        let own: Vec<_> = latest
            .iter()
            .filter(fresh)
            .filter(|l| l.meter.as_str() == m)
            .collect();
        let parts: Vec<_> = if own.is_empty() {
            latest.iter().filter(fresh).collect()
        } else {
            own
        };
        for l in parts {
            let e = sum.get_or_insert((0.0, l.ts));
            e.0 += l.value;
            e.1 = e.1.max(l.ts);
        }
    }
    sum.map(|(kw, ts)| (round6(kw), ts))
}

pub(super) async fn live(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let scope = api.status_scope(&headers, params)?;
    let today = scope.today;
    let (filters, since, until) = (
        scope.filters.clone(),
        scope.now_ms - scope.offline_after_ms,
        scope.now_ms + 86_400_000,
    );
    let (totals, latest) = api
        .run(move |r| async move {
            let totals = r
                .category_totals(today, today + Duration::days(1), Granularity::Day, &filters)
                .await?;
            let latest = r.latest_readings(since, until, &filters).await?;
            Ok((totals, latest))
        })
        .await?;
    let period = Granularity::Day.label(today);
    let mut accounts = Vec::new();
    let (mut power, mut any_power) = (0.0, false);
    let mut sum = DayTotals::default();
    for a in api.accounts_in(&scope.filters) {
        let mine: Vec<&LatestReading> = latest.iter().filter(|l| l.account == a.code).collect();
        let p = current_power(&power_meters(&a, &mine), &mine, since);
        if let Some((kw, _)) = p {
            power += kw;
            any_power = true;
        }
        let t = totals_of(&totals, &a.code);
        sum.energy_kwh += t.energy_kwh;
        sum.kgce += t.kgce;
        sum.kgco2e += t.kgco2e;
        if let Some(w) = t.water_m3 {
            *sum.water_m3.get_or_insert(0.0) += w;
        }
        accounts.push(json!({
            "account": a.code,
            "name_zh": a.name_zh,
            "name_en": a.name_en,
            "power_kw": p.map(|p| p.0),
            "power_ts": p.map(|p| rfc3339(p.1)),
            "energy_kwh": t.energy_kwh,
            "kgce": t.kgce,
            "kgco2e": t.kgco2e,
            "water_m3": t.water_m3,
            "categories": t.categories,
        }));
    }
    Ok(axum::Json(json!({
        "as_of": rfc3339(scope.now_ms),
        "date": period,
        "offline_after_s": scope.offline_after_ms / 1_000,
        "totals": {
            "power_kw": any_power.then(|| round6(power)),
            "energy_kwh": round6(sum.energy_kwh),
            "kgce": round6(sum.kgce),
            "kgco2e": round6(sum.kgco2e),
            "water_m3": sum.water_m3.map(round6),
        },
        "accounts": accounts,
    }))
    .into_response())
}

/// One meter (with its channels) as `/api/v1/meters` lists it.
#[derive(Debug, Clone, Serialize)]
struct MeterStatus {
    account: String,
    meter: String,
    category: String,
    item: String,
    item_name_zh: String,
    item_name_en: String,
    /// `main` (feeds sub-meters or measures the category total), `sub`, or `meter`.
    role: &'static str,
    online: bool,
    last_ts: String,
    last_ts_ms: i64,
    readings: Vec<ReadingStatus>,
}

#[derive(Debug, Clone, Serialize)]
struct ReadingStatus {
    quantity: &'static str,
    /// The phase or firmware channel (`L1`), when the reading is one.
    channel: Option<String>,
    unit: String,
    value: f64,
    ts: String,
    quality: &'static str,
}

/// Meters of the latest readings, grouped by (account, base meter), main meters first.
fn meter_statuses(
    accounts: &[Account],
    latest: &[LatestReading],
    offline_after_ms: i64,
    now_ms: i64,
) -> Vec<MeterStatus> {
    let catalog = reading_model::ItemCatalog::builtin();
    let mut by_meter: BTreeMap<(String, String), Vec<&LatestReading>> = BTreeMap::new();
    for l in latest {
        by_meter
            .entry((
                l.account.to_string(),
                base_meter(l.meter.as_str()).to_owned(),
            ))
            .or_default()
            .push(l);
    }
    let mut out = Vec::new();
    for ((account, meter), mut readings) in by_meter {
        let Some(acc) = accounts.iter().find(|a| a.code.as_str() == account) else {
            // Readings of an account the config does not list: not in anyone's tree.
            continue;
        };
        readings.sort_by(|a, b| {
            (a.meter.as_str(), a.quantity.name()).cmp(&(b.meter.as_str(), b.quantity.name()))
        });
        // The consumption reading says what the meter measures; any reading will do otherwise.
        let Some(head) = readings
            .iter()
            .find(|l| l.quantity.is_consumption() && l.meter.as_str() == meter)
            .or_else(|| readings.first())
            .copied()
        else {
            continue;
        };
        let last = readings.iter().map(|l| l.ts).max().unwrap_or(head.ts);
        let configured_main = acc.main_meter.iter().any(|m| m.meter.as_str() == meter);
        let configured_sub = acc
            .main_meter
            .iter()
            .any(|m| m.sub_meters.iter().any(|s| s.as_str() == meter));
        let measures_use = readings.iter().any(|l| l.quantity.is_consumption());
        let role = if !measures_use {
            // A sensor (outdoor temperature …): neither feeds nor is fed.
            "meter"
        } else if configured_main
            || (acc.main_meter.iter().all(|m| m.category != head.category)
                && head.item == head.category.total_code())
        {
            "main"
        } else if configured_sub || acc.main_meter.iter().all(|m| m.category != head.category) {
            "sub"
        } else {
            "meter"
        };
        let (zh, en) = catalog.name(&head.item);
        out.push(MeterStatus {
            account,
            meter: meter.clone(),
            category: head.category.code().to_owned(),
            item: head.item.as_str().to_owned(),
            item_name_zh: zh.to_owned(),
            item_name_en: en.to_owned(),
            role,
            online: now_ms - last <= offline_after_ms,
            last_ts: rfc3339(last),
            last_ts_ms: last,
            readings: readings
                .iter()
                .map(|l| ReadingStatus {
                    quantity: l.quantity.name(),
                    channel: l.meter.as_str().split_once(':').map(|(_, c)| c.to_owned()),
                    unit: l.unit.clone(),
                    value: l.value,
                    ts: rfc3339(l.ts),
                    quality: l.quality.name(),
                })
                .collect(),
        });
    }
    out.sort_by(|a, b| {
        (&a.account, a.role != "main", &a.category, &a.item, &a.meter).cmp(&(
            &b.account,
            b.role != "main",
            &b.category,
            &b.item,
            &b.meter,
        ))
    });
    out
}

pub(super) async fn meters(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let scope = api.status_scope(&headers, params)?;
    let (filters, since, until) = (
        scope.filters.clone(),
        scope.now_ms - METER_WINDOW_DAYS * 86_400_000,
        scope.now_ms + 86_400_000,
    );
    let latest = api
        .run(move |r| async move { r.latest_readings(since, until, &filters).await })
        .await?;
    let accounts = api.accounts_in(&scope.filters);
    let meters = meter_statuses(&accounts, &latest, scope.offline_after_ms, scope.now_ms);
    Ok(axum::Json(json!({
        "as_of": rfc3339(scope.now_ms),
        "offline_after_s": scope.offline_after_ms / 1_000,
        "window_days": METER_WINDOW_DAYS,
        "meters": meters,
    }))
    .into_response())
}

/// One alert. Messages are complete sentences in both languages; the fields say the same for
/// programs.
#[derive(Debug, Clone, Serialize)]
struct Alert {
    /// `meter_offline`, `data_gap`, `anomaly`, `over_constraint` or `benchmark_unverified`.
    kind: &'static str,
    /// `critical`, `warning` or `info`.
    severity: &'static str,
    account: String,
    name_zh: String,
    name_en: String,
    meter: Option<String>,
    /// When it happened (UTC, RFC 3339): the last reading, the gap's end, the day's start.
    ts: String,
    message_zh: String,
    message_en: String,
    details: serde_json::Value,
}

fn offline_alerts(accounts: &[Account], meters: &[MeterStatus], now_ms: i64) -> Vec<Alert> {
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

fn display_en(a: &Account) -> &str {
    if a.name_en.is_empty() {
        &a.name_zh
    } else {
        &a.name_en
    }
}

fn gap_alerts(accounts: &[Account], gaps: &[DataGap]) -> Vec<Alert> {
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
fn anomaly_alerts(
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
                    "{} {day} {}用量 {x:.1} {unit}，比基线 {mean:.1} {unit}（前 {BASELINE_DAYS} 天中 {} 个{type_zh}的均值）{dir_zh} {:.0}%",
                    a.name_zh,
                    cat.name_zh(),
                    same.len(),
                    (ratio - 1.0).abs() * 100.0
                ),
                message_en: format!(
                    "{}: {} use on {day} was {x:.1} {unit}, {:.0}% {dir_en} the baseline {mean:.1} {unit} (mean of {} {type_en} in the {BASELINE_DAYS} days before)",
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
                }),
            });
        }
    }
    out
}

/// Each account's last 12 complete months against the benchmark sets for its building class.
/// An alert says "over the constraint value" only when the comparison rests on verified
/// numbers; otherwise it says no verified value exists, with the reasons.
fn constraint_alerts(
    accounts: &[Account],
    monthly: &[CategoryTotal],
    months: (NaiveDate, NaiveDate),
    api: &Api,
) -> Vec<Alert> {
    let Ok(sets) = BenchmarkSets::builtin() else {
        return vec![];
    };
    let mut out = Vec::new();
    for a in accounts {
        let mut consumption: BTreeMap<Category, f64> = BTreeMap::new();
        for r in monthly.iter().filter(|r| r.account == a.code) {
            *consumption.entry(r.category).or_default() += r.consumption;
        }
        let class = a.building_class().letter();
        // GB/T 51161 only: provincial quota sets apply in their own province, and the savings
        // view shows every set that applies.
        for set in sets.sets().filter(|s| s.id.starts_with("gbt51161")) {
            let types: Vec<_> = set
                .types
                .iter()
                .filter(|t| t.building_class == class)
                .collect();
            // Government offices (国家机关) take the government type where a set tells them
            // apart; an office class (A/B) picks among the rest.
            let government = a.institution_type == query::accounts::InstitutionType::StateOrgan;
            let office = a.office_class.map(|c| match c {
                query::accounts::OfficeClass::A => "A",
                query::accounts::OfficeClass::B => "B",
            });
            let Some(ty) = types
                .iter()
                .filter(|t| office.is_none_or(|o| t.id.starts_with(o)))
                .find(|t| t.id.contains("government") == government)
                .or_else(|| types.first())
            else {
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
            let Ok(c) = compare(
                set,
                &ty.id,
                &input,
                &api.reports.factors,
                &FactorSelection::default(),
            ) else {
                continue;
            };
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
                (v, _) if v.is_verified() => continue,
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
                query::savings::benchmark::Verification::Unverified { reasons } => reasons.clone(),
                _ => vec![],
            };
            out.push(Alert {
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
            });
        }
    }
    out
}

pub(super) async fn alerts(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let scope = api.status_scope(&headers, params)?;
    let today = scope.today;
    let first_of_month = Granularity::Month.start(today);
    let year_ago = first_of_month
        .checked_sub_months(chrono::Months::new(12))
        .unwrap_or(first_of_month);
    let (filters, now) = (scope.filters.clone(), scope.now_ms);
    let (latest, gaps, daily, monthly) = api
        .run(move |r| async move {
            let latest = r
                .latest_readings(
                    now - METER_WINDOW_DAYS * 86_400_000,
                    now + 86_400_000,
                    &filters,
                )
                .await?;
            let gaps = r
                .data_gaps(
                    local_midnight_ms(today - Duration::days(ALERT_DAYS)),
                    now,
                    &filters,
                )
                .await?;
            let daily = r
                .category_totals(
                    today - Duration::days(ALERT_DAYS + BASELINE_DAYS),
                    today,
                    Granularity::Day,
                    &filters,
                )
                .await?;
            let monthly = r
                .category_totals(year_ago, first_of_month, Granularity::Month, &filters)
                .await?;
            Ok((latest, gaps, daily, monthly))
        })
        .await?;
    let accounts = api.accounts_in(&scope.filters);
    let meters = meter_statuses(&accounts, &latest, scope.offline_after_ms, scope.now_ms);
    let calendar =
        Calendar::builtin().map_err(|e| api.internal(format!("holiday calendar: {e}")))?;
    let mut all = Vec::new();
    let mut omitted = BTreeMap::new();
    for (kind, mut list) in [
        (
            "over_constraint",
            constraint_alerts(&accounts, &monthly, (year_ago, first_of_month), &api),
        ),
        (
            "meter_offline",
            offline_alerts(&accounts, &meters, scope.now_ms),
        ),
        ("data_gap", gap_alerts(&accounts, &gaps)),
        (
            "anomaly",
            anomaly_alerts(&accounts, &daily, today, &calendar),
        ),
    ] {
        // Newest first within a kind.
        list.sort_by(|a, b| b.ts.cmp(&a.ts));
        if list.len() > MAX_ALERTS_PER_KIND {
            omitted.insert(kind, list.len() - MAX_ALERTS_PER_KIND);
            list.truncate(MAX_ALERTS_PER_KIND);
        }
        all.extend(list);
    }
    let rank = |s: &str| match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    all.sort_by_key(|a| rank(a.severity));
    Ok(axum::Json(json!({
        "as_of": rfc3339(scope.now_ms),
        "offline_after_s": scope.offline_after_ms / 1_000,
        "days": ALERT_DAYS,
        "alerts": all,
        "omitted": omitted,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reading_model::{AccountCode, EnergyCode, MeterId, Quality};

    fn account(extra: &str) -> Account {
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

    fn power(meter: &str, item: &str, ts: i64, kw: f64) -> LatestReading {
        LatestReading {
            account: AccountCode::parse("110108D002").unwrap(),
            meter: MeterId::parse(meter).unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse(item).unwrap(),
            quantity: Quantity::PowerActive,
            unit: "kW".into(),
            ts,
            value: kw,
            quality: Quality::Good,
        }
    }

    #[test]
    fn power_is_the_main_meters_own_total_or_the_sum_of_its_phases() {
        let latest = [
            power("main", "01000", 1_000, 12.0),
            power("main:L1", "01000", 1_000, 4.0),
            power("main:L2", "01000", 1_000, 4.0),
            power("main:L3", "01000", 1_000, 4.0),
            power("lighting", "01A10", 1_000, 3.0),
            power("old:L1", "01000", 1_000, 1.5),
            power("old:L2", "01000", 1_000, 2.5),
            power("stale", "01000", 10, 99.0),
        ];
        let refs: Vec<&LatestReading> = latest.iter().collect();
        let a = account("");
        // Meters on the total item are the account's; "lighting" is their sub-meter.
        let meters = power_meters(&a, &refs);
        assert_eq!(meters, ["main", "old", "stale"]);
        // main's own total (not its phases too), old's phases, stale left out.
        assert_eq!(current_power(&meters, &refs, 100), Some((16.0, 1_000)));
        // Configured relations name the main meter.
        let a = account(
            "[[main_meter]]\nmeter = \"main\"\ncategory = \"01\"\nsub_meters = [\"lighting\"]\n",
        );
        assert_eq!(power_meters(&a, &refs), ["main"]);
        assert_eq!(current_power(&power_meters(&a, &refs), &refs, 2_000), None);
    }
}
