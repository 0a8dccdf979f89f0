//! The accounts table: who each 分户 account is (names, institution type, floor area, headcount,
//! climate zone, building class) and how its meters nest (main meter → sub-meters). It comes
//! from the server config and is registered in every session as the DataFusion table `accounts`,
//! so reports and ad-hoc SQL can join readings to floor area and headcount.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringBuilder, UInt32Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use reading_model::{AccountCode, BuildingClass, Category, FactorSelection, FactorTables, MeterId};
use serde::{Deserialize, Serialize};

/// One climate-zone type for accounts and benchmarks.
pub use crate::savings::benchmark::ClimateZone;

pub const ACCOUNTS: &str = "accounts";

/// 单位性质 of the public-institution statistics forms (DOMAIN.md §10, older edition's codes
/// 01/02/03); the sub-types of 事业单位 are not modelled because their codes were not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstitutionType {
    /// 国家机关
    StateOrgan,
    /// 事业单位
    PublicInstitution,
    /// 社会团体
    SocialOrganization,
}

impl InstitutionType {
    pub fn code(self) -> &'static str {
        match self {
            Self::StateOrgan => "01",
            Self::PublicInstitution => "02",
            Self::SocialOrganization => "03",
        }
    }
    pub fn name_zh(self) -> &'static str {
        match self {
            Self::StateOrgan => "国家机关",
            Self::PublicInstitution => "事业单位",
            Self::SocialOrganization => "社会团体",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::StateOrgan => "state_organ",
            Self::PublicInstitution => "public_institution",
            Self::SocialOrganization => "social_organization",
        }
    }
}

/// GB/T 51161 office class: A may open windows for natural ventilation, B relies on mechanical
/// ventilation and air conditioning all year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OfficeClass {
    A,
    B,
}

/// A main meter and the sub-meters it feeds, within one category. The main meter's consumption
/// minus the sub-meters' sum is the unmetered remainder (缺口量).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MainMeter {
    pub meter: MeterId,
    pub category: Category,
    #[serde(default)]
    pub sub_meters: Vec<MeterId>,
}

/// One `[[account]]` of the server config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub code: AccountCode,
    pub name_zh: String,
    #[serde(default)]
    pub name_en: String,
    pub institution_type: InstitutionType,
    /// The institution (公共机构) the building belongs to, where one has several buildings;
    /// the dashboard groups buildings under it. Absent: the building is its own institution.
    #[serde(default)]
    pub institution: Option<String>,
    /// 建筑面积, m²: the denominator of kgce/m².
    #[serde(default)]
    pub floor_area_m2: Option<f64>,
    /// 用能人数: the denominator of kgce/person and water m³/person.
    #[serde(default)]
    pub headcount: Option<u32>,
    #[serde(default)]
    pub climate_zone: Option<ClimateZone>,
    #[serde(default)]
    pub office_class: Option<OfficeClass>,
    /// Where absent for a category, meters whose item is the category total (e.g. `01000`) are
    /// main meters and every other meter of that category is their sub-meter.
    #[serde(default)]
    pub main_meter: Vec<MainMeter>,
    /// Which factors this account's figures use, the one selection the server applies to the
    /// account everywhere (DOMAIN.md §2, §3): `[account.factors]` with `coal_method`
    /// (`calorific` = 当量, the default, or `equivalent` = 等价), `carbon_region` (`grid`, the
    /// grid region of the account's province, by default; `national`, `province`, or a region
    /// name), `year` (the factors' data year; by default the readings' year, i.e. the latest
    /// factor published for a year not after it), and `carbon_factor` / `coal_factor` tables
    /// pinning a factor id per category code.
    #[serde(default)]
    pub factors: FactorSelection,
}

/// A problem with one account entry: the key at fault and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AccountError {
    pub key: String,
    pub message: String,
}

impl Account {
    /// 建筑类别 from the code's 7th character.
    pub fn building_class(&self) -> BuildingClass {
        self.code.building_class()
    }

    /// Which factors this account's figures use: the one selection the server applies to the
    /// account everywhere (DOMAIN.md §2, §3).
    pub fn factor_selection(&self) -> &FactorSelection {
        &self.factors
    }

    /// Checks that the factor ids the account pins exist in `tables`.
    pub fn check_factors(&self, key: &str, tables: &FactorTables) -> Result<(), AccountError> {
        tables
            .check_selection(&self.factors)
            .map_err(|e| AccountError {
                key: format!("{key}.factors ({})", self.code),
                message: e.to_string(),
            })
    }

    /// Checks one entry; `key` names it in errors (e.g. `account[2]`).
    pub fn validate(&self, key: &str) -> Result<(), AccountError> {
        let err = |k: &str, message: String| AccountError {
            key: format!("{key}.{k} ({})", self.code),
            message,
        };
        if self.name_zh.trim().is_empty() {
            return Err(err("name_zh", "must not be empty".into()));
        }
        if let Some(a) = self.floor_area_m2
            && !(a.is_finite() && a > 0.0)
        {
            return Err(err(
                "floor_area_m2",
                format!("{a} must be a positive number"),
            ));
        }
        if self.headcount == Some(0) {
            return Err(err("headcount", "must be positive".into()));
        }
        if let Some(r) = &self.factors.carbon_region
            && r.trim().is_empty()
        {
            return Err(err("factors.carbon_region", "must not be empty".into()));
        }
        let mut mains = BTreeSet::new();
        let mut subs: BTreeMap<&MeterId, &MeterId> = BTreeMap::new();
        for (i, m) in self.main_meter.iter().enumerate() {
            if !mains.insert(&m.meter) {
                return Err(err(
                    &format!("main_meter[{i}].meter"),
                    format!("{} is listed twice", m.meter),
                ));
            }
            for s in &m.sub_meters {
                if s == &m.meter {
                    return Err(err(
                        &format!("main_meter[{i}].sub_meters"),
                        format!("{s} cannot be its own sub-meter"),
                    ));
                }
                if let Some(other) = subs.insert(s, &m.meter) {
                    return Err(err(
                        &format!("main_meter[{i}].sub_meters"),
                        format!("{s} is already a sub-meter of {other}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The built-in factor tables with a deployment's factor files applied in order (a later file
/// replaces an earlier one's factor of the same id); errors name the file, the line and the key.
pub fn load_factor_tables(
    files: &[std::path::PathBuf],
) -> Result<FactorTables, reading_model::FactorFileError> {
    let fail = |file: String, message: String| reading_model::FactorFileError {
        file,
        line: 1,
        key: "(file)".into(),
        message,
    };
    let mut tables =
        FactorTables::builtin().map_err(|e| fail("built-in tables".into(), e.to_string()))?;
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(name.clone(), format!("cannot read: {e}")))?;
        tables = tables.with_file(&name, &text)?;
    }
    Ok(tables)
}

/// Checks a whole list: each entry, and that no code is listed twice.
pub fn validate_accounts(accounts: &[Account]) -> Result<(), (usize, AccountError)> {
    let mut seen = BTreeSet::new();
    for (i, a) in accounts.iter().enumerate() {
        a.validate(&format!("account[{i}]")).map_err(|e| (i, e))?;
        if !seen.insert(&a.code) {
            return Err((
                i,
                AccountError {
                    key: format!("account[{i}].code"),
                    message: format!("{} is listed twice", a.code),
                },
            ));
        }
    }
    Ok(())
}

pub fn accounts_schema() -> SchemaRef {
    let s = |name, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("code", false),
        s("name_zh", false),
        s("name_en", false),
        s("institution_type", false),
        s("building_class", false),
        s("division", false),
        Field::new("floor_area_m2", DataType::Float64, true),
        Field::new("headcount", DataType::UInt32, true),
        s("climate_zone", true),
        s("office_class", true),
    ]))
}

/// The accounts as one Arrow batch of [`accounts_schema`].
pub fn accounts_batch(accounts: &[Account]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = accounts.len();
    let mut strings: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut area = Float64Builder::with_capacity(n);
    let mut headcount = UInt32Builder::with_capacity(n);
    for a in accounts {
        strings[0].append_value(a.code.as_str());
        strings[1].append_value(&a.name_zh);
        strings[2].append_value(&a.name_en);
        strings[3].append_value(a.institution_type.name());
        strings[4].append_value(a.building_class().letter().to_string());
        strings[5].append_value(a.code.division());
        area.append_option(a.floor_area_m2);
        headcount.append_option(a.headcount);
        strings[6].append_option(a.climate_zone.map(ClimateZone::name));
        strings[7].append_option(a.office_class.map(|c| match c {
            OfficeClass::A => "A",
            OfficeClass::B => "B",
        }));
    }
    let mut cols: Vec<ArrayRef> = Vec::new();
    for b in strings.iter_mut().take(6) {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(area.finish()));
    cols.push(Arc::new(headcount.finish()));
    cols.push(Arc::new(strings[6].finish()));
    cols.push(Arc::new(strings[7].finish()));
    RecordBatch::try_new(accounts_schema(), cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(toml_text: &str) -> Account {
        #[derive(Deserialize)]
        struct F {
            account: Vec<Account>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        f.account.into_iter().next().unwrap()
    }

    #[test]
    fn parses_and_validates_relations() {
        let a = account(
            r#"
[[account]]
code = "110108A001"
name_zh = "海淀区机关办公楼"
name_en = "Haidian government office"
institution_type = "state_organ"
floor_area_m2 = 12000.0
headcount = 480
climate_zone = "cold"
office_class = "A"
[[account.main_meter]]
meter = "main"
category = "01"
sub_meters = ["lighting", "chiller-1"]
"#,
        );
        a.validate("account[0]").unwrap();
        assert_eq!(a.building_class(), BuildingClass::Office);
        let mut bad = a.clone();
        let main = bad.main_meter[0].meter.clone();
        bad.main_meter[0].sub_meters.push(main);
        let e = bad.validate("account[0]").unwrap_err();
        assert!(e.key.contains("main_meter[0].sub_meters"), "{e}");
        let mut bad = a.clone();
        bad.floor_area_m2 = Some(0.0);
        assert!(
            bad.validate("account[0]")
                .unwrap_err()
                .key
                .contains("floor_area_m2")
        );
        let e = validate_accounts(&[a.clone(), a]).unwrap_err();
        assert_eq!(e.0, 1);
        let batch = accounts_batch(&[]).unwrap();
        assert_eq!(batch.num_columns(), 10);
    }
}
