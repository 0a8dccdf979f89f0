//! Printing consumption reports for people: a table with Chinese and English names, or CSV.

use query::ConsumptionRow;
use reading_model::{Category, EnergyCode, ItemCatalog};

/// Formats rows as an aligned table (zh + en labels) with totals of kgce and kgCO2e.
pub fn table(
    rows: &[ConsumptionRow],
    names: &std::collections::BTreeMap<String, String>,
) -> String {
    let catalog = ItemCatalog::builtin();
    let mut out = String::new();
    out.push_str(&format!(
        "  {:<10} {:<14} {:<26} {:>14} {:<4} {:>12} {:>12}\n",
        "户号 account", "名称 name", "分项 item", "用量 use", "", "标煤 kgce", "碳 kgCO2e"
    ));
    let (mut kgce, mut co2) = (0.0, 0.0);
    for r in rows {
        let item = EnergyCode::parse(&r.item).map_or_else(
            |_| r.item.clone(),
            |c| {
                let (zh, en) = catalog.name(&c);
                format!("{} {zh} {en}", c)
            },
        );
        let cat = Category::parse(&r.category).map_or("", |c| c.name_zh());
        let name = names.get(&r.account).map_or("", String::as_str);
        out.push_str(&format!(
            "  {:<10} {:<14} {:<26} {:>14.3} {:<4} {:>12.3} {:>12.3}   {cat}\n",
            r.account,
            truncate(name, 14),
            truncate(&item, 26),
            r.consumption,
            r.unit,
            r.kgce,
            r.kgco2e
        ));
        kgce += r.kgce;
        co2 += r.kgco2e;
    }
    out.push_str(&format!(
        "  {:<73} {:>12.3} {:>12.3}\n",
        "合计 total", kgce, co2
    ));
    out
}

fn truncate(s: &str, width: usize) -> String {
    // Count CJK characters as two columns, as terminals show them.
    let mut w = 0;
    let mut out = String::new();
    for c in s.chars() {
        let cw = if c.is_ascii() { 1 } else { 2 };
        if w + cw > width {
            break;
        }
        w += cw;
        out.push(c);
    }
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(w)));
    out
}

pub fn csv(rows: &[ConsumptionRow]) -> String {
    let mut out = String::from("account,category,item,unit,consumption,kgce,kgco2e,intervals\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.account, r.category, r.item, r.unit, r.consumption, r.kgce, r.kgco2e, r.intervals
        ));
    }
    out
}
