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
        // Category totals: the main meters where there are any.
        let mut by_category: BTreeMap<(AccountCode, Category), Vec<&MeterSum>> = BTreeMap::new();
        for s in &sums {
            by_category
                .entry((s.account.clone(), s.category))
                .or_default()
                .push(s);
        }
        // (account, period, category, unit, factor) → (consumption, stored kgco2e)
        type Key = (AccountCode, NaiveDate, Category, String, Option<String>);
        let mut totals: BTreeMap<Key, (f64, f64)> = BTreeMap::new();
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
        // Roll up to regions: sum consumption per factor, then multiply once.
        type Rolled = (
            String,
            Option<AccountCode>,
            NaiveDate,
            Category,
            String,
            Option<String>,
        );
        let mut rolled: BTreeMap<Rolled, (f64, f64, usize)> = BTreeMap::new();
        for ((account, period, category, unit, factor), (c, stored)) in totals {
            let (region, acct) = match req.group_digits {
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
        let mut out = Vec::new();
        let default = FactorSelection::default();
        for ((region, account, period, category, unit, factor), (consumption, stored, n)) in rolled
        {
            let year = period.year();
            let canonical = unit == category.consumption_unit().symbol();
            let coal = canonical
                .then(|| self.factors.coal(category, year, &default))
                .flatten();
            let carbon = factor.map(|id| {
                let pinned = FactorSelection {
                    carbon_factor: [(category, id.clone())].into(),
                    ..Default::default()
                };
                // Any account resolves a pinned id the same way; the region rows have none.
                let probe = account
                    .clone()
                    .or_else(|| AccountCode::parse(&format!("{region:0<6}A001")).ok());
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
            });
            let verified_coal = coal.as_ref().and_then(|r| {
                self.factors
                    .coal_factors()
                    .iter()
                    .find(|f| f.id == r.id)
                    .map(|f| f.verified)
            });
            out.push(CarbonRow {
                account: account.map(|a| a.to_string()),
                region,
                period: req.granularity.label(period),
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
            });
        }
        out.sort_by_key(CarbonRow::key);
        Ok(out)
    }
}
