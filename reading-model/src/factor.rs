//! Standard-coal coefficients and carbon-emission factors as versioned data.
//!
//! Every factor carries an id, its source document, its (data) year and, for carbon, its region;
//! the built-in tables (`data/coal.toml`, `data/carbon.toml`) follow GB/T 2589-2020 and the
//! MEE/NBS electricity-factor announcements (DOMAIN.md §2–3). A deployment adds or replaces
//! factors from its config ([`FactorTables::with_overrides`]) and chooses per account which
//! region, year and electricity method apply ([`FactorSelection`]). Each computed kgce/kgCO2e
//! records the id of the factor it used.

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

/// 当量值 (calorific equivalent) or 等价值 (primary-energy equivalent, yearly for electricity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoalMethod {
    #[default]
    Calorific,
    Equivalent,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoalFile {
    #[serde(default)]
    density: BTreeMap<Category, f64>,
    #[serde(default)]
    factor: Vec<CoalFactor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarbonFile {
    #[serde(default)]
    factor: Vec<CarbonFactor>,
    #[serde(default)]
    grid_region: BTreeMap<String, String>,
}

const BUILTIN_COAL: &str = include_str!("../data/coal.toml");
const BUILTIN_CARBON: &str = include_str!("../data/carbon.toml");

/// All known factors, with per-category densities for fuels reported in litres.
#[derive(Debug, Clone)]
pub struct FactorTables {
    coal: Vec<CoalFactor>,
    carbon: Vec<CarbonFactor>,
    density: BTreeMap<Category, f64>,
    grid_region: BTreeMap<String, String>,
}

impl FactorTables {
    /// The built-in tables.
    pub fn builtin() -> Result<Self, FactorError> {
        let coal: CoalFile = toml::from_str(BUILTIN_COAL)
            .map_err(|e| FactorError::Parse(format!("coal.toml: {e}")))?;
        let carbon: CarbonFile = toml::from_str(BUILTIN_CARBON)
            .map_err(|e| FactorError::Parse(format!("carbon.toml: {e}")))?;
        let t = Self {
            coal: coal.factor,
            carbon: carbon.factor,
            density: coal.density,
            grid_region: carbon.grid_region,
        };
        t.check()?;
        Ok(t)
    }

    /// Adds factors, replacing built-in ones with the same id; densities replace per category.
    pub fn with_overrides(
        mut self,
        coal: Vec<CoalFactor>,
        carbon: Vec<CarbonFactor>,
        density: BTreeMap<Category, f64>,
    ) -> Result<Self, FactorError> {
        for f in coal {
            self.coal.retain(|c| c.id != f.id);
            self.coal.push(f);
        }
        for f in carbon {
            self.carbon.retain(|c| c.id != f.id);
            self.carbon.push(f);
        }
        self.density.extend(density);
        self.check()?;
        Ok(self)
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
            if !value.is_finite() || value < 0.0 {
                return Err(FactorError::Value {
                    id: id.clone(),
                    value,
                });
            }
            if self.per_unit_scale(category, per).is_none() {
                return Err(FactorError::Unit {
                    id: id.clone(),
                    per,
                    category,
                    unit: category.consumption_unit(),
                });
            }
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
        Some(Resolved {
            id: &f.id,
            per_unit: f.value * self.per_unit_scale(category, f.per)?,
            source: &f.source,
            year: f.year,
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
        Some(Resolved {
            id: &f.id,
            per_unit: f.value * self.per_unit_scale(category, f.per)?,
            source: &f.source,
            year: f.year,
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
}
