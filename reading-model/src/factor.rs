//! Standard-coal coefficients and carbon-emission factors as versioned data.
//!
//! Every factor carries an id, its source document, its (data) year and, for carbon, its region;
//! the built-in tables (`data/coal.toml`, `data/carbon.toml`) follow GB/T 2589-2020 and the
//! MEE/NBS electricity-factor announcements (DOMAIN.md §2–3). A deployment adds or replaces
//! factors from its config ([`FactorTables::with_overrides`]) or from a factor file
//! ([`FactorTables::with_file`]) and chooses per account which region, year and electricity
//! method apply ([`FactorSelection`]). Each computed kgce/kgCO2e records the id of the factor it
//! used, and its version: where its definition came from (`origin`) and a digest of the
//! definition itself, so a figure computed before a deployment changed a factor in place (same
//! id, new value or year) is told apart from one computed after.
//!
//! A factor file holds `[[coal_factor]]` and `[[carbon_factor]]` entries in the fields of the
//! built-in tables and an optional `[density]` table (kg/L by category code):
//!
//! ```toml
//! [[carbon_factor]]
//! id = "mee-nbs-2024/grid/华北"
//! category = "01"
//! region = "华北"
//! year = 2024
//! value = 0.6012
//! per = "kWh"
//! source = "生态环境部 国家统计局 公告…"
//! verified = true
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::AccountCode;
use crate::code::Category;
use crate::unit::Unit;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FactorError {
    #[error("factor table: {0}")]
    Parse(String),
    #[error("factor {id}: unit {per} is not convertible to {category}'s unit {unit}")]
    Unit {
        id: String,
        per: Unit,
        category: Category,
        unit: Unit,
    },
    #[error("factor {id}: value {value} must be finite and not negative")]
    Value { id: String, value: f64 },
    #[error("factor selection names unknown factor id {0:?}")]
    UnknownId(String),
}

/// A factor file that does not load: the file, the line and the key at fault, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct FactorFileError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// 当量值 (calorific equivalent) or 等价值 (primary-energy equivalent, yearly for electricity).
/// Written `calorific` / `equivalent`, or `当量` / `等价` as the statistics system says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoalMethod {
    #[default]
    #[serde(alias = "当量")]
    Calorific,
    #[serde(alias = "等价")]
    Equivalent,
}

impl CoalMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Calorific => "calorific",
            Self::Equivalent => "equivalent",
        }
    }
}

/// kgce per unit `per` of a category's consumption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalFactor {
    pub id: String,
    pub category: Category,
    #[serde(default)]
    pub method: CoalMethod,
    pub value: f64,
    pub per: Unit,
    pub source: String,
    pub year: u16,
    #[serde(default)]
    pub verified: bool,
}

/// kgCO2e per unit `per` of a category's consumption, for a region and data year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonFactor {
    pub id: String,
    pub category: Category,
    pub region: String,
    pub year: u16,
    pub value: f64,
    pub per: Unit,
    pub source: String,
    #[serde(default)]
    pub verified: bool,
}

/// Which factors apply to an account. Defaults: the grid region of the account's province,
/// the latest published year not after the reading's year, the calorific (当量) method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorSelection {
    /// `national`, `grid` (the account's grid region, the default), `province`, or an explicit
    /// region name / province code.
    #[serde(default)]
    pub carbon_region: Option<String>,
    /// Use factors of this data year (or the latest before it) instead of the reading's year.
    #[serde(default)]
    pub year: Option<u16>,
    #[serde(default)]
    pub coal_method: CoalMethod,
    /// Pin one carbon factor per category, by id (e.g. a provincial guideline's factor).
    #[serde(default)]
    pub carbon_factor: BTreeMap<Category, String>,
    /// Pin one standard-coal factor per category, by id.
    #[serde(default)]
    pub coal_factor: BTreeMap<Category, String>,
}

/// A factor resolved for one category: its value per the category's canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub id: &'a str,
    /// Per canonical unit of the category (`Category::consumption_unit`).
    pub per_unit: f64,
    pub source: &'a str,
    pub year: u16,
    pub verified: bool,
    /// Where the definition came from: [`BUILTIN_ORIGIN`] or the factor file's name.
    pub origin: &'a str,
    /// The definition's version: a digest of every field, so a changed value under the same
    /// id is a new version (see [`FactorTables::version_of`]).
    pub version: &'a str,
}

/// The origin of the built-in tables' factors.
pub const BUILTIN_ORIGIN: &str = "builtin";

/// Where a factor's definition came from, and its version.
#[derive(Debug, Clone, PartialEq)]
struct Provenance {
    origin: String,
    version: String,
}

/// Coal or carbon: the two id spaces of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Coal,
    Carbon,
}

/// 64-bit FNV-1a of `text` as 16 hex digits: stable across builds and platforms (unlike
/// `std`'s hasher), which is all a version tag needs; it guards against mistakes, not forgery.
fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl CoalFactor {
    /// Every field, in a fixed order: what [`digest`] hashes.
    fn definition(&self) -> String {
        format!(
            "coal|{}|{}|{}|{}|{}|{}|{}|{}",
            self.id,
            self.category.code(),
            self.method.name(),
            self.value,
            self.per.symbol(),
            self.source,
            self.year,
            self.verified
        )
    }
}

impl CarbonFactor {
    fn definition(&self) -> String {
        format!(
            "carbon|{}|{}|{}|{}|{}|{}|{}|{}",
            self.id,
            self.category.code(),
            self.region,
            self.year,
            self.value,
            self.per.symbol(),
            self.source,
            self.verified
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoalFile {
    #[serde(default)]
    density: BTreeMap<Category, f64>,
    #[serde(default)]
    factor: Vec<CoalFactor>,
}

/// A deployment's factor file (module doc).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    #[serde(default)]
    coal_factor: Vec<toml::Spanned<CoalFactor>>,
    #[serde(default)]
    carbon_factor: Vec<toml::Spanned<CarbonFactor>>,
    #[serde(default)]
    density: BTreeMap<Category, toml::Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarbonFile {
    #[serde(default)]
    factor: Vec<CarbonFactor>,
    #[serde(default)]
    grid_region: BTreeMap<String, String>,
}

/// The origin of factors added with [`FactorTables::with_overrides`] (a site's config).
pub const OVERRIDE_ORIGIN: &str = "config";

const BUILTIN_COAL: &str = include_str!("../data/coal.toml");
const BUILTIN_CARBON: &str = include_str!("../data/carbon.toml");

/// All known factors, with per-category densities for fuels reported in litres.
#[derive(Debug, Clone)]
pub struct FactorTables {
    coal: Vec<CoalFactor>,
    carbon: Vec<CarbonFactor>,
    density: BTreeMap<Category, f64>,
    grid_region: BTreeMap<String, String>,
    /// Origin and version of every factor, by kind and id.
    provenance: BTreeMap<(Kind, String), Provenance>,
}

impl FactorTables {
    /// The built-in tables.
    pub fn builtin() -> Result<Self, FactorError> {
        let coal: CoalFile = toml::from_str(BUILTIN_COAL)
            .map_err(|e| FactorError::Parse(format!("coal.toml: {e}")))?;
        let carbon: CarbonFile = toml::from_str(BUILTIN_CARBON)
            .map_err(|e| FactorError::Parse(format!("carbon.toml: {e}")))?;
        let mut t = Self {
            coal: coal.factor,
            carbon: carbon.factor,
            density: coal.density,
            grid_region: carbon.grid_region,
            provenance: BTreeMap::new(),
        };
        t.record_provenance(BUILTIN_ORIGIN, None);
        t.check()?;
        Ok(t)
    }

    /// Records `origin` and the version of every factor (of the ids in `only`, when given).
    fn record_provenance(&mut self, origin: &str, only: Option<&[(Kind, String)]>) {
        let all = self
            .coal
            .iter()
            .map(|f| ((Kind::Coal, f.id.clone()), f.definition()))
            .chain(
                self.carbon
                    .iter()
                    .map(|f| ((Kind::Carbon, f.id.clone()), f.definition())),
            );
        for (key, definition) in all {
            if only.is_some_and(|ids| !ids.contains(&key)) {
                continue;
            }
            self.provenance.insert(
                key,
                Provenance {
                    origin: origin.to_owned(),
                    version: digest(&definition),
                },
            );
        }
    }

    /// Adds the factors of a deployment's factor file `file` (its name, for errors and as the
    /// factors' origin) whose contents are `text`, replacing factors with the same id; densities
    /// replace per category. Every error names the file, the line and the key.
    pub fn with_file(mut self, file: &str, text: &str) -> Result<Self, FactorFileError> {
        let line_at = |at: usize| {
            text.as_bytes()[..at.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        };
        let err = |at: usize, key: String, message: String| FactorFileError {
            file: file.to_owned(),
            line: line_at(at),
            key,
            message,
        };
        let parsed: DeploymentFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let message = e.message().trim_end().replace('\n', " | ");
            err(at, "(file)".into(), message)
        })?;
        for (category, d) in &parsed.density {
            let v = *d.get_ref();
            if !(v.is_finite() && v > 0.0) {
                return Err(err(
                    d.span().start,
                    format!("density.\"{}\"", category.code()),
                    format!("{v} kg/L must be a positive number"),
                ));
            }
            self.density.insert(*category, v);
        }
        let mut added: Vec<(Kind, String)> = Vec::new();
        let mut seen = |kind: Kind, id: &str, key: &str, at: usize| {
            if added.iter().any(|(k, i)| *k == kind && i == id) {
                return Err(err(
                    at,
                    format!("{key}.id"),
                    format!("{id:?} is listed twice"),
                ));
            }
            added.push((kind, id.to_owned()));
            Ok(())
        };
        for (i, f) in parsed.coal_factor.iter().enumerate() {
            let (at, f) = (f.span().start, f.get_ref());
            let key = format!("coal_factor[{i}]");
            seen(Kind::Coal, &f.id, &key, at)?;
            self.check_one(&f.id, f.value, f.category, f.per)
                .map_err(|e| err(at, format!("{key} ({})", f.id), e.to_string()))?;
        }
        for (i, f) in parsed.carbon_factor.iter().enumerate() {
            let (at, f) = (f.span().start, f.get_ref());
            let key = format!("carbon_factor[{i}]");
            seen(Kind::Carbon, &f.id, &key, at)?;
            self.check_one(&f.id, f.value, f.category, f.per)
                .map_err(|e| err(at, format!("{key} ({})", f.id), e.to_string()))?;
        }
        let coal = parsed
            .coal_factor
            .into_iter()
            .map(toml::Spanned::into_inner);
        let carbon = parsed
            .carbon_factor
            .into_iter()
            .map(toml::Spanned::into_inner);
        let mut t = self
            .with_overrides(coal.collect(), carbon.collect(), BTreeMap::new())
            .map_err(|e| err(0, "(file)".into(), e.to_string()))?;
        t.record_provenance(file, Some(&added));
        Ok(t)
    }

    /// The origin and version of the factor `id` (coal when `coal`, else carbon).
    pub fn version_of(&self, coal: bool, id: &str) -> Option<(&str, &str)> {
        let kind = if coal { Kind::Coal } else { Kind::Carbon };
        self.provenance
            .get(&(kind, id.to_owned()))
            .map(|p| (p.origin.as_str(), p.version.as_str()))
    }

    /// Adds factors, replacing built-in ones with the same id; densities replace per category.
    pub fn with_overrides(
        mut self,
        coal: Vec<CoalFactor>,
        carbon: Vec<CarbonFactor>,
        density: BTreeMap<Category, f64>,
    ) -> Result<Self, FactorError> {
        let mut added = Vec::new();
        for f in coal {
            self.coal.retain(|c| c.id != f.id);
            added.push((Kind::Coal, f.id.clone()));
            self.coal.push(f);
        }
        for f in carbon {
            self.carbon.retain(|c| c.id != f.id);
            added.push((Kind::Carbon, f.id.clone()));
            self.carbon.push(f);
        }
        self.density.extend(density);
        self.check()?;
        self.record_provenance(OVERRIDE_ORIGIN, Some(&added));
        Ok(self)
    }

    /// Checks one factor's value and unit against the tables' densities.
    fn check_one(
        &self,
        id: &str,
        value: f64,
        category: Category,
        per: Unit,
    ) -> Result<(), FactorError> {
        if !value.is_finite() || value < 0.0 {
            return Err(FactorError::Value {
                id: id.to_owned(),
                value,
            });
        }
        if self.per_unit_scale(category, per).is_none() {
            return Err(FactorError::Unit {
                id: id.to_owned(),
                per,
                category,
                unit: category.consumption_unit(),
            });
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FactorError> {
        let values = self
            .coal
            .iter()
            .map(|f| (&f.id, f.value, f.category, f.per))
            .chain(
                self.carbon
                    .iter()
                    .map(|f| (&f.id, f.value, f.category, f.per)),
            );
        for (id, value, category, per) in values {
            self.check_one(id, value, category, per)?;
        }
        Ok(())
    }

    /// Checks that the ids a selection pins exist.
    pub fn check_selection(&self, sel: &FactorSelection) -> Result<(), FactorError> {
        for id in sel.carbon_factor.values() {
            if !self.carbon.iter().any(|f| &f.id == id) {
                return Err(FactorError::UnknownId(id.clone()));
            }
        }
        for id in sel.coal_factor.values() {
            if !self.coal.iter().any(|f| &f.id == id) {
                return Err(FactorError::UnknownId(id.clone()));
            }
        }
        Ok(())
    }

    /// How many `per` units make one canonical unit of the category: a factor in X/`per` times
    /// this is X per canonical unit. Mass-based fuel factors apply to litres through density.
    fn per_unit_scale(&self, category: Category, per: Unit) -> Option<f64> {
        let unit = category.consumption_unit();
        if let Ok(f) = unit.convert(1.0, per) {
            return Some(f);
        }
        // Fuel counted in volume, factor per mass: kg per canonical volume unit.
        let density = *self.density.get(&category)?; // kg/L
        let litres = unit.convert(1.0, Unit::Litre).ok()?;
        Unit::Kilogram.convert(litres * density, per).ok()
    }

    /// Every factor's coefficient for `category` per its canonical unit, coal and carbon alike:
    /// the numbers a gateway multiplies a delta by. Storage tries these first when it records a
    /// kgce or kgCO2e as "delta × coefficient", so a file's coefficient column stays a few runs.
    pub fn per_unit_values(&self, category: Category) -> Vec<f64> {
        let coal = self
            .coal
            .iter()
            .filter(|f| f.category == category)
            .map(|f| (f.value, f.per));
        let carbon = self
            .carbon
            .iter()
            .filter(|f| f.category == category)
            .map(|f| (f.value, f.per));
        coal.chain(carbon)
            .filter_map(|(value, per)| Some(value * self.per_unit_scale(category, per)?))
            .collect()
    }

    /// The grid region of an account's province, e.g. 华北 for `110108A001`.
    pub fn grid_region(&self, account: &AccountCode) -> Option<&str> {
        self.grid_region.get(account.province()).map(String::as_str)
    }

    /// The standard-coal factor for a category in `year` (the reading's year).
    pub fn coal(
        &self,
        category: Category,
        year: i32,
        sel: &FactorSelection,
    ) -> Option<Resolved<'_>> {
        let year = sel.year.map(i32::from).unwrap_or(year);
        let f = match sel.coal_factor.get(&category) {
            Some(id) => self.coal.iter().find(|f| &f.id == id)?,
            None => pick(
                self.coal
                    .iter()
                    .filter(|f| f.category == category && f.method == sel.coal_method),
                |f| f.year,
                year,
            )?,
        };
        let (origin, version) = self.version_of(true, &f.id).unwrap_or(("", ""));
        Some(Resolved {
            id: &f.id,
            per_unit: f.value * self.per_unit_scale(category, f.per)?,
            source: &f.source,
            year: f.year,
            verified: f.verified,
            origin,
            version,
        })
    }

    /// The carbon factor for an account's category in `year` (the reading's year). Falls back
    /// from province to grid region to national where the narrower factor is not published.
    pub fn carbon(
        &self,
        account: &AccountCode,
        category: Category,
        year: i32,
        sel: &FactorSelection,
    ) -> Option<Resolved<'_>> {
        let year = sel.year.map(i32::from).unwrap_or(year);
        let f = match sel.carbon_factor.get(&category) {
            Some(id) => self.carbon.iter().find(|f| &f.id == id)?,
            None => {
                let grid = self.grid_region(account).unwrap_or("national");
                let regions: Vec<&str> = match sel.carbon_region.as_deref() {
                    None | Some("grid") => vec![grid, "national"],
                    Some("national") => vec!["national"],
                    Some("province") => vec![account.province(), grid, "national"],
                    Some(other) => vec![other, "national"],
                };
                let in_region = |region: &str| -> Vec<&CarbonFactor> {
                    self.carbon
                        .iter()
                        .filter(|f| f.category == category && f.region == region)
                        .collect()
                };
                // A published factor of the year in a wider region beats a later one in a
                // narrower region; only when no region has one is a later year used.
                regions
                    .iter()
                    .find_map(|r| pick_not_after(in_region(r).into_iter(), |f| f.year, year))
                    .or_else(|| {
                        regions
                            .iter()
                            .find_map(|r| pick(in_region(r).into_iter(), |f| f.year, year))
                    })?
            }
        };
        let (origin, version) = self.version_of(false, &f.id).unwrap_or(("", ""));
        Some(Resolved {
            id: &f.id,
            per_unit: f.value * self.per_unit_scale(category, f.per)?,
            source: &f.source,
            year: f.year,
            verified: f.verified,
            origin,
            version,
        })
    }

    pub fn coal_factors(&self) -> &[CoalFactor] {
        &self.coal
    }

    pub fn carbon_factors(&self) -> &[CarbonFactor] {
        &self.carbon
    }
}

/// The latest factor published for a year not after `year`.
fn pick_not_after<'a, F>(
    candidates: impl Iterator<Item = &'a F>,
    year_of: impl Fn(&F) -> u16,
    year: i32,
) -> Option<&'a F> {
    candidates
        .filter(|f| i32::from(year_of(f)) <= year)
        .max_by_key(|f| year_of(f))
}

/// The latest factor published for a year not after `year`; the earliest one if all are later.
fn pick<'a, F>(
    candidates: impl Iterator<Item = &'a F>,
    year_of: impl Fn(&F) -> u16,
    year: i32,
) -> Option<&'a F> {
    let all: Vec<&F> = candidates.collect();
    all.iter()
        .filter(|f| i32::from(year_of(f)) <= year)
        .max_by_key(|f| year_of(f))
        .or_else(|| all.iter().min_by_key(|f| year_of(f)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> FactorTables {
        FactorTables::builtin().unwrap()
    }

    fn acct(s: &str) -> AccountCode {
        AccountCode::parse(s).unwrap()
    }

    #[test]
    fn electricity_calorific_is_0_1229() {
        let t = tables();
        let f = t
            .coal(Category::Electricity, 2025, &FactorSelection::default())
            .unwrap();
        assert_eq!(f.per_unit, 0.1229);
        assert_eq!(f.id, "gbt2589-2020/electricity");
        // 860 kcal/kWh ÷ 7000 kcal/kgce rounds to the published 0.1229.
        assert_eq!(
            ((860.0 / 7_000.0) * 10_000.0_f64).round() / 10_000.0,
            0.1229
        );
    }

    #[test]
    fn coal_coefficients_match_gbt_2589() {
        let t = tables();
        let s = FactorSelection::default();
        let kgce = |c| t.coal(c, 2025, &s).unwrap().per_unit;
        assert_eq!(kgce(Category::Gas), 1.33);
        assert_eq!(kgce(Category::DistrictHeating), 34.12); // per GJ = 0.03412 per MJ
        assert_eq!(kgce(Category::Coal), 0.7143);
        assert_eq!(kgce(Category::Lpg), 1.7143);
        // Oils are stored in litres: kgce/kg × kg/L.
        assert!((kgce(Category::Gasoline) - 1.4714 * 0.73).abs() < 1e-12);
        assert!((kgce(Category::Diesel) - 1.4571 * 0.84).abs() < 1e-12);
        // Each low heating value in kcal ÷ 7000 kcal/kgce, rounded to 4 places, is the published coefficient.
        for (kcal, published) in [
            (5_000.0, 0.7143),
            (10_300.0, 1.4714),
            (10_200.0, 1.4571),
            (12_000.0, 1.7143),
            (9_310.0, 1.3300),
        ] {
            assert_eq!(
                ((kcal / 7_000.0_f64) * 10_000.0).round() / 10_000.0,
                published,
                "{kcal}"
            );
        }
        // Water is a resource, not energy: no standard-coal factor.
        assert!(t.coal(Category::Water, 2025, &s).is_none());
    }

    #[test]
    fn equivalent_method_is_selectable() {
        let t = tables();
        let s = FactorSelection {
            coal_method: CoalMethod::Equivalent,
            ..Default::default()
        };
        assert_eq!(
            t.coal(Category::Electricity, 2025, &s).unwrap().per_unit,
            0.404
        );
    }

    #[test]
    fn grid_factor_by_region_and_year() {
        let t = tables();
        let s = FactorSelection::default();
        let beijing = acct("110108A001");
        assert_eq!(t.grid_region(&beijing), Some("华北"));
        let f = t.carbon(&beijing, Category::Electricity, 2026, &s).unwrap();
        assert_eq!((f.id, f.per_unit), ("mee-nbs-2023/grid/华北", 0.6361));
        let f = t.carbon(&beijing, Category::Electricity, 2022, &s).unwrap();
        assert_eq!(f.per_unit, 0.6776);
        // No regional 2021 factor: the national 2021 factor rather than a later regional one.
        let f = t.carbon(&beijing, Category::Electricity, 2021, &s).unwrap();
        assert_eq!(f.id, "mee-nbs-2021/grid/national");
        // Before any publication: the earliest factor, so old data still gets a figure.
        let f = t.carbon(&beijing, Category::Electricity, 2019, &s).unwrap();
        assert_eq!(f.id, "mee-nbs-2022/grid/华北");
        let national = FactorSelection {
            carbon_region: Some("national".into()),
            ..Default::default()
        };
        let f = t
            .carbon(&beijing, Category::Electricity, 2021, &national)
            .unwrap();
        assert_eq!((f.id, f.per_unit), ("mee-nbs-2021/grid/national", 0.5568));
        let f = t
            .carbon(&beijing, Category::Electricity, 2025, &national)
            .unwrap();
        assert_eq!(f.per_unit, 0.5306);
        let pinned_year = FactorSelection {
            year: Some(2022),
            carbon_region: Some("national".into()),
            ..Default::default()
        };
        assert_eq!(
            t.carbon(&beijing, Category::Electricity, 2026, &pinned_year)
                .unwrap()
                .per_unit,
            0.5366
        );
        // Provincial: Sichuan 2022 published, falls back to 西南 for 2023.
        let prov = FactorSelection {
            carbon_region: Some("province".into()),
            ..Default::default()
        };
        let chengdu = acct("510104A001");
        assert_eq!(
            t.carbon(&chengdu, Category::Electricity, 2022, &prov)
                .unwrap()
                .per_unit,
            0.1404
        );
        // The latest provincial factor not after 2026 is 2022's; the province wins over newer regional data.
        assert_eq!(
            t.carbon(&chengdu, Category::Electricity, 2026, &prov)
                .unwrap()
                .per_unit,
            0.1404
        );
    }

    #[test]
    fn fuel_and_heat_carbon() {
        let t = tables();
        let s = FactorSelection::default();
        let a = acct("320100A008");
        let co2 = |c| t.carbon(&a, c, 2025, &s).unwrap().per_unit;
        assert_eq!(co2(Category::Gas), 2.1622);
        assert_eq!(co2(Category::DistrictHeating), 110.0);
        assert!((co2(Category::Diesel) - 3.0959 * 0.84).abs() < 1e-12);
        // 389.31 GJ/10^4 m³ × 15.3 tC/TJ × 0.99 × 44/12 = 2.1622 kgCO2/m³.
        let gas = 389.31 / 10_000.0 * 15.3 * 0.99 * 44.0 / 12.0;
        assert!((gas - 2.1622_f64).abs() < 1e-4);
        assert!(t.carbon(&a, Category::Water, 2025, &s).is_none());
    }

    #[test]
    fn overrides_replace_and_pin() {
        let custom = CarbonFactor {
            id: "sd-guide-2024/grid".into(),
            category: Category::Electricity,
            region: "37".into(),
            year: 2024,
            value: 0.7,
            per: Unit::MegawattHour,
            source: "provincial guide".into(),
            verified: false,
        };
        let t = tables()
            .with_overrides(vec![], vec![custom], BTreeMap::new())
            .unwrap();
        let s = FactorSelection {
            carbon_factor: [(Category::Electricity, "sd-guide-2024/grid".to_string())].into(),
            ..Default::default()
        };
        t.check_selection(&s).unwrap();
        let f = t
            .carbon(&acct("370102A001"), Category::Electricity, 2025, &s)
            .unwrap();
        // 0.7 kg per MWh is 0.0007 kg per kWh.
        assert!((f.per_unit - 0.0007).abs() < 1e-15);
        let bad = FactorSelection {
            carbon_factor: [(Category::Electricity, "nope".to_string())].into(),
            ..Default::default()
        };
        assert!(t.check_selection(&bad).is_err());
        let negative = CoalFactor {
            id: "x".into(),
            category: Category::Electricity,
            method: CoalMethod::Calorific,
            value: -1.0,
            per: Unit::KilowattHour,
            source: "x".into(),
            year: 2020,
            verified: false,
        };
        assert!(
            tables()
                .with_overrides(vec![negative], vec![], BTreeMap::new())
                .is_err()
        );
    }

    #[test]
    fn a_factor_file_adds_a_year_and_names_its_origin_and_version() {
        let file = r#"
[[carbon_factor]]
id = "mee-nbs-2024/grid/华北"
category = "01"
region = "华北"
year = 2024
value = 0.6
per = "kWh"
source = "a newer announcement"
verified = true
"#;
        let beijing = acct("110108A001");
        let s = FactorSelection::default();
        let before = tables();
        let f = before
            .carbon(&beijing, Category::Electricity, 2025, &s)
            .unwrap();
        assert_eq!((f.id, f.origin), ("mee-nbs-2023/grid/华北", BUILTIN_ORIGIN));
        let t = tables().with_file("mee-2024.toml", file).unwrap();
        let f = t.carbon(&beijing, Category::Electricity, 2025, &s).unwrap();
        assert_eq!(
            (f.id, f.per_unit, f.origin),
            ("mee-nbs-2024/grid/华北", 0.6, "mee-2024.toml")
        );
        assert_eq!(f.version.len(), 16);
        // 2023 keeps its factor.
        let f = t.carbon(&beijing, Category::Electricity, 2023, &s).unwrap();
        assert_eq!(f.id, "mee-nbs-2023/grid/华北");
        // The same id with another value is another version.
        let changed = t
            .clone()
            .with_file("fix.toml", &file.replace("0.6\n", "0.61\n"))
            .unwrap();
        let (v1, v2) = (
            t.version_of(false, "mee-nbs-2024/grid/华北").unwrap().1,
            changed
                .version_of(false, "mee-nbs-2024/grid/华北")
                .unwrap()
                .1,
        );
        assert_ne!(v1, v2);
    }

    #[test]
    fn a_bad_factor_file_names_the_file_line_and_key() {
        let bad_value = "\n[[coal_factor]]\nid = \"x\"\ncategory = \"01\"\nvalue = -1.0\nper = \"kWh\"\nsource = \"s\"\nyear = 2024\n";
        let e = tables().with_file("f.toml", bad_value).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.key.as_str()),
            ("f.toml", 2, "coal_factor[0] (x)")
        );
        assert!(e.message.contains("-1"), "{e}");
        let bad_unit = bad_value.replace("-1.0", "1.0").replace("kWh", "m³");
        let e = tables().with_file("f.toml", &bad_unit).unwrap_err();
        assert!(e.message.contains("not convertible"), "{e}");
        let unknown = "[[carbon_factor]]\nid = \"x\"\nvalu = 1\n";
        let e = tables().with_file("f.toml", unknown).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "(file)"), "{e}");
        assert!(e.to_string().starts_with("f.toml:3: "), "{e}");
        let twice = format!(
            "{}{}",
            bad_unit.replace("m³", "kWh"),
            bad_unit.replace("m³", "kWh")
        );
        let e = tables().with_file("f.toml", &twice).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (10, "coal_factor[1].id"), "{e}");
        let e = tables()
            .with_file("f.toml", "[density]\n\"12\" = 0.0\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "density.\"12\""), "{e}");
    }
}
