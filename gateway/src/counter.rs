//! Cumulative registers → interval consumption.
//!
//! A meter's energy (or volume, heat) register only grows, except when it wraps at its
//! register width, is reset, or the meter is replaced. Each new value becomes a delta since the
//! previous good value, flagged with what happened; nothing is clamped or dropped, so the sum
//! of deltas equals what the meter counted.
//!
//! A replacement declared in the site config (when, the old meter's final reading, the new
//! one's start reading) makes the delta across the swap exact: what the old meter counted after
//! the previous value plus what the new one counted since it started, flagged `replaced`. An
//! undeclared replacement looks like a reset.

use reading_model::Quality;
use serde::{Deserialize, Serialize};

/// The last value seen of one cumulative register.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub value: f64,
    pub ts: i64,
}

/// What one new value of a counter means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The first value: a baseline, no consumption yet.
    Baseline,
    /// Consumption since the previous value.
    Delta { delta: f64, quality: Quality },
    /// Not newer than the previous value (a repeated or out-of-order sample); ignored.
    Duplicate,
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
    let Some(prev) = *state else {
        *state = Some(Counter { value, ts });
        return Step::Baseline;
    };
    if ts <= prev.ts {
        return Step::Duplicate;
    }
    let swap = rules.replacement.filter(|r| prev.ts < r.at && r.at <= ts);
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
        (value - prev.value, Quality::Good)
    } else {
        match rules.wrap_at {
            // A wrap is the counter passing its maximum: the previous value was in the top
            // tenth of the range and the new one in the bottom tenth.
            Some(w) if prev.value >= 0.9 * w && value < 0.1 * w => {
                (w - prev.value + value, Quality::Rollover)
            }
            // Anything else going backwards is a reset (or a replaced meter starting from zero):
            // what it counted since is the new value itself.
            _ => (value, Quality::Reset),
        }
    };
    if quality == Quality::Good && ts - prev.ts > rules.interval_ms.saturating_mul(5) / 2 {
        quality = Quality::Gap;
    }
    if rules.max_delta.is_some_and(|m| delta > m) {
        quality = Quality::OutOfRange;
    }
    *state = Some(Counter { value, ts });
    Step::Delta { delta, quality }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RULES: CounterRules = CounterRules {
        interval_ms: 1000,
        wrap_at: Some(65_536.0),
        max_delta: None,
        replacement: None,
    };

    fn run(values: &[(f64, i64)], rules: CounterRules) -> Vec<Step> {
        let mut s = None;
        values
            .iter()
            .map(|&(v, t)| step(&mut s, v, t, rules))
            .collect()
    }

    #[test]
    fn deltas_wraps_resets_gaps() {
        let steps = run(
            &[
                (100.0, 0),
                (110.0, 1000),
                (65_530.0, 2000),
                (4.0, 3000),
                (2.0, 4000),
                (5.0, 9000),
                (5.0, 9000),
            ],
            RULES,
        );
        assert_eq!(steps[0], Step::Baseline);
        assert_eq!(
            steps[1],
            Step::Delta {
                delta: 10.0,
                quality: Quality::Good
            }
        );
        assert_eq!(
            steps[2],
            Step::Delta {
                delta: 65_420.0,
                quality: Quality::Good
            }
        );
        assert_eq!(
            steps[3],
            Step::Delta {
                delta: 10.0,
                quality: Quality::Rollover
            }
        );
        assert_eq!(
            steps[4],
            Step::Delta {
                delta: 2.0,
                quality: Quality::Reset
            }
        );
        assert_eq!(
            steps[5],
            Step::Delta {
                delta: 3.0,
                quality: Quality::Gap
            }
        );
        assert_eq!(steps[6], Step::Duplicate);
    }

    #[test]
    fn implausible_jumps_are_flagged_not_clamped() {
        let rules = CounterRules {
            max_delta: Some(50.0),
            ..RULES
        };
        let steps = run(&[(0.0, 0), (1000.0, 1000)], rules);
        assert_eq!(
            steps[1],
            Step::Delta {
                delta: 1000.0,
                quality: Quality::OutOfRange
            }
        );
    }

    #[test]
    fn a_declared_replacement_is_exact_and_not_a_reset() {
        let swap = Replacement {
            at: 1500,
            old_final: 1234.5,
            new_start: 0.25,
        };
        let rules = CounterRules {
            replacement: Some(swap),
            ..RULES
        };
        let mut s = None;
        step(&mut s, 1200.0, 0, rules);
        step(&mut s, 1230.0, 1000, rules);
        // Old meter: 1230 → 1234.5 (4.5); new meter: 0.25 → 3.25 (3).
        assert_eq!(
            step(&mut s, 3.25, 2000, rules),
            Step::Delta {
                delta: 7.5,
                quality: Quality::Replaced
            }
        );
        // The swap is behind the counter now: later values are plain deltas.
        assert_eq!(
            step(&mut s, 4.0, 3000, rules),
            Step::Delta {
                delta: 0.75,
                quality: Quality::Good
            }
        );
        // Without the declaration the same values read as a reset that loses 4.5 + 0.25.
        let mut s = None;
        step(&mut s, 1230.0, 1000, RULES);
        assert_eq!(
            step(&mut s, 3.25, 2000, RULES),
            Step::Delta {
                delta: 3.25,
                quality: Quality::Reset
            }
        );
        // A declared final reading below what the old meter already showed is flagged.
        let mut s = None;
        step(&mut s, 1240.0, 1000, rules);
        assert_eq!(
            step(&mut s, 3.25, 2000, rules),
            Step::Delta {
                delta: -2.5,
                quality: Quality::OutOfRange
            }
        );
        assert_eq!(
            replacement_between(
                &[swap],
                Some(&Counter {
                    value: 0.0,
                    ts: 1500
                }),
                2000
            ),
            None
        );
        assert_eq!(
            replacement_between(
                &[swap],
                Some(&Counter {
                    value: 0.0,
                    ts: 1499
                }),
                1500
            ),
            Some(swap)
        );
    }

    #[derive(Debug, Clone)]
    enum Event {
        Consume(u16),
        Reset,
        Miss,
        Repeat,
        /// The meter is swapped: the old one counts `.0` more, the new one starts at `.1` and
        /// counts `.2` before the next poll.
        Replace(u16, u16, u16),
    }

    proptest! {
        /// Over random consumption, wraps, observed resets to zero, missed polls, repeated
        /// samples and declared meter replacements, the deltas add up to exactly what the
        /// meters counted.
        #[test]
        fn sum_of_deltas_is_true_consumption(
            start in 0u32..65_536,
            events in prop::collection::vec(prop_oneof![
                8 => (0u16..5000).prop_map(Event::Consume),
                1 => Just(Event::Reset),
                1 => Just(Event::Miss),
                1 => Just(Event::Repeat),
                1 => (0u16..5000, any::<u16>(), 0u16..5000).prop_map(|(a, b, c)| Event::Replace(a, b, c)),
            ], 1..200)
        ) {
            let wrap = 65_536u64;
            let mut register = u64::from(start);
            let mut truth = 0u64;
            let mut ts = 0i64;
            let mut last_polled = 0i64;
            let mut state = None;
            let mut sum = 0u64;
            let mut replacements = vec![];
            let mut replaced = false;
            prop_assert_eq!(step(&mut state, register as f64, ts, RULES), Step::Baseline);
            for e in events {
                match e {
                    Event::Consume(n) => {
                        register = (register + u64::from(n)) % wrap;
                        truth += u64::from(n);
                    }
                    // A reset is only visible if the gateway reads the register before it counts
                    // past the old value again, and from the top tenth of the range it looks
                    // exactly like a wrap: the model resets only where the two can be told apart.
                    Event::Reset if register < wrap * 9 / 10 => register = 0,
                    Event::Reset => continue,
                    Event::Miss => {
                        ts += 1000;
                        continue;
                    }
                    Event::Repeat => {
                        prop_assert_eq!(step(&mut state, register as f64, last_polled, RULES), Step::Duplicate);
                        continue;
                    }
                    // The final reading is taken off the old meter and the new one counts from
                    // its start; neither wraps in between (a declared reading is what the
                    // display showed).
                    Event::Replace(left, start, after) => {
                        let left = u64::from(left).min(wrap - 1 - register);
                        let start = u64::from(start);
                        let after = u64::from(after).min(wrap - 1 - start);
                        replacements.push(Replacement {
                            at: ts + 500,
                            old_final: (register + left) as f64,
                            new_start: start as f64,
                        });
                        truth += left + after;
                        register = start + after;
                        replaced = true;
                    }
                }
                ts += 1000;
                last_polled = ts;
                let rules = CounterRules {
                    replacement: replacement_between(&replacements, state.as_ref(), ts),
                    ..RULES
                };
                match step(&mut state, register as f64, ts, rules) {
                    Step::Delta { delta, quality } => {
                        prop_assert_eq!(quality == Quality::Replaced, replaced);
                        sum += delta as u64;
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
                replaced = false;
            }
            prop_assert_eq!(sum, truth);
        }
    }
}
