//! Carbon figures for the statistics system: per account (or rolled up to a county, city or
//! province prefix of the account code), period and category, the energy in its native unit, in
//! standard coal and in CO2, each with the factor used (id, value, source, year).
//!
//! kgce and kgCO2e are the period's consumption times the published factor — one
//! multiplication, so they equal a hand computation exactly. Only category totals count: the
//! main meters where an account has them, otherwise the sum of its meters, so sub-meters are
//! never counted twice. The carbon factor is the one the gateway recorded on the readings (a
//! period that spans two factors gives one row per factor); standard coal uses the calorific
//! (当量) GB/T 2589 factor of the period's year.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use reading_model::{AccountCode, Category, FactorSelection};
use serde::Serialize;

use super::scope::Filter;
use super::source::{MeterSum, Reports};
use crate::report::QueryError;
use reading_model::time::{Granularity, local_midnight_ms};

/// A factor as applied: value per the row's unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactorUsed {
    pub id: String,
    /// kgce or kgCO2e per `unit` of the row; `None` for a factor the server does not know (a
    /// gateway-side override), whose stored per-reading results are summed instead.
    pub value: Option<f64>,
    pub source: Option<String>,
    pub year: Option<u16>,
    pub verified: Option<bool>,
}

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
            "{}|{}|{}|{}|{}",
            self.account.as_deref().unwrap_or(&self.region),
            self.period,
            self.category,
            self.unit,
            self.carbon_factor.as_ref().map_or("", |f| f.id.as_str())
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

/// An account's category total in one period, unit and carbon factor:
/// (account, period, category, unit, factor id).
type TotalKey = (AccountCode, NaiveDate, Category, String, Option<String>);

/// A row's key: (region, account — `None` when rolled up —, period, category, unit, factor id).
type RowKey = (
    String,
    Option<AccountCode>,
    NaiveDate,
    Category,
    String,
    Option<String>,
);

impl Reports {
    /// Rows in key order ([`CarbonRow::key`]).
    pub async fn carbon(&self, req: &CarbonRequest) -> Result<Vec<CarbonRow>, QueryError> {
        let mut sums = self
            .meter_sums(
                local_midnight_ms(req.from),
                local_midnight_ms(req.to),
                req.granularity,
                &req.filters,
            )
            .await?;
        if let Some(c) = req.category {
            sums.retain(|s| s.category == c);
        }
        let totals = self.totals_by_factor(&sums);
        let rolled = roll_up(totals, req.group_digits);
        let mut out: Vec<CarbonRow> = rolled
            .into_iter()
            .map(|(key, amounts)| self.carbon_row(key, amounts, req.granularity))
            .collect();
        out.sort_by_key(CarbonRow::key);
        Ok(out)
    }

    /// Each account's category totals — the main meters where there are any — as
    /// (consumption, stored kgCO2e) per period, unit and carbon factor.
    fn totals_by_factor(&self, sums: &[MeterSum]) -> BTreeMap<TotalKey, (f64, f64)> {
        let mut by_category: BTreeMap<(AccountCode, Category), Vec<&MeterSum>> = BTreeMap::new();
        for s in sums {
            by_category
                .entry((s.account.clone(), s.category))
                .or_default()
                .push(s);
        }
        let mut totals: BTreeMap<TotalKey, (f64, f64)> = BTreeMap::new();
        for ((account, category), group) in &by_category {
            let rel = self.relations(account, *category, group);
            for s in group {
                if !rel.mains.is_empty() && !rel.mains.contains(&s.meter) {
                    continue;
                }
                let e = totals
                    .entry((
                        account.clone(),
                        s.period,
                        *category,
                        s.unit.clone(),
                        s.factor.clone(),
                    ))
                    .or_default();
                e.0 += s.consumption;
                e.1 += s.kgco2e;
            }
        }
        totals
    }

    /// One report row from the summed (consumption, stored kgCO2e, accounts) of `key`: kgce
    /// and kgCO2e as consumption times the factor, each with the factor used.
    fn carbon_row(
        &self,
        key: RowKey,
        (consumption, stored, n): (f64, f64, usize),
        granularity: Granularity,
    ) -> CarbonRow {
        let (region, account, period, category, unit, factor) = key;
        let year = period.year();
        let canonical = unit == category.consumption_unit().symbol();
        let default = FactorSelection::default();
        let coal = canonical
            .then(|| self.factors.coal(category, year, &default))
            .flatten();
        let carbon = factor.map(|id| {
            let probe = factor_probe(&region, account.as_ref());
            self.carbon_used(probe, category, year, id, consumption, stored)
        });
        let verified_coal = coal.as_ref().and_then(|r| {
            self.factors
                .coal_factors()
                .iter()
                .find(|f| f.id == r.id)
                .map(|f| f.verified)
        });
        CarbonRow {
            account: account.map(|a| a.to_string()),
            region,
            period: granularity.label(period),
            category: category.code().to_owned(),
            category_zh: category.name_zh().to_owned(),
            category_en: category.name_en().to_owned(),
            unit,
            consumption,
            kgce: coal.as_ref().map(|r| consumption * r.per_unit),
            coal_factor: coal.map(|r| FactorUsed {
                id: r.id.to_owned(),
                value: Some(r.per_unit),
                source: Some(r.source.to_owned()),
                year: Some(r.year),
                verified: verified_coal,
            }),
            kgco2e: carbon.as_ref().map(|c| c.0),
            carbon_factor: carbon.map(|c| c.1),
            accounts: n,
        }
    }

    /// The kgCO2e of `consumption` with the carbon factor `id` the readings recorded, resolved
    /// for the account `probe`, and the factor as used; for a factor the server does not know,
    /// the readings' `stored` kgCO2e.
    fn carbon_used(
        &self,
        probe: Option<AccountCode>,
        category: Category,
        year: i32,
        id: String,
        consumption: f64,
        stored: f64,
    ) -> (f64, FactorUsed) {
        let pinned = FactorSelection {
            carbon_factor: [(category, id.clone())].into(),
            ..Default::default()
        };
        let resolved = probe.and_then(|a| self.factors.carbon(&a, category, year, &pinned));
        let verified = self
            .factors
            .carbon_factors()
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.verified);
        match resolved {
            Some(r) => (
                consumption * r.per_unit,
                FactorUsed {
                    id: r.id.to_owned(),
                    value: Some(r.per_unit),
                    source: Some(r.source.to_owned()),
                    year: Some(r.year),
                    verified,
                },
            ),
            None => (
                stored,
                FactorUsed {
                    id,
                    value: None,
                    source: None,
                    year: None,
                    verified: None,
                },
            ),
        }
    }
}

/// The account a row's pinned carbon factor is resolved for: its own, or for a region row
/// (which has none) one made up in the region — any account resolves a pinned id the same way.
fn factor_probe(region: &str, account: Option<&AccountCode>) -> Option<AccountCode> {
    account
        .cloned()
        .or_else(|| AccountCode::parse(&format!("{region:0<6}A001")).ok())
}

/// The totals rolled up to regions of `group_digits` leading digits of the account code (per
/// account, in its division, when `None`): consumption and stored kgCO2e summed per factor —
/// to be multiplied once — and the accounts counted.
fn roll_up(
    totals: BTreeMap<TotalKey, (f64, f64)>,
    group_digits: Option<usize>,
) -> BTreeMap<RowKey, (f64, f64, usize)> {
    let mut rolled: BTreeMap<RowKey, (f64, f64, usize)> = BTreeMap::new();
    for ((account, period, category, unit, factor), (c, stored)) in totals {
        let (region, acct) = match group_digits {
            Some(n) => (account.as_str()[..n.min(6)].to_owned(), None),
            None => (account.division().to_owned(), Some(account.clone())),
        };
        let e = rolled
            .entry((region, acct, period, category, unit, factor))
            .or_default();
        e.0 += c;
        e.1 += stored;
        e.2 += 1;
    }
    rolled
}
