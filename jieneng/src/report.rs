//! Printing consumption reports for people: tables with Chinese and English names, CSV files,
//! and an XLSX workbook (one sheet per table, bilingual headers).

use std::path::Path;

use query::ConsumptionRow;
use query::report::carbon::CarbonRow;
use query::report::consumption::{ConsumptionReport, RowKind};
use query::report::savings::SavingsReport;
use reading_model::{EnergyCode, ItemCatalog};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};

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

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The item tree of a report: totals, the unmetered remainder, items indented by level.
pub fn tree_table(
    report: &ConsumptionReport,
    names: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "  {} {} {} {} {} {} {} {} {}\n",
        pad("户号 account", 12),
        pad("期间 period", 11),
        pad("分项 item", 44),
        pad_left("用量 use", 14),
        pad("", 4),
        pad_left("标煤 kgce", 13),
        pad_left("碳 kgCO2e", 13),
        pad_left("环比 MoM%", 10),
        pad_left("同比 YoY%", 10),
    ));
    let mut last_account = "";
    for r in &report.rows {
        if r.account != last_account {
            if let Some(n) = names.get(&r.account) {
                out.push_str(&format!("  {} {n}\n", r.account));
            }
            last_account = &r.account;
        }
        let indent = match r.kind {
            RowKind::Total | RowKind::Unmetered => 0,
            _ => usize::from(r.level) * 2,
        };
        let label = if r.kind == RowKind::Unmetered {
            "缺口量 unmetered (main − sub-meters)".to_owned()
        } else {
            format!(
                "{}{} {} {}",
                " ".repeat(indent),
                r.item,
                r.name_zh,
                r.name_en
            )
        };
        out.push_str(&format!(
            "  {:<12} {:<11} {} {:>14.3} {} {:>13.3} {:>13.3} {} {}\n",
            r.account,
            r.period,
            pad(&label, 44),
            r.consumption,
            pad(&r.unit, 4),
            r.kgce,
            r.kgco2e,
            pad_left(&opt(r.mom_pct, 1), 10),
            pad_left(&opt(r.yoy_pct, 1), 10),
        ));
    }
    out.push_str(&format!(
        "\n  {} {} {} {} {} {} {}\n",
        pad("户号 account", 12),
        pad("期间 period", 11),
        pad_left("标煤 kgce", 14),
        pad_left("kgce/m²", 10),
        pad_left("kgce/人 person", 15),
        pad_left("水 water m³", 12),
        pad_left("m³/人 person", 13),
    ));
    for i in &report.indicators {
        out.push_str(&format!(
            "  {:<12} {:<11} {:>14.3} {} {} {} {}\n",
            i.account,
            i.period,
            i.kgce,
            pad_left(&opt(i.kgce_per_m2, 4), 10),
            pad_left(&opt(i.kgce_per_person, 3), 15),
            pad_left(&opt(i.water_m3, 3), 12),
            pad_left(&opt(i.water_m3_per_person, 4), 13),
        ));
    }
    out
}

/// Writes the report and the carbon rows as an XLSX workbook: sheets 分项 items, 指标
/// indicators, 碳排放 carbon, each with a bilingual header row.
pub fn write_xlsx(
    path: &Path,
    report: &ConsumptionReport,
    carbon: &[CarbonRow],
) -> Result<(), XlsxError> {
    let mut book = Workbook::new();
    items_sheet(&mut book, report)?;
    indicators_sheet(&mut book, report)?;
    carbon_sheet(&mut book, carbon)?;
    book.save(path)
}

/// A sheet's header row, in bold.
fn header(sheet: &mut Worksheet, cols: &[&str]) -> Result<(), XlsxError> {
    let bold = Format::new().set_bold();
    for (c, h) in cols.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *h, &bold)?;
    }
    Ok(())
}

/// A number, or an empty cell for none.
fn num(sheet: &mut Worksheet, r: u32, c: u16, v: Option<f64>) -> Result<(), XlsxError> {
    if let Some(v) = v {
        sheet.write_number(r, c, v)?;
    }
    Ok(())
}

/// 分项 items: the item tree per account and period, with 环比 and 同比.
fn items_sheet(book: &mut Workbook, report: &ConsumptionReport) -> Result<(), XlsxError> {
    let sheet = book.add_worksheet().set_name("分项 items")?;
    header(
        sheet,
        &[
            "户号 account",
            "期间 period",
            "分类 category",
            "分项 item",
            "级 level",
            "类型 kind",
            "名称",
            "name",
            "单位 unit",
            "用量 consumption",
            "标煤 kgce",
            "碳 kgCO2e",
            "上期 previous",
            "环比 MoM %",
            "去年同期 year before",
            "同比 YoY %",
        ],
    )?;
    for (i, r) in report.rows.iter().enumerate() {
        let row = i as u32 + 1;
        for (c, s) in [&r.account, &r.period, &r.category, &r.item]
            .into_iter()
            .enumerate()
        {
            sheet.write_string(row, c as u16, s.as_str())?;
        }
        sheet.write_number(row, 4, f64::from(r.level))?;
        sheet.write_string(row, 5, r.kind.name())?;
        sheet.write_string(row, 6, r.name_zh.as_str())?;
        sheet.write_string(row, 7, r.name_en.as_str())?;
        sheet.write_string(row, 8, r.unit.as_str())?;
        sheet.write_number(row, 9, r.consumption)?;
        sheet.write_number(row, 10, r.kgce)?;
        sheet.write_number(row, 11, r.kgco2e)?;
        num(sheet, row, 12, r.previous)?;
        num(sheet, row, 13, r.mom_pct)?;
        num(sheet, row, 14, r.year_before)?;
        num(sheet, row, 15, r.yoy_pct)?;
    }
    Ok(())
}

/// 指标 indicators: kgce per m² and per person, water per person.
fn indicators_sheet(book: &mut Workbook, report: &ConsumptionReport) -> Result<(), XlsxError> {
    let sheet = book.add_worksheet().set_name("指标 indicators")?;
    header(
        sheet,
        &[
            "户号 account",
            "名称 name",
            "期间 period",
            "标煤 kgce",
            "建筑面积 floor area m²",
            "用能人数 headcount",
            "kgce/m²",
            "kgce/人 person",
            "水 water m³",
            "m³/人 person",
        ],
    )?;
    for (i, r) in report.indicators.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_string(row, 0, r.account.as_str())?;
        sheet.write_string(row, 1, r.name_zh.as_str())?;
        sheet.write_string(row, 2, r.period.as_str())?;
        sheet.write_number(row, 3, r.kgce)?;
        num(sheet, row, 4, r.floor_area_m2)?;
        num(sheet, row, 5, r.headcount.map(f64::from))?;
        num(sheet, row, 6, r.kgce_per_m2)?;
        num(sheet, row, 7, r.kgce_per_person)?;
        num(sheet, row, 8, r.water_m3)?;
        num(sheet, row, 9, r.water_m3_per_person)?;
    }
    Ok(())
}

/// 碳排放 carbon: energy, kgce and kgCO2e with the factors used.
fn carbon_sheet(book: &mut Workbook, carbon: &[CarbonRow]) -> Result<(), XlsxError> {
    let sheet = book.add_worksheet().set_name("碳排放 carbon")?;
    header(
        sheet,
        &[
            "户号 account",
            "地区 region",
            "期间 period",
            "分类 category",
            "单位 unit",
            "用量 consumption",
            "标煤 kgce",
            "折标系数 coal factor",
            "系数值 value",
            "碳 kgCO2e",
            "排放因子 carbon factor",
            "因子值 value",
            "来源 source",
            "年份 year",
            "折标系数版本 coal factor version",
            "排放因子版本 carbon factor version",
        ],
    )?;
    for (i, r) in carbon.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_string(row, 0, r.account.as_deref().unwrap_or(""))?;
        sheet.write_string(row, 1, r.region.as_str())?;
        sheet.write_string(row, 2, r.period.as_str())?;
        sheet.write_string(row, 3, format!("{} {}", r.category, r.category_zh))?;
        sheet.write_string(row, 4, r.unit.as_str())?;
        sheet.write_number(row, 5, r.consumption)?;
        num(sheet, row, 6, r.kgce)?;
        if let Some(f) = &r.coal_factor {
            sheet.write_string(row, 7, f.id.as_str())?;
            sheet.write_number(row, 8, f.value)?;
            sheet.write_string(row, 14, f.version.as_str())?;
        }
        num(sheet, row, 9, r.kgco2e)?;
        if let Some(f) = &r.carbon_factor {
            sheet.write_string(row, 10, f.id.as_str())?;
            sheet.write_number(row, 11, f.value)?;
            sheet.write_string(row, 12, f.source.as_str())?;
            sheet.write_number(row, 13, f64::from(f.year))?;
            sheet.write_string(row, 15, f.version.as_str())?;
        }
    }
    Ok(())
}

/// The savings report: ranked opportunities with their explanations (zh, then en), then what
/// was analysed per account — the baseline's fit against ASHRAE Guideline 14, off-hours load,
/// benchmarks (marked 未核实 UNVERIFIED unless verified) and notes on what could not run.
pub fn savings_table(report: &SavingsReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "  {} {} {} {} {} {} {} {}\n",
        pad_left("#", 3),
        pad("户号 account", 12),
        pad("类型 kind", 44),
        pad_left("kWh/年 a", 12),
        pad_left("kgce/年 a", 11),
        pad_left("kgCO2e/年 a", 12),
        pad("可信度 conf.", 12),
        pad("核实 verified", 18),
    ));
    if report.opportunities.is_empty() {
        out.push_str("  (无 none)\n");
    }
    for o in &report.opportunities {
        out.push_str(&format!(
            "  {} {:<12} {} {:>12.0} {:>11.0} {:>12.0} {} {}\n",
            pad_left(&o.rank.to_string(), 3),
            o.account,
            pad(&format!("{} {}", o.kind_zh, o.kind), 44),
            o.kwh_per_year,
            o.kgce_per_year,
            o.kgco2e_per_year,
            pad(o.confidence, 12),
            pad(
                if o.verified {
                    "已核实 verified"
                } else {
                    "未核实 UNVERIFIED"
                },
                18
            ),
        ));
        out.push_str(&format!(
            "      {}\n      {}\n",
            o.explanation_zh, o.explanation_en
        ));
        if !o.unverified_reasons.is_empty() {
            out.push_str(&format!(
                "      未核实 unverified: {}\n",
                o.unverified_reasons.join("; ")
            ));
        }
    }
    out.push('\n');
    for a in &report.accounts {
        out.push_str(&format!("  {} {}\n", a.account, a.name_zh));
        out.push_str(&format!(
            "    气温 temperature: {} — {} {}\n",
            a.temperature.source, a.temperature.note_zh, a.temperature.note_en
        ));
        match &a.baseline {
            Some(b) => out.push_str(&format!(
                "    基线 baseline ({}, {} .. {}, {} 天 days): CV(RMSE) {:.1}%, NMBE {:.2}%, 月 monthly CV(RMSE) {}, ASHRAE 14 {}; 报告期 reporting {:.0} kWh vs 基线 baseline {:.0} kWh\n",
                b.model,
                b.first_day,
                b.last_day,
                b.days,
                b.cv_rmse * 100.0,
                b.nmbe * 100.0,
                b.monthly_cv_rmse.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", v * 100.0)),
                if b.passes_ashrae14 { "满足 pass" } else { "未满足 fail" },
                b.reporting_actual_kwh,
                b.reporting_baseline_kwh,
            )),
            None => out.push_str("    基线 baseline: —\n"),
        }
        if let Some(o) = &a.off_hours {
            out.push_str(&format!(
                "    非工作时段 off-hours: 基础负荷 base {:.1} kW, 夜间 night {:.1} kW, 非工作日 non-working {:.1} kW, 超出 excess {:.0} kWh/年 a\n",
                o.base_load_kw, o.night_mean_kw, o.non_working_mean_kw, o.excess_kwh_per_year
            ));
        }
        if let Some(p) = &a.peer {
            out.push_str(&format!(
                "    同类排名 peers: {}/{} ({}), {:.2} kgce/(m²·a), 中位数 median {:.2}\n",
                p.rank, p.of, p.institution_type, p.kgce_per_m2_year, p.median_kgce_per_m2_year
            ));
        }
        for b in &a.benchmarks {
            out.push_str(&format!(
                "    指标 benchmark {} [{}]: {:.2} {} ({} {}) — {}\n",
                b.set_id,
                b.type_id,
                b.corrected,
                b.unit,
                b.rating_zh,
                b.rating_en,
                if b.verified {
                    "已核实 verified"
                } else {
                    "未核实 UNVERIFIED"
                }
            ));
        }
        for n in &a.notes {
            out.push_str(&format!("    注 note ({}): {}\n", n.analysis, n.message));
        }
    }
    out
}

/// Writes the savings report as an XLSX workbook: sheets 节能机会 opportunities and 分析
/// accounts, each with a bilingual header row.
pub fn write_savings_xlsx(
    path: &Path,
    report: &SavingsReport,
) -> Result<(), rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let sheet = book.add_worksheet().set_name("节能机会 opportunities")?;
    for (c, h) in [
        "排名 rank",
        "户号 account",
        "名称 name",
        "类型 kind",
        "类型",
        "kind",
        "年份 year",
        "kWh/年 a",
        "kgce/年 a",
        "kgCO2e/年 a",
        "折标系数 coal factors",
        "排放因子 carbon factors",
        "可信度 confidence",
        "已核实 verified",
        "未核实原因 unverified reasons",
        "说明",
        "explanation",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string_with_format(0, c as u16, *h, &bold)?;
    }
    for (i, o) in report.opportunities.iter().enumerate() {
        let r = i as u32 + 1;
        sheet.write_number(r, 0, o.rank as f64)?;
        sheet.write_string(r, 1, o.account.as_str())?;
        sheet.write_string(r, 2, o.name_zh.as_str())?;
        sheet.write_string(r, 3, o.kind)?;
        sheet.write_string(r, 4, o.kind_zh)?;
        sheet.write_string(r, 5, o.kind_en)?;
        sheet.write_number(r, 6, f64::from(o.year))?;
        sheet.write_number(r, 7, o.kwh_per_year)?;
        sheet.write_number(r, 8, o.kgce_per_year)?;
        sheet.write_number(r, 9, o.kgco2e_per_year)?;
        let factors = |f: &dyn Fn(&query::report::savings::FactorRow) -> String| {
            o.factors.iter().map(f).collect::<Vec<_>>().join("; ")
        };
        sheet.write_string(
            r,
            10,
            factors(&|f| format!("{} {} {}", f.category, f.coal_factor, f.kgce_per_unit)),
        )?;
        sheet.write_string(
            r,
            11,
            factors(&|f| format!("{} {} {}", f.category, f.carbon_factor, f.kgco2e_per_unit)),
        )?;
        sheet.write_string(r, 12, o.confidence)?;
        sheet.write_boolean(r, 13, o.verified)?;
        sheet.write_string(r, 14, o.unverified_reasons.join("; "))?;
        sheet.write_string(r, 15, o.explanation_zh.as_str())?;
        sheet.write_string(r, 16, o.explanation_en.as_str())?;
    }
    let sheet = book.add_worksheet().set_name("分析 accounts")?;
    let csv = query::report::csv::savings_accounts(&report.accounts);
    for (r, line) in csv.lines().enumerate() {
        // The CSV's own cells, so the sheet and the CSV file cannot drift apart.
        for (c, cell) in split_csv_line(line).iter().enumerate() {
            if r == 0 {
                sheet.write_string_with_format(0, c as u16, cell.as_str(), &bold)?;
            } else if let Ok(v) = cell.parse::<f64>() {
                sheet.write_number(r as u32, c as u16, v)?;
            } else {
                sheet.write_string(r as u32, c as u16, cell.as_str())?;
            }
        }
    }
    book.save(path)
}

/// The fields of one RFC 4180 line as `query::report::csv` writes them.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
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
    fn tree_table_and_xlsx_of_a_report() {
        use query::report::consumption::{ConsumptionReport, IndicatorRow, ItemRow, RowKind};
        use reading_model::time::Granularity;
        let item = |item: &str, level: u8, kind: RowKind, consumption: f64| ItemRow {
            account: "110108A001".into(),
            period: "2026-01".into(),
            category: "01".into(),
            item: item.into(),
            level,
            kind,
            name_zh: "电".into(),
            name_en: "electricity".into(),
            unit: "kWh".into(),
            consumption,
            kgce: consumption * 0.1229,
            kgco2e: consumption * 0.6361,
            coal_factor: None,
            carbon_factor: None,
            previous: Some(90.0),
            mom_pct: Some(11.11),
            year_before: None,
            yoy_pct: None,
        };
        let report = ConsumptionReport {
            from: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            to: chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            granularity: Granularity::Month,
            rows: vec![
                item("01000", 0, RowKind::Total, 100.0),
                item("01000", 0, RowKind::Unmetered, 12.5),
                item("01A10", 2, RowKind::Item, 87.5),
            ],
            indicators: vec![IndicatorRow {
                account: "110108A001".into(),
                name_zh: "海淀区机关办公楼".into(),
                period: "2026-01".into(),
                kgce: 12.29,
                floor_area_m2: Some(1000.0),
                headcount: None,
                kgce_per_m2: Some(0.01229),
                kgce_per_person: None,
                water_m3: None,
                water_m3_per_person: None,
            }],
            comparison: None,
        };
        let names = [("110108A001".to_owned(), "海淀区机关办公楼".to_owned())].into();
        let t = tree_table(&report, &names);
        assert!(t.contains("缺口量"), "{t}");
        let rows: Vec<&str> = t.lines().skip(2).take(3).collect();
        let widths: Vec<usize> = rows.iter().map(|l| width(l)).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}\n{t}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.xlsx");
        write_xlsx(&p, &report, &[]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // An XLSX file is a zip archive.
        assert_eq!(&bytes[..2], b"PK");
    }
}
