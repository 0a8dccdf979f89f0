//! Cumulative registers → interval consumption.
//!
//! A meter's energy (or volume, heat) register only grows, except when it wraps at its
//! register width, is reset, or the meter is replaced. Each new value becomes a delta since the
//! previous good value, flagged with what happened; nothing is clamped, so the sum of deltas
//! equals what the meter counted, less only what no read could see (below).
//!
//! A replacement declared in the site config (when, the old meter's final reading, the new
//! one's start reading) makes the delta across the swap exact: what the old meter counted after
//! the previous value plus what the new one counted since it started, flagged `replaced`.
//!
//! # Drops: glitch, wrap or reset
//!
//! A value below the counter's is not believed at once: a meter that reboots, a bad read or a
//! firmware sending garbage shows a low value once and then the old counter again, and taking
//! that as a reset would count the whole register a second time. So a drop is **undecided**
//! until the lower counter has **persisted**: by default [`ResetRule::reads`] = 3 reads
//! spanning at least [`ResetRule::after_ms`] = the larger of two poll intervals and 60 s,
//! each not below the one before, and the last above the first (the new counter has counted
//! something: a meter stuck at zero while it reboots never confirms). Per device the rule is
//! `reset = { reads = 3, after = 60 }` in the site file.
//!
//! - While undecided, each read is flagged `glitch` and contributes no energy (no delta).
//! - If a value at or above the counter's comes first, the drop was a glitch: that value's
//!   delta is from the last good value, as if the low reads had not happened.
//! - Once the lower counter is confirmed and the drop is wrap-shaped (from the top tenth of
//!   the register's range to its bottom tenth), it is a rollover, and exact: `wrap − old +
//!   new`, flagged `rollover`.
//! - Otherwise it is a reset or an undeclared meter swap. Only what the new counter itself
//!   shows counts: the difference between its last and first read, flagged `reset` on the
//!   confirming read (not its whole value: a swapped-in meter need not start at zero). What
//!   was consumed between the old counter's last read and the new one's first is
//!   **unobservable**; [`Step::Reset`] names that interval and the gateway counts it.
//! - Values that are negative or not finite never become a counter's state: `glitch`, no
//!   energy, whatever the counter was doing. No cumulative quantity is ever below zero.
//! - A lower read while a drop is undecided (the candidate going backwards) starts the
//!   candidate again from that read. (With two faults at once — a glitch inside an undecided
//!   undeclared swap — the candidate may start at the glitch; the reset then counts from
//!   there, flagged `reset`.)
//!
//! # State and restarts
//!
//! The undecided drop is part of the counter ([`Counter::drop`]), and it is what the spooled
//! readings say, like the rest of the counter: [`Counter::replay`] rebuilds it from a
//! spooled reading's value and quality (a `glitch` reading with a valid value extends the
//! candidate exactly as [`step`] did; any other reading is the counter's new value). So a
//! restart while a drop is undecided resumes it where the spool left it: nothing is invented
//! and nothing the new counter showed is lost.

use reading_model::Quality;
use serde::{Deserialize, Serialize};

/// The last value seen of one cumulative register, and a drop below it not yet decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub value: f64,
    pub ts: i64,
    /// Reads below `value` since `ts`, while it is undecided whether they are a glitch or a
    /// new counter (absent in state files written before drops were held undecided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<PendingDrop>,
}

/// Reads below a counter, each not below the one before: the candidate for a new counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PendingDrop {
    pub first: f64,
    pub first_ts: i64,
    pub last: f64,
    pub last_ts: i64,
    /// How many reads the candidate has, `first` and `last` included.
    pub reads: u32,
}

impl PendingDrop {
    /// The candidate after one more read below the counter: extended when the read is not
    /// below its last one, started again from the read when it is.
    fn advance(drop: Option<Self>, value: f64, ts: i64) -> Self {
        match drop {
            Some(d) if value >= d.last => Self {
                last: value,
                last_ts: ts,
                reads: d.reads.saturating_add(1),
                ..d
            },
            _ => Self {
                first: value,
                first_ts: ts,
                last: value,
                last_ts: ts,
                reads: 1,
            },
        }
    }

    fn confirmed(&self, rule: ResetRule) -> bool {
        self.reads >= rule.reads
            && self.last_ts.saturating_sub(self.first_ts) >= rule.after_ms
            && self.last > self.first
    }
}

/// Whether a value can be a counter's state at all: no cumulative quantity is below zero.
fn is_valid(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

impl Counter {
    pub fn new(value: f64, ts: i64) -> Self {
        Self {
            value,
            ts,
            drop: None,
        }
    }

    /// The newest read the counter holds: a read at or before it is a duplicate.
    fn latest_ts(&self) -> i64 {
        self.drop.map_or(self.ts, |d| d.last_ts.max(self.ts))
    }

    /// Advances `state` to a spooled reading, as [`step`] did when the reading was made: a
    /// `glitch` reading with a valid value below the counter extends its undecided drop (one
    /// with an invalid value never touched it); any other reading is the counter's value.
    pub fn replay(state: &mut Option<Self>, value: f64, ts: i64, quality: Quality) {
        if quality != Quality::Glitch {
            *state = Some(Self::new(value, ts));
            return;
        }
        if let Some(c) = state.as_mut()
            && is_valid(value)
            && value < c.value
            && ts > c.latest_ts()
        {
            c.drop = Some(PendingDrop::advance(c.drop, value, ts));
        }
    }
}

/// What one new value of a counter means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The first value: a baseline, no consumption yet.
    Baseline,
    /// Consumption since the previous value.
    Delta { delta: f64, quality: Quality },
    /// A confirmed reset or undeclared meter swap: `delta` is what the new counter showed
    /// between its first read and this one; what was consumed in `unobserved` no read saw.
    Reset {
        delta: f64,
        quality: Quality,
        unobserved: Unobserved,
    },
    /// A value below the counter not (yet) confirmed as a new counter, or one that cannot be
    /// a counter's (negative, not finite): flagged `glitch`, no energy.
    Glitch,
    /// Not newer than the previous value (a repeated or out-of-order sample); ignored.
    Duplicate,
}

/// An interval `(after, until]`, UTC milliseconds, whose consumption no read observed: from
/// the old counter's last read to the new counter's first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unobserved {
    pub after: i64,
    pub until: i64,
}

/// When a drop is a new counter rather than a glitch: the lower counter has been read at
/// least `reads` times over at least `after_ms`, each read not below the one before, and has
/// counted something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRule {
    pub reads: u32,
    pub after_ms: i64,
}

impl ResetRule {
    /// Reads a new counter needs by default.
    pub const READS: u32 = 3;
    /// The least time a new counter needs by default, whatever the interval.
    pub const MIN_AFTER_MS: i64 = 60_000;

    /// The default for values expected every `interval_ms`: [`Self::READS`] reads over the
    /// larger of two intervals and [`Self::MIN_AFTER_MS`] (a meter reboot takes seconds to a
    /// minute, whatever the poll rate).
    pub fn for_interval(interval_ms: i64) -> Self {
        Self {
            reads: Self::READS,
            after_ms: interval_ms.saturating_mul(2).max(Self::MIN_AFTER_MS),
        }
    }
}

/// How to judge a new value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterRules {
    /// The expected time between values; a longer silence flags the delta as a gap.
    pub interval_ms: i64,
    /// Where the register wraps to zero, in the value's unit (integer registers only).
    pub wrap_at: Option<f64>,
    /// A delta larger than this is implausible and flagged `out_of_range` (kept as is).
    pub max_delta: Option<f64>,
    /// A meter replacement between the previous value and this one.
    pub replacement: Option<Replacement>,
    /// When a drop is confirmed as a new counter.
    pub reset: ResetRule,
}

/// A meter swapped for another, declared in the site config. Values read at or after `at` are
/// the new meter's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replacement {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// The old meter's last reading, in the reading's unit.
    pub old_final: f64,
    /// The new meter's reading when it was installed.
    pub new_start: f64,
}

/// The first of `replacements` that falls between the counter's previous value and `ts`.
pub fn replacement_between(
    replacements: &[Replacement],
    state: Option<&Counter>,
    ts: i64,
) -> Option<Replacement> {
    let prev = state?;
    replacements
        .iter()
        .find(|r| prev.ts < r.at && r.at <= ts)
        .copied()
}

/// Advances `state` by a new value and says what it means.
pub fn step(state: &mut Option<Counter>, value: f64, ts: i64, rules: CounterRules) -> Step {
    if !is_valid(value) {
        return Step::Glitch;
    }
    let Some(prev) = state.as_mut() else {
        *state = Some(Counter::new(value, ts));
        return Step::Baseline;
    };
    if ts <= prev.latest_ts() {
        return Step::Duplicate;
    }
    let swap = rules.replacement.filter(|r| prev.ts < r.at && r.at <= ts);
    let mut unobserved = None;
    let (delta, mut quality) = if let Some(r) = swap {
        let old = r.old_final - prev.value;
        let new = value - r.new_start;
        // Either part below zero means the declared readings disagree with what the meters
        // said (a typo, or the wrong time): keep the arithmetic, flag it.
        let quality = if old < 0.0 || new < 0.0 {
            Quality::OutOfRange
        } else {
            Quality::Replaced
        };
        (old + new, quality)
    } else if value >= prev.value {
        // Any reads below the counter since its last value were a glitch: the delta is from
        // that value, as if they had not happened.
        let quality = if ts - prev.ts > rules.interval_ms.saturating_mul(5) / 2 {
            Quality::Gap
        } else {
            Quality::Good
        };
        (value - prev.value, quality)
    } else {
        let drop = PendingDrop::advance(prev.drop, value, ts);
        if !drop.confirmed(rules.reset) {
            prev.drop = Some(drop);
            return Step::Glitch;
        }
        match rules.wrap_at {
            // A wrap is the counter passing its maximum: the previous value was in the top
            // tenth of the range and the new counter started in the bottom tenth. Nothing is
            // unobserved: the register went on counting through it.
            Some(w) if prev.value >= 0.9 * w && drop.first < 0.1 * w => {
                (w - prev.value + value, Quality::Rollover)
            }
            // A reset or an undeclared swap: only what the new counter itself showed counts.
            _ => {
                unobserved = Some(Unobserved {
                    after: prev.ts,
                    until: drop.first_ts,
                });
                (value - drop.first, Quality::Reset)
            }
        }
    };
    if rules.max_delta.is_some_and(|m| delta > m) {
        quality = Quality::OutOfRange;
    }
    *prev = Counter::new(value, ts);
    match unobserved {
        Some(unobserved) => Step::Reset {
            delta,
            quality,
            unobserved,
        },
        None => Step::Delta { delta, quality },
    }
}

#[cfg(test)]
mod tests;
