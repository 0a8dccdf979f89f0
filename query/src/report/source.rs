//! Where the reports read from: the readings table summed per (account, meter, category, item,
//! unit, period), the accounts from the config, and the factor tables.
//!
//! Reports sum per meter (not per item) because the unmetered remainder (缺口量) is a main
//! meter minus its sub-meters, and only the meter says which is which.
//!
//! They sum energy only. Standard coal and carbon are that energy times the factors the
//! server selects for the account ([`Reports::pricing`]: the account's `[account.factors]`,
//! the factor tables with the deployment's factor files, the data year of the period), so
//! the same energy gives the same kgce and kgCO2e in every report, and a changed or added
//! factor restates every period it applies to. The kgce and kgCO2e a gateway computed per
//! reading stay in the raw rows (and in the rollups' sums) as what the edge computed; no
//! report adds them up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::Array;
use chrono::Datelike;
use datafusion::prelude::SessionContext;
use reading_model::{
    AccountCode, Category, EnergyCode, FactorSelection, FactorTables, MeterId, Unit,
};
use serde::Serialize;

use super::period::local_ts_sql;
use super::scope::{Filter, matches_all, sql_all};
use crate::accounts::{ACCOUNTS, Account, accounts_batch};
use crate::report::{
    Query, QueryError, column_floats, column_ints, column_strings, consumption_quantities_sql,
    rfc3339,
};
use crate::savings::reference::ReferenceData;
use crate::savings::weather::{self, DailyTemperature, WeatherError};
use reading_model::time::{Granularity, local_date_of_shifted_secs};
use storage::rollup::{
    DAY_MS, FILE as ROLLUP_FILE, Period, month_bounds, month_rollup_current, month_rollup_path,
    newest_readings, rollup_dir, rollups_current,
};
use storage::rollup::{RollupFile, RollupQuery, Span, report_period, sum_rollup_files};
use storage::{READINGS, partition_date};

/// Consumption of one meter in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSum {
    pub account: AccountCode,
    pub meter: MeterId,
    pub category: Category,
    pub item: EnergyCode,
    pub unit: String,
    /// First local date of the period.
    pub period: chrono::NaiveDate,
    pub consumption: f64,
    pub intervals: i64,
}

/// A factor as applied to a figure: its value per the figure's unit, and its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactorUsed {
    pub id: String,
    /// Where the definition came from: `builtin` or the deployment's factor file.
    pub origin: String,
    /// A digest of the definition: another value or year under the same id is another version.
    pub version: String,
    /// kgce or kgCO2e per unit of the figure.
    pub value: f64,
    pub source: String,
    /// The factor's data year.
    pub year: u16,
    pub verified: bool,
}

/// The factors of one account's category in one data year, per one unit of a figure: what
/// turns its energy into kgce and kgCO2e. `None` where no factor applies (water has none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pricing {
    pub coal: Option<FactorUsed>,
    pub carbon: Option<FactorUsed>,
}

impl Pricing {
    /// Standard coal of `consumption`: one multiplication, 0 without a factor.
    pub fn kgce(&self, consumption: f64) -> f64 {
        self.coal.as_ref().map_or(0.0, |f| consumption * f.value)
    }

    /// Carbon of `consumption`: one multiplication, 0 without a factor.
    pub fn kgco2e(&self, consumption: f64) -> f64 {
        self.carbon.as_ref().map_or(0.0, |f| consumption * f.value)
    }
}

/// [`Reports::pricing`] remembered per (account, category, unit, year), for the analyses that
/// price thousands of buckets of the same few.
pub(crate) struct Prices<'r> {
    reports: &'r Reports,
    known: BTreeMap<(AccountCode, Category, String, i32), Pricing>,
}

impl<'r> Prices<'r> {
    pub(crate) fn new(reports: &'r Reports) -> Self {
        Self {
            reports,
            known: BTreeMap::new(),
        }
    }

    /// The pricing of `account`'s `category` in `unit` for the period starting `period`.
    pub(crate) fn of(
        &mut self,
        account: &AccountCode,
        category: Category,
        unit: &str,
        period: chrono::NaiveDate,
    ) -> &Pricing {
        let year = period.year();
        self.known
            .entry((account.clone(), category, unit.to_owned(), year))
            .or_insert_with(|| self.reports.pricing(account, category, unit, year))
    }
}

/// The selection of accounts the config does not list: the defaults.
static DEFAULT_SELECTION: std::sync::LazyLock<FactorSelection> =
    std::sync::LazyLock::new(FactorSelection::default);

/// Reports over one data directory, with the deployment's accounts and factor tables.
#[derive(Debug, Clone)]
pub struct Reports {
    pub query: Query,
    accounts: Arc<BTreeMap<AccountCode, Account>>,
    pub factors: Arc<FactorTables>,
    /// Daily mean outdoor temperatures from the server's CSV, for the savings baseline of
    /// accounts without temperature readings.
    pub temperature_csv: Option<Arc<[DailyTemperature]>>,
    /// Whether the consumption report reads rollups where they are current (default).
    use_rollups: bool,
    /// The deployment's reference data; the built-in files when `None`.
    reference: Option<Arc<ReferenceData>>,
}

impl Reports {
    pub fn new(query: Query, accounts: Vec<Account>, factors: FactorTables) -> Self {
        Self {
            query,
            accounts: Arc::new(accounts.into_iter().map(|a| (a.code.clone(), a)).collect()),
            factors: Arc::new(factors),
            temperature_csv: None,
            use_rollups: true,
            reference: None,
        }
    }

    /// Uses `reference` (the built-in files extended by the deployment's) for the savings
    /// report and the alert rules instead of the built-in files alone.
    pub fn with_reference(mut self, reference: ReferenceData) -> Self {
        self.reference = Some(Arc::new(reference));
        self
    }

    /// The holiday calendar, benchmark sets, term calendars and heating seasons in force.
    pub fn reference(&self) -> Result<Arc<ReferenceData>, QueryError> {
        match &self.reference {
            Some(r) => Ok(r.clone()),
            None => Ok(Arc::new(ReferenceData::builtin()?)),
        }
    }

    /// Uses the daily means of a temperature CSV (`date,temperature_c` daily means, or
    /// `time,temperature_c` samples averaged per day; see [`crate::savings::weather`]).
    pub fn with_temperature_csv(mut self, text: &str) -> Result<Self, WeatherError> {
        let days = match weather::parse_csv(text)? {
            weather::TemperatureCsv::Daily(d) => d,
            weather::TemperatureCsv::Samples(s) => weather::daily_means(&s)?.days,
        };
        self.temperature_csv = Some(days.into());
        Ok(self)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn account(&self, code: &AccountCode) -> Option<&Account> {
        self.accounts.get(code)
    }

    /// The factor selection of an account: its `[account.factors]`, or the defaults for an
    /// account the config does not list.
    pub fn selection(&self, code: &AccountCode) -> &FactorSelection {
        self.accounts
            .get(code)
            .map_or(&*DEFAULT_SELECTION, |a| a.factor_selection())
    }

    /// The factors that turn `account`'s energy of `category`, counted in `unit`, into kgce and
    /// kgCO2e for data year `year` (the year of the period): the account's selection resolved
    /// in the server's tables, each value per one `unit`. A unit that does not convert to the
    /// category's canonical unit gets no factor (and no kgce), as at the gateway.
    pub fn pricing(
        &self,
        account: &AccountCode,
        category: Category,
        unit: &str,
        year: i32,
    ) -> Pricing {
        let canonical = category.consumption_unit();
        let Some(scale) = Unit::parse(unit)
            .ok()
            .and_then(|u| u.convert(1.0, canonical).ok())
        else {
            return Pricing::default();
        };
        let sel = self.selection(account);
        let used = |r: reading_model::factor::Resolved<'_>| FactorUsed {
            id: r.id.to_owned(),
            origin: r.origin.to_owned(),
            version: r.version.to_owned(),
            value: r.per_unit * scale,
            source: r.source.to_owned(),
            year: r.year,
            verified: r.verified,
        };
        Pricing {
            coal: self.factors.coal(category, year, sel).map(used),
            carbon: self.factors.carbon(account, category, year, sel).map(used),
        }
    }

    /// A session with `readings` (once a file exists) and `accounts` registered.
    pub async fn session(&self) -> Result<(SessionContext, bool), QueryError> {
        self.session_within(None).await
    }

    /// A session whose `readings` hold only the date partitions `from..=to` (see
    /// [`Query::session_within`]).
    pub async fn session_within(
        &self,
        dates: Option<(&str, &str)>,
    ) -> Result<(SessionContext, bool), QueryError> {
        self.session_matching(|date| dates.is_none_or(|(from, to)| date >= from && date <= to))
            .await
    }

    /// A session whose `readings` hold only the date partitions `keep` accepts.
    pub async fn session_matching(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(SessionContext, bool), QueryError> {
        let (ctx, has_readings) = match self.query.session_matching(keep).await? {
            Some(ctx) => (ctx, true),
            None => (
                SessionContext::new_with_config(super::session_config()),
                false,
            ),
        };
        let list: Vec<Account> = self.accounts.values().cloned().collect();
        ctx.register_batch(ACCOUNTS, accounts_batch(&list)?)?;
        Ok((ctx, has_readings))
    }

    /// Consumption per meter and period in `(from_ms, to_ms]`, for accounts matching all filters.
    pub async fn meter_sums(
        &self,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
        filters: &[Filter],
    ) -> Result<Vec<MeterSum>, QueryError> {
        Ok(self
            .bucket_sums(from_ms, to_ms, granularity.name(), filters, None)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// Consumption per meter and local-time bucket (`trunc`: a `date_trunc` unit such as `hour`
    /// or `day`) in `(from_ms, to_ms]`, optionally of one category; each sum comes with its
    /// bucket's local start as seconds since the epoch (the local time read as if it were UTC).
    pub(crate) async fn bucket_sums(
        &self,
        from_ms: i64,
        to_ms: i64,
        trunc: &str,
        filters: &[Filter],
        category: Option<Category>,
    ) -> Result<Vec<(i64, MeterSum)>, QueryError> {
        let only = category.map_or_else(String::new, |c| format!(" AND category = '{}'", c.code()));
        self.sums_over(
            &[(from_ms, to_ms)],
            trunc,
            &format!("{}{only}", sql_all(filters)),
        )
        .await
    }

    /// Like [`Reports::bucket_sums`] over several ranges `(from, to]` at once, for the rows
    /// that match the SQL condition `condition` (on the readings' columns).
    async fn sums_over(
        &self,
        ranges: &[(i64, i64)],
        trunc: &str,
        condition: &str,
    ) -> Result<Vec<(i64, MeterSum)>, QueryError> {
        if ranges.is_empty() {
            return Ok(vec![]);
        }
        // The UTC-date partitions that can hold the ranges: only their files are read.
        let dates: BTreeSet<String> = ranges
            .iter()
            .flat_map(|&(from, to)| {
                (from.div_euclid(DAY_MS)..=to.div_euclid(DAY_MS))
                    .map(|d| partition_date(d * DAY_MS))
            })
            .collect();
        let (ctx, has_readings) = self.session_matching(|date| dates.contains(date)).await?;
        if !has_readings {
            return Ok(vec![]);
        }
        let when = ranges
            .iter()
            .map(|&(from, to)| format!("(ts > '{}' AND ts <= '{}')", rfc3339(from), rfc3339(to)))
            .collect::<Vec<_>>()
            .join(" OR ");
        // Shift to local time, step back 1 ms for (from, to] and truncate: the bucket's local
        // start as seconds since the epoch.
        let sql = format!(
            "SELECT account, meter, category, item, unit, \
                    to_unixtime(date_trunc('{g}', {local})) AS period, \
                    sum(delta) AS consumption, \
                    count(delta) AS intervals \
             FROM {READINGS} \
             WHERE quantity IN ({q}) AND delta IS NOT NULL \
               AND ({when}) AND {condition} \
             GROUP BY account, meter, category, item, unit, period",
            g = trunc,
            local = local_ts_sql("ts", 1),
            q = consumption_quantities_sql(),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let s = |i, name| column_strings(&b, i, name);
            let f = |i, name| column_floats(&b, i, name);
            let i64s = |i, name| column_ints(&b, i, name);
            let (account, meter, category, item, unit) = (
                s(0, "account")?,
                s(1, "meter")?,
                s(2, "category")?,
                s(3, "item")?,
                s(4, "unit")?,
            );
            let period = i64s(5, "period")?;
            let consumption = f(6, "consumption")?;
            let intervals = i64s(7, "intervals")?;
            for i in 0..b.num_rows() {
                // Stored rows passed validation at ingest; a row that no longer parses is
                // skipped with a warning rather than failing the whole report.
                let parsed = (
                    AccountCode::parse(account.value(i)),
                    MeterId::parse(meter.value(i)),
                    Category::parse(category.value(i)),
                    EnergyCode::parse(item.value(i)),
                    local_date_of_shifted_secs(period.value(i)),
                );
                let secs = period.value(i);
                let (Ok(account), Ok(meter), Ok(category), Ok(item), Some(period)) = parsed else {
                    tracing::warn!(
                        account = account.value(i),
                        meter = meter.value(i),
                        "stored row with an invalid code left out of the report"
                    );
                    continue;
                };
                out.push((
                    secs,
                    MeterSum {
                        account,
                        meter,
                        category,
                        item,
                        unit: unit.value(i).to_owned(),
                        period,
                        consumption: if consumption.is_null(i) {
                            0.0
                        } else {
                            consumption.value(i)
                        },
                        intervals: intervals.value(i),
                    },
                ));
            }
        }
        out.sort_by(|(ta, a), (tb, b)| {
            (&a.account, ta, a.category, &a.item, &a.meter)
                .cmp(&(&b.account, tb, b.category, &b.item, &b.meter))
        });
        Ok(out)
    }

    /// Which meters of an account's category are main meters, and each one's sub-meters.
    /// Configured relations win; otherwise meters on the category-total item are main and all
    /// other meters of the category are their sub-meters.
    pub fn relations(
        &self,
        account: &AccountCode,
        category: Category,
        sums: &[&MeterSum],
    ) -> Relations {
        let configured: Vec<_> = self
            .accounts
            .get(account)
            .map(|a| {
                a.main_meter
                    .iter()
                    .filter(|m| m.category == category)
                    .collect()
            })
            .unwrap_or_default();
        if configured.is_empty() {
            let total = category.total_code();
            let mut mains: Vec<MeterId> = sums
                .iter()
                .filter(|s| s.item == total)
                .map(|s| s.meter.clone())
                .collect();
            mains.sort();
            mains.dedup();
            let mut subs: Vec<MeterId> = sums
                .iter()
                .filter(|s| s.item != total)
                .map(|s| s.meter.clone())
                .collect();
            subs.sort();
            subs.dedup();
            Relations { mains, subs }
        } else {
            Relations {
                mains: configured.iter().map(|m| m.meter.clone()).collect(),
                subs: configured
                    .iter()
                    .flat_map(|m| m.sub_meters.iter().cloned())
                    .collect(),
            }
        }
    }
}

/// Main meters and the sub-meters they feed, for one account and category.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Relations {
    pub mains: Vec<MeterId>,
    pub subs: Vec<MeterId>,
}

/// Which parts of a range a report reads from rollups, and how.
#[derive(Debug, Default)]
struct RollupPlan {
    /// Monthly rollups of the Beijing months wholly inside the range (month and year reports),
    /// daily rollups of dates wholly inside the range and one report period, and hourly
    /// rollups of dates a report period or the range's end cuts.
    files: Vec<RollupFile>,
    /// Ranges `(from, to]` read from the raw readings: dates not rolled up yet, or whose
    /// rollups are older than their readings, or with rows still in the server's memory.
    raw: Vec<(i64, i64)>,
}

impl Reports {
    /// Reads rollups (see [`Reports::meter_sums_with_rollups`]); off, every report reads the
    /// raw readings only.
    pub fn with_rollups(mut self, on: bool) -> Self {
        self.use_rollups = on;
        self
    }

    fn rollup_plan(&self, from_ms: i64, to_ms: i64, granularity: Granularity) -> RollupPlan {
        // Rows in the server's memory are newer than any rollup: their dates are read raw.
        let live: BTreeSet<i64> = self
            .query
            .live
            .as_ref()
            .map(|l| l.snapshot())
            .unwrap_or_default()
            .iter()
            .map(|r| (r.reading.ts - 1).div_euclid(DAY_MS))
            .collect();
        let data_dir = &self.query.data_dir;
        // Each readings partition is listed once, and each date checked once, though a date
        // is asked about for itself, for the date before, and for its month.
        let mut listed: BTreeMap<i64, Option<Option<SystemTime>>> = BTreeMap::new();
        let mut checked: BTreeMap<i64, bool> = BTreeMap::new();
        let mut current = |day: i64| {
            *checked.entry(day).or_insert_with(|| {
                !live.contains(&day)
                    && rollups_current(data_dir, day, &mut |d| {
                        *listed
                            .entry(d)
                            .or_insert_with(|| newest_readings(data_dir, d))
                    })
            })
        };
        let mut plan = RollupPlan::default();
        // Months wholly inside the range whose monthly rollup is current; the rest of the
        // range, in segments between them, by date.
        let mut segments = Vec::new();
        let mut cursor = from_ms;
        if granularity != Granularity::Day {
            let mut month = report_period(from_ms + 1, Granularity::Month);
            while let Some(m) = month {
                let Some((start, end)) = month_bounds(m) else {
                    break;
                };
                if end > to_ms {
                    break;
                }
                if start >= from_ms && month_rollup_current(data_dir, m, &mut current) {
                    if cursor < start {
                        segments.push((cursor, start));
                    }
                    plan.files.push(RollupFile {
                        path: month_rollup_path(data_dir, m),
                        span: Span::Month,
                        window: (start, end),
                    });
                    cursor = end;
                }
                month = m.checked_add_months(chrono::Months::new(1));
            }
        }
        if cursor < to_ms {
            segments.push((cursor, to_ms));
        }
        let local_date = reading_model::time::local_date;
        for (from_ms, to_ms) in segments {
            // UTC dates whose period (D 00:00, D+1 00:00] meets (from, to].
            for day in from_ms.div_euclid(DAY_MS)..=(to_ms - 1).div_euclid(DAY_MS) {
                let start = day * DAY_MS;
                let date = partition_date(start);
                if !current(day) {
                    let range = (start.max(from_ms), (start + DAY_MS).min(to_ms));
                    match plan.raw.last_mut() {
                        Some(prev) if prev.1 == range.0 => prev.1 = range.1,
                        _ => plan.raw.push(range),
                    }
                    continue;
                }
                let whole = start >= from_ms && start + DAY_MS <= to_ms;
                let one_period = match (local_date(start + 1), local_date(start + DAY_MS)) {
                    (Some(a), Some(b)) => granularity.start(a) == granularity.start(b),
                    _ => false,
                };
                let period = if whole && one_period {
                    Period::Daily
                } else {
                    Period::Hourly
                };
                plan.files.push(RollupFile::new(
                    rollup_dir(data_dir, period, &date).join(ROLLUP_FILE),
                    period,
                    (start.max(from_ms), (start + DAY_MS).min(to_ms)),
                ));
            }
        }
        plan
    }

    /// [`Reports::meter_sums`] through the rollups where they are current: daily rollups for
    /// UTC dates wholly inside one report period, hourly rollups for dates a period boundary
    /// or the range's end cuts, and the raw readings (with the server's unflushed rows) for
    /// the rest. The sums are the same as the raw path's.
    ///
    /// Rollups sum per item, not per meter. For accounts whose main and sub-meters follow from
    /// the items (meters on the category-total item are the main meters) that is all the item
    /// tree needs, and such rows carry the meter id `rollup:<item>`. Accounts with configured
    /// `[[account.main_meter]]` are read from the raw readings.
    pub async fn meter_sums_with_rollups(
        &self,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
        filters: &[Filter],
    ) -> Result<Vec<MeterSum>, QueryError> {
        if !self.use_rollups || to_ms <= from_ms {
            return self.meter_sums(from_ms, to_ms, granularity, filters).await;
        }
        let configured: BTreeSet<AccountCode> = self
            .accounts
            .values()
            .filter(|a| !a.main_meter.is_empty())
            .map(|a| a.code.clone())
            .collect();
        let mut out = Vec::new();
        if !configured.is_empty() {
            let mut only = filters.to_vec();
            only.push(Filter::Accounts(configured.clone()));
            out.extend(self.meter_sums(from_ms, to_ms, granularity, &only).await?);
        }
        let configured_codes = configured.clone();
        let not_configured = if configured.is_empty() {
            "TRUE".to_owned()
        } else {
            format!("NOT ({})", Filter::Accounts(configured).sql())
        };
        let scope = format!("{} AND {not_configured}", sql_all(filters));
        let in_scope = {
            let (filters, configured) = (filters.to_vec(), configured_codes);
            Arc::new(move |account: &str| {
                AccountCode::parse(account)
                    .is_ok_and(|a| matches_all(&filters, &a) && !configured.contains(&a))
            })
        };
        let plan = self.rollup_plan(from_ms, to_ms, granularity);
        out.extend(
            self.sums_over(&plan.raw, granularity.name(), &scope)
                .await?
                .into_iter()
                .map(|(_, s)| s),
        );
        out.extend(self.rollup_sums(plan.files, granularity, in_scope).await?);
        out.sort_by(|a, b| {
            (&a.account, a.period, a.category, &a.item, &a.meter)
                .cmp(&(&b.account, b.period, b.category, &b.item, &b.meter))
        });
        Ok(out)
    }

    /// Sums of the planned daily and hourly rollup files per (account, category, item, unit,
    /// period), of the accounts `account_in_scope` accepts (see [`super::rollup_read`]).
    async fn rollup_sums(
        &self,
        files: Vec<RollupFile>,
        granularity: Granularity,
        account_in_scope: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Result<Vec<MeterSum>, QueryError> {
        if files.is_empty() {
            return Ok(vec![]);
        }
        let data_dir = &self.query.data_dir;
        // Blocking file reads on threads of their own, off the async runtime's workers.
        let sums = tokio::task::spawn_blocking(move || {
            let q = RollupQuery {
                granularity,
                account_in_scope: &*account_in_scope,
            };
            sum_rollup_files(&files, &q)
        })
        .await
        .map_err(|e| storage::StorageError {
            path: data_dir.join(storage::rollup::ROLLUPS),
            message: format!("reading rollups: {e}"),
        })??;
        let mut out = Vec::with_capacity(sums.len());
        for ((account, category, item, unit, period), s) in sums {
            let parsed = (
                AccountCode::parse(&account),
                MeterId::parse(&format!("rollup:{item}")),
                Category::parse(&category),
                EnergyCode::parse(&item),
            );
            let (Ok(account), Ok(meter), Ok(category), Ok(item)) = parsed else {
                tracing::warn!(
                    account,
                    item,
                    "rollup row with an invalid code left out of the report"
                );
                continue;
            };
            out.push(MeterSum {
                account,
                meter,
                category,
                item,
                unit,
                period,
                // The rollup's kgce and kgCO2e are the edge's per-reading figures summed;
                // reports price the energy with the server's factors instead.
                consumption: s.energy,
                intervals: s.intervals,
            });
        }
        Ok(out)
    }
}
