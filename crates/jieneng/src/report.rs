//! Printing consumption reports for people: a table with Chinese and English names, or CSV.

use query::ConsumptionRow;
use reading_model::{EnergyCode, ItemCatalog};

/// Formats rows as an aligned table (zh + en labels) with totals of kgce and kgCO2e.
pub fn table(
    rows: &[ConsumptionRow],
    names: &std::collections::BTreeMap<String, String>,
) -> String {
    let catalog = ItemCatalog::builtin();
    let mut out = String::new();
    out.push_str(&format!(
        "  {} {} {} {} {} {} {}\n",
        pad("户号", 10),
        pad("名称 name", 16),
        pad("分项 item", 34),
        pad_left("用量 use", 14),
        pad("", 4),
        pad_left("标煤 kgce", 12),
        pad_left("碳 kgCO2e", 12),
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
        let name = names.get(&r.account).map_or("", String::as_str);
        out.push_str(&format!(
            "  {:<10} {} {} {:>14.3} {} {:>12.3} {:>12.3}\n",
            r.account,
            pad(name, 16),
            pad(&item, 34),
            r.consumption,
            pad(&r.unit, 4),
            r.kgce,
            r.kgco2e
        ));
        kgce += r.kgce;
        co2 += r.kgco2e;
    }
    out.push_str(&format!(
        "  {} {:>12.3} {:>12.3}\n",
        pad("合计 total", 82),
        kgce,
        co2
    ));
    out
}

/// Terminal columns: CJK ideographs and full-width forms take two.
fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFF00..=0xFF60 => {
            2
        }
        _ => 1,
    }
}

fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Right-aligns `s` in `width` terminal columns.
fn pad_left(s: &str, cols: usize) -> String {
    format!("{}{s}", " ".repeat(cols.saturating_sub(width(s))))
}

/// Left-aligns `s` in `width` terminal columns, cutting it if longer.
fn pad(s: &str, width: usize) -> String {
    // Count CJK characters as two columns, as terminals show them.
    let mut w = 0;
    let mut out = String::new();
    for c in s.chars() {
        let cw = char_width(c);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(item: &str, unit: &str, consumption: f64) -> ConsumptionRow {
        ConsumptionRow {
            account: "110108A001".into(),
            category: item[..2].into(),
            item: item.into(),
            unit: unit.into(),
            consumption,
            kgce: consumption * 0.1229,
            kgco2e: consumption * 0.6361,
            intervals: 3,
        }
    }

    #[test]
    fn table_columns_line_up_with_chinese_text() {
        let names = [("110108A001".to_owned(), "海淀区机关办公楼".to_owned())].into();
        let t = table(
            &[row("01A10", "kWh", 12.5), row("02000", "m³", 1.25)],
            &names,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("01A10 照明与插座 indoor lighting"), "{t}");
        assert!(lines[2].contains("02000 水 water"), "{t}");
        let widths: Vec<usize> = lines.iter().map(|l| width(l)).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}\n{t}");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let c = csv(&[row("01A10", "kWh", 12.5)]);
        assert_eq!(
            c.lines().next(),
            Some("account,category,item,unit,consumption,kgce,kgco2e,intervals")
        );
        assert!(c.contains("110108A001,01,01A10,kWh,12.5,"), "{c}");
    }
}
