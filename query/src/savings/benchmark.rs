//! Benchmarks of annual energy intensity: GB/T 51161-2016 constraint and guide values by climate
//! zone and building type, provincial quota standards (e.g. three levels in kgce/(m²·a)), each a
//! set loaded from a data file (`data/benchmarks.toml`, format documented there) with its unit,
//! its electricity conversion (当量 or 等价) and whether its numbers are verified.
//!
//! Nothing unverified is presented as verified: every [`Comparison`] carries a [`Verification`]
//! that lists each unverified ingredient (the set's values, its correction formula, its electricity
//! factor), and a report must show it.
//!
//! The potential is expressed in **metered** energy: to bring the corrected intensity E_oc down to
//! a level L the building must use A·(E_oc − L)/(γ1·γ2) less, since E_oc = E_o·γ1·γ2. A kgce
//! potential is shared among the counted energies in proportion to their kgce, so the opportunity
//! can name kWh, m³ of gas etc.

use std::collections::{BTreeMap, BTreeSet};

use reading_model::{AccountCode, BuildingClass, Category, FactorSelection, FactorTables};
use serde::{Deserialize, Serialize};

/// Building climate zones of GB 50176 (建筑热工设计分区).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClimateZone {
    SevereCold,
    Cold,
    HotSummerColdWinter,
    HotSummerWarmWinter,
    Mild,
}

impl ClimateZone {
    /// The config and API spelling, e.g. `hot_summer_cold_winter`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SevereCold => "severe_cold",
            Self::Cold => "cold",
            Self::HotSummerColdWinter => "hot_summer_cold_winter",
            Self::HotSummerWarmWinter => "hot_summer_warm_winter",
            Self::Mild => "mild",
        }
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            Self::SevereCold => "严寒地区",
            Self::Cold => "寒冷地区",
            Self::HotSummerColdWinter => "夏热冬冷地区",
            Self::HotSummerWarmWinter => "夏热冬暖地区",
            Self::Mild => "温和地区",
        }
    }
}

/// Unit of a benchmark set's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IntensityUnit {
    #[serde(rename = "kWh/(m²·a)")]
    KwhPerM2Year,
    #[serde(rename = "kgce/(m²·a)")]
    KgcePerM2Year,
}

impl IntensityUnit {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::KwhPerM2Year => "kWh/(m²·a)",
            Self::KgcePerM2Year => "kgce/(m²·a)",
        }
    }
}

/// Energy a set leaves out of the intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    Heating,
    Transport,
}

/// 当量 (calorific) or 等价 (primary-energy equivalent) electricity conversion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "basis", rename_all = "snake_case", deny_unknown_fields)]
pub enum ElectricityBasis {
    /// The GB/T 2589 当量 factor from the factor tables (0.1229 kgce/kWh).
    Calorific,
    Equivalent {
        kgce_per_kwh: f64,
        source: String,
        #[serde(default)]
        verified: bool,
    },
}

/// The use-time and occupancy correction of GB/T 51161.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// T0, h/a.
    pub standard_hours: f64,
    /// S0, m² per person.
    pub standard_area_per_person_m2: f64,
    pub source: String,
    #[serde(default)]
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingType {
    pub id: String,
    pub name: String,
    pub name_en: String,
    /// Account-code letter A–H.
    pub building_class: char,
}

/// Levels for one building type in some climate zones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelValues {
    #[serde(rename = "type")]
    pub type_id: String,
    /// Empty: all zones.
    #[serde(default)]
    pub climate_zones: Vec<ClimateZone>,
    pub constraint: Option<f64>,
    pub baseline: Option<f64>,
    pub guide: Option<f64>,
    /// Overrides the set's flag for this row (e.g. one row checked, the rest not).
    pub verified: Option<bool>,
}

/// One benchmark set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkSet {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub source: String,
    pub unit: IntensityUnit,
    #[serde(default)]
    pub electricity: Option<ElectricityBasis>,
    #[serde(default)]
    pub exclude: Vec<Exclusion>,
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub correction: Option<Correction>,
    #[serde(default, rename = "type")]
    pub types: Vec<BuildingType>,
    #[serde(default, rename = "value")]
    pub values: Vec<LevelValues>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchmarkFile {
    #[serde(default)]
    set: Vec<toml::Spanned<BenchmarkSet>>,
}

/// Bad benchmark data or input; names the set, type or account.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchmarkError {
    #[error("benchmark file: {0}")]
    Parse(String),
    #[error("benchmark file, line {line}, set {set}: {reason}")]
    Invalid {
        line: usize,
        set: String,
        reason: String,
    },
    #[error("no benchmark set {0:?}")]
    UnknownSet(String),
    #[error("benchmark set {set} has no building type {type_id:?}")]
    UnknownType { set: String, type_id: String },
    #[error(
        "benchmark set {set}, type {type_id}: applies to building class {expected}, account {account} is class {actual}"
    )]
    WrongClass {
        set: String,
        type_id: String,
        account: AccountCode,
        expected: char,
        actual: char,
    },
    #[error("account {account}: {field} is {value}, must be a positive number")]
    Input {
        account: AccountCode,
        field: &'static str,
        value: f64,
    },
    #[error("account {account}: no standard-coal factor for category {category} in {year}")]
    NoCoalFactor {
        account: AccountCode,
        category: Category,
        year: i32,
    },
}

/// All benchmark sets by id.
#[derive(Debug, Clone)]
pub struct BenchmarkSets {
    sets: BTreeMap<String, BenchmarkSet>,
}

const BUILTIN: &str = include_str!("../../data/benchmarks.toml");

impl BenchmarkSets {
    /// The built-in sets (`data/benchmarks.toml`).
    pub fn builtin() -> Result<Self, BenchmarkError> {
        Self::from_toml(BUILTIN)
    }

    /// Parses and checks a file in the format of `data/benchmarks.toml`; a set defined twice
    /// in one file is refused.
    pub fn from_toml(text: &str) -> Result<Self, BenchmarkError> {
        let file: BenchmarkFile = toml::from_str(text)
            .map_err(|e| BenchmarkError::Parse(super::calendar::flat(&e.to_string())))?;
        let mut sets = BTreeMap::new();
        for s in file.set {
            let line = super::calendar::line_of(text, s.span().start);
            let s = s.into_inner();
            check_set(&s).map_err(|reason| BenchmarkError::Invalid {
                line,
                set: s.id.clone(),
                reason,
            })?;
            if sets.contains_key(&s.id) {
                return Err(BenchmarkError::Invalid {
                    line,
                    set: s.id,
                    reason: "defined twice in the file".into(),
                });
            }
            sets.insert(s.id.clone(), s);
        }
        Ok(Self { sets })
    }

    /// Adds the sets of a deployment's file (same format), replacing the sets with the same
    /// id: the shipped sets carry no values, so a deployment enters them, with their
    /// `verified` flag, under the shipped id. All or nothing.
    pub fn extend_from_toml(&mut self, text: &str) -> Result<(), BenchmarkError> {
        let more = Self::from_toml(text)?;
        self.sets.extend(more.sets);
        Ok(())
    }

    /// Adds the sets of `other`, replacing sets with the same id.
    pub fn with_overrides(mut self, other: BenchmarkSets) -> Self {
        self.sets.extend(other.sets);
        self
    }

    pub fn get(&self, id: &str) -> Option<&BenchmarkSet> {
        self.sets.get(id)
    }

    pub fn sets(&self) -> impl Iterator<Item = &BenchmarkSet> {
        self.sets.values()
    }
}

/// `Ok` when the set is consistent; otherwise why not, naming the key.
fn check_set(s: &BenchmarkSet) -> Result<(), String> {
    let invalid = |reason: String| reason;
    match (&s.unit, &s.electricity) {
        (IntensityUnit::KgcePerM2Year, None) => {
            return Err(invalid(
                "`electricity`: a kgce set must say how electricity is converted ([set.electricity] basis)".into(),
            ));
        }
        (IntensityUnit::KwhPerM2Year, Some(_)) => {
            return Err(invalid(
                "`electricity`: a kWh set counts electricity directly; remove [set.electricity]"
                    .into(),
            ));
        }
        (_, Some(ElectricityBasis::Equivalent { kgce_per_kwh, .. }))
            if !(kgce_per_kwh.is_finite() && *kgce_per_kwh > 0.0) =>
        {
            return Err(invalid(format!(
                "`electricity.kgce_per_kwh` {kgce_per_kwh} must be positive"
            )));
        }
        _ => {}
    }
    if let Some(c) = &s.correction
        && !(c.standard_hours > 0.0 && c.standard_area_per_person_m2 > 0.0)
    {
        return Err(invalid("`correction`: standard_hours (T0) and standard_area_per_person_m2 (S0) must be positive".into()));
    }
    for t in &s.types {
        if BuildingClass::from_letter(t.building_class).is_none() {
            return Err(invalid(format!(
                "`type.building_class` of type {}: {:?} is not a letter A–H",
                t.id, t.building_class
            )));
        }
    }
    let mut seen: BTreeSet<(&str, Option<ClimateZone>)> = BTreeSet::new();
    for v in &s.values {
        if !s.types.iter().any(|t| t.id == v.type_id) {
            return Err(invalid(format!(
                "`value.type`: {:?} is not a `[[set.type]]` of the set",
                v.type_id
            )));
        }
        let levels = [v.guide, v.baseline, v.constraint];
        if levels
            .iter()
            .flatten()
            .any(|x| !(x.is_finite() && *x > 0.0))
        {
            return Err(invalid(format!(
                "`value` of type {}: level values must be positive",
                v.type_id
            )));
        }
        // Guide ≤ baseline ≤ constraint: a reversed pair is a transcription error.
        let present: Vec<f64> = levels.iter().flatten().copied().collect();
        if present.windows(2).any(|w| w[0] > w[1]) {
            return Err(invalid(format!(
                "`value` of type {}: levels must satisfy guide ≤ baseline ≤ constraint",
                v.type_id
            )));
        }
        let zones: Vec<Option<ClimateZone>> = if v.climate_zones.is_empty() {
            vec![None]
        } else {
            v.climate_zones.iter().copied().map(Some).collect()
        };
        for z in zones {
            if !seen.insert((v.type_id.as_str(), z)) {
                return Err(invalid(format!(
                    "`value.climate_zones`: type {} has two rows for zone {z:?}",
                    v.type_id
                )));
            }
        }
    }
    Ok(())
}

/// One account's year, as the comparison needs it. Quantities in each category's canonical unit
/// (`Category::consumption_unit`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountEnergy {
    pub account: AccountCode,
    pub year: i32,
    pub floor_area_m2: f64,
    /// 用能人数, for the occupancy correction.
    pub occupants: Option<f64>,
    /// Annual operating hours T, for the use-time correction.
    pub operating_hours: Option<f64>,
    pub climate_zone: Option<ClimateZone>,
    /// The year's consumption by category.
    pub consumption: BTreeMap<Category, f64>,
    /// The part of `consumption` used for space heating (供暖), where known.
    pub heating: BTreeMap<Category, f64>,
    /// The part of `consumption` used by vehicles (交通), where known.
    pub transport: BTreeMap<Category, f64>,
}

/// Whether a result rests only on verified numbers. Reports must show `Unverified` (with the
/// reasons) wherever the result is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Unverified { reasons: Vec<String> },
}

impl Verification {
    pub fn from_reasons(reasons: Vec<String>) -> Self {
        if reasons.is_empty() {
            Self::Verified
        } else {
            Self::Unverified { reasons }
        }
    }

    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified)
    }

    /// The marker a report prints next to the figure.
    pub fn label_zh(&self) -> &'static str {
        match self {
            Self::Verified => "已核实",
            Self::Unverified { .. } => "未核实",
        }
    }

    pub fn label_en(&self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unverified { .. } => "UNVERIFIED",
        }
    }

    /// Combines two: unverified if either is, with both lists of reasons.
    pub fn and(self, other: Verification) -> Verification {
        match (self, other) {
            (Self::Verified, o) | (o, Self::Verified) => o,
            (Self::Unverified { mut reasons }, Self::Unverified { reasons: more }) => {
                reasons.extend(more);
                Self::Unverified { reasons }
            }
        }
    }
}

/// Where the corrected intensity falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    /// Above the constraint value (约束值): over the limit, retrofit needed.
    AboveConstraint,
    /// Between the baseline (基准值) and the constraint.
    AboveBaseline,
    /// Above the guide value (引导值), within the others: compliant with room to improve.
    AboveGuide,
    /// At or below the guide value: advanced.
    AtOrBelowGuide,
    /// The set has no values for this type and zone.
    NoValues,
}

impl Rating {
    pub fn name_zh(self) -> &'static str {
        match self {
            Self::AboveConstraint => "超过约束值",
            Self::AboveBaseline => "超过基准值",
            Self::AboveGuide => "超过引导值",
            Self::AtOrBelowGuide => "达到引导值",
            Self::NoValues => "无指标值",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Self::AboveConstraint => "above constraint value",
            Self::AboveBaseline => "above baseline value",
            Self::AboveGuide => "above guide value",
            Self::AtOrBelowGuide => "at or below guide value",
            Self::NoValues => "no benchmark values",
        }
    }
}

/// An account's intensity against a benchmark set.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub set_id: String,
    pub type_id: String,
    pub account: AccountCode,
    pub year: i32,
    pub unit: IntensityUnit,
    /// E_o: counted energy ÷ floor area.
    pub measured: f64,
    /// γ1 (use time), 1 if not applied.
    pub gamma1: f64,
    /// γ2 (occupancy), 1 if not applied.
    pub gamma2: f64,
    /// E_oc = E_o × γ1 × γ2.
    pub corrected: f64,
    pub constraint: Option<f64>,
    pub baseline: Option<f64>,
    pub guide: Option<f64>,
    pub rating: Rating,
    /// Metered energy a year, by category, that brings E_oc down to the guide value.
    pub to_guide: BTreeMap<Category, f64>,
    /// … down to the constraint value (the mandatory part).
    pub to_constraint: BTreeMap<Category, f64>,
    /// Energies present but left out because the set's unit cannot count them (a kWh set
    /// counts electricity only) or they have no standard-coal factor.
    pub not_counted: Vec<Category>,
    /// The correction could not be applied (hours or occupants missing).
    pub correction_missing: bool,
    pub verification: Verification,
}

/// Compares one account's year against a set's values for building type `type_id`.
pub fn compare(
    set: &BenchmarkSet,
    type_id: &str,
    input: &AccountEnergy,
    tables: &FactorTables,
    selection: &FactorSelection,
) -> Result<Comparison, BenchmarkError> {
    check_type(set, type_id, input)?;
    let area = validate_input(input)?;
    let mut reasons = Vec::new();
    if !set.verified {
        reasons.push(format!(
            "benchmark set {} is not verified ({})",
            set.id, set.source
        ));
    }
    let (counted, not_counted) = counted_energy(set, input, tables, selection, &mut reasons);
    let total: f64 = counted.values().map(|(_, k)| k).sum();
    let measured = total / area;
    let (gamma1, gamma2, correction_missing) = correction(set, input, area, &mut reasons)?;
    let gamma = gamma1 * gamma2;
    let corrected = measured * gamma;
    let (constraint, baseline, guide, rating) = rate(set, type_id, input, corrected, &mut reasons);
    let cut = EnergyCut {
        counted: &counted,
        total,
        area,
        corrected,
        gamma,
    };
    Ok(Comparison {
        set_id: set.id.clone(),
        type_id: type_id.to_owned(),
        account: input.account.clone(),
        year: input.year,
        unit: set.unit,
        measured,
        gamma1,
        gamma2,
        corrected,
        constraint,
        baseline,
        guide,
        rating,
        to_guide: cut.reduce_to(guide),
        to_constraint: cut.reduce_to(constraint),
        not_counted,
        correction_missing,
        verification: Verification::from_reasons(reasons),
    })
}

/// `Ok` when `set` has the building type `type_id` and it is of the account's building class.
fn check_type(
    set: &BenchmarkSet,
    type_id: &str,
    input: &AccountEnergy,
) -> Result<(), BenchmarkError> {
    let ty =
        set.types
            .iter()
            .find(|t| t.id == type_id)
            .ok_or_else(|| BenchmarkError::UnknownType {
                set: set.id.clone(),
                type_id: type_id.to_owned(),
            })?;
    let class = input.account.building_class().letter();
    if class != ty.building_class {
        return Err(BenchmarkError::WrongClass {
            set: set.id.clone(),
            type_id: type_id.to_owned(),
            account: input.account.clone(),
            expected: ty.building_class,
            actual: class,
        });
    }
    Ok(())
}

/// `v` when it is a positive finite number, else an input error naming `field`.
fn positive(input: &AccountEnergy, field: &'static str, v: f64) -> Result<f64, BenchmarkError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(BenchmarkError::Input {
            account: input.account.clone(),
            field,
            value: v,
        })
    }
}

/// The floor area, once it and every energy figure of `input` are checked: the area
/// positive, the energies finite and not negative.
fn validate_input(input: &AccountEnergy) -> Result<f64, BenchmarkError> {
    let area = positive(input, "floor area", input.floor_area_m2)?;
    for (c, v) in input
        .consumption
        .iter()
        .chain(&input.heating)
        .chain(&input.transport)
    {
        if !v.is_finite() || *v < 0.0 {
            return Err(BenchmarkError::Input {
                account: input.account.clone(),
                field: category_field(*c),
                value: *v,
            });
        }
    }
    Ok(area)
}

/// The energy the set counts, per category as (native unit, the set's numerator unit: kWh or
/// kgce), after the set's exclusions (heating, transport); and the categories present that it
/// cannot count. Unverified factors or conversions used add to `reasons`.
fn counted_energy(
    set: &BenchmarkSet,
    input: &AccountEnergy,
    tables: &FactorTables,
    selection: &FactorSelection,
    reasons: &mut Vec<String>,
) -> (BTreeMap<Category, (f64, f64)>, Vec<Category>) {
    let mut counted: BTreeMap<Category, (f64, f64)> = BTreeMap::new();
    let mut not_counted = Vec::new();
    for (&c, &total) in &input.consumption {
        if c == Category::Water {
            continue; // a resource, not energy
        }
        let mut native = total;
        if set.exclude.contains(&Exclusion::Heating) {
            if c == Category::DistrictHeating {
                native = 0.0;
            }
            native -= input.heating.get(&c).copied().unwrap_or(0.0);
        }
        if set.exclude.contains(&Exclusion::Transport) {
            native -= input.transport.get(&c).copied().unwrap_or(0.0);
        }
        let native = native.max(0.0);
        if native == 0.0 {
            continue;
        }
        match set_unit_per_unit(set, c, input.year, tables, selection, reasons) {
            Some(k) => {
                counted.insert(c, (native, native * k));
            }
            None => not_counted.push(c),
        }
    }
    if let Some(ElectricityBasis::Equivalent {
        verified: false,
        source,
        ..
    }) = &set.electricity
        && counted.contains_key(&Category::Electricity)
    {
        reasons.push(format!("electricity conversion is not verified ({source})"));
    }
    (counted, not_counted)
}

/// The set's numerator unit per native unit of category `c`: 1 for electricity in a kWh set,
/// the set's electricity equivalent, or the standard-coal factor of `year` (an unverified one
/// adds to `reasons`); `None` for what the set cannot count.
fn set_unit_per_unit(
    set: &BenchmarkSet,
    c: Category,
    year: i32,
    tables: &FactorTables,
    selection: &FactorSelection,
    reasons: &mut Vec<String>,
) -> Option<f64> {
    match (set.unit, &set.electricity, c) {
        (IntensityUnit::KwhPerM2Year, _, Category::Electricity) => Some(1.0),
        (IntensityUnit::KwhPerM2Year, _, _) => None,
        (_, Some(ElectricityBasis::Equivalent { kgce_per_kwh, .. }), Category::Electricity) => {
            Some(*kgce_per_kwh)
        }
        _ => {
            let f = tables.coal(c, year, selection);
            if let Some(f) = &f
                && !coal_factor_verified(tables, f.id)
            {
                reasons.push(format!("standard-coal factor {} is not verified", f.id));
            }
            f.map(|f| f.per_unit)
        }
    }
}

/// The set's use-time and occupancy correction as (γ1, γ2, missing): (1, 1, false) when the
/// set has none, (1, 1, true) when operating hours or occupants are unknown. An unverified or
/// missing correction adds to `reasons`.
fn correction(
    set: &BenchmarkSet,
    input: &AccountEnergy,
    area: f64,
    reasons: &mut Vec<String>,
) -> Result<(f64, f64, bool), BenchmarkError> {
    let (mut gamma1, mut gamma2, mut correction_missing) = (1.0, 1.0, false);
    if let Some(corr) = &set.correction {
        match (input.operating_hours, input.occupants) {
            (Some(hours), Some(people)) => {
                let hours = positive(input, "operating hours", hours)?;
                let people = positive(input, "occupants", people)?;
                gamma1 = 0.3 + 0.7 * corr.standard_hours / hours;
                gamma2 = 0.7 + 0.3 * (area / people) / corr.standard_area_per_person_m2;
                if !corr.verified {
                    reasons.push(format!(
                        "correction formula is not verified ({})",
                        corr.source
                    ));
                }
            }
            _ => {
                correction_missing = true;
                reasons.push(
                    "use-time/occupancy correction not applied: operating hours or occupants unknown"
                        .into(),
                );
            }
        }
    }
    Ok((gamma1, gamma2, correction_missing))
}

/// The set's constraint, baseline and guide values for the type in the account's climate
/// zone, and the rating of the `corrected` intensity against them. Unverified or missing
/// values add to `reasons`.
fn rate(
    set: &BenchmarkSet,
    type_id: &str,
    input: &AccountEnergy,
    corrected: f64,
    reasons: &mut Vec<String>,
) -> (Option<f64>, Option<f64>, Option<f64>, Rating) {
    let row = set.values.iter().find(|v| {
        v.type_id == type_id
            && (v.climate_zones.is_empty()
                || input
                    .climate_zone
                    .is_some_and(|z| v.climate_zones.contains(&z)))
    });
    if let Some(r) = row
        && r.verified == Some(false)
        && set.verified
    {
        reasons.push(format!("values for {type_id} are not verified"));
    }
    let (constraint, baseline, guide) =
        row.map_or((None, None, None), |r| (r.constraint, r.baseline, r.guide));
    let above = |l: Option<f64>| l.is_some_and(|l| corrected > l);
    let rating = if row.is_none() || [constraint, baseline, guide].iter().all(Option::is_none) {
        reasons.push(format!(
            "set {} has no values for type {type_id} in zone {:?}",
            set.id, input.climate_zone
        ));
        Rating::NoValues
    } else if above(constraint) {
        Rating::AboveConstraint
    } else if above(baseline) {
        Rating::AboveBaseline
    } else if above(guide) {
        Rating::AboveGuide
    } else {
        Rating::AtOrBelowGuide
    };
    (constraint, baseline, guide, rating)
}

/// What it takes to bring an account's corrected intensity down to a level.
struct EnergyCut<'a> {
    /// Counted energy per category: (native unit, the set's unit).
    counted: &'a BTreeMap<Category, (f64, f64)>,
    /// Their sum in the set's unit.
    total: f64,
    area: f64,
    corrected: f64,
    gamma: f64,
}

impl EnergyCut<'_> {
    /// The metered energy to remove a year, per category, to reach `level`: A·(E_oc − L)/γ in
    /// the set's unit, shared by the counted energies in proportion to their share of it.
    /// Empty without a level or at or below it.
    fn reduce_to(&self, level: Option<f64>) -> BTreeMap<Category, f64> {
        let Some(l) = level else {
            return BTreeMap::new();
        };
        let cut = self.area * (self.corrected - l).max(0.0) / self.gamma;
        if cut <= 0.0 || self.total <= 0.0 {
            return BTreeMap::new();
        }
        self.counted
            .iter()
            .map(|(c, (native, _))| (*c, cut * native / self.total))
            .collect()
    }
}

fn coal_factor_verified(tables: &FactorTables, id: &str) -> bool {
    tables
        .coal_factors()
        .iter()
        .find(|f| f.id == id)
        .is_some_and(|f| f.verified)
}

fn category_field(c: Category) -> &'static str {
    match c {
        Category::Electricity => "electricity consumption",
        Category::Water => "water consumption",
        Category::Gas => "gas consumption",
        Category::DistrictHeating => "district heating consumption",
        Category::DistrictCooling => "district cooling consumption",
        _ => "fuel consumption",
    }
}

#[cfg(test)]
mod tests;
