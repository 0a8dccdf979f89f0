//! The consumption report: per account, period and category, the total, the item and sub-item
//! tree (ItemCatalog parents), the unmetered remainder (缺口量 = main meters − sub-meters, shown
//! even when it is zero or negative), month-on-month (环比) and year-on-year (同比), and the
//! public-institution indicators kgce/m², kgce/person and water m³/person.
//!
//! Every row's kgce and kgCO2e is its consumption times the factors the server selects for
//! the account and the period's year ([`Reports::pricing`]), named with their versions in
//! the row: the figure the carbon report and the forms give for the same energy.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Months, NaiveDate};
use reading_model::{AccountCode, Category, EnergyCode, ItemCatalog};
use serde::Serialize;

use super::scope::Filter;
use super::source::{FactorUsed, MeterSum, Prices, Pricing, Relations, Reports};
use crate::report::QueryError;
use reading_model::time::{Granularity, local_midnight_ms};

/// What a row of the item tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// The category total: the main meters, or the sum of the items where there is none.
    Total,
    /// Main meters minus their sub-meters (缺口量).
    Unmetered,
    /// An item measured by its own meters.
    Item,
    /// An item with no meter of its own: the sum of its sub-items.
    Subtotal,
}

impl RowKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Unmetered => "unmetered",
            Self::Item => "item",
            Self::Subtotal => "subtotal",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemRow {
    pub account: String,
    pub period: String,
    pub category: String,
    pub item: String,
    /// 0 category, 1 分项, 2 一级子项, 3 二级子项.
    pub level: u8,
    pub kind: RowKind,
    pub name_zh: String,
    pub name_en: String,
    pub unit: String,
    pub consumption: f64,
    pub kgce: f64,
    pub kgco2e: f64,
    /// The standard-coal factor of `kgce` (id and version), `None` where none applies.
    pub coal_factor: Option<FactorRef>,
    /// The carbon factor of `kgco2e`.
    pub carbon_factor: Option<FactorRef>,
    /// The period before (环比), for days and months.
    pub previous: Option<f64>,
    pub mom_pct: Option<f64>,
    /// The same period a year before (同比).
    pub year_before: Option<f64>,
    pub yoy_pct: Option<f64>,
}

/// Which factor a figure used: its id and version (see [`FactorUsed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FactorRef {
    pub id: String,
    pub version: String,
}

impl FactorRef {
    pub(crate) fn of(f: &FactorUsed) -> Self {
        Self {
            id: f.id.clone(),
            version: f.version.clone(),
        }
    }
}

/// The indicators of one account in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorRow {
    pub account: String,
    pub name_zh: String,
    pub period: String,
    /// All energy categories' totals in standard coal (water is a resource, not energy).
    pub kgce: f64,
    pub floor_area_m2: Option<f64>,
    pub headcount: Option<u32>,
    pub kgce_per_m2: Option<f64>,
    pub kgce_per_person: Option<f64>,
    pub water_m3: Option<f64>,
    pub water_m3_per_person: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumptionReport {
    pub from: NaiveDate,
    /// The day after the last.
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub rows: Vec<ItemRow>,
    pub indicators: Vec<IndicatorRow>,
    /// Set when the last period is still in progress: its 环比 and 同比 compare the same days of
    /// the period before and of the year before, not their whole periods.
    pub comparison: Option<PartialComparison>,
}

/// How a period in progress is compared: like with like, its first `days` days against the
/// same days of the period before (环比) and of the same period a year before (同比).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartialComparison {
    /// The period in progress (its label).
    pub period: String,
    /// Its last day with data so far (the day before `as_of`).
    pub through: NaiveDate,
    pub days: i64,
    /// The days compared in the period before, `[from, to)`; `None` for years.
    pub previous: Option<(NaiveDate, NaiveDate)>,
    /// The days compared a year before, `[from, to)`.
    pub year_before: Option<(NaiveDate, NaiveDate)>,
    pub note_zh: String,
    pub note_en: String,
}

/// The first day after the period starting `start`.
fn period_end(g: Granularity, start: NaiveDate) -> Option<NaiveDate> {
    match g {
        Granularity::Day => start.succ_opt(),
        Granularity::Month => start.checked_add_months(Months::new(1)),
        Granularity::Year => start.checked_add_months(Months::new(12)),
    }
}

/// The comparison of the last period of `[first, to)` when `as_of` (the first day without data
/// yet) falls inside it; `None` when every period is whole.
fn partial_comparison(
    g: Granularity,
    first: NaiveDate,
    to: NaiveDate,
    as_of: Option<NaiveDate>,
) -> Option<PartialComparison> {
    let end = as_of?.min(to);
    let through = end.pred_opt()?;
    let last = g.start(through);
    if last < first || period_end(g, last)? <= end {
        return None;
    }
    let days = (end - last).num_days();
    // The same days of another period, within it (a shorter month ends the window early).
    let window = |start: NaiveDate| {
        let stop = (start + chrono::Duration::days(days)).min(period_end(g, start)?);
        Some((start, stop))
    };
    let previous = g.previous(last).and_then(window);
    let year_before = g.year_before(last).and_then(window);
    let span = |w: Option<(NaiveDate, NaiveDate)>| {
        w.and_then(|(a, b)| Some(format!("{a} – {}", b.pred_opt()?)))
    };
    let (prev_s, yb_s) = (span(previous), span(year_before));
    let label = g.label(last);
    let mut zh = format!("{label} 尚未结束（截至 {through}，{days} 天）：");
    let mut en = format!("{label} is in progress (through {through}, {days} days): ");
    match (&prev_s, &yb_s) {
        (Some(p), Some(y)) => {
            zh.push_str(&format!(
                "环比与上期同期 {p} 比较，同比与去年同期 {y} 比较。"
            ));
            en.push_str(&format!(
                "compared with the same days of the period before ({p}) and of the year before ({y})."
            ));
        }
        (None, Some(y)) => {
            zh.push_str(&format!("同比与去年同期 {y} 比较。"));
            en.push_str(&format!(
                "compared with the same days of the year before ({y})."
            ));
        }
        (Some(p), None) => {
            zh.push_str(&format!("环比与上期同期 {p} 比较。"));
            en.push_str(&format!(
                "compared with the same days of the period before ({p})."
            ));
        }
        (None, None) => return None,
    }
    Some(PartialComparison {
        period: label,
        through,
        days,
        previous,
        year_before,
        note_zh: zh,
        note_en: en,
    })
}

/// Local dates `[from, to)`; periods should start at `from` (a month report from the 1st).
#[derive(Debug, Clone)]
pub struct ConsumptionRequest {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub filters: Vec<Filter>,
    pub category: Option<Category>,
}

/// Rounds away the last bits of summation order, which differs between runs.
pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn pct(cur: f64, prev: Option<f64>) -> Option<f64> {
    let p = prev?;
    (p != 0.0).then(|| ((cur - p) / p * 10_000.0).round() / 100.0)
}

/// Energy only: kgce and kgCO2e are priced from it once, per row ([`Pricing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Amount {
    consumption: f64,
}

impl Amount {
    fn of(s: &MeterSum) -> Self {
        Self {
            consumption: s.consumption,
        }
    }
    fn add(&mut self, o: Amount) {
        self.consumption += o.consumption;
    }
    fn minus(self, o: Amount) -> Amount {
        Amount {
            consumption: self.consumption - o.consumption,
        }
    }
}

/// The tree of one (account, period, category, unit): (item, kind, amount).
fn tree(
    category: Category,
    sums: &[&MeterSum],
    rel: &Relations,
) -> Vec<(EnergyCode, RowKind, Amount)> {
    let total_code = category.total_code();
    let mains: BTreeSet<_> = rel.mains.iter().collect();
    let subs: BTreeSet<_> = rel.subs.iter().collect();
    let mut main_total: Option<Amount> = None;
    let mut sub_total = Amount::default();
    let mut has_sub = false;
    let mut measured: BTreeMap<EnergyCode, Amount> = BTreeMap::new();
    for s in sums {
        if mains.contains(&s.meter) {
            main_total.get_or_insert_default().add(Amount::of(s));
            continue;
        }
        measured.entry(s.item).or_default().add(Amount::of(s));
        if subs.contains(&s.meter) {
            has_sub = true;
            sub_total.add(Amount::of(s));
        }
    }
    // Every measured item and its ancestors below the category total.
    let mut nodes: BTreeSet<EnergyCode> = BTreeSet::new();
    for code in measured.keys() {
        let mut cur = Some(*code);
        while let Some(c) = cur {
            if c.level() == 0 {
                break;
            }
            nodes.insert(c);
            cur = c.parent();
        }
    }
    fn value(
        c: EnergyCode,
        nodes: &BTreeSet<EnergyCode>,
        measured: &BTreeMap<EnergyCode, Amount>,
    ) -> Amount {
        if let Some(a) = measured.get(&c) {
            return *a;
        }
        let mut a = Amount::default();
        for child in nodes.iter().filter(|n| n.parent() == Some(c)) {
            a.add(value(*child, nodes, measured));
        }
        a
    }
    let mut out = Vec::new();
    let mut top = Amount::default();
    for &n in &nodes {
        let a = value(n, &nodes, &measured);
        if n.level() == 1 {
            top.add(a);
        }
        let kind = if measured.contains_key(&n) {
            RowKind::Item
        } else {
            RowKind::Subtotal
        };
        out.push((n, kind, a));
    }
    // A meter on the total item that is not a main meter (only with configured relations).
    if let Some(a) = measured.get(&total_code) {
        top.add(*a);
        out.push((total_code, RowKind::Item, *a));
    }
    match main_total {
        Some(main) => {
            out.push((total_code, RowKind::Total, main));
            if has_sub {
                out.push((total_code, RowKind::Unmetered, main.minus(sub_total)));
            }
        }
        None if !out.is_empty() => out.push((total_code, RowKind::Subtotal, top)),
        None => {}
    }
    out
}

/// The category total of one (account, period, category, unit) — the `Total` row, or the
/// level-0 subtotal where no main meter exists — as (consumption, kgce, kgCO2e) priced with
/// `pricing`: the same figure the consumption report shows, for analyses that need a total
/// per day or hour.
pub(crate) fn category_total(
    category: Category,
    sums: &[&MeterSum],
    rel: &Relations,
    pricing: &Pricing,
) -> Option<(f64, f64, f64)> {
    tree(category, sums, rel)
        .into_iter()
        .find(|(item, kind, _)| {
            *kind == RowKind::Total || (*kind == RowKind::Subtotal && item.level() == 0)
        })
        .map(|(_, _, a)| {
            let c = a.consumption;
            (c, pricing.kgce(c), pricing.kgco2e(c))
        })
}

/// Each row's amounts over the periods, keyed by (account, category, unit, item, kind), so
/// that 环比 and 同比 are looked up among one row's few periods rather than in a map of every
/// row keyed by strings.
type RowAmounts =
    BTreeMap<(AccountCode, Category, String, EnergyCode, RowKind), BTreeMap<NaiveDate, Amount>>;

/// Per account and period: the energy categories' kgce and the water consumption (m³, `None`
/// without water), summed from the category totals.
type IndicatorSums = BTreeMap<(AccountCode, NaiveDate), (f64, Option<f64>)>;

impl Reports {
    /// The report with every period compared whole (see [`Reports::consumption_report_as_of`]).
    pub async fn consumption_report(
        &self,
        req: &ConsumptionRequest,
    ) -> Result<ConsumptionReport, QueryError> {
        self.consumption_report_as_of(req, None).await
    }

    /// The report, where `as_of` is the first local day without data yet (the day after
    /// today): a last period that reaches past it is in progress, and its 环比 and 同比
    /// compare the same days of the period before and of the year before
    /// ([`ConsumptionReport::comparison`] says which).
    pub async fn consumption_report_as_of(
        &self,
        req: &ConsumptionRequest,
        as_of: Option<NaiveDate>,
    ) -> Result<ConsumptionReport, QueryError> {
        let g = req.granularity;
        let first = g.start(req.from);
        // A year more, for 同比 of the first periods.
        let fetch_from = first.checked_sub_months(Months::new(12)).unwrap_or(first);
        let mut sums = self
            .meter_sums_with_rollups(
                local_midnight_ms(fetch_from),
                local_midnight_ms(req.to),
                g,
                &req.filters,
            )
            .await?;
        if let Some(c) = req.category {
            sums.retain(|s| s.category == c);
        }
        let (all, labels) = self.row_amounts(&sums, g);
        let comparison = partial_comparison(g, first, req.to, as_of);
        let like = match &comparison {
            Some(c) => Some((g.start(c.through), self.same_days(req, c).await?)),
            None => None,
        };
        let mut prices = Prices::new(self);
        let like = like.as_ref().map(|(p, a)| (*p, a));
        let (mut rows, indicators) = item_rows(&all, first, g, &labels, &mut prices, like);
        sort_rows(&mut rows);
        Ok(ConsumptionReport {
            from: req.from,
            to: req.to,
            granularity: g,
            rows,
            indicators: self.indicator_rows(indicators, g),
            comparison,
        })
    }

    /// The amounts of the days a period in progress is compared with, keyed by the start of
    /// the period they belong to.
    async fn same_days(
        &self,
        req: &ConsumptionRequest,
        c: &PartialComparison,
    ) -> Result<RowAmounts, QueryError> {
        let mut sums = Vec::new();
        for (from, to) in [c.previous, c.year_before].into_iter().flatten() {
            sums.extend(
                self.meter_sums_with_rollups(
                    local_midnight_ms(from),
                    local_midnight_ms(to),
                    req.granularity,
                    &req.filters,
                )
                .await?,
            );
        }
        if let Some(cat) = req.category {
            sums.retain(|s| s.category == cat);
        }
        Ok(self.row_amounts(&sums, req.granularity).0)
    }

    /// The item tree of every (account, period, category, unit) as each row's amounts over
    /// the periods, and the label of each period present.
    fn row_amounts(
        &self,
        sums: &[MeterSum],
        g: Granularity,
    ) -> (RowAmounts, BTreeMap<NaiveDate, String>) {
        let mut groups: BTreeMap<(AccountCode, NaiveDate, Category, String), Vec<&MeterSum>> =
            BTreeMap::new();
        for s in sums {
            groups
                .entry((s.account.clone(), s.period, s.category, s.unit.clone()))
                .or_default()
                .push(s);
        }
        let mut all: RowAmounts = BTreeMap::new();
        // Relations are decided over the whole range, so a meter that is silent in one period
        // keeps its role; once per account and category, not per period.
        let mut by_category: BTreeMap<(&AccountCode, Category), Vec<&MeterSum>> = BTreeMap::new();
        for s in sums {
            by_category
                .entry((&s.account, s.category))
                .or_default()
                .push(s);
        }
        let relations: BTreeMap<(&AccountCode, Category), Relations> = by_category
            .iter()
            .map(|(&(a, c), of)| ((a, c), self.relations(a, c, of)))
            .collect();
        let none = Relations::default();
        for ((account, period, category, unit), group) in &groups {
            let rel = relations.get(&(account, *category)).unwrap_or(&none);
            for (item, kind, amount) in tree(*category, group, rel) {
                all.entry((account.clone(), *category, unit.clone(), item, kind))
                    .or_default()
                    .insert(*period, amount);
            }
        }
        let labels: BTreeMap<NaiveDate, String> = groups
            .keys()
            .map(|(_, p, _, _)| (*p, g.label(*p)))
            .collect();
        (all, labels)
    }

    /// The indicator rows: kgce per m² and per person, water per person, from the totals as
    /// shown.
    fn indicator_rows(&self, indicators: IndicatorSums, g: Granularity) -> Vec<IndicatorRow> {
        indicators
            .into_iter()
            .map(|((account, period), (kgce, water))| {
                // Ratios of the total as shown, so that they do not depend on the order in
                // which the total was summed (raw readings or rollups).
                let kgce = round6(kgce);
                let water = water.map(round6);
                let info = self.account(&account);
                let area = info.and_then(|a| a.floor_area_m2);
                let people = info.and_then(|a| a.headcount).map(f64::from);
                IndicatorRow {
                    name_zh: info.map(|a| a.name_zh.clone()).unwrap_or_default(),
                    account: account.to_string(),
                    period: g.label(period),
                    kgce: round6(kgce),
                    floor_area_m2: area,
                    headcount: info.and_then(|a| a.headcount),
                    kgce_per_m2: area.map(|m2| round6(kgce / m2)),
                    kgce_per_person: people.map(|p| round6(kgce / p)),
                    water_m3: water.map(round6),
                    water_m3_per_person: water.zip(people).map(|(w, p)| round6(w / p)),
                }
            })
            .collect()
    }
}

/// The report's rows of the periods from `first` on, with 环比 and 同比, and the indicator
/// sums of their category totals (summed in row order).
fn item_rows(
    all: &RowAmounts,
    first: NaiveDate,
    g: Granularity,
    labels: &BTreeMap<NaiveDate, String>,
    prices: &mut Prices<'_>,
    like: Option<(NaiveDate, &RowAmounts)>,
) -> (Vec<ItemRow>, IndicatorSums) {
    let catalog = ItemCatalog::builtin();
    let mut rows = Vec::new();
    let mut indicators: IndicatorSums = BTreeMap::new();
    for (key, periods) in all {
        let (account, category, unit, item, kind) = key;
        let at = |p: Option<NaiveDate>| periods.get(&p?).map(|a| round6(a.consumption));
        // A period in progress is compared with the same days only.
        let same_days = like.map(|(p, amounts)| (p, amounts.get(key)));
        let at_same = |p: Option<NaiveDate>| {
            let (_, of_row) = same_days?;
            of_row?.get(&p?).map(|a| round6(a.consumption))
        };
        for (period, a) in periods.range(first..) {
            let in_progress = same_days.is_some_and(|(p, _)| p == *period);
            let compared = |p: Option<NaiveDate>| if in_progress { at_same(p) } else { at(p) };
            let previous = compared(g.previous(*period));
            let year_before = compared(g.year_before(*period));
            let consumption = round6(a.consumption);
            let pricing = prices.of(account, *category, unit, *period);
            let (kgce, kgco2e) = (pricing.kgce(a.consumption), pricing.kgco2e(a.consumption));
            let (name_zh, name_en) = match kind {
                RowKind::Unmetered => ("缺口量(未分项计量)", "unmetered remainder"),
                _ => catalog.name(item),
            };
            rows.push(ItemRow {
                account: account.to_string(),
                period: labels
                    .get(period)
                    .cloned()
                    .unwrap_or_else(|| g.label(*period)),
                category: category.code().to_owned(),
                item: item.as_str().to_owned(),
                level: item.level(),
                kind: *kind,
                name_zh: name_zh.to_owned(),
                name_en: name_en.to_owned(),
                unit: unit.clone(),
                consumption,
                kgce: round6(kgce),
                kgco2e: round6(kgco2e),
                coal_factor: pricing.coal.as_ref().map(FactorRef::of),
                carbon_factor: pricing.carbon.as_ref().map(FactorRef::of),
                previous,
                mom_pct: pct(consumption, previous),
                year_before,
                yoy_pct: pct(consumption, year_before),
            });
            let is_total = matches!(kind, RowKind::Total)
                || (matches!(kind, RowKind::Subtotal) && item.level() == 0);
            if is_total {
                let e = indicators
                    .entry((account.clone(), *period))
                    .or_insert((0.0, None));
                if *category == Category::Water {
                    *e.1.get_or_insert(0.0) += a.consumption;
                } else {
                    e.0 += kgce;
                }
            }
        }
    }
    (rows, indicators)
}

/// Orders rows by account, period and category; within a category the total and unmetered
/// rows first, then the item and subtotal rows by item code.
fn sort_rows(rows: &mut [ItemRow]) {
    rows.sort_by(|a, b| {
        (
            &a.account,
            &a.period,
            &a.category,
            a.kind == RowKind::Item || a.kind == RowKind::Subtotal,
            &a.item,
            a.kind,
        )
            .cmp(&(
                &b.account,
                &b.period,
                &b.category,
                b.kind == RowKind::Item || b.kind == RowKind::Subtotal,
                &b.item,
                b.kind,
            ))
    });
}
