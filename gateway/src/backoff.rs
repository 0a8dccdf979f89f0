//! How long to wait before trying again: exponential, capped, with bounded jitter. One policy
//! type for every retry loop of the gateway (the forwarder's sends, the Modbus request retries
//! and bus reopens, the MQTT source's reconnects), each with its own base, cap and jitter.
//!
//! Jitter keeps many gateways (or many buses of one gateway) that failed together from
//! retrying in step once the peer comes back. Its randomness comes from `RandomState`, which
//! std seeds per instance: enough for jitter, without a dependency.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Waits of `base · 2^n` for the `n`-th retry (from 0), capped at `cap`, each scaled by a
/// random factor in `[1 − jitter, 1 + jitter)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
}

impl Backoff {
    /// `jitter` is the fraction a wait may move either way (`0.25` for ±25 %); it is clamped to
    /// `[0, 1]` so a wait is never negative.
    pub const fn new(base: Duration, cap: Duration, jitter: f64) -> Self {
        Self {
            base,
            cap,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// The wait before the `n`-th retry (0 for the first), jittered.
    pub fn delay(&self, n: u32) -> Duration {
        jitter(self.ceiling(n), self.jitter)
    }

    /// The wait before the `n`-th retry without jitter: `base · 2^n`, capped.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.base.saturating_mul(1 << n.min(31)).min(self.cap)
    }
}

/// `d` scaled by a random factor in `[1 − fraction, 1 + fraction)`.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return d;
    }
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits as a uniform value in [0, 1).
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - fraction + 2.0 * fraction * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let b = Backoff::new(base, cap, 0.25);
        for n in 0..40 {
            let d = b.delay(n);
            let exp = base.saturating_mul(1 << n.min(16)).min(cap);
            assert_eq!(b.ceiling(n), exp);
            assert!(
                d >= exp.mul_f64(0.75) && d <= exp.mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn without_jitter_the_waits_are_exact() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30), 0.0);
        let waits: Vec<_> = (0..9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]
        );
    }

    #[test]
    fn huge_retry_counts_saturate_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600), 0.0);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(3600));
        assert_eq!(b.delay(31), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let d = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = jitter(d, 0.1);
            assert!(
                j >= Duration::from_secs(9) && j < Duration::from_secs(11),
                "{j:?}"
            );
        }
        assert_eq!(jitter(d, 0.0), d);
    }
}
