//! Where readings come from. Each source polls or listens to devices and sends raw [`Sample`]s
//! (decoded register values, not yet readings) to the normalizer. Modbus devices reach their
//! meters through a [`bus::Bus`], one per TCP converter or serial line.

pub mod bus;
pub mod connection;
pub mod modbus;
pub mod mqtt;
pub mod tcp;

use std::sync::Mutex;
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
    /// Scheduled polls started.
    pub polls: AtomicU64,
    /// Polls that produced no value at all (after every retry).
    pub failed_polls: AtomicU64,
    /// Requests put on the line, retries included (not those refused while reconnecting).
    pub requests: AtomicU64,
    /// Exception responses (the meter answered with a code).
    pub exceptions: AtomicU64,
    /// Requests that got no answer in time.
    pub timeouts: AtomicU64,
    /// Answers that arrived after their request was given up (discarded, recognised by their
    /// Modbus TCP transaction id).
    pub late_answers: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Connection (re)opens after the bus's first, attributed to the device whose request
    /// caused them.
    pub reconnects: AtomicU64,
    pub online: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl DeviceStats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The last error the device's polls met (an exception by name, a timeout, a lost line).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn set_last_error(&self, error: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
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
