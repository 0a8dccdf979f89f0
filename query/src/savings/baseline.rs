//! Weather-normalised daily baseline: a CalTRACK-style change-point regression of daily usage on
//! heating and cooling degree days, with the Chinese working calendar as day types.
//!
//! **Method** (CalTRACK 2.0 daily methods, §3.2–3.4, as implemented by OpenEEmeter's
//! `caltrack_method`, adapted to °C):
//! - Candidates: intercept-only; heating-only `u = β0 + βh·HDD(Th)`; cooling-only
//!   `u = β0 + βc·CDD(Tc)`; heating+cooling with `Th ≤ Tc`. HDD(Th) = max(0, Th − T), CDD(Tc) =
//!   max(0, T − Tc), T the day's mean outdoor temperature.
//! - Balance points: every point of a grid; CalTRACK's is 30–90 °F with gaps of at most 3 °F, ours is
//!   −1…32 °C in 1 °C steps (the same range, a finer gap).
//! - A degree-day candidate needs at least 10 days with non-zero degree days and 20 °F·days
//!   (11.1 °C·days) in total (CalTRACK 3.2.2.2).
//! - A candidate is disqualified if any parameter is negative (CalTRACK 3.4.3.2) or a slope's
//!   two-sided t-test p-value exceeds `max_p_value`. CalTRACK 1 used 0.1; OpenEEmeter's CalTRACK 2
//!   default is 1 (check off). We default to 0.1: with ~600 candidates on a year of data, a slope
//!   that is not significant is more likely a spurious fit than a building property.
//! - The qualified candidate with the highest adjusted R² is chosen (CalTRACK 3.4.3.3).
//!
//! **Day types.** Public institutions run heating and cooling on working days and mostly not on
//! weekends and holidays, so both the base load and the weather slopes differ by day type. We fit
//! **separate models** for working days and non-working days (weekends + holidays, 调休 weekend
//! days counting as working days — see [`super::calendar`]), each selected independently, rather
//! than one model with a day-type intercept, which would force one slope on both. A hospital or
//! data centre that runs every day can use [`DayGrouping::Pooled`].
//!
//! **School terms.** For a school, the term calendar ([`super::terms`], `BaselineConfig::terms`)
//! adds a third day type: every day of a vacation (寒假, 暑假), working day or not, belongs to
//! the **vacation** model, since the classrooms are empty whatever the weekday. A vacation
//! counted as term time would fit a summer of empty classrooms with the cooling slope of a
//! full school and predict a vacation as a term's week; the test
//! `a_school_with_vacations_needs_its_term_calendar` measures how much that costs. Days outside
//! every school year of the term calendar are counted (`days_outside_terms`) and reported: their
//! vacation status is unknown and they are treated as term time.
//!
//! **Heating season.** In northern China district heating runs on the dates the city sets
//! ([`super::heating`], `BaselineConfig::heating_season`), not whenever it is cold. With a
//! season, every heating candidate is also tried with its degree days counted only inside the
//! season (`DegreeDayTerm::in_season_only`), and the selection rule above chooses between them:
//! a building whose heating follows the season gets the seasonal term, one with its own heating
//! keeps the plain one.
//!
//! **Fit quality (ASHRAE Guideline 14-2014).** The guideline states CV(RMSE)/NMBE limits for
//! monthly data (15 % / ±5 %) and hourly data (30 % / ±10 %); it states none for daily data. We do
//! not invent a daily limit: the daily residuals are judged against the hourly limits (the finer
//! resolution the guideline covers, so a daily model must at least meet them), and the daily
//! predictions summed to calendar months (months with ≥ 90 % of their days) are judged against the
//! monthly limits. The model passes when both do. CV(RMSE) = √(Σ(y−ŷ)²/(n−p))/ȳ and
//! NMBE = Σ(y−ŷ)/((n−p)·ȳ) with p the number of fitted parameters for the daily fit, p = 0 for the
//! monthly sums and for out-of-sample evaluation. In-sample NMBE of a least-squares fit with an
//! intercept is 0 by construction; it becomes informative on a hold-out period ([`Baseline::evaluate`]).
//!
//! Avoided energy in a reporting period = Σ baseline prediction − Σ actual usage
//! ([`Baseline::avoided_energy`]); positive means less was used than the baseline predicts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};

use super::calendar::Calendar;
use super::heating::HeatingSeason;
use super::stats::ols;
use super::terms::TermCalendar;

/// One day of usage (in the category's canonical unit, e.g. kWh) with its mean outdoor temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyUsage {
    pub date: NaiveDate,
    pub usage: f64,
    pub temperature_c: f64,
}

/// Bad baseline input or a baseline that cannot be fitted; names the date or day group.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline: no days given")]
    Empty,
    #[error("baseline: {date}: {field} is {value}, not a finite number")]
    NotFinite {
        date: NaiveDate,
        field: &'static str,
        value: f64,
    },
    #[error("baseline: {date}: usage {usage} is negative (a meter reset or export?)")]
    Negative { date: NaiveDate, usage: f64 },
    #[error("baseline: {0} appears more than once")]
    DuplicateDate(NaiveDate),
    #[error("baseline: {days} {group} days, at least {min} needed to fit a model")]
    TooFewDays {
        group: DayGroup,
        days: usize,
        min: usize,
    },
    #[error(
        "baseline: outdoor temperature is {value} °C on every day — a stuck sensor or a filled gap, not weather"
    )]
    ConstantTemperature { value: f64 },
    #[error("baseline: balance-point grid {min}..{max} step {step} °C is empty or not finite")]
    Grid { min: f64, max: f64, step: f64 },
}

/// Which days share a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DayGrouping {
    /// One model for working days, one for weekends and holidays.
    #[default]
    WorkingAndNonWorking,
    /// One model for all days (buildings that run every day).
    Pooled,
}

/// The days one model covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayGroup {
    Working,
    NonWorking,
    /// A school's vacation days, whatever their day type.
    Vacation,
    All,
}

impl std::fmt::Display for DayGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Working => "working",
            Self::NonWorking => "non-working",
            Self::Vacation => "vacation",
            Self::All => "all",
        })
    }
}

impl DayGrouping {
    /// The group of `date`: a vacation of `terms` first, then the calendar's day type.
    fn group(self, date: NaiveDate, calendar: &Calendar, terms: Option<&TermCalendar>) -> DayGroup {
        match self {
            Self::Pooled => DayGroup::All,
            Self::WorkingAndNonWorking if terms.is_some_and(|t| t.vacation_of(date).is_some()) => {
                DayGroup::Vacation
            }
            Self::WorkingAndNonWorking if calendar.day_type(date).is_working() => DayGroup::Working,
            Self::WorkingAndNonWorking => DayGroup::NonWorking,
        }
    }

    /// The groups a baseline must fit.
    fn groups(self, terms: bool) -> &'static [DayGroup] {
        match (self, terms) {
            (Self::Pooled, _) => &[DayGroup::All],
            (Self::WorkingAndNonWorking, false) => &[DayGroup::Working, DayGroup::NonWorking],
            (Self::WorkingAndNonWorking, true) => {
                &[DayGroup::Working, DayGroup::NonWorking, DayGroup::Vacation]
            }
        }
    }
}

/// Candidate balance points `min, min+step, …, ≤ max`, °C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancePointGrid {
    pub min_c: f64,
    pub max_c: f64,
    pub step_c: f64,
}

impl Default for BalancePointGrid {
    /// CalTRACK's 30–90 °F range in °C, 1 °C steps (CalTRACK allows gaps up to 3 °F = 1.67 °C).
    fn default() -> Self {
        Self {
            min_c: -1.0,
            max_c: 32.0,
            step_c: 1.0,
        }
    }
}

impl BalancePointGrid {
    fn points(&self) -> Result<Vec<f64>, BaselineError> {
        let bad = || BaselineError::Grid {
            min: self.min_c,
            max: self.max_c,
            step: self.step_c,
        };
        if !(self.min_c.is_finite() && self.max_c.is_finite() && self.step_c > 0.0)
            || self.max_c < self.min_c
        {
            return Err(bad());
        }
        let n = ((self.max_c - self.min_c) / self.step_c + 1e-9).floor() as usize + 1;
        if n > 1000 {
            return Err(bad());
        }
        Ok((0..n)
            .map(|i| self.min_c + i as f64 * self.step_c)
            .collect())
    }
}

/// Fitting options; the defaults follow CalTRACK's daily method for electricity.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineConfig {
    pub grouping: DayGrouping,
    pub heating_grid: BalancePointGrid,
    pub cooling_grid: BalancePointGrid,
    /// Consider heating terms (HDD).
    pub fit_heating: bool,
    /// Consider cooling terms (CDD); CalTRACK turns this off for gas.
    pub fit_cooling: bool,
    /// Days with non-zero degree days a term needs (CalTRACK: 10).
    pub min_nonzero_degree_days: usize,
    /// Total degree days a term needs, °C·day (CalTRACK: 20 °F·day = 11.1 °C·day).
    pub min_total_degree_days_c: f64,
    /// Largest accepted two-sided p-value of a slope.
    pub max_p_value: f64,
    /// Fewest days a day group needs to be fitted.
    pub min_days_per_group: usize,
    /// A school's term calendar: its vacations become a day group of their own.
    pub terms: Option<TermCalendar>,
    /// The region's heating season: heating terms are also tried counted only inside it.
    pub heating_season: Option<HeatingSeason>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            grouping: DayGrouping::default(),
            heating_grid: BalancePointGrid::default(),
            cooling_grid: BalancePointGrid::default(),
            fit_heating: true,
            fit_cooling: true,
            min_nonzero_degree_days: 10,
            min_total_degree_days_c: 20.0 * 5.0 / 9.0,
            max_p_value: 0.1,
            min_days_per_group: 30,
            terms: None,
            heating_season: None,
        }
    }
}

/// Shape of a selected model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    InterceptOnly,
    HeatingOnly,
    CoolingOnly,
    HeatingAndCooling,
}

/// A degree-day term: usage per °C·day beyond the balance point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DegreeDayTerm {
    pub balance_point_c: f64,
    pub slope: f64,
    pub p_value: f64,
    /// Degree days count only inside the heating season (district heating).
    pub in_season_only: bool,
}

/// The model of one day group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupModel {
    pub group: DayGroup,
    pub kind: ModelKind,
    /// Usage per day at temperatures between the balance points.
    pub intercept: f64,
    pub heating: Option<DegreeDayTerm>,
    pub cooling: Option<DegreeDayTerm>,
    pub r_squared: f64,
    pub adj_r_squared: f64,
    pub days: usize,
    /// Lowest and highest temperature seen in the baseline for this group.
    pub temperature_range_c: (f64, f64),
    /// How many candidates met the sufficiency and sign/significance rules.
    pub qualified_candidates: usize,
}

impl GroupModel {
    /// Usage of a day at `temperature_c`; `in_heating_season` says whether district heating
    /// runs that day (it matters only to a seasonal heating term).
    pub fn predict(&self, temperature_c: f64, in_heating_season: bool) -> f64 {
        let h = self.heating.map_or(0.0, |t| {
            if t.in_season_only && !in_heating_season {
                0.0
            } else {
                t.slope * (t.balance_point_c - temperature_c).max(0.0)
            }
        });
        let c = self.cooling.map_or(0.0, |t| {
            t.slope * (temperature_c - t.balance_point_c).max(0.0)
        });
        self.intercept + h + c
    }

    /// Fitted parameters, balance points not counted (as CalTRACK reports them).
    pub fn parameters(&self) -> usize {
        1 + usize::from(self.heating.is_some()) + usize::from(self.cooling.is_some())
    }
}

/// CV(RMSE) and NMBE of predictions against actual values, as fractions (0.15 = 15 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub n: usize,
    pub cv_rmse: f64,
    pub nmbe: f64,
}

/// A CV(RMSE)/NMBE acceptance limit and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cv_rmse: f64,
    pub nmbe_abs: f64,
    pub source: &'static str,
}

/// ASHRAE Guideline 14-2014 limits for monthly data.
pub const ASHRAE14_MONTHLY: Limits = Limits {
    cv_rmse: 0.15,
    nmbe_abs: 0.05,
    source: "ASHRAE Guideline 14-2014, monthly data: CV(RMSE) ≤ 15 %, |NMBE| ≤ 5 %",
};

/// ASHRAE Guideline 14-2014 limits for hourly data.
pub const ASHRAE14_HOURLY: Limits = Limits {
    cv_rmse: 0.30,
    nmbe_abs: 0.10,
    source: "ASHRAE Guideline 14-2014, hourly data: CV(RMSE) ≤ 30 %, |NMBE| ≤ 10 %",
};

impl Metrics {
    pub fn within(&self, l: &Limits) -> bool {
        self.cv_rmse <= l.cv_rmse && self.nmbe.abs() <= l.nmbe_abs
    }
}

/// How well the baseline reproduces its own period (see the module doc for the rule).
#[derive(Debug, Clone, PartialEq)]
pub struct FitQuality {
    pub daily: Metrics,
    /// `None` when fewer than 3 months have ≥ 90 % of their days.
    pub monthly: Option<Metrics>,
    pub daily_within_hourly_limits: bool,
    pub monthly_within_monthly_limits: Option<bool>,
    /// Both checks pass; `false` when the monthly check could not be made.
    pub passes_ashrae14: bool,
}

/// A fitted baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub grouping: DayGrouping,
    /// Whether degree-day terms were considered: false for a day-type-only model, fitted when
    /// no outdoor temperature is known.
    pub weather_normalised: bool,
    pub models: Vec<GroupModel>,
    pub fit: FitQuality,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub days: usize,
    /// Days with data ÷ days in the span.
    pub coverage: f64,
    /// CalTRACK's baseline sufficiency: a 365-day span with ≥ 90 % of days present.
    pub caltrack_sufficient: bool,
    /// Years in the baseline that the holiday calendar does not cover (day types there know only
    /// weekends).
    pub uncovered_years: Vec<i32>,
    /// The term calendar of a school, whose vacations have their own model.
    pub terms: Option<TermCalendar>,
    /// The vacation days of the baseline when too few for a model of their own: they are then
    /// fitted and predicted with their day types, which the baseline reports as unverified.
    pub too_few_vacation_days: Option<usize>,
    /// Baseline days outside every school year of `terms`: treated as term time, unknown.
    pub days_outside_terms: usize,
    pub heating_season: Option<HeatingSeason>,
}

/// Baseline prediction against actual usage over a reporting period.
#[derive(Debug, Clone, PartialEq)]
pub struct AvoidedEnergy {
    pub days: usize,
    pub baseline_usage: f64,
    pub actual_usage: f64,
    /// `baseline_usage − actual_usage`: positive = saved.
    pub avoided: f64,
    /// `avoided ÷ baseline_usage`.
    pub avoided_fraction: f64,
    /// Days whose temperature lies outside what the baseline saw for that day group: the
    /// prediction there is an extrapolation.
    pub extrapolated_days: usize,
    pub uncovered_years: Vec<i32>,
    /// Reporting days outside every school year of the baseline's term calendar.
    pub days_outside_terms: usize,
}

impl AvoidedEnergy {
    /// `avoided` scaled to 365 days.
    pub fn avoided_per_year(&self) -> f64 {
        if self.days == 0 {
            0.0
        } else {
            self.avoided * 365.0 / self.days as f64
        }
    }
}

fn check(data: &[DailyUsage]) -> Result<(), BaselineError> {
    if data.is_empty() {
        return Err(BaselineError::Empty);
    }
    let mut seen = BTreeSet::new();
    for d in data {
        if !d.usage.is_finite() {
            return Err(BaselineError::NotFinite {
                date: d.date,
                field: "usage",
                value: d.usage,
            });
        }
        if !d.temperature_c.is_finite() {
            return Err(BaselineError::NotFinite {
                date: d.date,
                field: "temperature",
                value: d.temperature_c,
            });
        }
        if d.usage < 0.0 {
            return Err(BaselineError::Negative {
                date: d.date,
                usage: d.usage,
            });
        }
        if !seen.insert(d.date) {
            return Err(BaselineError::DuplicateDate(d.date));
        }
    }
    Ok(())
}

impl Baseline {
    /// Fits the baseline on `data` (any order; one entry per day; missing days simply absent).
    pub fn fit(
        data: &[DailyUsage],
        calendar: &Calendar,
        config: &BaselineConfig,
    ) -> Result<Self, BaselineError> {
        check(data)?;
        let t0 = data[0].temperature_c;
        // Without degree-day terms (a day-type-only model) temperature is not used at all.
        if (config.fit_heating || config.fit_cooling) && data.iter().all(|d| d.temperature_c == t0)
        {
            return Err(BaselineError::ConstantTemperature { value: t0 });
        }
        let heating_points = if config.fit_heating {
            config.heating_grid.points()?
        } else {
            Vec::new()
        };
        let cooling_points = if config.fit_cooling {
            config.cooling_grid.points()?
        } else {
            Vec::new()
        };
        let min = config.min_days_per_group.max(4);
        let (groups, too_few_vacation_days) = group_days(data, calendar, config, min);
        let vacation_model = config.terms.is_some() && too_few_vacation_days.is_none();
        let expected = config.grouping.groups(vacation_model);
        let mut models = Vec::new();
        for g in expected {
            let days = groups.get(g).map_or(&[][..], Vec::as_slice);
            if days.len() < min {
                return Err(BaselineError::TooFewDays {
                    group: *g,
                    days: days.len(),
                    min,
                });
            }
            models.push(fit_group(
                *g,
                days,
                &heating_points,
                &cooling_points,
                config,
            ));
        }
        let first_day = data.iter().map(|d| d.date).min().unwrap_or(data[0].date);
        let last_day = data.iter().map(|d| d.date).max().unwrap_or(data[0].date);
        let span = (last_day - first_day).num_days() + 1;
        let coverage = data.len() as f64 / span as f64;
        let mut baseline = Baseline {
            grouping: config.grouping,
            weather_normalised: config.fit_heating || config.fit_cooling,
            models,
            fit: FitQuality {
                daily: Metrics {
                    n: 0,
                    cv_rmse: 0.0,
                    nmbe: 0.0,
                },
                monthly: None,
                daily_within_hourly_limits: false,
                monthly_within_monthly_limits: None,
                passes_ashrae14: false,
            },
            first_day,
            last_day,
            days: data.len(),
            coverage,
            caltrack_sufficient: span >= 365 && coverage >= 0.9,
            uncovered_years: calendar.uncovered_years(data.iter().map(|d| d.date)),
            terms: config.terms.clone(),
            too_few_vacation_days,
            days_outside_terms: outside_terms(config.terms.as_ref(), data),
            heating_season: config.heating_season.clone(),
        };
        let params: usize = baseline.models.iter().map(GroupModel::parameters).sum();
        baseline.fit = baseline.quality(data, calendar, params);
        Ok(baseline)
    }

    fn model_for(&self, date: NaiveDate, calendar: &Calendar) -> Option<&GroupModel> {
        let terms = self
            .terms
            .as_ref()
            .filter(|_| self.too_few_vacation_days.is_none());
        let g = self.grouping.group(date, calendar, terms);
        self.models.iter().find(|m| m.group == g)
    }

    fn in_heating_season(&self, date: NaiveDate) -> bool {
        self.heating_season
            .as_ref()
            .is_some_and(|s| s.contains(date))
    }

    /// Predicted usage of one day.
    pub fn predict(&self, date: NaiveDate, temperature_c: f64, calendar: &Calendar) -> f64 {
        self.model_for(date, calendar).map_or(0.0, |m| {
            m.predict(temperature_c, self.in_heating_season(date))
        })
    }

    /// What the report must say about the calendars behind the day groups: years without a
    /// holiday notice, the term calendar used and days outside it, in the baseline and in the
    /// reporting period `period`.
    pub fn calendar_notes(&self, period: Option<&AvoidedEnergy>) -> Vec<String> {
        let mut notes = Vec::new();
        let mut uncovered = self.uncovered_years.clone();
        uncovered.extend(
            period
                .map(|p| p.uncovered_years.clone())
                .unwrap_or_default(),
        );
        uncovered.sort_unstable();
        uncovered.dedup();
        if !uncovered.is_empty() {
            notes.push(format!(
                "the holiday calendar has no State Council notice for {uncovered:?}: day types there \
                 know only weekends (add the notice to the deployment's [reference] holidays file)"
            ));
        }
        if let Some(t) = &self.terms {
            match self.too_few_vacation_days {
                None => notes.push(format!(
                    "school vacations from term calendar {} ({}) have their own model",
                    t.id,
                    if t.verified { "verified" } else { "UNVERIFIED" }
                )),
                Some(n) => notes.push(too_few_vacation_days_reason(t, n)),
            }
            let reporting = period.map_or(0, |p| p.days_outside_terms);
            for (days, what) in [
                (self.days_outside_terms, "baseline"),
                (reporting, "reporting"),
            ] {
                if days > 0 {
                    notes.push(outside_terms_reason(t, days, what));
                }
            }
        }
        notes
    }

    /// Why figures resting on this baseline are not verified, apart from the holiday calendar's
    /// years (`uncovered_years`): an unverified term calendar, baseline days outside it, an
    /// unverified heating season the chosen models use.
    pub fn unverified_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(t) = &self.terms {
            reasons.extend(t.unverified_reason());
            if let Some(n) = self.too_few_vacation_days {
                reasons.push(too_few_vacation_days_reason(t, n));
            }
            if self.days_outside_terms > 0 {
                reasons.push(outside_terms_reason(t, self.days_outside_terms, "baseline"));
            }
        }
        let seasonal = self
            .models
            .iter()
            .any(|m| m.heating.is_some_and(|h| h.in_season_only));
        if seasonal && let Some(s) = &self.heating_season {
            reasons.extend(s.unverified_reason());
        }
        reasons
    }

    fn quality(&self, data: &[DailyUsage], calendar: &Calendar, params: usize) -> FitQuality {
        let pairs: Vec<(f64, f64)> = data
            .iter()
            .map(|d| (d.usage, self.predict(d.date, d.temperature_c, calendar)))
            .collect();
        let daily = metrics(&pairs, params);
        let mut months: BTreeMap<(i32, u32), (f64, f64, u32)> = BTreeMap::new();
        for (d, (y, p)) in data.iter().zip(&pairs) {
            let e = months
                .entry((d.date.year(), d.date.month()))
                .or_insert((0.0, 0.0, 0));
            e.0 += y;
            e.1 += p;
            e.2 += 1;
        }
        let full: Vec<(f64, f64)> = months
            .iter()
            .filter(|((y, m), (_, _, n))| f64::from(*n) >= 0.9 * f64::from(days_in_month(*y, *m)))
            .map(|(_, (y, p, _))| (*y, *p))
            .collect();
        let monthly = (full.len() >= 3).then(|| metrics(&full, 0));
        let daily_ok = daily.within(&ASHRAE14_HOURLY);
        let monthly_ok = monthly.map(|m| m.within(&ASHRAE14_MONTHLY));
        FitQuality {
            daily,
            monthly,
            daily_within_hourly_limits: daily_ok,
            monthly_within_monthly_limits: monthly_ok,
            passes_ashrae14: daily_ok && monthly_ok == Some(true),
        }
    }

    /// CV(RMSE) and NMBE of the baseline's predictions on other days (e.g. a hold-out period),
    /// with p = 0.
    pub fn evaluate(
        &self,
        data: &[DailyUsage],
        calendar: &Calendar,
    ) -> Result<Metrics, BaselineError> {
        check(data)?;
        let pairs: Vec<(f64, f64)> = data
            .iter()
            .map(|d| (d.usage, self.predict(d.date, d.temperature_c, calendar)))
            .collect();
        Ok(metrics(&pairs, 0))
    }

    /// Baseline prediction minus actual usage over a reporting period.
    pub fn avoided_energy(
        &self,
        reporting: &[DailyUsage],
        calendar: &Calendar,
    ) -> Result<AvoidedEnergy, BaselineError> {
        check(reporting)?;
        let mut baseline_usage = 0.0;
        let mut actual_usage = 0.0;
        let mut extrapolated_days = 0;
        for d in reporting {
            if let Some(m) = self.model_for(d.date, calendar) {
                baseline_usage += m.predict(d.temperature_c, self.in_heating_season(d.date));
                let (lo, hi) = m.temperature_range_c;
                if d.temperature_c < lo || d.temperature_c > hi {
                    extrapolated_days += 1;
                }
            }
            actual_usage += d.usage;
        }
        let avoided = baseline_usage - actual_usage;
        Ok(AvoidedEnergy {
            days: reporting.len(),
            baseline_usage,
            actual_usage,
            avoided,
            avoided_fraction: if baseline_usage > 0.0 {
                avoided / baseline_usage
            } else {
                0.0
            },
            extrapolated_days,
            uncovered_years: calendar.uncovered_years(reporting.iter().map(|d| d.date)),
            days_outside_terms: outside_terms(self.terms.as_ref(), reporting),
        })
    }
}

/// The days of `data` by day group, and the number of vacation days when a school's term
/// calendar gives fewer than `min`: then there is no vacation model and the vacation days join
/// their day types (a baseline that says so rather than none at all).
fn group_days(
    data: &[DailyUsage],
    calendar: &Calendar,
    config: &BaselineConfig,
    min: usize,
) -> (BTreeMap<DayGroup, Vec<DailyUsage>>, Option<usize>) {
    let by_group = |terms: Option<&TermCalendar>| {
        let mut groups: BTreeMap<DayGroup, Vec<DailyUsage>> = BTreeMap::new();
        for d in data {
            let g = config.grouping.group(d.date, calendar, terms);
            groups.entry(g).or_default().push(*d);
        }
        groups
    };
    let groups = by_group(config.terms.as_ref());
    if config.terms.is_none() || config.grouping == DayGrouping::Pooled {
        return (groups, None);
    }
    let vacation_days = groups.get(&DayGroup::Vacation).map_or(0, Vec::len);
    if vacation_days < min {
        (by_group(None), Some(vacation_days))
    } else {
        (groups, None)
    }
}

fn too_few_vacation_days_reason(terms: &TermCalendar, days: usize) -> String {
    format!(
        "only {days} vacation days of term calendar {} in the baseline, too few for a model of \
         their own: vacation days are predicted as term days",
        terms.id
    )
}

/// Days of `data` outside every school year of `terms` (0 without terms).
fn outside_terms(terms: Option<&TermCalendar>, data: &[DailyUsage]) -> usize {
    terms.map_or(0, |t| data.iter().filter(|d| !t.covers(d.date)).count())
}

/// The reason that `days` days of the `period` lie outside the school years of `terms`.
pub fn outside_terms_reason(terms: &TermCalendar, days: usize, period: &str) -> String {
    format!(
        "{days} {period} days lie outside the school years of term calendar {}: treated as term time, their vacations unknown",
        terms.id
    )
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    match (NaiveDate::from_ymd_opt(y, m, 1), next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 31,
    }
}

/// (actual, predicted) pairs → CV(RMSE), NMBE with `p` parameters (Guideline 14 form).
fn metrics(pairs: &[(f64, f64)], p: usize) -> Metrics {
    let n = pairs.len();
    let dof = n.saturating_sub(p).max(1) as f64;
    let mean = pairs.iter().map(|(y, _)| y).sum::<f64>() / n.max(1) as f64;
    let sse: f64 = pairs.iter().map(|(y, f)| (y - f).powi(2)).sum();
    let bias: f64 = pairs.iter().map(|(y, f)| y - f).sum();
    if mean <= 0.0 {
        return Metrics {
            n,
            cv_rmse: f64::INFINITY,
            nmbe: f64::INFINITY,
        };
    }
    Metrics {
        n,
        cv_rmse: (sse / dof).sqrt() / mean,
        nmbe: bias / (dof * mean),
    }
}

struct DegreeDays {
    balance_point_c: f64,
    values: Vec<f64>,
    sufficient: bool,
    in_season_only: bool,
}

/// Degree days at each balance point; with `season` (a day → inside the heating season), only
/// inside the season.
fn degree_days(
    temps: &[f64],
    points: &[f64],
    heating: bool,
    season: Option<&[bool]>,
    config: &BaselineConfig,
) -> Vec<DegreeDays> {
    points
        .iter()
        .map(|&bp| {
            let values: Vec<f64> = temps
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let on = season.is_none_or(|s| s.get(i).copied().unwrap_or(false));
                    if on {
                        if heating { bp - t } else { t - bp }.max(0.0)
                    } else {
                        0.0
                    }
                })
                .collect();
            let nonzero = values.iter().filter(|v| **v > 0.0).count();
            let total: f64 = values.iter().sum();
            DegreeDays {
                balance_point_c: bp,
                in_season_only: season.is_some(),
                sufficient: nonzero >= config.min_nonzero_degree_days
                    && total >= config.min_total_degree_days_c,
                values,
            }
        })
        .collect()
}

fn fit_group(
    group: DayGroup,
    days: &[DailyUsage],
    heating_points: &[f64],
    cooling_points: &[f64],
    config: &BaselineConfig,
) -> GroupModel {
    let y: Vec<f64> = days.iter().map(|d| d.usage).collect();
    let temps: Vec<f64> = days.iter().map(|d| d.temperature_c).collect();
    let range = temps
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(*t), hi.max(*t))
        });
    let base = GroupModel {
        group,
        kind: ModelKind::InterceptOnly,
        intercept: y.iter().sum::<f64>() / y.len() as f64,
        heating: None,
        cooling: None,
        r_squared: 0.0,
        adj_r_squared: 0.0,
        days: days.len(),
        temperature_range_c: range,
        qualified_candidates: 1,
    };
    let mut hdd = degree_days(&temps, heating_points, true, None, config);
    if let Some(s) = &config.heating_season {
        let season: Vec<bool> = days.iter().map(|d| s.contains(d.date)).collect();
        hdd.extend(degree_days(
            &temps,
            heating_points,
            true,
            Some(&season),
            config,
        ));
    }
    let cdd = degree_days(&temps, cooling_points, false, None, config);
    let term = |dd: &DegreeDays, slope: f64, p: f64| DegreeDayTerm {
        balance_point_c: dd.balance_point_c,
        slope,
        p_value: p,
        in_season_only: dd.in_season_only,
    };
    let ok = |coef: &[f64], pv: &[f64]| {
        coef.iter().all(|c| *c >= 0.0)
            && coef[1..].iter().all(|c| *c > 0.0)
            && pv[1..].iter().all(|p| *p <= config.max_p_value)
    };
    let mut best = base;
    let mut qualified = 1;
    let mut consider = |m: GroupModel| {
        qualified += 1;
        if m.adj_r_squared > best.adj_r_squared {
            best = m;
        }
    };
    for h in hdd.iter().filter(|h| h.sufficient) {
        if let Some(f) = ols(&y, &[h.values.as_slice()]).filter(|f| ok(&f.coef, &f.p_value)) {
            consider(GroupModel {
                kind: ModelKind::HeatingOnly,
                intercept: f.coef[0],
                heating: Some(term(h, f.coef[1], f.p_value[1])),
                cooling: None,
                r_squared: f.r_squared,
                adj_r_squared: f.adj_r_squared,
                ..best_template(group, days.len(), range)
            });
        }
    }
    for c in cdd.iter().filter(|c| c.sufficient) {
        if let Some(f) = ols(&y, &[c.values.as_slice()]).filter(|f| ok(&f.coef, &f.p_value)) {
            consider(GroupModel {
                kind: ModelKind::CoolingOnly,
                intercept: f.coef[0],
                heating: None,
                cooling: Some(term(c, f.coef[1], f.p_value[1])),
                r_squared: f.r_squared,
                adj_r_squared: f.adj_r_squared,
                ..best_template(group, days.len(), range)
            });
        }
    }
    for h in hdd.iter().filter(|h| h.sufficient) {
        for c in cdd
            .iter()
            .filter(|c| c.sufficient && c.balance_point_c >= h.balance_point_c)
        {
            if let Some(f) = ols(&y, &[h.values.as_slice(), c.values.as_slice()])
                .filter(|f| ok(&f.coef, &f.p_value))
            {
                consider(GroupModel {
                    kind: ModelKind::HeatingAndCooling,
                    intercept: f.coef[0],
                    heating: Some(term(h, f.coef[1], f.p_value[1])),
                    cooling: Some(term(c, f.coef[2], f.p_value[2])),
                    r_squared: f.r_squared,
                    adj_r_squared: f.adj_r_squared,
                    ..best_template(group, days.len(), range)
                });
            }
        }
    }
    best.qualified_candidates = qualified;
    best
}

fn best_template(group: DayGroup, days: usize, range: (f64, f64)) -> GroupModel {
    GroupModel {
        group,
        kind: ModelKind::InterceptOnly,
        intercept: 0.0,
        heating: None,
        cooling: None,
        r_squared: 0.0,
        adj_r_squared: 0.0,
        days,
        temperature_range_c: range,
        qualified_candidates: 0,
    }
}

#[cfg(test)]
mod tests;
