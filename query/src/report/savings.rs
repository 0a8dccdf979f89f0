//! The savings report: the analyses of [`crate::savings`] run over the stored data of every
//! account in scope, and their opportunities ranked together.
//!
//! Per account, from the category totals the consumption report shows (main meters, or the sum
//! of items where there is none — the same [`category_total`]):
//! - the electricity baseline fitted on the baseline period's days and the reporting period's
//!   usage above it ([`opportunity::baseline_drift`]); with outdoor temperature (the account's
//!   `outdoor_temperature` or `temperature` readings, or the server's temperature CSV) it is the
//!   weather-normalised model, without it a day-type-only model, and the answer says which;
//! - off-hours load from the reporting period's hourly electricity totals, when the meters read
//!   at least hourly ([`opportunity::off_hours`]);
//! - each benchmark set with a building type for the account, on the reporting period's energy
//!   scaled to a year ([`opportunity::benchmark_gap`]), with the set's `verified` flag;
//! - the gap to the median kgce/(m²·a) of the accounts in scope of the same institution type
//!   ([`opportunity::peer_median`]). Peers are only accounts the caller may see, so a ranking
//!   never reveals another scope's data.
//!
//! An analysis that cannot run for an account (too few days, no floor area …) leaves a note
//! saying why instead of failing the report.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::Array;
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use reading_model::{AccountCode, Category, Quantity};
use serde::Serialize;

use super::consumption::category_total;
use super::period::local_ts_sql;
use super::scope::{Filter, sql_all};
use super::source::{MeterSum, Prices, Relations, Reports};
use crate::report::{QueryError, column_floats, column_ints, column_strings, rfc3339};
use crate::savings::baseline::{AvoidedEnergy, Baseline, BaselineConfig, DayGroup, ModelKind};
use crate::savings::benchmark::{
    self, AccountEnergy, BenchmarkSet, BenchmarkSets, Comparison, Verification,
};
use crate::savings::offhours::{self, HourlyLoad, OffHoursAnalysis, OffHoursConfig};
use crate::savings::opportunity::{self, Confidence, Opportunity, OpportunityKind};
use crate::savings::ranking::{PeerIntensity, Ranked, rank_by_intensity};
use crate::savings::weather::{self, DailyTemperature};
use crate::savings::{Calendar, DailyUsage};
use reading_model::time::local_midnight_ms;
use storage::{READINGS, partition_date};

/// Where the baseline's outdoor temperature comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureSource {
    /// The account's temperature readings if it has any, else the configured CSV, else none.
    #[default]
    Auto,
    /// Only the account's `outdoor_temperature` (preferred) or `temperature` readings.
    Readings,
    /// Only the server's temperature CSV.
    Csv,
    /// No temperature: the day-type-only model.
    None,
}

impl TemperatureSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "readings" => Some(Self::Readings),
            "csv" => Some(Self::Csv),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Local dates, each period `[from, to)`.
#[derive(Debug, Clone)]
pub struct SavingsRequest {
    pub baseline_from: NaiveDate,
    pub baseline_to: NaiveDate,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub filters: Vec<Filter>,
    pub temperature: TemperatureSource,
}

impl SavingsRequest {
    /// The default baseline: the 365 days before the reporting period.
    pub fn default_baseline(from: NaiveDate) -> (NaiveDate, NaiveDate) {
        (from - chrono::Duration::days(365), from)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactorRow {
    pub category: String,
    pub coal_factor: String,
    pub kgce_per_unit: f64,
    pub carbon_factor: String,
    pub kgco2e_per_unit: f64,
}

/// One ranked opportunity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpportunityRow {
    /// 1 = the largest yearly saving in kgce.
    pub rank: usize,
    pub account: String,
    pub name_zh: String,
    /// `off_hours`, `baseline_drift`, `benchmark_gap` or `peer_median`.
    pub kind: &'static str,
    pub kind_zh: &'static str,
    pub kind_en: &'static str,
    /// The data year whose factors were used.
    pub year: i32,
    /// Energy saved a year by category code (`01` electricity …), canonical units.
    pub energy_per_year: BTreeMap<String, f64>,
    pub kwh_per_year: f64,
    pub kgce_per_year: f64,
    pub kgco2e_per_year: f64,
    pub factors: Vec<FactorRow>,
    /// `low`, `medium` or `high`: how far the figure can be trusted.
    pub confidence: &'static str,
    /// False when any number behind it (benchmark values, factors, calendar) is unverified.
    pub verified: bool,
    pub unverified_reasons: Vec<String>,
    pub explanation_zh: String,
    pub explanation_en: String,
}

/// Where the baseline's temperature came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemperatureUsed {
    /// `readings:outdoor_temperature`, `readings:temperature`, `csv` or `none`.
    pub source: String,
    /// Baseline and reporting days left out for want of a daily mean temperature.
    pub days_without_temperature: usize,
    pub note_zh: String,
    pub note_en: String,
}

/// One day group's model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupModelRow {
    /// `working`, `non_working`, `vacation` (a school's) or `all`.
    pub group: &'static str,
    /// `intercept_only`, `heating`, `cooling` or `heating_cooling`.
    pub model: &'static str,
    pub intercept_kwh_per_day: f64,
    pub heating_balance_point_c: Option<f64>,
    pub heating_kwh_per_degree_day: Option<f64>,
    /// The heating degree days count only inside the region's heating season.
    pub heating_season_only: Option<bool>,
    pub cooling_balance_point_c: Option<f64>,
    pub cooling_kwh_per_degree_day: Option<f64>,
    pub adj_r_squared: f64,
    pub days: usize,
}

/// The electricity baseline and its fit against ASHRAE Guideline 14.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineFit {
    /// `weather` (change-point model on temperature by day type) or `day_type_only`.
    pub model: &'static str,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub days: usize,
    /// Daily CV(RMSE), a fraction (0.12 = 12 %).
    pub cv_rmse: f64,
    /// Daily NMBE, a fraction (0 in-sample by construction of least squares).
    pub nmbe: f64,
    pub monthly_cv_rmse: Option<f64>,
    pub monthly_nmbe: Option<f64>,
    /// Daily residuals within the hourly limits (30 % / ±10 %) and monthly sums within the
    /// monthly limits (15 % / ±5 %).
    pub passes_ashrae14: bool,
    /// At least 365 days spanned with ≥ 90 % of them present (CalTRACK data sufficiency).
    pub caltrack_sufficient: bool,
    pub models: Vec<GroupModelRow>,
    /// The reporting period against the baseline.
    pub reporting_days: usize,
    pub reporting_actual_kwh: f64,
    pub reporting_baseline_kwh: f64,
    /// Baseline minus actual: positive means less was used than the baseline predicts.
    pub reporting_avoided_kwh: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffHoursRow {
    pub hours: usize,
    pub days: usize,
    pub base_load_kw: f64,
    pub occupied_mean_kw: f64,
    pub night_mean_kw: f64,
    pub non_working_mean_kw: f64,
    pub excess_kwh_per_year: f64,
    pub off_hours_share: f64,
}

/// The account against one benchmark set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchmarkRow {
    pub set_id: String,
    pub name_zh: String,
    pub name_en: String,
    pub type_id: String,
    pub unit: &'static str,
    pub measured: f64,
    pub corrected: f64,
    pub constraint: Option<f64>,
    pub baseline: Option<f64>,
    pub guide: Option<f64>,
    pub rating_zh: &'static str,
    pub rating_en: &'static str,
    /// The set's own flag from the data file.
    pub set_verified: bool,
    /// False when the set, its correction or a factor used is unverified.
    pub verified: bool,
    pub unverified_reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRow {
    pub institution_type: &'static str,
    pub kgce_per_m2_year: f64,
    /// 1 = the lowest intensity.
    pub rank: usize,
    pub of: usize,
    pub median_kgce_per_m2_year: f64,
}

/// An analysis that did not run for an account, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    /// `baseline`, `off_hours`, `benchmark` or `peer`.
    pub analysis: &'static str,
    pub message: String,
}

/// What was analysed for one account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountSavings {
    pub account: String,
    pub name_zh: String,
    pub temperature: TemperatureUsed,
    pub baseline: Option<BaselineFit>,
    pub off_hours: Option<OffHoursRow>,
    /// Days of the reporting period with data, from which yearly figures are scaled.
    pub reporting_days_with_data: usize,
    pub benchmarks: Vec<BenchmarkRow>,
    pub peer: Option<PeerRow>,
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavingsReport {
    pub baseline_from: NaiveDate,
    /// The day after the baseline's last.
    pub baseline_to: NaiveDate,
    pub from: NaiveDate,
    /// The day after the reporting period's last.
    pub to: NaiveDate,
    pub opportunities: Vec<OpportunityRow>,
    pub accounts: Vec<AccountSavings>,
}

/// Rounds away the last bits of summation order (as the consumption report does), and −0.
fn round6(x: f64) -> f64 {
    super::consumption::round6(x) + 0.0
}

/// Daily or hourly category totals of one account: category → bucket → (consumption, kgce, kgCO2e).
type Totals = BTreeMap<Category, BTreeMap<i64, (f64, f64, f64)>>;

use reading_model::time::{
    local_date_of_shifted_secs as local_date, local_datetime_of_shifted_secs as local_time,
};

fn kind_name(k: OpportunityKind) -> &'static str {
    match k {
        OpportunityKind::OffHours => "off_hours",
        OpportunityKind::BaselineDrift => "baseline_drift",
        OpportunityKind::BenchmarkGap => "benchmark_gap",
        OpportunityKind::PeerMedian => "peer_median",
    }
}

fn confidence_name(c: Confidence) -> &'static str {
    match c {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    }
}

fn reasons(v: &Verification) -> Vec<String> {
    match v {
        Verification::Verified => Vec::new(),
        Verification::Unverified { reasons } => reasons.clone(),
    }
}

fn group_model_row(m: &crate::savings::baseline::GroupModel) -> GroupModelRow {
    GroupModelRow {
        group: match m.group {
            DayGroup::Working => "working",
            DayGroup::NonWorking => "non_working",
            DayGroup::Vacation => "vacation",
            DayGroup::All => "all",
        },
        model: match m.kind {
            ModelKind::InterceptOnly => "intercept_only",
            ModelKind::HeatingOnly => "heating",
            ModelKind::CoolingOnly => "cooling",
            ModelKind::HeatingAndCooling => "heating_cooling",
        },
        intercept_kwh_per_day: round6(m.intercept),
        heating_balance_point_c: m.heating.map(|t| round6(t.balance_point_c)),
        heating_kwh_per_degree_day: m.heating.map(|t| round6(t.slope)),
        heating_season_only: m.heating.map(|t| t.in_season_only),
        cooling_balance_point_c: m.cooling.map(|t| round6(t.balance_point_c)),
        cooling_kwh_per_degree_day: m.cooling.map(|t| round6(t.slope)),
        adj_r_squared: round6(m.adj_r_squared),
        days: m.days,
    }
}

/// The building type of `set` an account is compared as: the types of its building class; of
/// several, those of its office class (`A-…`/`B-…`), then the government one — public
/// institutions are run like government offices, not commercial ones. `None` when that leaves
/// no single type.
fn benchmark_type<'a>(set: &'a BenchmarkSet, account: &crate::Account) -> Option<&'a str> {
    let class = account.building_class().letter();
    let mut types: Vec<&str> = set
        .types
        .iter()
        .filter(|t| t.building_class == class)
        .map(|t| t.id.as_str())
        .collect();
    if types.len() > 1
        && let Some(oc) = account.office_class
    {
        let prefix = match oc {
            crate::accounts::OfficeClass::A => "A-",
            crate::accounts::OfficeClass::B => "B-",
        };
        types.retain(|t| t.starts_with(prefix));
    }
    if types.len() > 1 {
        types.retain(|t| t.ends_with("government"));
    }
    (types.len() == 1).then(|| types[0])
}

impl Reports {
    /// Category totals per bucket (`day` or `hour`) and account, with main/sub-meter relations
    /// decided over all of `relations_from` (so a meter silent in one bucket keeps its role).
    fn totals(
        &self,
        sums: &[(i64, MeterSum)],
        relations: &BTreeMap<(AccountCode, Category), Relations>,
    ) -> BTreeMap<AccountCode, Totals> {
        let mut groups: BTreeMap<(&AccountCode, Category, i64), Vec<&MeterSum>> = BTreeMap::new();
        for (t, s) in sums {
            groups
                .entry((&s.account, s.category, *t))
                .or_default()
                .push(s);
        }
        let mut out: BTreeMap<AccountCode, Totals> = BTreeMap::new();
        let none = Relations::default();
        let mut prices = Prices::new(self);
        for ((account, category, t), group) in groups {
            let rel = relations.get(&(account.clone(), category)).unwrap_or(&none);
            // A bucket's meters share one unit in practice; the first one's prices the total.
            let Some(first) = group.first() else {
                continue;
            };
            let pricing = prices.of(account, category, &first.unit, first.period);
            if let Some(total) = category_total(category, &group, rel, pricing) {
                out.entry(account.clone())
                    .or_default()
                    .entry(category)
                    .or_default()
                    .insert(t, total);
            }
        }
        out
    }

    /// Outdoor temperature samples per account, local time, from the readings: the quantity
    /// `outdoor_temperature` where an account has it, else `temperature`.
    async fn temperature_samples(
        &self,
        from_ms: i64,
        to_ms: i64,
        filters: &[Filter],
    ) -> Result<BTreeMap<AccountCode, TemperatureSamples>, QueryError> {
        let (from_date, to_date) = (partition_date(from_ms), partition_date(to_ms));
        let (ctx, has_readings) = self
            .session_within(Some((from_date.as_str(), to_date.as_str())))
            .await?;
        if !has_readings {
            return Ok(BTreeMap::new());
        }
        // Ordered: the samples' order is the daily means' summation order, and the
        // `readings` view does not order its rows.
        let sql = format!(
            "SELECT account, quantity, \
                    to_unixtime(date_trunc('second', {local})) AS t, \
                    value \
             FROM {READINGS} \
             WHERE quantity IN ('{outdoor}', '{indoor}') \
               AND ts > '{from}' AND ts <= '{to}' AND {scope} \
             ORDER BY account, meter, quantity, ts",
            outdoor = Quantity::OutdoorTemperature.name(),
            indoor = Quantity::Temperature.name(),
            from = rfc3339(from_ms),
            to = rfc3339(to_ms),
            scope = sql_all(filters),
            local = local_ts_sql("ts", 0),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut by: BTreeMap<(AccountCode, Quantity), Vec<(NaiveDateTime, f64)>> = BTreeMap::new();
        for b in batches {
            let (account, quantity) = (
                column_strings(&b, 0, "account")?,
                column_strings(&b, 1, "quantity")?,
            );
            let t = column_ints(&b, 2, "t")?;
            let value = column_floats(&b, 3, "value")?;
            for i in 0..b.num_rows() {
                if value.is_null(i) {
                    continue;
                }
                let (Ok(a), Ok(q), Some(time)) = (
                    AccountCode::parse(account.value(i)),
                    Quantity::parse(quantity.value(i)),
                    local_time(t.value(i)),
                ) else {
                    continue;
                };
                by.entry((a, q)).or_default().push((time, value.value(i)));
            }
        }
        let mut out = BTreeMap::new();
        for ((a, q), samples) in by {
            // Outdoor first: `OutdoorTemperature` replaces a `Temperature` already taken.
            let replace = match out.get(&a) {
                None => true,
                Some((held, _)) => {
                    *held == Quantity::Temperature && q == Quantity::OutdoorTemperature
                }
            };
            if replace {
                out.insert(a, (q, samples));
            }
        }
        Ok(out)
    }

    /// Runs the savings analyses for every account in scope with data (module doc).
    pub async fn savings(&self, req: &SavingsRequest) -> Result<SavingsReport, QueryError> {
        req.validate()?;
        let reference = self.reference()?;
        let analysis = Analysis {
            req,
            calendar: reference.calendar.clone(),
            sets: reference.benchmarks.clone(),
            reference: reference.clone(),
            year: (req.to - chrono::Duration::days(1)).year(),
        };
        let first = req.baseline_from.min(req.from);
        let last = req.baseline_to.max(req.to);
        let (from_ms, to_ms) = (local_midnight_ms(first), local_midnight_ms(last));
        let (daily, hourly) = self.daily_and_hourly_totals(req, from_ms, to_ms).await?;
        let temperatures = self.temperature_readings(req, from_ms, to_ms).await?;

        let mut found = Findings::default();
        for (code, totals) in &daily {
            self.account_savings(
                &analysis,
                code,
                totals,
                hourly.get(code),
                temperatures.get(code),
                &mut found,
            );
        }
        self.peer_analysis(&analysis, &mut found);
        Ok(SavingsReport {
            baseline_from: req.baseline_from,
            baseline_to: req.baseline_to,
            from: req.from,
            to: req.to,
            opportunities: self.opportunity_rows(found.ops),
            accounts: found.accounts,
        })
    }

    /// The daily category totals over both periods and the hourly electricity totals over the
    /// reporting period, per account; main and sub-meters are told apart on the daily sums,
    /// so a meter keeps its role in the hours it is silent.
    async fn daily_and_hourly_totals(
        &self,
        req: &SavingsRequest,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(AccountTotals, AccountTotals), QueryError> {
        let daily_sums = self
            .bucket_sums(from_ms, to_ms, "day", &req.filters, None)
            .await?;
        let mut by_meter: BTreeMap<(AccountCode, Category), Vec<&MeterSum>> = BTreeMap::new();
        for (_, s) in &daily_sums {
            by_meter
                .entry((s.account.clone(), s.category))
                .or_default()
                .push(s);
        }
        let relations: BTreeMap<(AccountCode, Category), Relations> = by_meter
            .iter()
            .map(|((a, c), sums)| ((a.clone(), *c), self.relations(a, *c, sums)))
            .collect();
        let daily = self.totals(&daily_sums, &relations);
        let hourly_sums = self
            .bucket_sums(
                local_midnight_ms(req.from),
                local_midnight_ms(req.to),
                "hour",
                &req.filters,
                Some(Category::Electricity),
            )
            .await?;
        let hourly = self.totals(&hourly_sums, &relations);
        Ok((daily, hourly))
    }

    /// The accounts' temperature readings when the request's source may use them; none for
    /// `csv` and `none`.
    async fn temperature_readings(
        &self,
        req: &SavingsRequest,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BTreeMap<AccountCode, TemperatureSamples>, QueryError> {
        match req.temperature {
            TemperatureSource::Auto | TemperatureSource::Readings => {
                self.temperature_samples(from_ms, to_ms, &req.filters).await
            }
            _ => Ok(BTreeMap::new()),
        }
    }

    /// Runs one account's baseline, off-hours and benchmark analyses: adds its opportunities
    /// and its [`AccountSavings`] to `found`, and, when it has a floor area and data, its peer
    /// intensity and yearly energy for the peer ranking.
    fn account_savings(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        totals: &Totals,
        hourly: Option<&Totals>,
        readings: Option<&TemperatureSamples>,
        found: &mut Findings,
    ) {
        let info = self.account(code);
        let mut f = AccountFindings {
            notes: Vec::new(),
            ops: &mut found.ops,
        };
        let (source, temps) = self.baseline_temperatures(an.req.temperature, readings, &mut f);
        let days = baseline_days(an.req, totals, temps.as_deref());
        let weather_model = temps.is_some();
        let temperature = temperature_used(source, days.without_temperature, weather_model);
        let baseline = self.baseline_analysis(an, code, &days, weather_model, &mut f);
        let off_hours = self.off_hours_analysis(an, code, hourly, &mut f);
        let (data_days, annual) = reporting_year_energy(an.req, totals);
        let (benchmarks, peer_input) =
            self.benchmark_analysis(an, code, info, !data_days.is_empty(), &annual, &mut f);
        if let Some(p) = peer_input {
            found.peers.push(p);
            found.yearly.insert(code.clone(), annual);
        }
        found.accounts.push(AccountSavings {
            account: code.to_string(),
            name_zh: info.map(|a| a.name_zh.clone()).unwrap_or_default(),
            temperature,
            baseline,
            off_hours,
            reporting_days_with_data: data_days.len(),
            benchmarks,
            peer: None,
            notes: f.notes,
        });
    }

    /// The daily mean temperatures for an account's baseline and where they came from (the
    /// source's name, `none` with no temperatures). Unusable readings leave a note and no
    /// temperatures.
    fn baseline_temperatures(
        &self,
        source: TemperatureSource,
        readings: Option<&TemperatureSamples>,
        f: &mut AccountFindings<'_>,
    ) -> (String, Option<Vec<DailyTemperature>>) {
        match (source, readings, &self.temperature_csv) {
            (TemperatureSource::None, _, _) => ("none".into(), None),
            (TemperatureSource::Auto | TemperatureSource::Readings, Some((q, s)), _) => {
                match weather::daily_means(s) {
                    Ok(m) => (format!("readings:{}", q.name()), Some(m.days)),
                    Err(e) => {
                        f.note("baseline", format!("temperature readings unusable: {e}"));
                        ("none".into(), None)
                    }
                }
            }
            (TemperatureSource::Auto | TemperatureSource::Csv, _, Some(csv)) => {
                ("csv".into(), Some(csv.to_vec()))
            }
            _ => ("none".into(), None),
        }
    }

    /// The electricity baseline fitted on the baseline days, with the reporting period
    /// against it; keeps the drift opportunity. `None`, with a note, when there are no
    /// baseline days or the fit fails.
    fn baseline_analysis(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        days: &BaselineDays,
        weather_model: bool,
        f: &mut AccountFindings<'_>,
    ) -> Option<BaselineFit> {
        let config = BaselineConfig {
            fit_heating: weather_model,
            fit_cooling: weather_model,
            terms: an.reference.terms.for_account(code).cloned(),
            heating_season: an.reference.heating.for_account(code).cloned(),
            ..BaselineConfig::default()
        };
        if days.base.is_empty() {
            f.note(
                "baseline",
                "no electricity (with temperature) in the baseline period".into(),
            );
            return None;
        }
        let b = match Baseline::fit(&days.base, &an.calendar, &config) {
            Ok(b) => b,
            Err(e) => {
                f.note("baseline", e.to_string());
                return None;
            }
        };
        let period = reporting_against_baseline(&b, &days.report, &an.calendar, f);
        for note in b.calendar_notes(period.as_ref()) {
            f.note("baseline", note);
        }
        if let Some(p) = &period {
            self.baseline_drift(an, code, &b, p, f);
        }
        Some(baseline_fit(&b, period.as_ref(), weather_model))
    }

    /// Keeps the baseline-drift opportunity of the reporting period, or notes that usage
    /// above the baseline is within the model's uncertainty ([`detectable_fraction`]).
    fn baseline_drift(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        b: &Baseline,
        p: &AvoidedEnergy,
        f: &mut AccountFindings<'_>,
    ) {
        let min = detectable_fraction(b, p);
        if p.avoided < 0.0 && -p.avoided_fraction < min {
            f.note(
                "baseline",
                format!(
                    "usage {:.2} % above the baseline is within the model's \
                     uncertainty (at least {:.2} % is needed, ASHRAE Guideline 14)",
                    -p.avoided_fraction * 100.0,
                    min * 100.0
                ),
            );
        } else {
            let drift = opportunity::baseline_drift(
                code.clone(),
                an.year,
                Category::Electricity,
                b,
                p,
                &self.factors,
                self.selection(code),
            );
            f.keep("baseline", drift);
        }
    }

    /// Off-hours load from the reporting period's hourly electricity (`hourly`: the account's
    /// hourly totals); keeps its opportunity. `None`, with a note, when there is no
    /// electricity, the meters read less often than hourly — an hour would then hold several
    /// hours' energy — or the analysis fails.
    fn off_hours_analysis(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        hourly: Option<&Totals>,
        f: &mut AccountFindings<'_>,
    ) -> Option<OffHoursRow> {
        let hours = hourly_electricity(hourly);
        let median_hours = median_hours_per_day(&hours);
        if hours.is_empty() {
            f.note("off_hours", "no electricity in the reporting period".into());
            return None;
        }
        if median_hours < 20 {
            f.note(
                "off_hours",
                format!(
                    "readings fill only {median_hours} of a day's 24 hours (median): the meters \
                     read less often than hourly, so night load cannot be told apart"
                ),
            );
            return None;
        }
        match offhours::analyse(&hours, &an.calendar, &OffHoursConfig::default()) {
            Err(e) => {
                f.note("off_hours", e.to_string());
                None
            }
            Ok(a) => {
                let found = opportunity::off_hours(
                    code.clone(),
                    an.year,
                    &a,
                    &self.factors,
                    self.selection(code),
                );
                f.keep("off_hours", found);
                Some(off_hours_row(&a))
            }
        }
    }

    /// The account against each benchmark set with a building type for it, keeping the gap
    /// opportunities, and its intensity for the peer ranking. Nothing, with a note, when the
    /// reporting period has no data (`has_data`) or the account has no floor area.
    fn benchmark_analysis(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        info: Option<&crate::Account>,
        has_data: bool,
        annual: &BTreeMap<Category, f64>,
        f: &mut AccountFindings<'_>,
    ) -> (Vec<BenchmarkRow>, Option<PeerIntensity<&'static str>>) {
        match info.and_then(|a| a.floor_area_m2.map(|m2| (a, m2))) {
            _ if !has_data => {
                f.note("benchmark", "no data in the reporting period".into());
                (Vec::new(), None)
            }
            None => {
                f.note(
                    "benchmark",
                    "no floor area configured for the account (floor_area_m2)".into(),
                );
                (Vec::new(), None)
            }
            Some((a, m2)) => {
                let energy = AccountEnergy {
                    account: code.clone(),
                    year: an.year,
                    floor_area_m2: m2,
                    occupants: a.headcount.map(f64::from),
                    operating_hours: None,
                    climate_zone: a.climate_zone,
                    consumption: annual.clone(),
                    heating: BTreeMap::new(),
                    transport: BTreeMap::new(),
                };
                let benchmarks = self.benchmarks(an, a, &energy, f);
                let peer = self.peer_intensity(an, code, a, m2, annual);
                (benchmarks, Some(peer))
            }
        }
    }

    /// One row per benchmark set with a building type for the account ([`benchmark_type`]),
    /// keeping each set's gap opportunity; a set whose comparison fails leaves a note instead.
    fn benchmarks(
        &self,
        an: &Analysis<'_>,
        account: &crate::Account,
        energy: &AccountEnergy,
        f: &mut AccountFindings<'_>,
    ) -> Vec<BenchmarkRow> {
        let mut rows = Vec::new();
        for set in an.sets.sets() {
            let Some(type_id) = benchmark_type(set, account) else {
                continue;
            };
            let selection = self.selection(&account.code);
            match benchmark::compare(set, type_id, energy, &self.factors, selection) {
                Err(e) => f.note("benchmark", e.to_string()),
                Ok(c) => {
                    let gap = opportunity::benchmark_gap(
                        &c,
                        &set.name,
                        &set.name_en,
                        &self.factors,
                        selection,
                    );
                    f.keep("benchmark", gap);
                    rows.push(benchmark_row(set, type_id, &c));
                }
            }
        }
        rows
    }

    /// The account's yearly energy in kgce per m² of floor area, in its institution type's
    /// group, for the peer ranking.
    fn peer_intensity(
        &self,
        an: &Analysis<'_>,
        code: &AccountCode,
        account: &crate::Account,
        m2: f64,
        annual: &BTreeMap<Category, f64>,
    ) -> PeerIntensity<&'static str> {
        let kgce: f64 = annual
            .iter()
            .filter_map(|(c, v)| {
                self.factors
                    .coal(*c, an.year, self.selection(code))
                    .map(|f| v * f.per_unit)
            })
            .sum();
        PeerIntensity {
            account: code.clone(),
            group: account.institution_type.name(),
            intensity: kgce / m2,
            floor_area_m2: m2,
        }
    }

    /// Ranks the accounts among those in scope of the same institution type: each gets its
    /// [`PeerRow`] and peer-median opportunity, or a note when it has no peer or the ranking
    /// fails.
    fn peer_analysis(&self, an: &Analysis<'_>, found: &mut Findings) {
        let ranked = match rank_by_intensity(&found.peers) {
            Ok(ranked) => ranked,
            Err(e) => {
                for a in &mut found.accounts {
                    a.notes.push(Note {
                        analysis: "peer",
                        message: e.to_string(),
                    });
                }
                return;
            }
        };
        for r in ranked {
            let Some(a) = found
                .accounts
                .iter_mut()
                .find(|a| a.account == r.account.as_str())
            else {
                continue;
            };
            if r.of < 2 {
                a.notes.push(Note {
                    analysis: "peer",
                    message: format!("no other {} account in scope to compare with", r.group),
                });
                continue;
            }
            a.peer = Some(peer_row(&r));
            let consumption = found.yearly.get(&r.account).cloned().unwrap_or_default();
            let selection = self.selection(&r.account);
            let median =
                opportunity::peer_median(&r, an.year, &consumption, &self.factors, selection);
            keep_opportunity(median, "peer", &mut found.ops, &mut a.notes);
        }
    }

    /// The opportunities ranked by yearly saving (largest first), as report rows.
    fn opportunity_rows(&self, ops: Vec<Opportunity>) -> Vec<OpportunityRow> {
        opportunity::rank(ops)
            .into_iter()
            .enumerate()
            .map(|(i, o)| self.opportunity_row(i + 1, o))
            .collect()
    }

    /// The report row of the opportunity ranked `rank`.
    fn opportunity_row(&self, rank: usize, o: Opportunity) -> OpportunityRow {
        OpportunityRow {
            rank,
            account: o.account.to_string(),
            name_zh: self
                .account(&o.account)
                .map(|a| a.name_zh.clone())
                .unwrap_or_default(),
            kind: kind_name(o.kind),
            kind_zh: o.kind.name_zh(),
            kind_en: o.kind.name_en(),
            year: o.year,
            energy_per_year: o
                .energy_per_year
                .iter()
                .map(|(c, v)| (c.code().to_owned(), round6(*v)))
                .collect(),
            kwh_per_year: round6(o.kwh_per_year),
            kgce_per_year: round6(o.kgce_per_year),
            kgco2e_per_year: round6(o.kgco2e_per_year),
            factors: o
                .factors
                .iter()
                .map(|f| FactorRow {
                    category: f.category.code().to_owned(),
                    coal_factor: f.coal_factor.clone(),
                    kgce_per_unit: f.kgce_per_unit,
                    carbon_factor: f.carbon_factor.clone(),
                    kgco2e_per_unit: f.kgco2e_per_unit,
                })
                .collect(),
            confidence: confidence_name(o.confidence),
            verified: o.verification.is_verified(),
            unverified_reasons: reasons(&o.verification),
            explanation_zh: o.explanation_zh,
            explanation_en: o.explanation_en,
        }
    }
}

impl SavingsRequest {
    /// `Ok` when the baseline and the reporting period each end after they start.
    fn validate(&self) -> Result<(), QueryError> {
        if self.baseline_from >= self.baseline_to || self.from >= self.to {
            return Err(QueryError::SavingsRequest(format!(
                "baseline {}..{} and reporting period {}..{} must each end after they start",
                self.baseline_from, self.baseline_to, self.from, self.to
            )));
        }
        Ok(())
    }
}

/// Category totals per account: account → category → bucket → (consumption, kgce, kgCO2e).
type AccountTotals = BTreeMap<AccountCode, Totals>;

/// One account's temperature readings: the quantity used and its samples in local time.
type TemperatureSamples = (Quantity, Vec<(NaiveDateTime, f64)>);

/// What every account's analyses share.
struct Analysis<'r> {
    req: &'r SavingsRequest,
    calendar: Calendar,
    sets: BenchmarkSets,
    /// School terms and heating seasons by account, with the calendar and sets above.
    reference: std::sync::Arc<crate::savings::ReferenceData>,
    /// The data year: that of the reporting period's last day.
    year: i32,
}

/// What the accounts' analyses gather for the report and the peer ranking.
#[derive(Default)]
struct Findings {
    ops: Vec<Opportunity>,
    accounts: Vec<AccountSavings>,
    /// Accounts with a floor area and data, for the peer ranking.
    peers: Vec<PeerIntensity<&'static str>>,
    /// Their reporting period's energy scaled to a year, by category.
    yearly: BTreeMap<AccountCode, BTreeMap<Category, f64>>,
}

/// One account's notes while its analyses run, and the opportunities of all accounts.
struct AccountFindings<'f> {
    notes: Vec<Note>,
    ops: &'f mut Vec<Opportunity>,
}

impl AccountFindings<'_> {
    /// Notes why `analysis` did not run, or what it left out.
    fn note(&mut self, analysis: &'static str, message: String) {
        self.notes.push(Note { analysis, message });
    }

    /// Keeps the opportunity `analysis` found, or notes its error.
    fn keep<E: std::fmt::Display>(
        &mut self,
        analysis: &'static str,
        found: Result<Option<Opportunity>, E>,
    ) {
        keep_opportunity(found, analysis, self.ops, &mut self.notes);
    }
}

/// Pushes the opportunity found (if any) to `ops`, or a note with the error to `notes`.
fn keep_opportunity<E: std::fmt::Display>(
    found: Result<Option<Opportunity>, E>,
    analysis: &'static str,
    ops: &mut Vec<Opportunity>,
    notes: &mut Vec<Note>,
) {
    match found {
        Ok(Some(o)) => ops.push(o),
        Ok(None) => {}
        Err(e) => notes.push(Note {
            analysis,
            message: e.to_string(),
        }),
    }
}

/// Whether `d` lies in `[from, to)`.
fn in_range(d: NaiveDate, from: NaiveDate, to: NaiveDate) -> bool {
    d >= from && d < to
}

/// An account's electricity days for the baseline: those of the baseline period to fit on
/// and those of the reporting period to compare, each with its temperature (0 °C without).
struct BaselineDays {
    base: Vec<DailyUsage>,
    report: Vec<DailyUsage>,
    /// Baseline and reporting days left out for want of a daily mean temperature.
    without_temperature: usize,
}

/// The baseline and reporting periods' daily electricity of an account (`totals`), joined to
/// the daily mean temperatures `temps` when there are any.
fn baseline_days(
    req: &SavingsRequest,
    totals: &Totals,
    temps: Option<&[DailyTemperature]>,
) -> BaselineDays {
    let electricity = totals.get(&Category::Electricity);
    let usage_in = |from: NaiveDate, to: NaiveDate| -> Vec<(NaiveDate, f64)> {
        electricity
            .into_iter()
            .flatten()
            .filter_map(|(t, (kwh, _, _))| local_date(*t).map(|d| (d, *kwh)))
            .filter(|(d, _)| in_range(*d, from, to))
            .collect()
    };
    let base_usage = usage_in(req.baseline_from, req.baseline_to);
    let report_usage = usage_in(req.from, req.to);
    let mut without = 0;
    let mut to_days = |usage: &[(NaiveDate, f64)]| -> Vec<DailyUsage> {
        match temps {
            Some(t) => {
                let j = weather::join(usage, t);
                without += j.missing_temperature.len();
                j.days
            }
            None => usage
                .iter()
                .map(|&(date, usage)| DailyUsage {
                    date,
                    usage,
                    temperature_c: 0.0,
                })
                .collect(),
        }
    };
    let base = to_days(&base_usage);
    let report = to_days(&report_usage);
    BaselineDays {
        base,
        report,
        without_temperature: without,
    }
}

/// Where the baseline's temperature came from (`source`), how many days lacked one, and a
/// note on which model that allows (weather-normalised or day types only).
fn temperature_used(source: String, without: usize, weather_model: bool) -> TemperatureUsed {
    let (note_zh, note_en) = if weather_model {
        (
            "基线按气温（采暖/制冷度日）和日类型建立。".to_owned(),
            "The baseline uses outdoor temperature (heating/cooling degree days) and day types."
                .to_owned(),
        )
    } else {
        (
            "无室外气温数据：基线仅按日类型（工作日/非工作日）建立，未做气象修正。".to_owned(),
            "No outdoor temperature: the baseline uses day types (working/non-working) only, without weather normalisation.".to_owned(),
        )
    };
    TemperatureUsed {
        source,
        days_without_temperature: without,
        note_zh,
        note_en,
    }
}

/// The reporting period's usage against the baseline `b`; `None`, with a note, when the
/// period has no days or the comparison fails.
fn reporting_against_baseline(
    b: &Baseline,
    report: &[DailyUsage],
    calendar: &Calendar,
    f: &mut AccountFindings<'_>,
) -> Option<AvoidedEnergy> {
    if report.is_empty() {
        f.note(
            "baseline",
            "no electricity (with temperature) in the reporting period".into(),
        );
        return None;
    }
    match b.avoided_energy(report, calendar) {
        Ok(p) => Some(p),
        Err(e) => {
            f.note("baseline", e.to_string());
            None
        }
    }
}

/// The smallest fraction of savings the baseline `b` can tell from noise over the reporting
/// period `p`. ASHRAE Guideline 14 (annex B): the fractional uncertainty of savings F is
/// ≈ 1.26·CV(RMSE)·√((1 + 2/n)/m) / F for n baseline and m reporting days; a difference
/// within twice that (uncertainty > 50 % at 68 % confidence) is noise, not an opportunity.
fn detectable_fraction(b: &Baseline, p: &AvoidedEnergy) -> f64 {
    let n = b.days as f64;
    let m = p.days.max(1) as f64;
    2.0 * 1.26 * b.fit.daily.cv_rmse * ((1.0 + 2.0 / n) / m).sqrt()
}

/// The report's view of the baseline `b` and of the reporting period against it (zeros
/// without one).
fn baseline_fit(b: &Baseline, period: Option<&AvoidedEnergy>, weather_model: bool) -> BaselineFit {
    BaselineFit {
        model: if weather_model {
            "weather"
        } else {
            "day_type_only"
        },
        first_day: b.first_day,
        last_day: b.last_day,
        days: b.days,
        cv_rmse: round6(b.fit.daily.cv_rmse),
        nmbe: round6(b.fit.daily.nmbe),
        monthly_cv_rmse: b.fit.monthly.map(|m| round6(m.cv_rmse)),
        monthly_nmbe: b.fit.monthly.map(|m| round6(m.nmbe)),
        passes_ashrae14: b.fit.passes_ashrae14,
        caltrack_sufficient: b.caltrack_sufficient,
        models: b.models.iter().map(group_model_row).collect(),
        reporting_days: period.map_or(0, |p| p.days),
        reporting_actual_kwh: period.map_or(0.0, |p| round6(p.actual_usage)),
        reporting_baseline_kwh: period.map_or(0.0, |p| round6(p.baseline_usage)),
        reporting_avoided_kwh: period.map_or(0.0, |p| round6(p.avoided)),
    }
}

/// The hourly electricity loads of an account's hourly totals, in local time.
fn hourly_electricity(hourly: Option<&Totals>) -> Vec<HourlyLoad> {
    hourly
        .and_then(|t| t.get(&Category::Electricity))
        .into_iter()
        .flatten()
        .filter_map(|(t, (kwh, _, _))| local_time(*t).map(|start| HourlyLoad { start, kwh: *kwh }))
        .collect()
}

/// The median number of hours with readings per day (0 without any): below 20 the meters
/// read less often than hourly.
fn median_hours_per_day(hours: &[HourlyLoad]) -> usize {
    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for h in hours {
        *per_day.entry(h.start.date()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_day.values().copied().collect();
    counts.sort_unstable();
    counts.get(counts.len() / 2).copied().unwrap_or(0)
}

/// The report's view of an off-hours analysis.
fn off_hours_row(a: &OffHoursAnalysis) -> OffHoursRow {
    OffHoursRow {
        hours: a.hours,
        days: a.days,
        base_load_kw: round6(a.base_load_kw),
        occupied_mean_kw: round6(a.occupied_mean_kw),
        night_mean_kw: round6(a.night_mean_kw),
        non_working_mean_kw: round6(a.non_working_mean_kw),
        excess_kwh_per_year: round6(a.excess_kwh_per_year),
        off_hours_share: round6(a.off_hours_share),
    }
}

/// The reporting period's days with data, and its energy per category scaled to a year
/// (365 over the days with data; never negative), for benchmarks and peers.
fn reporting_year_energy(
    req: &SavingsRequest,
    totals: &Totals,
) -> (BTreeSet<NaiveDate>, BTreeMap<Category, f64>) {
    let mut data_days: BTreeSet<NaiveDate> = BTreeSet::new();
    let mut sums: BTreeMap<Category, f64> = BTreeMap::new();
    for (c, by_day) in totals {
        for (t, (v, _, _)) in by_day {
            if let Some(d) = local_date(*t)
                && in_range(d, req.from, req.to)
            {
                data_days.insert(d);
                *sums.entry(*c).or_default() += v;
            }
        }
    }
    let scale = if data_days.is_empty() {
        0.0
    } else {
        365.0 / data_days.len() as f64
    };
    let annual = sums
        .into_iter()
        .map(|(c, v)| (c, (v * scale).max(0.0)))
        .collect();
    (data_days, annual)
}

/// The report's view of the comparison `c` of an account with `set` as building type
/// `type_id`.
fn benchmark_row(set: &BenchmarkSet, type_id: &str, c: &Comparison) -> BenchmarkRow {
    BenchmarkRow {
        set_id: set.id.clone(),
        name_zh: set.name.clone(),
        name_en: set.name_en.clone(),
        type_id: type_id.to_owned(),
        unit: c.unit.symbol(),
        measured: round6(c.measured),
        corrected: round6(c.corrected),
        constraint: c.constraint,
        baseline: c.baseline,
        guide: c.guide,
        rating_zh: c.rating.name_zh(),
        rating_en: c.rating.name_en(),
        set_verified: set.verified,
        verified: c.verification.is_verified(),
        unverified_reasons: reasons(&c.verification),
    }
}

/// The report's view of an account's place among its peers.
fn peer_row(r: &Ranked<&'static str>) -> PeerRow {
    PeerRow {
        institution_type: r.group,
        kgce_per_m2_year: round6(r.intensity),
        rank: r.rank,
        of: r.of,
        median_kgce_per_m2_year: round6(r.group_median),
    }
}
