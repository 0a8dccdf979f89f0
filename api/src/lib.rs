//! jieneng's HTTP read API for people and the statistics system: `GET /api/v1/consumption` (the item tree
//! with the unmetered remainder, 同比/环比 and indicators), `GET /api/v1/carbon` (energy, kgce and
//! kgCO2e with the factors used, paged), `GET /api/v1/savings` (ranked savings opportunities
//! with the baseline's fit and the benchmarks used), `GET /api/v1/accounts`, the dashboard's
//! views (`GET /api/v1/live`, `/meters`, `/alerts`, in [`dashboard`]), and
//! `GET /api/v1/openapi.json` which documents every route (a test keeps it complete).
//!
//! Callers authenticate with an API key (`Authorization: Bearer <key>`, [`access`]); gateway
//! batch tokens are not API keys and API keys cannot post batches. Answers are JSON, or CSV with
//! `?format=csv` or `Accept: text/csv`. Errors are JSON `{"error", "reason"}`: 400 `bad_request`,
//! 401 `unauthenticated`, 403 `forbidden`, 406 `not_acceptable`, 500 `internal`; each is counted
//! in `/metrics` (`jieneng_rejects_total{reason="api_…"}`).
//!
//! Handlers only parse, authorize, call `query` and serialize: the figures and the alert rules
//! are `query`'s. The binary (`jieneng serve`) merges [`router`] and [`assets::router`] (the
//! dashboard page) with ingest's batch API on one listener; requests enter here as HTTP and
//! leave as JSON or CSV.

pub mod access;
pub mod assets;
mod dashboard;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use query::Reports;
use query::report::carbon::CarbonRequest;
use query::report::consumption::ConsumptionRequest;
use query::report::csv;
use query::report::savings::{SavingsRequest, TemperatureSource};
use query::report::scope::{Filter, Region};
use reading_model::time::Granularity;
use reading_model::{AccountCode, Category};
use serde::Deserialize;
use serde_json::json;

use http_contract::{JsonError, Rejects, bearer, token_hash};
use query::{Account, LiveReadings};

use self::access::{Action, ApiKeyConfig, Caller, Keys};
use http_contract::audit::{AuditDetail, Who};
use http_contract::credential::{Change, Presented, now_ms};

/// The OpenAPI 3.1 description of the whole HTTP API (the batch API included), hand-written.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest page of carbon rows.
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 1_000;
/// Longest report range, days: a bound on the work one request can ask for.
const MAX_DAYS: i64 = 3_700;

/// The read API's part of the server config: who the accounts are, the API keys, the savings
/// analysis' inputs, and where the data is.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub data_dir: PathBuf,
    /// Who each 分户 account is and how its meters nest (`query::accounts`).
    pub account: Vec<Account>,
    /// API keys of people and systems ([`access`]), apart from gateway tokens.
    pub api_key: Vec<ApiKeyConfig>,
    pub savings: SavingsSettings,
    /// The deployment's holiday, benchmark, school-term and heating-season files.
    pub reference: query::savings::ReferenceFiles,
    /// The deployment's factor files (newer MEE/NBS years, provincial factors), applied over
    /// the built-in tables in order; every figure is priced with the result.
    pub factor_files: Vec<PathBuf>,
}

/// `[savings]`: inputs of the savings analysis.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavingsSettings {
    /// Outdoor temperature for accounts without temperature readings: a CSV of
    /// `date,temperature_c` daily means (or `time,temperature_c` samples), relative to the
    /// config file. Without it, and without readings, the baseline is day-type-only.
    pub temperature_csv: Option<PathBuf>,
}

/// A refused request: the JSON error every jieneng API answers with.
pub type Refusal = JsonError;

/// State of the read API.
#[derive(Debug)]
pub struct Api {
    pub reports: Reports,
    pub keys: Keys,
    /// Refusals by reason, shared with the batch API so that `/metrics` shows both.
    rejects: Arc<Rejects>,
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/consumption", get(consumption))
        .route("/api/v1/carbon", get(carbon))
        .route("/api/v1/savings", get(savings))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/live", get(dashboard::live))
        .route("/api/v1/meters", get(dashboard::meters))
        .route("/api/v1/alerts", get(dashboard::alerts))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(api)
}

impl Api {
    /// The read API over `config`'s data directory with the built-in factor tables and the
    /// deployment's factor files. `live` is
    /// the rows acknowledged but not yet in Parquet (ingest's store), so live views never wait
    /// for a flush; refusals are counted in `rejects`.
    pub fn new(
        config: &ApiConfig,
        live: Option<Arc<dyn LiveReadings>>,
        rejects: Arc<Rejects>,
    ) -> anyhow::Result<Self> {
        let mut query = query::Query::new(&config.data_dir);
        if let Some(live) = live {
            query = query.with_live(live);
        }
        let factors = query::accounts::load_factor_tables(&config.factor_files)?;
        let mut reports = Reports::new(query, config.account.clone(), factors);
        if let Some(path) = &config.savings.temperature_csv {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("savings.temperature_csv {}: {e}", path.display()))?;
            reports = reports
                .with_temperature_csv(&text)
                .map_err(|e| anyhow::anyhow!("savings.temperature_csv {}: {e}", path.display()))?;
        }
        let reference = query::savings::ReferenceData::load(&config.reference)?;
        reports = reports.with_reference(reference);
        Ok(Self {
            reports,
            keys: Keys::new(&config.api_key),
            rejects,
        })
    }

    /// The holder of the API key whose sha256 is `key_sha256`, for the audit trail.
    pub fn who(&self, key_sha256: &str) -> Option<Who> {
        match self.keys.present(key_sha256, now_ms()) {
            Presented::Valid(c) => Some(Who::ApiKey {
                name: c.name,
                role: c.role.name().to_owned(),
                scope: c.scope.to_string(),
            }),
            _ => None,
        }
    }

    /// Puts `keys` in force in place of the running ones, for a reload of a server file that
    /// has been validated.
    pub fn reload_keys(&self, keys: &[ApiKeyConfig]) -> Change {
        self.keys.replace(keys)
    }

    fn refuse(&self, status: StatusCode, reason: &'static str, message: String) -> Refusal {
        let counter = match reason {
            "unauthenticated" => "api_unauthenticated",
            "expired" => "api_expired",
            "forbidden" => "api_forbidden",
            "bad_request" => "api_bad_request",
            "not_acceptable" => "api_not_acceptable",
            _ => "api_internal",
        };
        self.rejects.count(counter);
        tracing::debug!(reason, %message, "API request refused");
        JsonError::new(status, reason, message)
    }

    fn bad(&self, message: String) -> Refusal {
        self.refuse(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(&self, message: String) -> Refusal {
        tracing::error!(%message, "API request failed");
        self.refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn authorize(&self, headers: &HeaderMap, action: Action) -> Result<Caller, Refusal> {
        let key = bearer(headers).ok_or_else(|| {
            self.refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing Authorization: Bearer <API key>".into(),
            )
        })?;
        let caller = match self.keys.present(&token_hash(key), now_ms()) {
            Presented::Valid(caller) => caller,
            Presented::Expired { expired_ms } => {
                return Err(self.refuse(
                    StatusCode::UNAUTHORIZED,
                    "expired",
                    format!(
                        "API key expired at {}",
                        reading_model::time::rfc3339_ms(expired_ms)
                    ),
                ));
            }
            Presented::Unknown => {
                return Err(self.refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unknown API key (gateway tokens are not API keys)".into(),
                ));
            }
        };
        if !caller.may(action) {
            return Err(self.refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {} may not {action:?}", caller.role.name()),
            ));
        }
        Ok(caller)
    }

    /// The request's account and region filters, checked against and narrowed to the scope.
    fn filters(
        &self,
        caller: &Caller,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Vec<Filter>, Refusal> {
        let mut filters = Vec::new();
        if let Some(list) = account {
            let mut set = BTreeSet::new();
            for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                let code = AccountCode::parse(a).map_err(|e| self.bad(format!("account: {e}")))?;
                if !caller.scope.contains(&code) {
                    return Err(self.refuse(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "account {code} is outside the scope of key {:?}",
                            caller.name
                        ),
                    ));
                }
                set.insert(code);
            }
            filters.push(Filter::Accounts(set));
        }
        if let Some(r) = region {
            filters.push(Filter::Region(
                Region::parse(r).map_err(|e| self.bad(e.to_string()))?,
            ));
        }
        filters.extend(caller.scope.filter());
        Ok(filters)
    }

    fn dates(&self, from: &str, to: &str) -> Result<(NaiveDate, NaiveDate), Refusal> {
        let (f, t) = (self.date("from", from)?, self.date("to", to)?);
        if f >= t || (t - f).num_days() > MAX_DAYS {
            return Err(self.bad(format!(
                "from={f} to={t}: to must be after from and at most {MAX_DAYS} days later"
            )));
        }
        Ok((f, t))
    }

    /// A date parameter. Dates are bounded to what the engine's timestamps (nanoseconds in
    /// arrow kernels) and any plausible meter can hold: year 7 is a typo, not a 500.
    fn date(&self, key: &str, value: &str) -> Result<NaiveDate, Refusal> {
        let d = NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map_err(|e| self.bad(format!("{key}={value:?}: expected YYYY-MM-DD ({e})")))?;
        if !(1970..=2199).contains(&chrono::Datelike::year(&d)) {
            return Err(self.bad(format!("{key}={d}: dates from 1970 to 2199 only")));
        }
        Ok(d)
    }

    fn granularity(&self, g: Option<&str>) -> Result<Granularity, Refusal> {
        g.map_or(Ok(Granularity::Month), |g| {
            Granularity::parse(g)
                .ok_or_else(|| self.bad(format!("granularity={g:?}: expected day, month or year")))
        })
    }

    fn category(&self, c: Option<&str>) -> Result<Option<Category>, Refusal> {
        c.map(|c| Category::parse(c).map_err(|e| self.bad(e.to_string())))
            .transpose()
    }

    /// CSV when `format=csv` or `Accept` prefers text/csv; JSON otherwise.
    fn wants_csv(&self, headers: &HeaderMap, format: Option<&str>) -> Result<bool, Refusal> {
        match format {
            Some("csv") => return Ok(true),
            Some("json") => return Ok(false),
            Some(f) => return Err(self.bad(format!("format={f:?}: expected json or csv"))),
            None => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*/*");
        let types: Vec<&str> = accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .collect();
        if types.contains(&"text/csv") {
            Ok(true)
        } else if types
            .iter()
            .any(|t| matches!(*t, "application/json" | "application/*" | "*/*"))
        {
            Ok(false)
        } else {
            Err(self.refuse(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("Accept: {accept}: this endpoint answers application/json or text/csv"),
            ))
        }
    }

    fn params<T>(&self, p: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
        p.map(|Query(t)| t)
            .map_err(|e| self.bad(format!("query string: {}", e.body_text())))
    }

    /// Runs a report off the async workers: DataFusion's planning and decoding are CPU work.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, Refusal>
    where
        T: Send + 'static,
        F: FnOnce(Reports) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, query::QueryError>>,
    {
        let reports = self.reports.clone();
        let handle = tokio::runtime::Handle::current();
        let out = tokio::task::spawn_blocking(move || handle.block_on(f(reports)))
            .await
            .map_err(|e| {
                self.refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("report task failed: {e}"),
                )
            })?;
        out.map_err(|e| match e {
            query::QueryError::SavingsRequest(_) => self.bad(e.to_string()),
            e => {
                tracing::error!(error = %e, "report failed");
                self.refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        })
    }
}

/// The answer, with the rows of its main table for the audit trail.
fn counted(mut response: Response, rows: usize) -> Response {
    response.extensions_mut().insert(AuditDetail::rows(rows));
    response
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumptionParams {
    from: String,
    to: String,
    granularity: Option<String>,
    account: Option<String>,
    region: Option<String>,
    category: Option<String>,
    format: Option<String>,
    /// For CSV: `items` (default) or `indicators`.
    table: Option<String>,
}

async fn consumption(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<ConsumptionParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let caller = api.authorize(&headers, Action::ReadConsumption)?;
    let p = api.params(params)?;
    let (from, to) = api.dates(&p.from, &p.to)?;
    let req = ConsumptionRequest {
        from,
        to,
        granularity: api.granularity(p.granularity.as_deref())?,
        filters: api.filters(&caller, p.account.as_deref(), p.region.as_deref())?,
        category: api.category(p.category.as_deref())?,
    };
    let as_csv = api.wants_csv(&headers, p.format.as_deref())?;
    let table = p.table.as_deref().unwrap_or("items");
    if !matches!(table, "items" | "indicators") {
        return Err(api.bad(format!("table={table:?}: expected items or indicators")));
    }
    // Tomorrow in Beijing: a period reaching past it is in progress, compared like with like.
    let as_of = reading_model::time::local_date(chrono::Utc::now().timestamp_millis())
        .and_then(|d| d.succ_opt());
    let report = api
        .run(move |r| async move { r.consumption_report_as_of(&req, as_of).await })
        .await?;
    let rows = report.rows.len();
    let response = if as_csv {
        csv_response(match table {
            "indicators" => csv::indicators(&report.indicators),
            _ => csv::items(&report.rows),
        })
    } else {
        axum::Json(report).into_response()
    };
    Ok(counted(response, rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarbonParams {
    from: String,
    to: String,
    granularity: Option<String>,
    account: Option<String>,
    region: Option<String>,
    category: Option<String>,
    /// `account` (default), `county`, `city` or `province`.
    group: Option<String>,
    format: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn carbon(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<CarbonParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let caller = api.authorize(&headers, Action::ReadCarbon)?;
    let p = api.params(params)?;
    let (from, to) = api.dates(&p.from, &p.to)?;
    let group_digits = match p.group.as_deref() {
        None | Some("account") => None,
        Some("county") => Some(6),
        Some("city") => Some(4),
        Some("province") => Some(2),
        Some(g) => {
            return Err(api.bad(format!(
                "group={g:?}: expected account, county, city or province"
            )));
        }
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(api.bad(format!("limit={limit}: expected 1..={MAX_LIMIT}")));
    }
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            hex::decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| api.bad(format!("cursor={c:?}: not a cursor this API gave out")))
        })
        .transpose()?;
    let granularity = api.granularity(p.granularity.as_deref())?;
    let req = CarbonRequest {
        from,
        to,
        granularity,
        filters: api.filters(&caller, p.account.as_deref(), p.region.as_deref())?,
        category: api.category(p.category.as_deref())?,
        group_digits,
    };
    let as_csv = api.wants_csv(&headers, p.format.as_deref())?;
    let rows = api
        .run(move |r| async move { r.carbon(&req).await })
        .await?;
    let total = rows.len();
    // Rows come sorted by key; a cursor is the last key of the page before, so pages stay
    // consistent while new periods are added behind them.
    let start = after
        .as_deref()
        .map_or(0, |k| rows.partition_point(|r| r.key().as_str() <= k));
    let page: Vec<_> = rows.into_iter().skip(start).take(limit).collect();
    let next = (start + page.len() < total)
        .then(|| page.last().map(|r| hex::encode(r.key())))
        .flatten();
    if as_csv {
        let mut resp = csv_response(csv::carbon(&page));
        if let Some(n) = next.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            resp.headers_mut().insert("x-next-cursor", n);
        }
        Ok(counted(resp, page.len()))
    } else {
        let rows = page.len();
        Ok(counted(
            axum::Json(json!({
                "from": from,
                "to": to,
                "granularity": granularity.name(),
                "total": total,
                "rows": page,
                "next_cursor": next,
            }))
            .into_response(),
            rows,
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavingsParams {
    /// Reporting period, local dates `[from, to)`; default the 365 days before today.
    from: Option<String>,
    to: Option<String>,
    /// Baseline period; default the 365 days before `from`.
    baseline_from: Option<String>,
    baseline_to: Option<String>,
    account: Option<String>,
    region: Option<String>,
    /// `auto` (default), `readings`, `csv` or `none`.
    temperature: Option<String>,
    format: Option<String>,
}

async fn savings(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Query<SavingsParams>, QueryRejection>,
) -> Result<Response, Refusal> {
    let caller = api.authorize(&headers, Action::ReadSavings)?;
    let p = api.params(params)?;
    let opt = |k: &str, v: &Option<String>| v.as_deref().map(|v| api.date(k, v)).transpose();
    let today =
        reading_model::time::local_date(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let to = opt("to", &p.to)?.unwrap_or(today);
    let from = opt("from", &p.from)?.unwrap_or(to - chrono::Duration::days(365));
    let baseline_to = opt("baseline_to", &p.baseline_to)?.unwrap_or(from);
    let baseline_from = opt("baseline_from", &p.baseline_from)?
        .unwrap_or(baseline_to - chrono::Duration::days(365));
    for (what, f, t) in [
        ("from/to", from, to),
        ("baseline_from/baseline_to", baseline_from, baseline_to),
    ] {
        if f >= t || (t - f).num_days() > MAX_DAYS {
            return Err(api.bad(format!(
                "{what} = {f}/{t}: the end must be after the start and at most {MAX_DAYS} days later"
            )));
        }
    }
    if baseline_to > from {
        return Err(api.bad(format!(
            "baseline_to={baseline_to} is after from={from}: the baseline must end before the \
             reporting period starts"
        )));
    }
    let temperature = match p.temperature.as_deref() {
        None => TemperatureSource::Auto,
        Some(t) => TemperatureSource::parse(t).ok_or_else(|| {
            api.bad(format!(
                "temperature={t:?}: expected auto, readings, csv or none"
            ))
        })?,
    };
    if temperature == TemperatureSource::Csv && api.reports.temperature_csv.is_none() {
        return Err(api.bad(
            "temperature=csv: the server has no [savings] temperature_csv configured".into(),
        ));
    }
    let req = SavingsRequest {
        baseline_from,
        baseline_to,
        from,
        to,
        filters: api.filters(&caller, p.account.as_deref(), p.region.as_deref())?,
        temperature,
    };
    let as_csv = api.wants_csv(&headers, p.format.as_deref())?;
    let report = api
        .run(move |r| async move { r.savings(&req).await })
        .await?;
    let rows = report.opportunities.len();
    let response = if as_csv {
        csv_response(csv::savings(&report.opportunities))
    } else {
        axum::Json(report).into_response()
    };
    Ok(counted(response, rows))
}

async fn accounts(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, Refusal> {
    let caller = api.authorize(&headers, Action::ReadAccounts)?;
    let list: Vec<_> = api
        .reports
        .accounts()
        .filter(|a| caller.scope.contains(&a.code))
        .map(|a| {
            json!({
                "code": a.code,
                "name_zh": a.name_zh,
                "name_en": a.name_en,
                "institution_type": a.institution_type,
                "institution": a.institution,
                "building_class": a.building_class().letter().to_string(),
                "building_class_zh": a.building_class().name_zh(),
                "building_class_en": a.building_class().name_en(),
                "division": a.code.division(),
                "floor_area_m2": a.floor_area_m2,
                "headcount": a.headcount,
                "climate_zone": a.climate_zone,
                "office_class": a.office_class,
                "main_meter": a.main_meter,
            })
        })
        .collect();
    let rows = list.len();
    Ok(counted(
        axum::Json(json!({ "accounts": list })).into_response(),
        rows,
    ))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
