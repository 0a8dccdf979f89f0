//! Each meter's status for the account tree (`GET /api/v1/meters`): its role (main, sub or
//! plain meter), whether it is online, and its latest readings per quantity and channel.

use std::collections::BTreeMap;

use reading_model::time::rfc3339_ms as rfc3339;
use serde::Serialize;

use crate::Account;
use crate::live::base_meter;
use crate::report::status::LatestReading;

/// One meter (with its channels) as `/api/v1/meters` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MeterStatus {
    pub account: String,
    pub meter: String,
    pub category: String,
    pub item: String,
    pub item_name_zh: String,
    pub item_name_en: String,
    /// `main` (feeds sub-meters or measures the category total), `sub`, or `meter`.
    pub role: &'static str,
    pub online: bool,
    pub last_ts: String,
    pub last_ts_ms: i64,
    pub readings: Vec<ReadingStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadingStatus {
    pub quantity: &'static str,
    /// The phase or firmware channel (`L1`), when the reading is one.
    pub channel: Option<String>,
    pub unit: String,
    pub value: f64,
    pub ts: String,
    pub quality: &'static str,
}

/// Meters of the latest readings, grouped by (account, base meter), main meters first.
pub fn meter_statuses(
    accounts: &[Account],
    latest: &[LatestReading],
    offline_after_ms: i64,
    now_ms: i64,
) -> Vec<MeterStatus> {
    let catalog = reading_model::ItemCatalog::builtin();
    let mut by_meter: BTreeMap<(String, String), Vec<&LatestReading>> = BTreeMap::new();
    for l in latest {
        by_meter
            .entry((
                l.account.to_string(),
                base_meter(l.meter.as_str()).to_owned(),
            ))
            .or_default()
            .push(l);
    }
    let mut out = Vec::new();
    for ((account, meter), mut readings) in by_meter {
        let Some(acc) = accounts.iter().find(|a| a.code.as_str() == account) else {
            // Readings of an account the config does not list: not in anyone's tree.
            continue;
        };
        readings.sort_by(|a, b| {
            (a.meter.as_str(), a.quantity.name()).cmp(&(b.meter.as_str(), b.quantity.name()))
        });
        // The consumption reading says what the meter measures; any reading will do otherwise.
        let Some(head) = readings
            .iter()
            .find(|l| l.quantity.is_consumption() && l.meter.as_str() == meter)
            .or_else(|| readings.first())
            .copied()
        else {
            continue;
        };
        let last = readings.iter().map(|l| l.ts).max().unwrap_or(head.ts);
        let configured_main = acc.main_meter.iter().any(|m| m.meter.as_str() == meter);
        let configured_sub = acc
            .main_meter
            .iter()
            .any(|m| m.sub_meters.iter().any(|s| s.as_str() == meter));
        let measures_use = readings.iter().any(|l| l.quantity.is_consumption());
        let role = if !measures_use {
            // A sensor (outdoor temperature …): neither feeds nor is fed.
            "meter"
        } else if configured_main
            || (acc.main_meter.iter().all(|m| m.category != head.category)
                && head.item == head.category.total_code())
        {
            "main"
        } else if configured_sub || acc.main_meter.iter().all(|m| m.category != head.category) {
            "sub"
        } else {
            "meter"
        };
        let (zh, en) = catalog.name(&head.item);
        out.push(MeterStatus {
            account,
            meter: meter.clone(),
            category: head.category.code().to_owned(),
            item: head.item.as_str().to_owned(),
            item_name_zh: zh.to_owned(),
            item_name_en: en.to_owned(),
            role,
            online: now_ms - last <= offline_after_ms,
            last_ts: rfc3339(last),
            last_ts_ms: last,
            readings: readings
                .iter()
                .map(|l| ReadingStatus {
                    quantity: l.quantity.name(),
                    channel: l.meter.as_str().split_once(':').map(|(_, c)| c.to_owned()),
                    unit: l.unit.clone(),
                    value: l.value,
                    ts: rfc3339(l.ts),
                    quality: l.quality.name(),
                })
                .collect(),
        });
    }
    out.sort_by(|a, b| {
        (&a.account, a.role != "main", &a.category, &a.item, &a.meter).cmp(&(
            &b.account,
            b.role != "main",
            &b.category,
            &b.item,
            &b.meter,
        ))
    });
    out
}
