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
use reading_model::{AccountCode, Category, FactorSelection, Quantity};
use serde::Serialize;

use super::consumption::category_total;
use super::period::local_ts_sql;
use super::scope::{Filter, sql_all};
use super::source::{MeterSum, Relations, Reports};
use crate::report::{QueryError, column_floats, column_ints, column_strings, rfc3339};
use crate::savings::baseline::{Baseline, BaselineConfig, DayGroup, ModelKind};
use crate::savings::benchmark::{self, AccountEnergy, BenchmarkSet, BenchmarkSets, Verification};
use crate::savings::offhours::{self, HourlyLoad, OffHoursConfig};
use crate::savings::opportunity::{self, Confidence, Opportunity, OpportunityKind};
use crate::savings::ranking::{PeerIntensity, rank_by_intensity};
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
    /// `working`, `non_working` or `all`.
    pub group: &'static str,
    /// `intercept_only`, `heating`, `cooling` or `heating_cooling`.
    pub model: &'static str,
    pub intercept_kwh_per_day: f64,
    pub heating_balance_point_c: Option<f64>,
    pub heating_kwh_per_degree_day: Option<f64>,
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
        for ((account, category, t), group) in groups {
            let rel = relations.get(&(account.clone(), category)).unwrap_or(&none);
            if let Some(total) = category_total(category, &group, rel) {
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
    ) -> Result<BTreeMap<AccountCode, (Quantity, Vec<(NaiveDateTime, f64)>)>, QueryError> {
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
        if req.baseline_from >= req.baseline_to || req.from >= req.to {
            return Err(QueryError::SavingsRequest(format!(
                "baseline {}..{} and reporting period {}..{} must each end after they start",
                req.baseline_from, req.baseline_to, req.from, req.to
            )));
        }
        let calendar = Calendar::builtin()?;
        let sets = BenchmarkSets::builtin()?;
        let selection = FactorSelection::default();
        let first = req.baseline_from.min(req.from);
        let last = req.baseline_to.max(req.to);
        let (from_ms, to_ms) = (local_midnight_ms(first), local_midnight_ms(last));

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
        let temperatures = match req.temperature {
            TemperatureSource::Auto | TemperatureSource::Readings => {
                self.temperature_samples(from_ms, to_ms, &req.filters)
                    .await?
            }
            _ => BTreeMap::new(),
        };
        let year = (req.to - chrono::Duration::days(1)).year();

        let mut ops: Vec<Opportunity> = Vec::new();
        let mut accounts: Vec<AccountSavings> = Vec::new();
        let mut peers: Vec<PeerIntensity<&'static str>> = Vec::new();
        let mut yearly: BTreeMap<AccountCode, BTreeMap<Category, f64>> = BTreeMap::new();
        for (code, totals) in &daily {
            let info = self.account(code);
            let mut notes = Vec::new();
            let in_range = |d: NaiveDate, from: NaiveDate, to: NaiveDate| d >= from && d < to;

            // Temperature for the baseline.
            let readings = temperatures.get(code);
            let (source, temps): (String, Option<Vec<DailyTemperature>>) =
                match (req.temperature, readings, &self.temperature_csv) {
                    (TemperatureSource::None, _, _) => ("none".into(), None),
                    (TemperatureSource::Auto | TemperatureSource::Readings, Some((q, s)), _) => {
                        match weather::daily_means(s) {
                            Ok(m) => (format!("readings:{}", q.name()), Some(m.days)),
                            Err(e) => {
                                notes.push(Note {
                                    analysis: "baseline",
                                    message: format!("temperature readings unusable: {e}"),
                                });
                                ("none".into(), None)
                            }
                        }
                    }
                    (TemperatureSource::Auto | TemperatureSource::Csv, _, Some(csv)) => {
                        ("csv".into(), Some(csv.to_vec()))
                    }
                    _ => ("none".into(), None),
                };

            // Electricity baseline.
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
                match &temps {
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
            let base_days = to_days(&base_usage);
            let report_days = to_days(&report_usage);
            let weather_model = temps.is_some();
            let (note_zh, note_en) = if weather_model {
                (
                    "基线按气温（采暖/制冷度日）和日类型建立。".to_owned(),
                    "The baseline uses outdoor temperature (heating/cooling degree days) and day types.".to_owned(),
                )
            } else {
                (
                    "无室外气温数据：基线仅按日类型（工作日/非工作日）建立，未做气象修正。".to_owned(),
                    "No outdoor temperature: the baseline uses day types (working/non-working) only, without weather normalisation.".to_owned(),
                )
            };
            let temperature = TemperatureUsed {
                source,
                days_without_temperature: without,
                note_zh: note_zh.clone(),
                note_en: note_en.clone(),
            };
            let config = BaselineConfig {
                fit_heating: weather_model,
                fit_cooling: weather_model,
                ..BaselineConfig::default()
            };
            let mut baseline_fit = None;
            if base_days.is_empty() {
                notes.push(Note {
                    analysis: "baseline",
                    message: "no electricity (with temperature) in the baseline period".into(),
                });
            } else {
                match Baseline::fit(&base_days, &calendar, &config) {
                    Err(e) => notes.push(Note {
                        analysis: "baseline",
                        message: e.to_string(),
                    }),
                    Ok(b) => {
                        let period = if report_days.is_empty() {
                            notes.push(Note {
                                analysis: "baseline",
                                message:
                                    "no electricity (with temperature) in the reporting period"
                                        .into(),
                            });
                            None
                        } else {
                            match b.avoided_energy(&report_days, &calendar) {
                                Ok(p) => Some(p),
                                Err(e) => {
                                    notes.push(Note {
                                        analysis: "baseline",
                                        message: e.to_string(),
                                    });
                                    None
                                }
                            }
                        };
                        // ASHRAE Guideline 14 (annex B): the fractional uncertainty of
                        // savings F is ≈ 1.26·CV(RMSE)·√((1 + 2/n)/m) / F for n baseline and m
                        // reporting days; a difference within twice that (uncertainty > 50 %
                        // at 68 % confidence) is noise, not an opportunity.
                        let detectable = period.as_ref().map(|p| {
                            let n = b.days as f64;
                            let m = p.days.max(1) as f64;
                            2.0 * 1.26 * b.fit.daily.cv_rmse * ((1.0 + 2.0 / n) / m).sqrt()
                        });
                        if let (Some(p), Some(min)) = (&period, detectable)
                            && p.avoided < 0.0
                            && -p.avoided_fraction < min
                        {
                            notes.push(Note {
                                analysis: "baseline",
                                message: format!(
                                    "usage {:.2} % above the baseline is within the model's \
                                     uncertainty (at least {:.2} % is needed, ASHRAE Guideline 14)",
                                    -p.avoided_fraction * 100.0,
                                    min * 100.0
                                ),
                            });
                        } else if let Some(p) = &period {
                            match opportunity::baseline_drift(
                                code.clone(),
                                year,
                                Category::Electricity,
                                &b,
                                p,
                                &self.factors,
                                &selection,
                            ) {
                                Ok(Some(o)) => ops.push(o),
                                Ok(None) => {}
                                Err(e) => notes.push(Note {
                                    analysis: "baseline",
                                    message: e.to_string(),
                                }),
                            }
                        }
                        baseline_fit = Some(BaselineFit {
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
                            reporting_days: period.as_ref().map_or(0, |p| p.days),
                            reporting_actual_kwh: period
                                .as_ref()
                                .map_or(0.0, |p| round6(p.actual_usage)),
                            reporting_baseline_kwh: period
                                .as_ref()
                                .map_or(0.0, |p| round6(p.baseline_usage)),
                            reporting_avoided_kwh: period
                                .as_ref()
                                .map_or(0.0, |p| round6(p.avoided)),
                        });
                    }
                }
            }

            // Off-hours load from hourly totals; only meaningful when meters read at least
            // hourly, otherwise an hour holds several hours' energy.
            let mut off_hours = None;
            let hours: Vec<HourlyLoad> = hourly
                .get(code)
                .and_then(|t| t.get(&Category::Electricity))
                .into_iter()
                .flatten()
                .filter_map(|(t, (kwh, _, _))| {
                    local_time(*t).map(|start| HourlyLoad { start, kwh: *kwh })
                })
                .collect();
            let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
            for h in &hours {
                *per_day.entry(h.start.date()).or_default() += 1;
            }
            let mut counts: Vec<usize> = per_day.values().copied().collect();
            counts.sort_unstable();
            let median_hours = counts.get(counts.len() / 2).copied().unwrap_or(0);
            if hours.is_empty() {
                notes.push(Note {
                    analysis: "off_hours",
                    message: "no electricity in the reporting period".into(),
                });
            } else if median_hours < 20 {
                notes.push(Note {
                    analysis: "off_hours",
                    message: format!(
                        "readings fill only {median_hours} of a day's 24 hours (median): the meters \
                         read less often than hourly, so night load cannot be told apart"
                    ),
                });
            } else {
                match offhours::analyse(&hours, &calendar, &OffHoursConfig::default()) {
                    Err(e) => notes.push(Note {
                        analysis: "off_hours",
                        message: e.to_string(),
                    }),
                    Ok(a) => {
                        match opportunity::off_hours(
                            code.clone(),
                            year,
                            &a,
                            &self.factors,
                            &selection,
                        ) {
                            Ok(Some(o)) => ops.push(o),
                            Ok(None) => {}
                            Err(e) => notes.push(Note {
                                analysis: "off_hours",
                                message: e.to_string(),
                            }),
                        }
                        off_hours = Some(OffHoursRow {
                            hours: a.hours,
                            days: a.days,
                            base_load_kw: round6(a.base_load_kw),
                            occupied_mean_kw: round6(a.occupied_mean_kw),
                            night_mean_kw: round6(a.night_mean_kw),
                            non_working_mean_kw: round6(a.non_working_mean_kw),
                            excess_kwh_per_year: round6(a.excess_kwh_per_year),
                            off_hours_share: round6(a.off_hours_share),
                        });
                    }
                }
            }

            // The reporting period's energy scaled to a year, for benchmarks and peers.
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
            let annual: BTreeMap<Category, f64> = sums
                .into_iter()
                .map(|(c, v)| (c, (v * scale).max(0.0)))
                .collect();
            let mut benchmarks = Vec::new();
            let mut peer_input = None;
            match info.and_then(|a| a.floor_area_m2.map(|m2| (a, m2))) {
                _ if data_days.is_empty() => notes.push(Note {
                    analysis: "benchmark",
                    message: "no data in the reporting period".into(),
                }),
                None => notes.push(Note {
                    analysis: "benchmark",
                    message: "no floor area configured for the account (floor_area_m2)".into(),
                }),
                Some((a, m2)) => {
                    let energy = AccountEnergy {
                        account: code.clone(),
                        year,
                        floor_area_m2: m2,
                        occupants: a.headcount.map(f64::from),
                        operating_hours: None,
                        climate_zone: a.climate_zone,
                        consumption: annual.clone(),
                        heating: BTreeMap::new(),
                        transport: BTreeMap::new(),
                    };
                    for set in sets.sets() {
                        let Some(type_id) = benchmark_type(set, a) else {
                            continue;
                        };
                        match benchmark::compare(set, type_id, &energy, &self.factors, &selection) {
                            Err(e) => notes.push(Note {
                                analysis: "benchmark",
                                message: e.to_string(),
                            }),
                            Ok(c) => {
                                match opportunity::benchmark_gap(
                                    &c,
                                    &set.name,
                                    &set.name_en,
                                    &self.factors,
                                    &selection,
                                ) {
                                    Ok(Some(o)) => ops.push(o),
                                    Ok(None) => {}
                                    Err(e) => notes.push(Note {
                                        analysis: "benchmark",
                                        message: e.to_string(),
                                    }),
                                }
                                benchmarks.push(BenchmarkRow {
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
                                });
                            }
                        }
                    }
                    let kgce: f64 = annual
                        .iter()
                        .filter_map(|(c, v)| {
                            self.factors
                                .coal(*c, year, &selection)
                                .map(|f| v * f.per_unit)
                        })
                        .sum();
                    peer_input = Some(PeerIntensity {
                        account: code.clone(),
                        group: a.institution_type.name(),
                        intensity: kgce / m2,
                        floor_area_m2: m2,
                    });
                }
            }
            if let Some(p) = peer_input {
                peers.push(p);
                yearly.insert(code.clone(), annual);
            }
            accounts.push(AccountSavings {
                account: code.to_string(),
                name_zh: info.map(|a| a.name_zh.clone()).unwrap_or_default(),
                temperature,
                baseline: baseline_fit,
                off_hours,
                reporting_days_with_data: data_days.len(),
                benchmarks,
                peer: None,
                notes,
            });
        }

        // Peers: accounts in scope of the same institution type.
        match rank_by_intensity(&peers) {
            Err(e) => {
                for a in &mut accounts {
                    a.notes.push(Note {
                        analysis: "peer",
                        message: e.to_string(),
                    });
                }
            }
            Ok(ranked) => {
                for r in ranked {
                    let Some(a) = accounts
                        .iter_mut()
                        .find(|a| a.account == r.account.as_str())
                    else {
                        continue;
                    };
                    if r.of < 2 {
                        a.notes.push(Note {
                            analysis: "peer",
                            message: format!(
                                "no other {} account in scope to compare with",
                                r.group
                            ),
                        });
                        continue;
                    }
                    a.peer = Some(PeerRow {
                        institution_type: r.group,
                        kgce_per_m2_year: round6(r.intensity),
                        rank: r.rank,
                        of: r.of,
                        median_kgce_per_m2_year: round6(r.group_median),
                    });
                    let consumption = yearly.get(&r.account).cloned().unwrap_or_default();
                    match opportunity::peer_median(
                        &r,
                        year,
                        &consumption,
                        &self.factors,
                        &selection,
                    ) {
                        Ok(Some(o)) => ops.push(o),
                        Ok(None) => {}
                        Err(e) => a.notes.push(Note {
                            analysis: "peer",
                            message: e.to_string(),
                        }),
                    }
                }
            }
        }

        let opportunities = opportunity::rank(ops)
            .into_iter()
            .enumerate()
            .map(|(i, o)| OpportunityRow {
                rank: i + 1,
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
            })
            .collect();
        Ok(SavingsReport {
            baseline_from: req.baseline_from,
            baseline_to: req.baseline_to,
            from: req.from,
            to: req.to,
            opportunities,
            accounts,
        })
    }
}
