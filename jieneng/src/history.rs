//! The demo's past: hourly readings of the demo meters for the 25 months before the first run,
//! made with the simulator's load models and posted to the server's batch API as gateway
//! `demo-history`, so the dashboard's history, year-on-year and savings views have a past to
//! show on the first run. The counters end where the simulated meters start, so the live
//! readings carry on from the history.
//!
//! The past holds what a real site's would: a meter that stopped reporting two days ago (the
//! hospital's water meter), a six-hour outage of the school's main meter three days ago (the
//! first reading after it flagged `gap`, as the gateway flags missed polls), and a Saturday in
//! the last week when the school was left running as on a working day. The dashboard's alerts
//! find them by their own rules; nothing here tells it where they are.

use std::path::Path;

use anyhow::Context as _;
use chrono::{Datelike, Duration, Months, NaiveDate, TimeZone, Utc, Weekday};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, FactorSelection, FactorTables, GatewayId, MeterId,
    Quality, Quantity, Reading, Unit,
};

use crate::simulator::Load;

/// The gateway id and token the history is posted with.
pub const GATEWAY: &str = "demo-history";
pub const TOKEN: &str = "demo-history-token-not-for-production";
/// Written once the history is in; its presence means "do not post it again".
const MARKER: &str = "demo-history.json";
/// Readings per posted batch.
const BATCH: usize = 5_000;
const HOUR_MS: i64 = 3_600_000;

/// One meter's past: what it measures, how it draws, and where its counter ends.
#[derive(Debug, Clone, Copy)]
pub struct PastMeter {
    pub account: &'static str,
    pub meter: &'static str,
    pub item: &'static str,
    pub load: Load,
    /// The counter at the end of the history (the simulated meter's first value).
    pub end_total: f64,
}

/// The hospital's water meter, which is not simulated live: it went silent two days ago.
pub const SILENT_METER: PastMeter = PastMeter {
    account: "110102E003",
    meter: "water",
    item: "02000",
    load: Load::Water {
        base: 0.3,
        peak: 2.2,
    },
    end_total: 25_402.0,
};
const SILENT_FOR_HOURS: i64 = 50;
/// The school's main meter lost six hours three days ago.
const OUTAGE: (&str, &str) = ("110108D002", "main");
const OUTAGE_HOURS: i64 = 6;
const OUTAGE_ENDS_HOURS_AGO: i64 = 3 * 24;
/// The school's account ran on the Saturday of the last week as on a working day.
const BUSY_SATURDAY_ACCOUNT: &str = "110108D002";

/// Posts the history unless the data directory already has it. Returns the readings posted.
pub async fn backfill(
    data_dir: &Path,
    server: std::net::SocketAddr,
    meters: &[PastMeter],
) -> anyhow::Result<usize> {
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        return Ok(0);
    }
    let now = Utc::now().timestamp_millis();
    let readings = generate(meters, now)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://{server}/api/v1/batches");
    let gateway = GatewayId::parse(GATEWAY)?;
    for (seq, chunk) in readings.chunks(BATCH).enumerate() {
        // Each backfill is a life of its own (an epoch: its start time), so one made after the
        // marker was lost is stored rather than taken for a retry of the last one.
        let batch = Batch::new(gateway.clone(), seq as u64 + 1, chunk.to_vec())
            .with_epoch(u64::try_from(now).ok());
        let r = client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&batch)
            .send()
            .await
            .with_context(|| format!("posting the demo's history, batch {}", seq + 1))?;
        if !r.status().is_success() {
            anyhow::bail!(
                "posting the demo's history, batch {}: {} {}",
                seq + 1,
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&serde_json::json!({
            "readings": readings.len(),
            "until": crate::history::iso(now),
        }))?,
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    Ok(readings.len())
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |t| t.to_rfc3339())
}

/// Beijing local date of UTC ms.
fn local_date(ms: i64) -> NaiveDate {
    reading_model::time::local_date(ms).unwrap_or_else(|| Utc::now().date_naive())
}

/// The readings, oldest first per meter: from local midnight of the first of the month 25 months
/// before `now` to the last whole hour.
pub fn generate(meters: &[PastMeter], now: i64) -> anyhow::Result<Vec<Reading>> {
    let today = local_date(now);
    let first = today
        .with_day(1)
        .and_then(|d| d.checked_sub_months(Months::new(25)))
        .context("history start")?;
    let start = Utc
        .from_utc_datetime(&first.and_hms_opt(0, 0, 0).context("midnight")?)
        .timestamp_millis()
        - 8 * HOUR_MS;
    let end = now - now.rem_euclid(HOUR_MS);
    // The Saturday of the last seven days (not today).
    let busy_saturday = (1..=7)
        .map(|k| today - Duration::days(k))
        .find(|d| d.weekday() == Weekday::Sat);
    let tables = FactorTables::builtin()?;
    let sel = FactorSelection::default();
    let mut out = Vec::new();
    for m in meters.iter().chain(std::iter::once(&SILENT_METER)) {
        let account = AccountCode::parse(m.account)?;
        let meter = MeterId::parse(m.meter)?;
        let weather = matches!(m.load, Load::Weather);
        let item = EnergyCode::parse(m.item)?;
        let category = item.category();
        let (quantity, unit) = match (weather, category) {
            (true, _) => (Quantity::OutdoorTemperature, Unit::Celsius),
            (false, Category::Water) => (Quantity::Volume, Unit::CubicMetre),
            (false, _) => (Quantity::EnergyImport, Unit::KilowattHour),
        };
        let silent_from = (m.account == SILENT_METER.account && m.meter == SILENT_METER.meter)
            .then_some(end - SILENT_FOR_HOURS * HOUR_MS);
        let outage = ((m.account, m.meter) == OUTAGE).then(|| {
            let to = end - OUTAGE_ENDS_HOURS_AGO * HOUR_MS;
            (to - OUTAGE_HOURS * HOUR_MS, to)
        });
        // Hourly use, the hour ending at each timestamp: four quarter-hour samples of the rate.
        let hours: Vec<(i64, f64)> = (1..=(end - start) / HOUR_MS)
            .map(|h| {
                let ts = start + h * HOUR_MS;
                let busy = busy_saturday.is_some_and(|d| local_date(ts - 1) == d)
                    && m.account == BUSY_SATURDAY_ACCOUNT;
                // A Saturday run as a working day: the rate of the same hour two days before.
                let at = |t: i64| m.load.rate(if busy { t - 2 * 86_400_000 } else { t });
                let v = if weather {
                    at(ts)
                } else {
                    (0..4)
                        .map(|q| at(ts - HOUR_MS + q * HOUR_MS / 4 + HOUR_MS / 8) / 4.0)
                        .sum()
                };
                (ts, v)
            })
            .collect();
        let total_use: f64 = hours.iter().map(|(_, v)| v).sum();
        let mut value = if weather {
            0.0
        } else {
            m.end_total - total_use
        };
        // A register counts up from where it was installed: a history that would have to start
        // below zero to end at the live counter is a wrong demo meter, not a past to store.
        anyhow::ensure!(
            value >= 0.0,
            "demo meter {}/{}: its counter starts at {} but the {} months of history use {total_use:.0}; \
             the live counter must start above that",
            m.account,
            m.meter,
            m.end_total,
            25
        );
        let reading = |ts: i64, value: f64, delta: Option<f64>, quality: Quality| {
            let year = local_date(ts - 1).year();
            let coal = (!weather)
                .then(|| tables.coal(category, year, &sel))
                .flatten();
            let carbon = (!weather)
                .then(|| tables.carbon(&account, category, year, &sel))
                .flatten();
            Reading {
                ts,
                account: account.clone(),
                meter: meter.clone(),
                category,
                item,
                quantity,
                unit,
                value,
                delta,
                kgce: delta.zip(coal.as_ref()).map(|(d, f)| d * f.per_unit),
                kgco2e: delta.zip(carbon.as_ref()).map(|(d, f)| d * f.per_unit),
                factor: delta.and(carbon.as_ref()).map(|f| f.id.to_owned()),
                quality,
            }
        };
        if !weather {
            out.push(reading(start, value, None, Quality::Good));
        }
        // Use accumulated while the meter was not heard, delivered with the next reading.
        let mut unheard = 0.0;
        for (ts, v) in hours {
            if weather {
                out.push(reading(ts, v, None, Quality::Good));
                continue;
            }
            value += v;
            if silent_from.is_some_and(|s| ts > s) {
                continue;
            }
            if let Some((from, to)) = outage
                && ts > from
                && ts < to
            {
                unheard += v;
                continue;
            }
            let quality = if unheard > 0.0 {
                Quality::Gap
            } else {
                Quality::Good
            };
            out.push(reading(ts, value, Some(v + unheard), quality));
            unheard = 0.0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_meters_history_has_plausible_registers_that_its_deltas_add_up_to() {
        let now = Utc::now().timestamp_millis();
        let all = generate(&crate::demo::past_meters_at_start(), now).unwrap();
        let mut series: std::collections::BTreeMap<(&str, &str), Vec<&Reading>> =
            std::collections::BTreeMap::new();
        for r in all.iter().filter(|r| r.quantity.is_cumulative()) {
            series
                .entry((r.account.as_str(), r.meter.as_str()))
                .or_default()
                .push(r);
        }
        assert!(series.len() >= 8, "{}", series.len());
        for ((account, meter), rows) in series {
            assert!(
                rows.iter().all(|r| r.value >= 0.0),
                "{account}/{meter}: a negative register, first {}",
                rows[0].value
            );
            for pair in rows.windows(2) {
                let (before, r) = (pair[0], pair[1]);
                assert!(r.value >= before.value, "{account}/{meter} at {}", r.ts);
                let step = r.value - before.value;
                let delta = r.delta.unwrap_or(f64::NAN);
                assert!(
                    (step - delta).abs() < 1e-6 * r.value.max(1.0),
                    "{account}/{meter} at {}: register rose {step}, delta {delta}",
                    r.ts
                );
            }
        }
    }

    #[test]
    fn a_live_counter_below_the_history_is_an_error_not_a_negative_register() {
        let m = PastMeter {
            account: "110108D002",
            meter: "main",
            item: "01000",
            load: Load::Occupancy {
                base: 6.0,
                peak: 55.0,
            },
            end_total: 1_000.0,
        };
        let err = generate(&[m], Utc::now().timestamp_millis()).unwrap_err();
        assert!(err.to_string().contains("110108D002/main"), "{err}");
    }

    #[test]
    fn counters_end_where_the_live_meters_start_and_the_events_are_there() {
        let m = PastMeter {
            account: "110108D002",
            meter: "main",
            item: "01000",
            load: Load::Occupancy {
                base: 6.0,
                peak: 55.0,
            },
            end_total: 573_410.0,
        };
        let now = Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 34, 56)
            .single()
            .unwrap()
            .timestamp_millis();
        let all = generate(&[m], now).unwrap();
        let school: Vec<_> = all.iter().filter(|r| r.meter.as_str() == "main").collect();
        let last = school.last().unwrap();
        assert_eq!(last.ts, now - now.rem_euclid(HOUR_MS));
        assert!((last.value - 573_410.0).abs() < 1e-6, "{}", last.value);
        // Deltas add up to the counter's rise.
        let rise: f64 = school.iter().filter_map(|r| r.delta).sum();
        assert!((school[0].value + rise - last.value).abs() < 1e-6);
        // The outage: six hours missing, the reading after flagged.
        let gap: Vec<_> = school
            .iter()
            .filter(|r| r.quality == Quality::Gap)
            .collect();
        assert_eq!(gap.len(), 1);
        let before = school.iter().rev().find(|r| r.ts < gap[0].ts).unwrap();
        assert_eq!(gap[0].ts - before.ts, OUTAGE_HOURS * HOUR_MS);
        // The silent meter stops 50 hours before the end.
        let water = all
            .iter()
            .filter(|r| r.account.as_str() == "110102E003")
            .map(|r| r.ts)
            .max()
            .unwrap();
        assert_eq!(water, last.ts - SILENT_FOR_HOURS * HOUR_MS);
        // The busy Saturday (2026-11-21) used several times a normal Saturday (11-14).
        let day_use = |d: u32| -> f64 {
            let date = NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
            school
                .iter()
                .filter(|r| local_date(r.ts - 1) == date)
                .filter_map(|r| r.delta)
                .sum()
        };
        assert!(
            day_use(21) > 2.5 * day_use(14),
            "{} vs {}",
            day_use(21),
            day_use(14)
        );
        // Starts on the first of a month 25 months back, local midnight.
        assert_eq!(
            local_date(school[0].ts),
            NaiveDate::from_ymd_opt(2024, 10, 1).unwrap()
        );
    }
}
