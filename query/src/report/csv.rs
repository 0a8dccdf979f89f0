//! CSV of the reports (RFC 4180: comma-separated, quoted where needed, `\n` line ends). Numbers
//! are printed in Rust's shortest round-trip form; an absent value is an empty field.

use super::carbon::{CarbonRow, FactorUsed};
use super::consumption::{FactorRef, IndicatorRow, ItemRow};
use super::forms::FormRow;
use super::savings::{AccountSavings, FactorRow, OpportunityRow};

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn num(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

fn line(out: &mut String, fields: &[String]) {
    let cells: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&cells.join(","));
    out.push('\n');
}

pub const ITEM_HEADER: &str = "account,period,category,item,level,kind,name_zh,name_en,unit,consumption,kgce,kgco2e,previous,mom_pct,year_before,yoy_pct,coal_factor_id,coal_factor_version,carbon_factor_id,carbon_factor_version";

fn factor_ref(f: Option<&FactorRef>) -> [String; 2] {
    f.map_or_else(Default::default, |f| [f.id.clone(), f.version.clone()])
}

pub fn items(rows: &[ItemRow]) -> String {
    let mut out = format!("{ITEM_HEADER}\n");
    for r in rows {
        let mut cells = vec![
            r.account.clone(),
            r.period.clone(),
            r.category.clone(),
            r.item.clone(),
            r.level.to_string(),
            r.kind.name().to_owned(),
            r.name_zh.clone(),
            r.name_en.clone(),
            r.unit.clone(),
            r.consumption.to_string(),
            r.kgce.to_string(),
            r.kgco2e.to_string(),
            num(r.previous),
            num(r.mom_pct),
            num(r.year_before),
            num(r.yoy_pct),
        ];
        cells.extend(factor_ref(r.coal_factor.as_ref()));
        cells.extend(factor_ref(r.carbon_factor.as_ref()));
        line(&mut out, &cells);
    }
    out
}

pub const INDICATOR_HEADER: &str = "account,name_zh,period,kgce,floor_area_m2,headcount,kgce_per_m2,kgce_per_person,water_m3,water_m3_per_person";

pub fn indicators(rows: &[IndicatorRow]) -> String {
    let mut out = format!("{INDICATOR_HEADER}\n");
    for r in rows {
        line(
            &mut out,
            &[
                r.account.clone(),
                r.name_zh.clone(),
                r.period.clone(),
                r.kgce.to_string(),
                num(r.floor_area_m2),
                r.headcount.map(|h| h.to_string()).unwrap_or_default(),
                num(r.kgce_per_m2),
                num(r.kgce_per_person),
                num(r.water_m3),
                num(r.water_m3_per_person),
            ],
        );
    }
    out
}

pub const CARBON_HEADER: &str = "account,region,period,category,category_zh,unit,consumption,kgce,coal_factor_id,coal_factor_version,coal_factor_origin,coal_factor_value,coal_factor_source,coal_factor_year,kgco2e,carbon_factor_id,carbon_factor_version,carbon_factor_origin,carbon_factor_value,carbon_factor_source,carbon_factor_year,carbon_factor_verified,accounts";

fn factor_fields(f: Option<&FactorUsed>) -> [String; 6] {
    match f {
        Some(f) => [
            f.id.clone(),
            f.version.clone(),
            f.origin.clone(),
            f.value.to_string(),
            f.source.clone(),
            f.year.to_string(),
        ],
        None => Default::default(),
    }
}

pub fn carbon(rows: &[CarbonRow]) -> String {
    let mut out = format!("{CARBON_HEADER}\n");
    for r in rows {
        let mut cells = vec![
            r.account.clone().unwrap_or_default(),
            r.region.clone(),
            r.period.clone(),
            r.category.clone(),
            r.category_zh.clone(),
            r.unit.clone(),
            r.consumption.to_string(),
            num(r.kgce),
        ];
        cells.extend(factor_fields(r.coal_factor.as_ref()));
        cells.push(num(r.kgco2e));
        cells.extend(factor_fields(r.carbon_factor.as_ref()));
        cells.push(
            r.carbon_factor
                .as_ref()
                .map(|f| f.verified.to_string())
                .unwrap_or_default(),
        );
        cells.push(r.accounts.to_string());
        line(&mut out, &cells);
    }
    out
}

pub const FORM_HEADER: &str = "account,form,field,zh,unit,value,verified";

pub fn forms(rows: &[FormRow]) -> String {
    let mut out = format!("{FORM_HEADER}\n");
    for r in rows {
        line(
            &mut out,
            &[
                r.account.clone(),
                r.form.clone(),
                r.field.clone(),
                r.zh.clone(),
                r.unit.clone().unwrap_or_default(),
                r.value.clone().unwrap_or_default(),
                r.verified.to_string(),
            ],
        );
    }
    out
}

pub const SAVINGS_HEADER: &str = "rank,account,name_zh,kind,kind_zh,kind_en,year,kwh_per_year,kgce_per_year,kgco2e_per_year,energy_per_year,coal_factors,carbon_factors,confidence,verified,unverified_reasons,explanation_zh,explanation_en";

/// The ranked savings opportunities, one a line; several energies or factors in one field are
/// `;`-separated (`01=1234.5`, `01=<factor id>`).
pub fn savings(rows: &[OpportunityRow]) -> String {
    let mut out = format!("{SAVINGS_HEADER}\n");
    for r in rows {
        let joined = |f: &dyn Fn(&FactorRow) -> String| {
            r.factors.iter().map(f).collect::<Vec<_>>().join(";")
        };
        line(
            &mut out,
            &[
                r.rank.to_string(),
                r.account.clone(),
                r.name_zh.clone(),
                r.kind.to_owned(),
                r.kind_zh.to_owned(),
                r.kind_en.to_owned(),
                r.year.to_string(),
                r.kwh_per_year.to_string(),
                r.kgce_per_year.to_string(),
                r.kgco2e_per_year.to_string(),
                r.energy_per_year
                    .iter()
                    .map(|(c, v)| format!("{c}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
                joined(&|f| format!("{}={}", f.category, f.coal_factor)),
                joined(&|f| format!("{}={}", f.category, f.carbon_factor)),
                r.confidence.to_owned(),
                r.verified.to_string(),
                r.unverified_reasons.join("; "),
                r.explanation_zh.clone(),
                r.explanation_en.clone(),
            ],
        );
    }
    out
}

pub const SAVINGS_ACCOUNT_HEADER: &str = "account,name_zh,temperature_source,baseline_model,baseline_days,cv_rmse,nmbe,monthly_cv_rmse,monthly_nmbe,passes_ashrae14,caltrack_sufficient,reporting_actual_kwh,reporting_baseline_kwh,reporting_avoided_kwh,base_load_kw,off_hours_excess_kwh_per_year,peer_rank,peer_of,kgce_per_m2_year,benchmarks,notes";

/// What was analysed per account: the baseline's fit (ASHRAE Guideline 14), off-hours, peer
/// rank, and each benchmark set as `set_id:rating:verified|UNVERIFIED` (`;`-separated).
pub fn savings_accounts(rows: &[AccountSavings]) -> String {
    let mut out = format!("{SAVINGS_ACCOUNT_HEADER}\n");
    for a in rows {
        let b = a.baseline.as_ref();
        let o = a.off_hours.as_ref();
        let p = a.peer.as_ref();
        line(
            &mut out,
            &[
                a.account.clone(),
                a.name_zh.clone(),
                a.temperature.source.clone(),
                b.map(|b| b.model.to_owned()).unwrap_or_default(),
                b.map(|b| b.days.to_string()).unwrap_or_default(),
                num(b.map(|b| b.cv_rmse)),
                num(b.map(|b| b.nmbe)),
                num(b.and_then(|b| b.monthly_cv_rmse)),
                num(b.and_then(|b| b.monthly_nmbe)),
                b.map(|b| b.passes_ashrae14.to_string()).unwrap_or_default(),
                b.map(|b| b.caltrack_sufficient.to_string())
                    .unwrap_or_default(),
                num(b.map(|b| b.reporting_actual_kwh)),
                num(b.map(|b| b.reporting_baseline_kwh)),
                num(b.map(|b| b.reporting_avoided_kwh)),
                num(o.map(|o| o.base_load_kw)),
                num(o.map(|o| o.excess_kwh_per_year)),
                p.map(|p| p.rank.to_string()).unwrap_or_default(),
                p.map(|p| p.of.to_string()).unwrap_or_default(),
                num(p.map(|p| p.kgce_per_m2_year)),
                a.benchmarks
                    .iter()
                    .map(|b| {
                        format!(
                            "{}:{}:{}",
                            b.set_id,
                            b.rating_en,
                            if b.verified { "verified" } else { "UNVERIFIED" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
                a.notes
                    .iter()
                    .map(|n| format!("{}: {}", n.analysis, n.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_where_needed() {
        assert_eq!(field("海淀"), "海淀");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
