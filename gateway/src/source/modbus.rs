//! Modbus polling (TCP and RTU): one task per device, its profile's registers read with the
//! fewest requests the planner allows, each request under a timeout and retried a bounded
//! number of times with backoff and jitter. The requests go through the device's [`Bus`],
//! which owns the one connection all devices on the same converter or serial line share.

use std::sync::Arc;
use std::time::Duration;

use device_profiles::{
    PlanLimits, ReadPlan, RegisterDef, decode_register, decode_total, plan_reads,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::bus::Bus;
use super::connection::ReadError;
use super::{DeviceStats, Sample, next_tick, now_ms};
use crate::backoff::Backoff;
use crate::config::Device;

/// The plan for a configured device.
pub fn device_plan(device: &Device, max_gap: u16) -> ReadPlan {
    plan_reads(
        &device.profile,
        &device.registers,
        PlanLimits {
            max_registers: device.profile.max_registers,
            max_gap,
        },
    )
}

/// The waits between two attempts of one request: 100 ms, doubling per attempt up to 2 s,
/// ±25 %.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 0.25);

/// Polls one device until `shutdown` turns true, sending a sample per successful poll. A poll
/// with some registers answered is a success (their values are kept); one with none is a
/// failure. The device is online after a successful poll and offline after a failed one; each
/// change is logged once.
pub async fn poll_device(
    index: usize,
    device: Arc<Device>,
    plan: ReadPlan,
    mut bus: Bus,
    stats: Arc<DeviceStats>,
    samples: mpsc::Sender<Sample>,
    shutdown: watch::Receiver<bool>,
) {
    poll_until_shutdown(index, &device, &plan, &mut bus, &stats, samples, shutdown).await;
    bus.close().await;
}

async fn poll_until_shutdown(
    index: usize,
    device: &Device,
    plan: &ReadPlan,
    bus: &mut Bus,
    stats: &Arc<DeviceStats>,
    samples: mpsc::Sender<Sample>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = device.name();
    let slots = register_slots(device, plan);
    let mut failures: u64 = 0;
    bus.announce(device.source.unit());
    loop {
        let tick = next_tick(now_ms(), device.poll_interval);
        let wait = Duration::from_millis(u64::try_from(tick - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        DeviceStats::inc(&stats.polls);
        let polled = tokio::select! {
            r = poll_once(&name, device, plan, &slots, bus, stats, failures > 0) => r,
            _ = shutdown.changed() => return,
        };
        match polled {
            Ok(values) => {
                if failures > 0 || !stats.online.load(std::sync::atomic::Ordering::Relaxed) {
                    info!(device = %name, bus = %bus.key(), after_failures = failures, "device online");
                }
                stats
                    .online
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                failures = 0;
                let sample = Sample {
                    device: index,
                    ts: tick,
                    values,
                };
                if samples.send(sample).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                DeviceStats::inc(&stats.failed_polls);
                stats.set_last_error(e.to_string());
                failures += 1;
                // One line when a device goes offline and then one per power of two failures,
                // so a dead meter cannot flood the log.
                if failures.is_power_of_two() {
                    warn!(device = %name, bus = %bus.key(), failures, error = %e, "device offline");
                }
                stats
                    .online
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// One request with up to `retries` more attempts, waiting with backoff and jitter between.
/// A device that is offline gets no second attempt after a timeout: a dead meter behind a
/// shared converter would otherwise hold the line for `retries + 1` timeouts every cycle
/// while the live meters on it wait.
async fn read_with_retries(
    name: &str,
    device: &Device,
    bus: &mut Bus,
    stats: &Arc<DeviceStats>,
    q: &device_profiles::ReadRequest,
    offline: bool,
) -> Result<Vec<u16>, ReadError> {
    let retries = u32::from(device.source.retries());
    let unit = device.source.unit();
    let mut attempt = 0;
    loop {
        match bus
            .read(name, unit, stats, q.function, q.start, q.count)
            .await
        {
            Err(e)
                if e.is_retryable()
                    && attempt < retries
                    && !(offline && matches!(e, ReadError::Timeout { .. })) =>
            {
                attempt += 1;
                tracing::debug!(device = %name, attempt, error = %e, "retrying");
                tokio::time::sleep(RETRY.delay(attempt - 1)).await;
            }
            r => return r,
        }
    }
}

/// Where each register's words are in a plan's answers: per index into `profile.registers`,
/// (request, offset in its answer) for the registers the plan reads.
fn register_slots(device: &Device, plan: &ReadPlan) -> Vec<Option<(usize, usize)>> {
    let mut slots = vec![None; device.profile.registers.len()];
    for (r, q) in plan.requests.iter().enumerate() {
        for &i in &q.registers {
            if let (Some(slot), Some(reg)) = (slots.get_mut(i), device.profile.registers.get(i)) {
                *slot = Some((r, usize::from(reg.address - q.start)));
            }
        }
    }
    slots
}

async fn poll_once(
    name: &str,
    device: &Device,
    plan: &ReadPlan,
    slots: &[Option<(usize, usize)>],
    bus: &mut Bus,
    stats: &Arc<DeviceStats>,
    offline: bool,
) -> Result<Vec<(usize, device_profiles::DecodedValue)>, ReadError> {
    // First the words of every request that answered, then the values: an accumulator and
    // the registers declared `fraction_of` it decode together as one value. A register's words
    // are found by where they sit in its request's answer (no copy, no map).
    let profile = &device.profile;
    let mut answers: Vec<Option<Vec<u16>>> = Vec::with_capacity(plan.requests.len());
    let mut first_error = None;
    for q in &plan.requests {
        match read_with_retries(name, device, bus, stats, q, offline).await {
            Ok(words) => answers.push(Some(words)),
            Err(e) => {
                answers.push(None);
                let lost_line = !e.keeps_connection();
                if let ReadError::Exception { .. } = &e {
                    // The meter answered, by name, that it will not give these registers; the
                    // others are still read. Logged when the count reaches a power of two.
                    let n = stats.exceptions.load(std::sync::atomic::Ordering::Relaxed);
                    if n.is_power_of_two() {
                        warn!(device = %name, exceptions = n, error = %e, "exception response");
                    }
                    stats.set_last_error(e.to_string());
                }
                first_error.get_or_insert(e);
                // Retries are spent and the unit or its line is silent: the rest of the plan
                // would fail too.
                if lost_line {
                    break;
                }
            }
        }
    }
    let words_of = |i: usize| -> Option<&[u16]> {
        let (req, off) = slots.get(i).copied().flatten()?;
        let reg = profile.registers.get(i)?;
        let words = answers.get(req)?.as_deref()?;
        words.get(off..off + usize::from(reg.data_type.words()))
    };
    // Most profiles have no fractional registers: their values decode one register at a time.
    let has_fractions = profile.registers.iter().any(RegisterDef::is_fraction);
    let index_of = |reg: &RegisterDef| profile.registers.iter().position(|r| std::ptr::eq(r, reg));
    let mut values = Vec::with_capacity(device.registers.len());
    for &i in &device.registers {
        let reg = &profile.registers[i];
        if reg.is_fraction() {
            continue;
        }
        let Some(w) = words_of(i) else {
            continue;
        };
        let decoded = if has_fractions {
            let words = |r: &RegisterDef| index_of(r).and_then(words_of);
            decode_total(profile, &reg.name, words, device.ratios)
        } else {
            decode_register(reg, profile.word_order_of(reg), w, device.ratios)
        };
        match decoded {
            Ok(v) => values.push((i, v)),
            Err(e) => {
                DeviceStats::inc(&stats.decode_errors);
                tracing::debug!(device = %name, register = %reg.name, error = %e, "decode failed");
            }
        }
    }
    match first_error {
        // Partial answers are still worth keeping; a poll with no value at all is a failure.
        Some(e) if values.is_empty() => Err(e),
        _ => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Parity, SourceConfig};

    fn rtu_site(second_source: &str) -> Result<crate::GatewayConfig, crate::ConfigError> {
        let text = format!(
            r#"[gateway]
id = "gw-test"
spool_dir = "/tmp/spool"

[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"

[[device]]
meter = "a"
account = "110108A001"
category = "01"
item = "01000"
profile = "eastron/sdm630"
source = {{ type = "modbus-rtu", port = "/dev/ttyUSB0", baud = 9600, unit = 1 }}

[[device]]
meter = "b"
account = "110108A001"
category = "01"
item = "01000"
profile = "eastron/sdm630"
source = {second_source}
"#
        );
        crate::GatewayConfig::parse("site.toml", &text, None)
    }

    #[test]
    fn rtu_devices_parse_with_serial_line_defaults() {
        let c =
            rtu_site(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB0", unit = 2, retries = 0 }"#)
                .unwrap();
        assert_eq!(
            c.devices[1].source,
            SourceConfig::ModbusRtu {
                port: "/dev/ttyUSB0".into(),
                baud: 9600,
                parity: Parity::Even,
                data_bits: 8,
                stop_bits: 1,
                unit: 2,
                retries: 0,
            }
        );
        assert_eq!(c.devices[0].source.retries(), 2);
    }

    #[test]
    fn rtu_validation_names_line_and_key() {
        let err = |src: &str| rtu_site(src).unwrap_err().to_string();
        let e = err(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB0", baud = 19200, unit = 2 }"#);
        assert!(e.starts_with("site.toml:17: device[1].source.port"), "{e}");
        assert!(e.contains("used by device[0] at 9600 baud"), "{e}");
        let e = err(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB1", unit = 0 }"#);
        assert!(e.contains("device[1].source.unit"), "{e}");
        let e = err(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB1", data_bits = 7 }"#);
        assert!(e.contains("device[1].source.data_bits"), "{e}");
        let e = err(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB1", stop_bits = 3 }"#);
        assert!(e.contains("device[1].source.stop_bits"), "{e}");
        let e = err(r#"{ type = "modbus-rtu", port = "/dev/ttyUSB1", parity = "mark" }"#);
        assert!(e.contains("mark"), "{e}");
        let e = err(r#"{ type = "modbus-tcp", host = "10.0.0.2", retries = 50 }"#);
        assert!(e.contains("device[1].source.retries"), "{e}");
    }
}
