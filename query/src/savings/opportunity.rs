//! The common result of the savings analyses: an [`Opportunity`] — what kind, which account, how
//! much a year in native units, kWh, kgce and kgCO2e (through the versioned factor tables of
//! `reading-model`, recording which factors were used), why (Chinese and English), how sure we are
//! and whether every number behind it is verified — and [`rank`], which orders them.

use std::collections::BTreeMap;

use reading_model::{AccountCode, Category, FactorSelection, FactorTables};

use super::baseline::{AvoidedEnergy, Baseline};
use super::benchmark::{Comparison, Verification};
use super::offhours::OffHoursAnalysis;
use super::ranking::Ranked;

/// What the opportunity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpportunityKind {
    /// Night and non-working-day load above the building's own base load.
    OffHours,
    /// Usage above the baseline in a reporting period. The baseline is weather-normalised when
    /// outdoor temperature is known and by day type only otherwise, so the kind's name says
    /// neither; the explanation says which.
    BaselineDrift,
    /// Corrected intensity above a benchmark's guide value.
    BenchmarkGap,
    /// Intensity above the median of accounts of the same institution type.
    PeerMedian,
}

impl OpportunityKind {
    pub fn name_zh(self) -> &'static str {
        match self {
            Self::OffHours => "非工作时段用能",
            Self::BaselineDrift => "用能高于基线",
            Self::BenchmarkGap => "能耗指标差距",
            Self::PeerMedian => "高于同类机构中位数",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Self::OffHours => "off-hours load",
            Self::BaselineDrift => "usage above the baseline",
            Self::BenchmarkGap => "gap to benchmark",
            Self::PeerMedian => "above peer median",
        }
    }
}

/// How far the estimate can be trusted as a figure (not whether its inputs are verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// Which factors turned one category's energy into kgce and kgCO2e.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorUse {
    pub category: Category,
    pub coal_factor: String,
    pub kgce_per_unit: f64,
    pub carbon_factor: String,
    pub kgco2e_per_unit: f64,
}

/// A ranked savings opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct Opportunity {
    pub kind: OpportunityKind,
    pub account: AccountCode,
    /// The data year the factors were chosen for.
    pub year: i32,
    /// Energy saved a year by category, canonical units.
    pub energy_per_year: BTreeMap<Category, f64>,
    /// The electricity part, kWh/a.
    pub kwh_per_year: f64,
    pub kgce_per_year: f64,
    pub kgco2e_per_year: f64,
    pub factors: Vec<FactorUse>,
    pub explanation_zh: String,
    pub explanation_en: String,
    pub confidence: Confidence,
    pub verification: Verification,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpportunityError {
    #[error("account {account}: no standard-coal factor for category {category} in {year}")]
    NoCoalFactor {
        account: AccountCode,
        category: Category,
        year: i32,
    },
    #[error("account {account}: no carbon factor for category {category} in {year}")]
    NoCarbonFactor {
        account: AccountCode,
        category: Category,
        year: i32,
    },
    #[error("account {account}: {category} saving {value} is not a finite number ≥ 0")]
    Input {
        account: AccountCode,
        category: Category,
        value: f64,
    },
}

/// The texts, confidence and verification an analysis contributes to an opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: OpportunityKind,
    pub explanation_zh: String,
    pub explanation_en: String,
    pub confidence: Confidence,
    pub verification: Verification,
}

impl Opportunity {
    /// Converts a yearly saving by category into kgce and kgCO2e with the factor tables; any
    /// factor not marked verified makes the opportunity unverified.
    pub fn new(
        account: AccountCode,
        year: i32,
        energy_per_year: BTreeMap<Category, f64>,
        finding: Finding,
        tables: &FactorTables,
        selection: &FactorSelection,
    ) -> Result<Self, OpportunityError> {
        let mut kgce = 0.0;
        let mut co2 = 0.0;
        let mut factors = Vec::new();
        let mut reasons = Vec::new();
        for (&category, &value) in &energy_per_year {
            if !value.is_finite() || value < 0.0 {
                return Err(OpportunityError::Input {
                    account,
                    category,
                    value,
                });
            }
            let coal = tables.coal(category, year, selection).ok_or_else(|| {
                OpportunityError::NoCoalFactor {
                    account: account.clone(),
                    category,
                    year,
                }
            })?;
            let carbon = tables
                .carbon(&account, category, year, selection)
                .ok_or_else(|| OpportunityError::NoCarbonFactor {
                    account: account.clone(),
                    category,
                    year,
                })?;
            if !tables
                .coal_factors()
                .iter()
                .any(|f| f.id == coal.id && f.verified)
            {
                reasons.push(format!("standard-coal factor {} is not verified", coal.id));
            }
            if !tables
                .carbon_factors()
                .iter()
                .any(|f| f.id == carbon.id && f.verified)
            {
                reasons.push(format!("carbon factor {} is not verified", carbon.id));
            }
            kgce += value * coal.per_unit;
            co2 += value * carbon.per_unit;
            factors.push(FactorUse {
                category,
                coal_factor: coal.id.to_owned(),
                kgce_per_unit: coal.per_unit,
                carbon_factor: carbon.id.to_owned(),
                kgco2e_per_unit: carbon.per_unit,
            });
        }
        Ok(Self {
            kind: finding.kind,
            account,
            year,
            kwh_per_year: energy_per_year
                .get(&Category::Electricity)
                .copied()
                .unwrap_or(0.0),
            energy_per_year,
            kgce_per_year: kgce,
            kgco2e_per_year: co2,
            factors,
            explanation_zh: finding.explanation_zh,
            explanation_en: finding.explanation_en,
            confidence: finding.confidence,
            verification: finding
                .verification
                .and(Verification::from_reasons(reasons)),
        })
    }
}

fn calendar_reasons(uncovered: &[i32]) -> Vec<String> {
    if uncovered.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "holiday calendar does not cover {uncovered:?}: day types there know only weekends"
        )]
    }
}

/// The off-hours excess as an electricity opportunity; `None` if there is no excess. Medium
/// confidence at best: the excess is an upper bound (see [`super::offhours`]); low with less
/// than 90 days of data, since a season is then extrapolated to a year.
pub fn off_hours(
    account: AccountCode,
    year: i32,
    a: &OffHoursAnalysis,
    tables: &FactorTables,
    selection: &FactorSelection,
) -> Result<Option<Opportunity>, OpportunityError> {
    if a.excess_kwh_per_year <= 0.0 {
        return Ok(None);
    }
    let finding = Finding {
        kind: OpportunityKind::OffHours,
        explanation_zh: a.explanation_zh.clone(),
        explanation_en: a.explanation_en.clone(),
        confidence: if a.days >= 90 {
            Confidence::Medium
        } else {
            Confidence::Low
        },
        verification: Verification::from_reasons(calendar_reasons(&a.uncovered_years)),
    };
    Opportunity::new(
        account,
        year,
        [(Category::Electricity, a.excess_kwh_per_year)].into(),
        finding,
        tables,
        selection,
    )
    .map(Some)
}

/// Usage above the weather-normalised baseline in a reporting period, scaled to a year; `None`
/// when the period used no more than the baseline predicts. Confidence: high when the baseline
/// meets ASHRAE Guideline 14 and CalTRACK sufficiency and at most 10 % of reporting days are
/// extrapolated; medium when it meets Guideline 14; low otherwise.
pub fn baseline_drift(
    account: AccountCode,
    year: i32,
    category: Category,
    baseline: &Baseline,
    period: &AvoidedEnergy,
    tables: &FactorTables,
    selection: &FactorSelection,
) -> Result<Option<Opportunity>, OpportunityError> {
    if period.avoided >= 0.0 || period.days == 0 {
        return Ok(None);
    }
    let excess = -period.avoided_per_year();
    let unit = category.consumption_unit().symbol();
    let pct = -period.avoided_fraction * 100.0;
    let extrapolated = period.extrapolated_days as f64 / period.days as f64;
    let confidence =
        if baseline.fit.passes_ashrae14 && baseline.caltrack_sufficient && extrapolated <= 0.1 {
            Confidence::High
        } else if baseline.fit.passes_ashrae14 {
            Confidence::Medium
        } else {
            Confidence::Low
        };
    let cv = baseline.fit.daily.cv_rmse * 100.0;
    let (model_zh, corrected_zh, model_en, corrected_en) = if baseline.weather_normalised {
        (
            "气象修正基线",
            "天气和工作日/节假日已修正",
            "the weather-normalised baseline",
            "Weather and working days/holidays are accounted for",
        )
    } else {
        (
            "日类型基线（无室外气温数据，未做气象修正）",
            "工作日/节假日已修正，天气未修正",
            "the day-type baseline (no outdoor temperature, so without weather normalisation)",
            "Working days/holidays are accounted for, weather is not",
        )
    };
    let finding = Finding {
        kind: OpportunityKind::BaselineDrift,
        explanation_zh: format!(
            "报告期 {} 天实际用量 {:.0} {unit}，按基线期（{} 至 {}）建立的{model_zh}预测为 {:.0} {unit}，\
             高出 {pct:.1}%，折合每年约 {excess:.0} {unit}。{corrected_zh}，多出部分来自运行方式或设备变化。\
             基线日 CV(RMSE) {cv:.1}%{}。",
            period.days,
            period.actual_usage,
            baseline.first_day,
            baseline.last_day,
            period.baseline_usage,
            if baseline.fit.passes_ashrae14 {
                "，满足 ASHRAE Guideline 14"
            } else {
                "，未满足 ASHRAE Guideline 14，结果仅供参考"
            }
        ),
        explanation_en: format!(
            "Over {} reporting days the account used {:.0} {unit}; {model_en} \
             fitted on {} to {} predicts {:.0} {unit}, so usage is {pct:.1} % higher, about \
             {excess:.0} {unit} a year. {corrected_en}; the \
             rest comes from how the building is run or from equipment changes. Baseline daily \
             CV(RMSE) {cv:.1} %{}.",
            period.days,
            period.actual_usage,
            baseline.first_day,
            baseline.last_day,
            period.baseline_usage,
            if baseline.fit.passes_ashrae14 {
                ", meets ASHRAE Guideline 14"
            } else {
                "; does NOT meet ASHRAE Guideline 14, indicative only"
            }
        ),
        confidence,
        verification: Verification::from_reasons(
            calendar_reasons(&baseline.uncovered_years)
                .into_iter()
                .chain(calendar_reasons(&period.uncovered_years))
                .chain(baseline.unverified_reasons())
                .chain(
                    baseline
                        .terms
                        .as_ref()
                        .filter(|_| period.days_outside_terms > 0)
                        .map(|t| {
                            super::baseline::outside_terms_reason(
                                t,
                                period.days_outside_terms,
                                "reporting",
                            )
                        }),
                )
                .collect(),
        ),
    };
    Opportunity::new(
        account,
        year,
        [(category, excess)].into(),
        finding,
        tables,
        selection,
    )
    .map(Some)
}

/// The gap between an account and a benchmark's guide value; `None` at or below the guide or
/// without values. Medium confidence: a benchmark says how far from a norm, not what is wrong.
pub fn benchmark_gap(
    c: &Comparison,
    set_name_zh: &str,
    set_name_en: &str,
    tables: &FactorTables,
    selection: &FactorSelection,
) -> Result<Option<Opportunity>, OpportunityError> {
    if c.to_guide.is_empty() {
        return Ok(None);
    }
    let unit = c.unit.symbol();
    let level = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v}"));
    let mandatory: String = c
        .to_constraint
        .iter()
        .map(|(cat, v)| format!("{v:.0} {}", cat.consumption_unit().symbol()))
        .collect::<Vec<_>>()
        .join(", ");
    let marker_zh = if c.verification.is_verified() {
        ""
    } else {
        "（指标或修正系数未核实）"
    };
    let marker_en = if c.verification.is_verified() {
        ""
    } else {
        " (UNVERIFIED benchmark or correction)"
    };
    let finding = Finding {
        kind: OpportunityKind::BenchmarkGap,
        explanation_zh: format!(
            "{set_name_zh}{marker_zh}：实测 {:.1} {unit}，修正后 {:.1} {unit}（γ1 {:.2}，γ2 {:.2}），\
             约束值 {}，引导值 {}，评价：{}。降至引导值每年需减少用能如上{}。",
            c.measured,
            c.corrected,
            c.gamma1,
            c.gamma2,
            level(c.constraint),
            level(c.guide),
            c.rating.name_zh(),
            if mandatory.is_empty() {
                String::new()
            } else {
                format!("，其中降至约束值须减少 {mandatory}")
            }
        ),
        explanation_en: format!(
            "{set_name_en}{marker_en}: measured {:.1} {unit}, corrected {:.1} {unit} (γ1 {:.2}, \
             γ2 {:.2}); constraint {}, guide {}: {}. Reaching the guide value takes the yearly \
             reduction shown{}.",
            c.measured,
            c.corrected,
            c.gamma1,
            c.gamma2,
            level(c.constraint),
            level(c.guide),
            c.rating.name_en(),
            if mandatory.is_empty() {
                String::new()
            } else {
                format!(", of which {mandatory} is needed to meet the constraint value")
            }
        ),
        confidence: Confidence::Medium,
        verification: c.verification.clone(),
    };
    Opportunity::new(
        c.account.clone(),
        c.year,
        c.to_guide.clone(),
        finding,
        tables,
        selection,
    )
    .map(Some)
}

/// The gap to the peer median, for a ranking in kgce/(m²·a) (standard coal with `selection`'s
/// method), shared among the account's energies in proportion to their kgce. `None` at or
/// below the median. Low confidence: peers of one institution type still differ in use.
pub fn peer_median<G>(
    r: &Ranked<G>,
    year: i32,
    consumption: &BTreeMap<Category, f64>,
    tables: &FactorTables,
    selection: &FactorSelection,
) -> Result<Option<Opportunity>, OpportunityError> {
    if r.gap_to_median <= 0.0 {
        return Ok(None);
    }
    let mut kgce: BTreeMap<Category, (f64, f64)> = BTreeMap::new();
    for (&c, &v) in consumption {
        if let Some(f) = tables.coal(c, year, selection)
            && v > 0.0
            && f.per_unit > 0.0
        {
            kgce.insert(c, (v, v * f.per_unit));
        }
    }
    let total: f64 = kgce.values().map(|(_, k)| k).sum();
    if total <= 0.0 {
        return Ok(None);
    }
    let energy: BTreeMap<Category, f64> = kgce
        .iter()
        .map(|(c, (v, k))| (*c, r.gap_to_median * (k / total) / (k / v)))
        .collect();
    let finding = Finding {
        kind: OpportunityKind::PeerMedian,
        explanation_zh: format!(
            "单位面积能耗 {:.2} kgce/(m²·a)，在 {} 家同类机构中排第 {} 位（1 为最低），同类中位数 {:.2}；\
             降至中位数每年约减少 {:.0} kgce。",
            r.intensity, r.of, r.rank, r.group_median, r.gap_to_median
        ),
        explanation_en: format!(
            "Energy intensity {:.2} kgce/(m²·a), rank {} of {} institutions of the same type \
             (1 = lowest), peer median {:.2}; reaching the median saves about {:.0} kgce a year.",
            r.intensity, r.rank, r.of, r.group_median, r.gap_to_median
        ),
        confidence: Confidence::Low,
        verification: Verification::Verified,
    };
    Opportunity::new(r.account.clone(), year, energy, finding, tables, selection).map(Some)
}

/// Orders opportunities by yearly kgce saved (the common measure of all energies), largest first;
/// ties by higher confidence, then account code and kind, so the order is stable.
pub fn rank(mut ops: Vec<Opportunity>) -> Vec<Opportunity> {
    ops.sort_by(|a, b| {
        b.kgce_per_year
            .total_cmp(&a.kgce_per_year)
            .then_with(|| b.confidence.cmp(&a.confidence))
            .then_with(|| a.account.cmp(&b.account))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    ops
}

#[cfg(test)]
mod tests;
