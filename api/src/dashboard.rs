//! What the dashboard (驾驶舱) reads besides the reports: `GET /api/v1/live` (today's tiles:
//! current power, energy, kgce, CO2), `GET /api/v1/meters` (each meter's status and last
//! reading) and `GET /api/v1/alerts` (meter offline, data gap, anomaly against the day-type
//! baseline, and the GB/T 51161 constraint value — judged only where a verified value exists).
//!
//! Same keys, scopes and errors as the reports: admin and officer keys (officers see their scope
//! only); the statistics role is refused, it reads consumption and carbon. Today's figures come
//! from the consumption report itself, so a tile always equals `/api/v1/consumption` for the day.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate, Utc};
use query::Account;
use query::alert::{self, ALERT_DAYS, BASELINE_DAYS};
use query::live::{DayTotals, current_power, power_meters, round6, totals_of};
use query::meters::meter_statuses;
use query::report::scope::{Filter, matches_all};
use query::report::status::LatestReading;
use reading_model::time::{Granularity, local_date, local_midnight_ms, rfc3339_ms as rfc3339};
use serde::Deserialize;
use serde_json::json;

use super::access::Action;
use super::{Api, Refusal};

/// Seconds without a reading after which a meter is offline, unless the request says.
const DEFAULT_OFFLINE_AFTER_S: u64 = 900;
const MAX_OFFLINE_AFTER_S: u64 = 30 * 86_400;
/// How far back meters are looked for: one silent longer than this is no longer listed.
const METER_WINDOW_DAYS: i64 = 31;

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
            today: local_date(now_ms).unwrap_or_else(|| Utc::now().date_naive()),
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
    // The savings report's calendar and benchmark sets: the deployment's files included.
    let reference = api
        .reports
        .reference()
        .map_err(|e| api.internal(format!("reference data: {e}")))?;
    let calendar = &reference.calendar;
    let (all, omitted) = alert::rank(vec![
        (
            "over_constraint",
            alert::constraint_alerts(
                &accounts,
                &monthly,
                (year_ago, first_of_month),
                &api.reports.factors,
                &reference.benchmarks,
            ),
        ),
        (
            "meter_offline",
            alert::offline_alerts(&accounts, &meters, scope.now_ms),
        ),
        ("data_gap", alert::gap_alerts(&accounts, &gaps)),
        (
            "anomaly",
            alert::anomaly_alerts(&accounts, &daily, today, calendar),
        ),
        (
            "calendar_missing",
            alert::calendar_alerts(&accounts, &daily, today, calendar),
        ),
    ]);
    Ok(axum::Json(json!({
        "as_of": rfc3339(scope.now_ms),
        "offline_after_s": scope.offline_after_ms / 1_000,
        "days": ALERT_DAYS,
        "alerts": all,
        "omitted": omitted,
    }))
    .into_response())
}
