//! How far a reading can be trusted, and why not.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CodeError;

/// The quality flag of a reading. Anything but `Good` is kept and shown, never silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Quality {
    Good,
    /// Filled in or derived rather than read.
    Estimated,
    /// The counter wrapped at its register width; the delta includes the wrap.
    Rollover,
    /// The counter went backwards and the new counter persisted (a meter reset or an
    /// undeclared replacement): the delta is only what the new counter showed since its first
    /// read; what was consumed between the old counter's last read and that one is unobserved.
    Reset,
    /// Readings were missed before this one; the delta spans the gap.
    Gap,
    /// Outside the plausible range for this meter (an implausible jump); kept, not clamped.
    OutOfRange,
    /// The device repeated an old value past its expected update.
    Stale,
    /// The first reading after a declared meter replacement.
    Replaced,
    /// A cumulative value that cannot be the counter's: below it and not (yet) confirmed as a
    /// new counter (a meter rebooting, a bad read), negative or garbage. No delta, no energy;
    /// the next good value's delta spans it.
    Glitch,
}

const NAMES: &[(Quality, &str)] = &[
    (Quality::Good, "good"),
    (Quality::Estimated, "estimated"),
    (Quality::Rollover, "rollover"),
    (Quality::Reset, "reset"),
    (Quality::Gap, "gap"),
    (Quality::OutOfRange, "out_of_range"),
    (Quality::Stale, "stale"),
    (Quality::Replaced, "replaced"),
    (Quality::Glitch, "glitch"),
];

impl Quality {
    pub fn all() -> impl Iterator<Item = Quality> {
        NAMES.iter().map(|(q, _)| *q)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(q, _)| *q == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    pub fn parse(s: &str) -> Result<Self, CodeError> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(q, _)| *q)
            .ok_or_else(|| CodeError::Quality(s.to_owned()))
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Quality {
    type Error = CodeError;
    fn try_from(s: String) -> Result<Self, CodeError> {
        Self::parse(&s)
    }
}

impl From<Quality> for String {
    fn from(q: Quality) -> String {
        q.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (q, n) in NAMES {
            assert_eq!(Quality::parse(n).unwrap(), *q);
            assert_eq!(q.to_string(), *n);
        }
        assert!(Quality::parse("great").is_err());
    }
}
