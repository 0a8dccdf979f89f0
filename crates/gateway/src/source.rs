//! Where readings come from. Each source polls or listens to devices and sends raw [`Sample`]s
//! (decoded register values, not yet readings) to the normalizer.

pub mod modbus;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use device_profiles::DecodedValue;

/// Values read from one device at one scheduled time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of the device in the site config.
    pub device: usize,
    /// The scheduled (wall-clock aligned) time of the poll, UTC ms.
    pub ts: i64,
    /// Register index in the profile → its decoded value.
    pub values: Vec<(usize, DecodedValue)>,
}

/// Counters of one device, readable while the gateway runs.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub polls: AtomicU64,
    pub failed_polls: AtomicU64,
    pub requests: AtomicU64,
    pub exceptions: AtomicU64,
    pub timeouts: AtomicU64,
    pub decode_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub online: AtomicBool,
}

impl DeviceStats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The next multiple of `interval` after `now_ms` (polls line up with the wall clock, so every
/// meter of a site reports at :00, :15, … and readings of different meters share timestamps).
pub fn next_tick(now_ms: i64, interval: Duration) -> i64 {
    let step = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    (now_ms.div_euclid(step) + 1) * step
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_align_to_the_wall_clock() {
        let i = Duration::from_secs(15);
        assert_eq!(next_tick(1_000, i), 15_000);
        assert_eq!(next_tick(15_000, i), 30_000);
        assert_eq!(next_tick(29_999, i), 30_000);
    }
}
