//! Where the reports read from: the readings table summed per (account, meter, category, item,
//! unit, carbon factor, period), the accounts from the config, and the factor tables.
//!
//! Reports sum per meter (not per item) because the unmetered remainder (缺口量) is a main
//! meter minus its sub-meters, and only the meter says which is which.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::Array;
use datafusion::prelude::SessionContext;
use reading_model::{AccountCode, Category, EnergyCode, FactorTables, MeterId};

use super::period::{Granularity, OFFSET_HOURS, local_date_of_shifted_secs};
use super::scope::{Filter, sql_all};
use crate::accounts::{ACCOUNTS, Account, accounts_batch};
use crate::report::{
    Query, QueryError, column_floats, column_ints, column_strings, consumption_quantities_sql,
    rfc3339,
};
use crate::savings::weather::{self, DailyTemperature, WeatherError};
use crate::storage::{READINGS, partition_date};

/// Consumption of one meter in one period (and under one carbon factor).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSum {
    pub account: AccountCode,
    pub meter: MeterId,
    pub category: Category,
    pub item: EnergyCode,
    pub unit: String,
    /// Id of the carbon factor the gateway applied (`None` where none applies, e.g. water).
    pub factor: Option<String>,
    /// First local date of the period.
    pub period: chrono::NaiveDate,
    pub consumption: f64,
    pub kgce: f64,
    pub kgco2e: f64,
    pub intervals: i64,
}

/// Reports over one data directory, with the deployment's accounts and factor tables.
#[derive(Debug, Clone)]
pub struct Reports {
    pub query: Query,
    accounts: Arc<BTreeMap<AccountCode, Account>>,
    pub factors: Arc<FactorTables>,
    /// Daily mean outdoor temperatures from the server's CSV, for the savings baseline of
    /// accounts without temperature readings.
    pub temperature_csv: Option<Arc<[DailyTemperature]>>,
}

impl Reports {
    pub fn new(query: Query, accounts: Vec<Account>, factors: FactorTables) -> Self {
        Self {
            query,
            accounts: Arc::new(accounts.into_iter().map(|a| (a.code.clone(), a)).collect()),
            factors: Arc::new(factors),
            temperature_csv: None,
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
        let (ctx, has_readings) = match self.query.session_within(dates).await? {
            Some(ctx) => (ctx, true),
            None => (SessionContext::new(), false),
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
        // The UTC-date partitions that can hold (from, to]: only their files are read.
        let (from_date, to_date) = (partition_date(from_ms), partition_date(to_ms));
        let (ctx, has_readings) = self
            .session_within(Some((from_date.as_str(), to_date.as_str())))
            .await?;
        if !has_readings {
            return Ok(vec![]);
        }
        // Shift to local time, step back 1 ms for (from, to] and truncate: the bucket's local
        // start as seconds since the epoch.
        let sql = format!(
            "SELECT account, meter, category, item, unit, factor, \
                    to_unixtime(date_trunc('{g}', ts + INTERVAL '{OFFSET_HOURS} hours' - INTERVAL '1 millisecond')) AS period, \
                    sum(delta) AS consumption, \
                    coalesce(sum(kgce), 0.0) AS kgce, \
                    coalesce(sum(kgco2e), 0.0) AS kgco2e, \
                    count(delta) AS intervals \
             FROM {READINGS} \
             WHERE quantity IN ({q}) AND delta IS NOT NULL \
               AND ts > '{from}' AND ts <= '{to}' AND {scope}{only} \
             GROUP BY account, meter, category, item, unit, factor, period",
            g = trunc,
            only = category.map_or_else(String::new, |c| format!(" AND category = '{}'", c.code())),
            q = consumption_quantities_sql(),
            from = rfc3339(from_ms),
            to = rfc3339(to_ms),
            scope = sql_all(filters),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let s = |i, name| column_strings(&b, i, name);
            let f = |i, name| column_floats(&b, i, name);
            let i64s = |i, name| column_ints(&b, i, name);
            let (account, meter, category, item, unit, factor) = (
                s(0, "account")?,
                s(1, "meter")?,
                s(2, "category")?,
                s(3, "item")?,
                s(4, "unit")?,
                s(5, "factor")?,
            );
            let period = i64s(6, "period")?;
            let (consumption, kgce, kgco2e) =
                (f(7, "consumption")?, f(8, "kgce")?, f(9, "kgco2e")?);
            let intervals = i64s(10, "intervals")?;
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
                        factor: (!factor.is_null(i)).then(|| factor.value(i).to_owned()),
                        period,
                        consumption: if consumption.is_null(i) {
                            0.0
                        } else {
                            consumption.value(i)
                        },
                        kgce: kgce.value(i),
                        kgco2e: kgco2e.value(i),
                        intervals: intervals.value(i),
                    },
                ));
            }
        }
        out.sort_by(|(ta, a), (tb, b)| {
            (&a.account, ta, a.category, &a.item, &a.meter, &a.factor)
                .cmp(&(&b.account, tb, b.category, &b.item, &b.meter, &b.factor))
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
