//! The public-institution statistics forms (基本信息表, 能源资源消费状况表) as an export, with the
//! field list of each edition (2013, 2015, 2022, 2025) as data (`data/forms.toml`), so a form
//! revision is a data change. Which fields exist in which edition is sourced from the revision
//! notes; labels, units and order of the printed forms are not, so every field says whether it
//! was verified (none is yet). Fields jieneng does not collect are exported empty.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use reading_model::Category;
use serde::{Deserialize, Serialize};

use super::consumption::{ConsumptionRequest, RowKind};
use super::scope::Filter;
use super::source::Reports;
use crate::report::QueryError;
use reading_model::time::Granularity;

const FORMS: &str = include_str!("../../data/forms.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Form {
    pub id: String,
    pub zh: String,
    pub en: String,
    pub field: Vec<FormField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    pub key: String,
    pub zh: String,
    #[serde(default)]
    pub unit: Option<String>,
    /// `account.<attribute>`, `category.<code>`, `kgce` or `none`.
    pub source: String,
    pub editions: Vec<u16>,
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("forms.toml: {0}")]
    Data(String),
    #[error("edition {0}: known editions are {1:?}")]
    Edition(u16, Vec<u16>),
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// The built-in form definitions, checked: every source is one this module can fill.
pub fn forms() -> Result<Vec<Form>, FormError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        form: Vec<Form>,
    }
    let f: File = toml::from_str(FORMS).map_err(|e| FormError::Data(e.to_string()))?;
    for form in &f.form {
        for field in &form.field {
            let ok = match field.source.split_once('.') {
                Some(("account", a)) => matches!(
                    a,
                    "name_zh" | "institution_type" | "floor_area_m2" | "headcount"
                ),
                Some(("category", c)) => Category::parse(c).is_ok(),
                _ => matches!(field.source.as_str(), "kgce" | "none"),
            };
            if !ok {
                return Err(FormError::Data(format!(
                    "form {} field {}: unknown source {:?}",
                    form.id, field.key, field.source
                )));
            }
        }
    }
    Ok(f.form)
}

/// The editions the definitions know.
pub fn editions(forms: &[Form]) -> Vec<u16> {
    let mut e: Vec<u16> = forms
        .iter()
        .flat_map(|f| f.field.iter().flat_map(|x| x.editions.iter().copied()))
        .collect();
    e.sort_unstable();
    e.dedup();
    e
}

/// One filled field of one account's form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormRow {
    pub account: String,
    pub form: String,
    pub field: String,
    pub zh: String,
    pub unit: Option<String>,
    /// Empty where jieneng does not collect the field or has no data.
    pub value: Option<String>,
    pub verified: bool,
}

impl Reports {
    /// The forms of `edition` for calendar `year` (Beijing time), one block per account.
    pub async fn statistics_forms(
        &self,
        edition: u16,
        year: i32,
        filters: &[Filter],
    ) -> Result<Vec<FormRow>, FormError> {
        let forms = forms()?;
        let known = editions(&forms);
        if !known.contains(&edition) {
            return Err(FormError::Edition(edition, known));
        }
        let (from, to) = (
            NaiveDate::from_ymd_opt(year, 1, 1),
            NaiveDate::from_ymd_opt(year + 1, 1, 1),
        );
        let (Some(from), Some(to)) = (from, to) else {
            return Err(FormError::Data(format!("year {year} is out of range")));
        };
        let report = self
            .consumption_report(&ConsumptionRequest {
                from,
                to,
                granularity: Granularity::Year,
                filters: filters.to_vec(),
                category: None,
            })
            .await?;
        // Category totals and standard coal per account.
        let mut totals: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for r in &report.rows {
            if r.level == 0 && matches!(r.kind, RowKind::Total | RowKind::Subtotal) {
                *totals.entry((&r.account, &r.category)).or_default() += r.consumption;
            }
        }
        let kgce: BTreeMap<&str, f64> = report
            .indicators
            .iter()
            .map(|i| (i.account.as_str(), i.kgce))
            .collect();
        let mut out = Vec::new();
        for account in self
            .accounts()
            .filter(|a| super::scope::matches_all(filters, &a.code))
        {
            let code = account.code.as_str();
            for form in &forms {
                for field in form.field.iter().filter(|f| f.editions.contains(&edition)) {
                    let value = match field.source.split_once('.') {
                        Some(("account", "name_zh")) => Some(account.name_zh.clone()),
                        Some(("account", "institution_type")) => {
                            Some(account.institution_type.code().to_owned())
                        }
                        Some(("account", "floor_area_m2")) => {
                            account.floor_area_m2.map(|v| v.to_string())
                        }
                        Some(("account", "headcount")) => account.headcount.map(|v| v.to_string()),
                        Some(("category", c)) => totals.get(&(code, c)).map(|v| v.to_string()),
                        _ if field.source == "kgce" => kgce.get(code).map(|v| v.to_string()),
                        _ => None,
                    };
                    out.push(FormRow {
                        account: code.to_owned(),
                        form: form.id.clone(),
                        field: field.key.clone(),
                        zh: field.zh.clone(),
                        unit: field.unit.clone(),
                        value,
                        verified: field.verified,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editions_follow_the_revision_notes() {
        let forms = forms().unwrap();
        assert_eq!(editions(&forms), vec![2013, 2015, 2022, 2025]);
        let has = |key: &str, edition: u16| {
            forms
                .iter()
                .flat_map(|f| &f.field)
                .any(|f| f.key == key && f.editions.contains(&edition))
        };
        // 2015: 公务用车 fields dropped, 用地面积 and 新能源汽车 added, 原煤 → 煤炭.
        assert!(has("official_vehicles", 2013) && !has("official_vehicles", 2015));
        assert!(!has("land_area", 2013) && has("land_area", 2015));
        assert!(has("raw_coal", 2013) && !has("raw_coal", 2015) && has("coal", 2015));
        // 2022: 统一社会信用代码 replaces 组织机构代码; 太阳能光电 added.
        assert!(has("organization_code", 2015) && !has("organization_code", 2022));
        assert!(has("credit_code", 2022) && has("solar_pv_generation", 2022));
        // 2025: 用地面积, 充电桩, 可再生能源应用 dropped.
        for k in ["land_area", "charging_piles", "renewable_use"] {
            assert!(has(k, 2022) && !has(k, 2025), "{k}");
        }
        // Nothing is presented as verified before someone checks the printed forms.
        assert!(forms.iter().flat_map(|f| &f.field).all(|f| !f.verified));
    }
}
