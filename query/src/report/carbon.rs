//! Carbon figures for the statistics system: per account (or rolled up to a county, city or
//! province prefix of the account code), period and category, the energy in its native unit, in
//! standard coal and in CO2, each with the factor used (id, value, source, year).
//!
//! kgce and kgCO2e are the period's consumption times the published factor — one
//! multiplication, so they equal a hand computation exactly. Only category totals count: the
//! main meters where an account has them, otherwise the sum of its meters, so sub-meters are
//! never counted twice. The factors are the ones the server selects for the account
//! ([`Reports::pricing`]: its `[account.factors]`, the data year of the period), the same the
//! consumption report and the forms use; each row names them with their origin and version.
//! A region row sums the accounts that share both factors (accounts on 当量 and on 等价, or in
//! different grid regions, give one row each).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use reading_model::{AccountCode, Category};
use serde::Serialize;

use super::scope::Filter;
pub use super::source::FactorUsed;
use super::source::{MeterSum, Prices, Pricing, Reports};
use crate::report::QueryError;
use reading_model::time::{Granularity, local_midnight_ms};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarbonRow {
    /// The account, or `None` for a row rolled up to a region.
    pub account: Option<String>,
    /// The account's 6-digit division, or the region prefix of a rolled-up row.
    pub region: String,
    pub period: String,
    pub category: String,
    pub category_zh: String,
    pub category_en: String,
    pub unit: String,
    pub consumption: f64,
    pub kgce: Option<f64>,
    pub coal_factor: Option<FactorUsed>,
    pub kgco2e: Option<f64>,
    pub carbon_factor: Option<FactorUsed>,
    /// Accounts summed into the row (1 for an account row).
    pub accounts: usize,
}

impl CarbonRow {
    /// The stable sort and paging key.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.account.as_deref().unwrap_or(&self.region),
            self.period,
            self.category,
            self.unit,
            self.carbon_factor.as_ref().map_or("", |f| f.id.as_str()),
            self.coal_factor.as_ref().map_or("", |f| f.id.as_str())
        )
    }
}

#[derive(Debug, Clone)]
pub struct CarbonRequest {
    pub from: NaiveDate,
    /// The day after the last.
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub filters: Vec<Filter>,
    pub category: Option<Category>,
    /// Roll accounts up to this many leading digits (2, 4 or 6); per account when `None`.
    pub group_digits: Option<usize>,
}

/// The factors of a total, by id and version: accounts are summed into a region row only
/// where both agree.
type FactorKey = (Option<(String, String)>, Option<(String, String)>);

fn factor_key(p: &Pricing) -> FactorKey {
    let key = |f: &Option<FactorUsed>| f.as_ref().map(|f| (f.id.clone(), f.version.clone()));
    (key(&p.coal), key(&p.carbon))
}

/// An account's category total in one period and unit: (account, period, category, unit).
type TotalKey = (AccountCode, NaiveDate, Category, String);

/// A row's key: (region, account — `None` when rolled up —, period, category, unit, factors).
type RowKey = (
    String,
    Option<AccountCode>,
    NaiveDate,
    Category,
    String,
    FactorKey,
);

impl Reports {
    /// Rows in key order ([`CarbonRow::key`]).
    pub async fn carbon(&self, req: &CarbonRequest) -> Result<Vec<CarbonRow>, QueryError> {
        // Through the rollups where they are current, as the consumption report: the same
        // energy, also for dates whose raw readings retention has removed.
        let mut sums = self
            .meter_sums_with_rollups(
                local_midnight_ms(req.from),
                local_midnight_ms(req.to),
                req.granularity,
                &req.filters,
            )
            .await?;
        if let Some(c) = req.category {
            sums.retain(|s| s.category == c);
        }
        let totals = self.category_consumption(&sums);
        let mut prices = Prices::new(self);
        let priced = totals.into_iter().map(|(key, consumption)| {
            let pricing = prices.of(&key.0, key.2, &key.3, key.1).clone();
            (key, consumption, pricing)
        });
        let rolled = roll_up(priced.collect(), req.group_digits);
        let mut out: Vec<CarbonRow> = rolled
            .into_iter()
            .map(|(key, (consumption, n, pricing))| {
                carbon_row(key, consumption, n, pricing, req.granularity)
            })
            .collect();
        out.sort_by_key(CarbonRow::key);
        Ok(out)
    }

    /// Each account's category totals — the main meters where there are any — per period and
    /// unit.
    fn category_consumption(&self, sums: &[MeterSum]) -> BTreeMap<TotalKey, f64> {
        let mut by_category: BTreeMap<(AccountCode, Category), Vec<&MeterSum>> = BTreeMap::new();
        for s in sums {
            by_category
                .entry((s.account.clone(), s.category))
                .or_default()
                .push(s);
        }
        let mut totals: BTreeMap<TotalKey, f64> = BTreeMap::new();
        for ((account, category), group) in &by_category {
            let rel = self.relations(account, *category, group);
            for s in group {
                if !rel.mains.is_empty() && !rel.mains.contains(&s.meter) {
                    continue;
                }
                *totals
                    .entry((account.clone(), s.period, *category, s.unit.clone()))
                    .or_default() += s.consumption;
            }
        }
        totals
    }
}

/// One report row from the summed consumption of `key` over `n` accounts: kgce and kgCO2e as
/// consumption times the factor, each with the factor used.
fn carbon_row(
    key: RowKey,
    consumption: f64,
    n: usize,
    pricing: Pricing,
    granularity: Granularity,
) -> CarbonRow {
    let (region, account, period, category, unit, _) = key;
    CarbonRow {
        account: account.map(|a| a.to_string()),
        region,
        period: granularity.label(period),
        category: category.code().to_owned(),
        category_zh: category.name_zh().to_owned(),
        category_en: category.name_en().to_owned(),
        unit,
        consumption,
        kgce: pricing.coal.as_ref().map(|f| consumption * f.value),
        coal_factor: pricing.coal,
        kgco2e: pricing.carbon.as_ref().map(|f| consumption * f.value),
        carbon_factor: pricing.carbon,
        accounts: n,
    }
}

/// The totals rolled up to regions of `group_digits` leading digits of the account code (per
/// account, in its division, when `None`): consumption summed per pair of factors — to be
/// multiplied once — and the accounts counted.
fn roll_up(
    totals: Vec<(TotalKey, f64, Pricing)>,
    group_digits: Option<usize>,
) -> BTreeMap<RowKey, (f64, usize, Pricing)> {
    let mut rolled: BTreeMap<RowKey, (f64, usize, Pricing)> = BTreeMap::new();
    for ((account, period, category, unit), c, pricing) in totals {
        let (region, acct) = match group_digits {
            Some(n) => (account.as_str()[..n.min(6)].to_owned(), None),
            None => (account.division().to_owned(), Some(account.clone())),
        };
        let key = (region, acct, period, category, unit, factor_key(&pricing));
        let e = rolled.entry(key).or_insert((0.0, 0, pricing));
        e.0 += c;
        e.1 += 1;
    }
    rolled
}
