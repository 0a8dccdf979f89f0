//! Samples → readings: account, category and item from the device's config; cumulative
//! registers → interval deltas; deltas → kgce and kgCO2e with the account's factors.

use std::borrow::Cow;

use chrono::{Datelike, TimeZone, Utc};
use reading_model::factor::Resolved;
use reading_model::{Batch, Quality, Reading};

use crate::channel::{counter_key, firmware_channel_meter, push_counter_key};
use crate::config::GatewayConfig;
use crate::counter::{self, Counter, CounterRules, Step};
use crate::source::Sample;
use crate::source::mqtt::MqttSample;
use crate::spool::SpoolState;
use tracing::warn;

/// Brings counters up to date with a batch that was spooled but is not in the state snapshot.
pub fn replay(state: &mut SpoolState, batch: &Batch) {
    replay_readings(state, &batch.readings);
}

/// Advances counters to the cumulative readings of a spooled batch, as the normalizer did when
/// it made them ([`Counter::replay`]): a counter's value is its newest spooled reading not
/// flagged `glitch`, and the `glitch` readings after it are its undecided drop.
pub fn replay_readings(state: &mut SpoolState, readings: &[Reading]) {
    // One key buffer for the whole batch: the normalizer replays every batch it spools.
    let mut key = String::new();
    for r in readings {
        if r.quantity.is_cumulative() {
            key.clear();
            push_counter_key(&mut key, &r.account, &r.meter, r.quantity);
            // Only the first reading of a counter allocates its key.
            match state.counters.get_mut(key.as_str()) {
                Some(slot) => {
                    let mut c = Some(*slot);
                    Counter::replay(&mut c, r.value, r.ts, r.quality);
                    if let Some(c) = c {
                        *slot = c;
                    }
                }
                None => {
                    let mut c = None;
                    Counter::replay(&mut c, r.value, r.ts, r.quality);
                    if let Some(c) = c {
                        state.counters.insert(key.clone(), c);
                    }
                }
            }
        }
    }
}

/// Turns one sample into readings, advancing counters in `state`.
pub fn normalize(config: &GatewayConfig, state: &mut SpoolState, sample: &Sample) -> Vec<Reading> {
    let mut out = Vec::with_capacity(sample.values.len());
    normalize_into(config, state, sample, &mut out);
    out
}

/// [`normalize`], appending to `out` (the normalizer's pending batch) rather than to a vector
/// of its own.
pub fn normalize_into(
    config: &GatewayConfig,
    state: &mut SpoolState,
    sample: &Sample,
    out: &mut Vec<Reading>,
) {
    let Some(device) = config.devices.get(sample.device) else {
        return;
    };
    let year = Utc
        .timestamp_millis_opt(sample.ts)
        .single()
        .map_or(2025, |t| t.year());
    let selection = config.selection(&device.account);
    let coal = config.factors.coal(device.category, year, selection);
    let carbon = config
        .factors
        .carbon(&device.account, device.category, year, selection);
    out.reserve(sample.values.len());
    for &(reg_index, value) in &sample.values {
        let Some(reg) = device.profile.registers.get(reg_index) else {
            continue;
        };
        if !value.value.is_finite() {
            // The decoder refuses NaN and infinities (as "not available"), so none gets here;
            // a reading with one would make ingest refuse the whole batch.
            warn!(device = %device.name(), register = %reg.name, "non-finite value not stored");
            continue;
        }
        let quantity = device
            .quantities
            .get(reg_index)
            .copied()
            .unwrap_or(reg.quantity);
        let mut reading = Reading {
            ts: sample.ts,
            account: device.account.clone(),
            meter: device.channel_meter(reg.phase).clone(),
            category: device.category,
            item: device.item,
            quantity,
            unit: value.unit,
            value: value.value,
            delta: None,
            kgce: None,
            kgco2e: None,
            factor: None,
            quality: Quality::Good,
        };
        if quantity.is_cumulative() {
            let wrap_at = reg.data_type.wrap_at().and_then(|w| {
                let scaled = w * reg.scale.abs();
                reg.unit.convert(scaled, value.unit).ok()
            });
            let key = match device.counter_key(reg_index) {
                Some(k) => Cow::Borrowed(k),
                None => Cow::Owned(counter_key(&reading)),
            };
            // One lookup: the slot is read here and written after the step.
            let slot = state.counters.get_mut(&*key);
            let mut c = slot.as_deref().copied();
            let replacements = device
                .replacements
                .get(reg_index)
                .map_or(&[][..], Vec::as_slice);
            let rules = CounterRules {
                interval_ms: i64::try_from(device.poll_interval.as_millis()).unwrap_or(i64::MAX),
                wrap_at: wrap_at.map(|w| w * ratio_factor(device, reg)),
                max_delta: device.max_delta.get(reg_index).copied().flatten(),
                replacement: counter::replacement_between(replacements, c.as_ref(), sample.ts),
                reset: device.reset,
            };
            let step = counter::step(&mut c, value.value, sample.ts, rules);
            if !apply_step(&mut reading, step, coal.as_ref(), carbon.as_ref()) {
                continue;
            }
            match (slot, c) {
                (Some(s), Some(c)) => *s = c,
                (None, Some(c)) => {
                    state.counters.insert(key.into_owned(), c);
                }
                (_, None) => {}
            }
        }
        out.push(reading);
    }
}

/// Applies what a counter step says to its reading; `false` when the reading is a duplicate
/// and not kept.
fn apply_step(
    reading: &mut Reading,
    step: Step,
    coal: Option<&Resolved<'_>>,
    carbon: Option<&Resolved<'_>>,
) -> bool {
    match step {
        Step::Duplicate => return false,
        Step::Baseline => {}
        Step::Glitch => reading.quality = Quality::Glitch,
        Step::Delta { delta, quality } => apply_delta(reading, delta, quality, coal, carbon),
        Step::Reset {
            delta,
            quality,
            unobserved,
        } => {
            warn!(
                account = %reading.account,
                meter = %reading.meter,
                quantity = %reading.quantity,
                unobserved_after = unobserved.after,
                unobserved_until = unobserved.until,
                "counter reset or undeclared meter swap confirmed: only what the new counter \
                 showed counts; consumption in the unobserved interval is not known"
            );
            apply_delta(reading, delta, quality, coal, carbon);
        }
    }
    true
}

/// Sets a reading's interval consumption and, where it is consumption in the category's own
/// unit, its kgce and kgCO2e (an export register or a water meter on an electricity account
/// converts to neither).
fn apply_delta(
    reading: &mut Reading,
    delta: f64,
    quality: Quality,
    coal: Option<&Resolved<'_>>,
    carbon: Option<&Resolved<'_>>,
) {
    reading.delta = Some(delta);
    reading.quality = quality;
    if reading.quantity.is_consumption() && reading.unit == reading.category.consumption_unit() {
        if let Some(f) = coal {
            reading.kgce = Some(delta * f.per_unit);
        }
        if let Some(f) = carbon {
            reading.kgco2e = Some(delta * f.per_unit);
            reading.factor = Some(f.id.to_owned());
        }
    }
}

/// Turns the values of one MQTT message into readings, advancing counters in `state`: the same
/// counters, factors and spool as Modbus readings. Only `Total` and `Instant` values are
/// readings; a firmware's `Today`, `Yesterday` and `Period` energy are other views of the
/// counter `Total` already carries, and are dropped by the source before they get here.
pub fn normalize_mqtt(
    config: &GatewayConfig,
    state: &mut SpoolState,
    sample: &MqttSample,
) -> Vec<Reading> {
    let Some(device) = config.mqtt.devices.get(sample.device) else {
        return vec![];
    };
    let selection = config.selection(&device.account);
    let mut year_factors: Option<(i32, Option<Resolved<'_>>, Option<Resolved<'_>>)> = None;
    let mut out = Vec::with_capacity(sample.values.len());
    for v in &sample.values {
        let ts = match v.ts_ms {
            Some(t) if device.device_time => t,
            _ => sample.received,
        };
        let meter = match &device.channel {
            Some(_) => device.meter.clone(),
            None => firmware_channel_meter(&device.meter, &v.channel),
        };
        let mut reading = Reading {
            ts,
            account: device.account.clone(),
            meter,
            category: device.category,
            item: device.item,
            quantity: v.quantity,
            unit: v.unit,
            value: v.value,
            delta: None,
            kgce: None,
            kgco2e: None,
            factor: None,
            quality: Quality::Good,
        };
        if v.quantity.is_cumulative() {
            let key = counter_key(&reading);
            let mut c = state.counters.get(&key).copied();
            let replacement = if device.replacements.is_empty() {
                None
            } else {
                let declared = device.replacements_of(v.quantity, &v.channel);
                counter::replacement_between(&declared, c.as_ref(), ts)
            };
            let rules = CounterRules {
                interval_ms: i64::try_from(device.interval.as_millis()).unwrap_or(i64::MAX),
                // Firmware counters are floating point totals, not fixed-width registers.
                wrap_at: None,
                max_delta: device.max_delta(v.quantity),
                replacement,
                reset: device.reset,
            };
            let step = counter::step(&mut c, v.value, ts, rules);
            if matches!(step, Step::Delta { .. } | Step::Reset { .. }) {
                let year = Utc
                    .timestamp_millis_opt(ts)
                    .single()
                    .map_or(2025, |t| t.year());
                let (_, coal, carbon) = match &year_factors {
                    Some(f) if f.0 == year => f,
                    _ => year_factors.insert((
                        year,
                        config.factors.coal(device.category, year, selection),
                        config
                            .factors
                            .carbon(&device.account, device.category, year, selection),
                    )),
                };
                if !apply_step(&mut reading, step, coal.as_ref(), carbon.as_ref()) {
                    continue;
                }
            } else if !apply_step(&mut reading, step, None, None) {
                continue;
            }
            if let Some(c) = c {
                state.counters.insert(key, c);
            }
        }
        out.push(reading);
    }
    out
}

fn ratio_factor(device: &crate::config::Device, reg: &device_profiles::RegisterDef) -> f64 {
    use device_profiles::RatioKind;
    match reg.ratio {
        RatioKind::None => 1.0,
        RatioKind::Ct => device.ratios.ct,
        RatioKind::Pt => device.ratios.pt,
        RatioKind::CtPt => device.ratios.ct * device.ratios.pt,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use device_profiles::DecodedValue;
    use reading_model::{Quantity, Unit};

    use super::*;

    /// One SDM630 on Modbus TCP: the site of the normalizer's tests here and in `run`.
    pub(crate) const SITE: &str = r#"[gateway]
id = "gw-test"
spool_dir = "/tmp/x"
poll_interval = 60
[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"
[[device]]
meter = "main"
account = "110108A001"
category = "01"
item = "01A10"
profile = "eastron/sdm630"
source = { type = "modbus-tcp", host = "127.0.0.1" }
"#;

    #[test]
    fn energy_becomes_deltas_with_coal_and_carbon() {
        let config = GatewayConfig::parse("site.toml", SITE, None).unwrap();
        let p = &config.devices[0].profile;
        let energy = p
            .registers
            .iter()
            .position(|r| r.name == "energy_import")
            .unwrap();
        let power_l2 = p
            .registers
            .iter()
            .position(|r| r.name == "power_l2")
            .unwrap();
        let mut state = SpoolState::default();
        let sample = |ts, kwh| Sample {
            device: 0,
            ts,
            values: vec![
                (
                    energy,
                    DecodedValue {
                        raw: kwh,
                        value: kwh,
                        unit: Unit::KilowattHour,
                    },
                ),
                (
                    power_l2,
                    DecodedValue {
                        raw: 500.0,
                        value: 0.5,
                        unit: Unit::Kilowatt,
                    },
                ),
            ],
        };
        // 2026-01-01T00:00Z and one minute later.
        let t0 = 1_767_225_600_000;
        let first = normalize(&config, &mut state, &sample(t0, 100.0));
        assert_eq!(first[0].delta, None);
        assert_eq!(first[1].meter.as_str(), "main:L2");
        assert_eq!(first[1].quantity, Quantity::PowerActive);
        let second = normalize(&config, &mut state, &sample(t0 + 60_000, 102.5));
        let r = &second[0];
        assert_eq!(r.delta, Some(2.5));
        assert_eq!(r.kgce, Some(2.5 * 0.1229));
        // Beijing (11) is in the 华北 grid; 2026 readings use the latest published year, 2023.
        assert_eq!(r.kgco2e, Some(2.5 * 0.6361));
        assert_eq!(r.factor.as_deref(), Some("mee-nbs-2023/grid/华北"));
        assert_eq!(r.quality, Quality::Good);
        assert_eq!(state.counters["110108A001/main/energy_import"].value, 102.5);
        // A repeated poll of the same tick produces no second reading.
        let again = normalize(&config, &mut state, &sample(t0 + 60_000, 102.5));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].quantity, Quantity::PowerActive);
    }

    #[test]
    fn mqtt_devices_have_declared_replacements_and_delta_limits() {
        // A Tasmota plug swapped at 00:01:30Z, messages every minute from 2026-01-01T00:00Z.
        let site = format!(
            "{SITE}\n[[mqtt_source]]\nhost = \"127.0.0.1\"\n\n\
             [[mqtt_device]]\nmeter = \"plug\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
             item = \"01A10\"\ntopic = \"tele/plug/SENSOR\"\ninterval = 60\n\
             firmware = {{ type = \"tasmota\" }}\nmax_delta = {{ energy_import = 10.0 }}\n\n\
             [[mqtt_device.replacement]]\nat = 2026-01-01T08:01:30+08:00\n\
             quantity = \"energy_import\"\nold_final = 103.0\nnew_start = 0.5\n"
        );
        let config = GatewayConfig::parse("site.toml", &site, None).unwrap();
        let t0 = 1_767_225_600_000;
        let mut state = SpoolState::default();
        let mut out = vec![];
        for (i, kwh) in [100.0, 102.5, 1.5, 40.0].into_iter().enumerate() {
            let sample = energy_total(t0 + i as i64 * 60_000, kwh);
            out.extend(normalize_mqtt(&config, &mut state, &sample));
        }
        let got: Vec<(Option<f64>, Quality)> = out.iter().map(|r| (r.delta, r.quality)).collect();
        assert_eq!(
            got,
            [
                (None, Quality::Good),
                (Some(2.5), Quality::Good),
                // 102.5 → 103 on the old plug, 0.5 → 1.5 on the new one: not a reset.
                (Some(1.5), Quality::Replaced),
                (Some(38.5), Quality::OutOfRange),
            ]
        );
    }

    /// Device 0's firmware total of `kwh`, received at `received`.
    fn energy_total(received: i64, kwh: f64) -> MqttSample {
        MqttSample {
            device: 0,
            received,
            values: vec![firmware_bridge::FirmwareValue {
                channel: "0".into(),
                quantity: Quantity::EnergyImport,
                basis: firmware_bridge::Basis::Total,
                unit: Unit::KilowattHour,
                value: kwh,
                ts_ms: None,
            }],
        }
    }

    #[test]
    fn negative_and_falling_mqtt_totals_are_glitches_and_replay_alike() {
        let site = format!(
            "{SITE}\n[[mqtt_source]]\nhost = \"127.0.0.1\"\n\n\
             [[mqtt_device]]\nmeter = \"fridge\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
             item = \"01A10\"\ntopic = \"zigbee2mqtt/fridge\"\ninterval = 60\n\
             firmware = {{ type = \"zigbee2mqtt\" }}\nreset = {{ reads = 2, after = 60 }}\n"
        );
        let config = GatewayConfig::parse("site.toml", &site, None).unwrap();
        assert_eq!(config.mqtt.devices[0].reset.reads, 2);
        let t0 = 1_767_225_600_000;
        let mut state = SpoolState::default();
        let mut out = vec![];
        // 100, then -5 (invalid), a garbage total far below, the counter again, and later a
        // swapped plug whose counter persists: 3 → 3.5 counts, its 3 kWh start does not.
        let totals = [100.0, -5.0, 0.25, 101.0, 3.0, 3.5, 4.0];
        for (i, kwh) in totals.into_iter().enumerate() {
            let sample = energy_total(t0 + i as i64 * 60_000, kwh);
            out.extend(normalize_mqtt(&config, &mut state, &sample));
            // The committed state is what the spooled readings say: replaying them from
            // nothing gives the state the normalizer holds, after every message.
            let mut replayed = SpoolState::default();
            replay_readings(&mut replayed, &out);
            assert_eq!(replayed.counters, state.counters, "after {kwh}");
        }
        let got: Vec<(Option<f64>, Quality)> = out.iter().map(|r| (r.delta, r.quality)).collect();
        assert_eq!(
            got,
            [
                (None, Quality::Good),
                (None, Quality::Glitch),
                (None, Quality::Glitch),
                (Some(1.0), Quality::Gap),
                (None, Quality::Glitch),
                (Some(0.5), Quality::Reset),
                (Some(0.5), Quality::Good),
            ]
        );
        assert_eq!(out[1].kgce, None);
        assert_eq!(out[5].kgce, Some(0.5 * 0.1229));
    }

    #[test]
    fn declared_replacements_and_delta_limits_reach_the_readings() {
        // Polls every minute from 2026-01-01T00:00Z; the meter is swapped at 00:01:30Z.
        let site = format!(
            "{SITE}registers = [\"energy_import\"]\nmax_delta = {{ energy_import = 10.0 }}\n\n\
             [[device.replacement]]\nat = 2026-01-01T08:01:30+08:00\nregister = \"energy_import\"\n\
             old_final = 103.0\nnew_start = 0.5\n"
        );
        let config = GatewayConfig::parse("site.toml", &site, None).unwrap();
        let energy = config.devices[0]
            .profile
            .registers
            .iter()
            .position(|r| r.name == "energy_import")
            .unwrap();
        let sample = |ts, kwh| Sample {
            device: 0,
            ts,
            values: vec![(
                energy,
                DecodedValue {
                    raw: kwh,
                    value: kwh,
                    unit: Unit::KilowattHour,
                },
            )],
        };
        let t0 = 1_767_225_600_000;
        let mut state = SpoolState::default();
        let mut out = vec![];
        for (i, kwh) in [100.0, 102.5, 1.5, 40.0].into_iter().enumerate() {
            out.extend(normalize(
                &config,
                &mut state,
                &sample(t0 + i as i64 * 60_000, kwh),
            ));
        }
        let got: Vec<(Option<f64>, Quality)> = out.iter().map(|r| (r.delta, r.quality)).collect();
        assert_eq!(
            got,
            [
                (None, Quality::Good),
                (Some(2.5), Quality::Good),
                // 102.5 → 103 on the old meter, 0.5 → 1.5 on the new one.
                (Some(1.5), Quality::Replaced),
                (Some(38.5), Quality::OutOfRange),
            ]
        );
    }
}
