//! A fixed, generated dataset for golden files, access tests and benches: four accounts in two
//! provinces, readings every six hours (Beijing time) from 2025-01-01 to 2026-03-01, with
//! consumption in exact binary fractions (quarters of a unit) so that any summation order gives
//! the same totals. kgce and kgCO2e are stored as a gateway computes them: delta × the factor of
//! the reading's year from the built-in tables.

use std::path::Path;

use chrono::{Datelike, NaiveDate};
use reading_model::{
    AccountCode, Category, EnergyCode, FactorSelection, FactorTables, GatewayId, MeterId, Quality,
    Quantity, Reading, Unit,
};

use crate::accounts::{Account, ClimateZone, InstitutionType, OfficeClass};
use reading_model::time::local_midnight_ms;
use storage::{StoredReading, file_name, partition_dir, sort_and_dedupe, write_parquet};

/// One generated meter: account, meter, item, and quarter-units per interval by (day, slot).
#[derive(Debug, Clone, Copy)]
pub struct SampleMeter {
    pub account: &'static str,
    pub meter: &'static str,
    pub item: &'static str,
    /// Quarters of a unit in an interval: `base + (day × step + slot × 3) mod spread`.
    pub base: u32,
    pub step: u32,
    pub spread: u32,
}

pub const METERS: &[SampleMeter] = &[
    // The office: four sub-metered items under a main meter that also sees unmetered load.
    SampleMeter {
        account: "110108A001",
        meter: "lighting",
        item: "01A10",
        base: 40,
        step: 7,
        spread: 30,
    },
    SampleMeter {
        account: "110108A001",
        meter: "chiller-1",
        item: "01B10",
        base: 90,
        step: 11,
        spread: 60,
    },
    SampleMeter {
        account: "110108A001",
        meter: "elevators",
        item: "01C10",
        base: 12,
        step: 5,
        spread: 9,
    },
    SampleMeter {
        account: "110108A001",
        meter: "it-room",
        item: "01D10",
        base: 56,
        step: 3,
        spread: 8,
    },
    SampleMeter {
        account: "110108D002",
        meter: "main",
        item: "01000",
        base: 120,
        step: 13,
        spread: 70,
    },
    SampleMeter {
        account: "110108D002",
        meter: "water",
        item: "02000",
        base: 6,
        step: 5,
        spread: 10,
    },
    SampleMeter {
        account: "110102E003",
        meter: "main",
        item: "01000",
        base: 300,
        step: 17,
        spread: 90,
    },
    SampleMeter {
        account: "320102A004",
        meter: "main",
        item: "01000",
        base: 200,
        step: 19,
        spread: 80,
    },
    SampleMeter {
        account: "320102A004",
        meter: "water",
        item: "02000",
        base: 10,
        step: 3,
        spread: 7,
    },
];

/// The office main meter's own unmetered load per interval, quarters of a kWh.
pub const OFFICE_UNMETERED_QUARTERS: u32 = 26;

pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default()
}

/// The day after the last generated day.
pub fn end_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default()
}

/// Quarters of a unit meter `m` used in slot `slot` (0..4, ending 06:00, 12:00, 18:00, 24:00
/// local) of day index `day` (days since 2025-01-01).
pub fn quarters(m: &SampleMeter, day: u32, slot: u32) -> u32 {
    m.base + (day * m.step + slot * 3) % m.spread
}

/// The office main meter: its sub-meters plus the unmetered load.
pub fn office_main_quarters(day: u32, slot: u32) -> u32 {
    METERS
        .iter()
        .filter(|m| m.account == "110108A001")
        .map(|m| quarters(m, day, slot))
        .sum::<u32>()
        + OFFICE_UNMETERED_QUARTERS
}

pub fn accounts() -> Vec<Account> {
    let code = |s: &str| AccountCode::parse(s).map_err(err);
    let list = || -> Result<Vec<Account>, SampleError> {
        Ok(vec![
            Account {
                code: code("110108A001")?,
                name_zh: "海淀区机关办公楼".into(),
                name_en: "Haidian district government office".into(),
                institution_type: InstitutionType::StateOrgan,
                institution: None,
                floor_area_m2: Some(12_000.0),
                headcount: Some(480),
                climate_zone: Some(ClimateZone::Cold),
                office_class: Some(OfficeClass::A),
                main_meter: vec![],
                factors: Default::default(),
            },
            Account {
                code: code("110108D002")?,
                name_zh: "中关村第一小学".into(),
                name_en: "Zhongguancun No. 1 Primary School".into(),
                institution_type: InstitutionType::PublicInstitution,
                institution: None,
                floor_area_m2: Some(8_000.0),
                headcount: Some(1_250),
                climate_zone: Some(ClimateZone::Cold),
                office_class: None,
                main_meter: vec![],
                factors: Default::default(),
            },
            Account {
                code: code("110102E003")?,
                name_zh: "西城区社区医院".into(),
                name_en: "Xicheng community hospital".into(),
                institution_type: InstitutionType::PublicInstitution,
                institution: None,
                floor_area_m2: Some(5_000.0),
                headcount: None,
                climate_zone: Some(ClimateZone::Cold),
                office_class: None,
                main_meter: vec![],
                factors: Default::default(),
            },
            Account {
                code: code("320102A004")?,
                name_zh: "玄武区机关办公楼".into(),
                name_en: "Xuanwu district government office".into(),
                institution_type: InstitutionType::StateOrgan,
                institution: None,
                floor_area_m2: Some(9_000.0),
                headcount: Some(360),
                climate_zone: Some(ClimateZone::HotSummerColdWinter),
                office_class: Some(OfficeClass::B),
                main_meter: vec![],
                factors: Default::default(),
            },
        ])
    };
    // The codes above are literals that parse.
    list().unwrap_or_default()
}

/// Writes the whole dataset under `data_dir` (one Parquet file per UTC date) and returns the
/// rows written.
pub fn write(data_dir: &Path) -> Result<usize, SampleError> {
    write_days(data_dir, first_day(), end_day())
}

/// Writes the local days `[from, to)` of the dataset (clamped to its range); the values of a
/// day are the same whichever range is written.
pub fn write_days(data_dir: &Path, from: NaiveDate, to: NaiveDate) -> Result<usize, SampleError> {
    let tables = FactorTables::builtin().map_err(err)?;
    let sel = FactorSelection::default();
    let gateway = GatewayId::parse("gw-sample").map_err(err)?;
    let mut by_date: std::collections::BTreeMap<String, Vec<StoredReading>> = Default::default();
    let index = |d: NaiveDate| {
        u32::try_from((d.clamp(first_day(), end_day()) - first_day()).num_days()).unwrap_or(0)
    };
    let (first, last) = (index(from), index(to));
    let mut all_meters: Vec<(SampleMeter, Option<()>)> =
        METERS.iter().map(|m| (*m, None)).collect();
    // The office main meter is derived from the others.
    all_meters.push((
        SampleMeter {
            account: "110108A001",
            meter: "main",
            item: "01000",
            base: 0,
            step: 0,
            spread: 1,
        },
        Some(()),
    ));
    for (m, derived) in &all_meters {
        let account = AccountCode::parse(m.account).map_err(err)?;
        let meter = MeterId::parse(m.meter).map_err(err)?;
        let item = EnergyCode::parse(m.item).map_err(err)?;
        let category = item.category();
        let (quantity, unit) = match category {
            Category::Water => (Quantity::Volume, Unit::CubicMetre),
            _ => (Quantity::EnergyImport, Unit::KilowattHour),
        };
        // The counter's value at the first day written: what a meter would have read.
        let mut total = 1_000.0
            + (0..first)
                .flat_map(|day| (0..4).map(move |slot| (day, slot)))
                .map(|(day, slot)| {
                    f64::from(if derived.is_some() {
                        office_main_quarters(day, slot)
                    } else {
                        quarters(m, day, slot)
                    }) / 4.0
                })
                .sum::<f64>();
        let start = local_midnight_ms(first_day());
        // The baseline reading at the first midnight has no delta.
        let mut push = |ts: i64, value: f64, delta: Option<f64>| {
            let year = reading_model::time::interval_date(ts).map_or(2025, |d| d.year());
            let coal = tables.coal(category, year, &sel);
            let carbon = tables.carbon(&account, category, year, &sel);
            let reading = Reading {
                ts,
                account: account.clone(),
                meter: meter.clone(),
                category,
                item,
                quantity,
                unit,
                value,
                delta,
                kgce: delta
                    .and(coal.as_ref())
                    .map(|f| delta.unwrap_or(0.0) * f.per_unit),
                kgco2e: delta
                    .and(carbon.as_ref())
                    .map(|f| delta.unwrap_or(0.0) * f.per_unit),
                factor: delta.and(carbon.as_ref()).map(|f| f.id.to_owned()),
                quality: Quality::Good,
            };
            by_date
                .entry(storage::partition_date(ts))
                .or_default()
                .push(StoredReading {
                    gateway: gateway.clone(),
                    reading,
                });
        };
        push(start + i64::from(first) * 86_400_000, total, None);
        for day in first..last {
            for slot in 0..4 {
                let q = if derived.is_some() {
                    office_main_quarters(day, slot)
                } else {
                    quarters(m, day, slot)
                };
                let delta = f64::from(q) / 4.0;
                total += delta;
                let ts = start + i64::from(day) * 86_400_000 + i64::from(slot + 1) * 6 * 3_600_000;
                push(ts, total, Some(delta));
            }
        }
    }
    let mut n = 0;
    for (date, mut rows) in by_date {
        sort_and_dedupe(&mut rows);
        let dir = partition_dir(data_dir, &date);
        std::fs::create_dir_all(&dir).map_err(err)?;
        // Generation 1: the first (and only) flush of a fresh data directory.
        let f = std::fs::File::create(dir.join(file_name(1, 1))).map_err(err)?;
        write_parquet(f, &rows, 1).map_err(err)?;
        n += rows.len();
    }
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
#[error("sample dataset: {0}")]
pub struct SampleError(String);

fn err(e: impl std::fmt::Display) -> SampleError {
    SampleError(e.to_string())
}
