//! Which batches are retries: the per-gateway marks the writer checks every batch against, and
//! their form in `ingest-state.json`.
//!
//! # The rule
//!
//! - A batch **without an epoch** (gateways before epochs, third-party clients) keeps the rule
//!   ingest always had: its seq must rise per gateway, and one at or below the gateway's
//!   high-water mark is a retry, answered `duplicate` and not stored.
//! - A batch **with an epoch** is checked against that epoch's mark: above it, or in an epoch
//!   not seen before (a gateway that started over with an empty spool), it is new and stored. At
//!   or below it, it is a retry only if a batch of the same (gateway, epoch, seq) was stored
//!   with the same digest (the SHA-256 of its WAL record, which is a function of the decoded
//!   batch, so the same readings sent as JSON or Arrow, over HTTP or MQTT, digest alike). Any
//!   other batch below the mark — a spool restored from a backup, a digest no longer kept — is
//!   [`Verdict::Regressed`], refused with 409, never acknowledged as a duplicate: the jieneng
//!   gateway then starts a new epoch and sends it again. Refusing what cannot be proven a retry
//!   is safe because storage is idempotent per (account, meter, quantity, ts): a batch stored
//!   twice never doubles a row.
//!
//! # Bounds
//!
//! Per gateway: the epoch-less mark, and the [`EPOCHS_KEPT`] epochs that stored a batch most
//! recently, each with its mark and the digests of its last [`DIGESTS_KEPT`] stored seqs. An
//! epoch pushed out is forgotten: a batch of it later is taken as new and stored (again, at
//! worst, which the key dedupes). So a gateway costs at most about 4 × 32 × 50 bytes of state.

use std::collections::{BTreeMap, HashMap};

use reading_model::{Batch, GatewayId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Epochs kept per gateway, the most recently stored ones.
pub const EPOCHS_KEPT: usize = 4;
/// Digests kept per epoch, of its highest stored seqs. The jieneng gateway sends one batch at a
/// time and retries the last one, so 32 covers any retry it makes.
pub const DIGESTS_KEPT: usize = 32;

/// The first 16 bytes of the SHA-256 of a batch's WAL record.
pub type Digest = [u8; 16];

/// The digest of a batch's WAL record payload.
pub fn digest(payload: &[u8]) -> Digest {
    let full = Sha256::digest(payload);
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// What a batch is, measured against the marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not stored before: store it.
    New,
    /// A retry of a stored batch: answer `duplicate`, store nothing.
    Retry,
    /// Below its epoch's mark and not a retry of what was stored: refuse (409).
    Regressed { high_water: u64 },
}

/// One epoch's mark and the digests of its last stored batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMarks {
    pub epoch: u64,
    pub high_water: u64,
    /// seq → digest (hex), of at most [`DIGESTS_KEPT`] of the highest stored seqs.
    #[serde(with = "hex_digests")]
    pub recent: BTreeMap<u64, Digest>,
}

/// What is known of one gateway's batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayMarks {
    /// The high-water mark of batches without an epoch.
    pub legacy: Option<u64>,
    /// Most recently stored last; at most [`EPOCHS_KEPT`].
    pub epochs: Vec<EpochMarks>,
}

impl GatewayMarks {
    fn epoch(&self, epoch: u64) -> Option<&EpochMarks> {
        self.epochs.iter().find(|e| e.epoch == epoch)
    }

    /// The verdict on batch `(epoch, seq)` with `digest` (needed only for epochs).
    pub fn verdict(&self, epoch: Option<u64>, seq: u64, digest: &Digest) -> Verdict {
        let Some(epoch) = epoch else {
            return match self.legacy {
                Some(hw) if seq <= hw => Verdict::Retry,
                _ => Verdict::New,
            };
        };
        match self.epoch(epoch) {
            Some(e) if seq <= e.high_water => match e.recent.get(&seq) {
                Some(d) if d == digest => Verdict::Retry,
                _ => Verdict::Regressed {
                    high_water: e.high_water,
                },
            },
            _ => Verdict::New,
        }
    }

    /// Whether a batch replayed from the WAL is already covered by the state file (its rows
    /// were published): at or below its mark. No digest is needed: the WAL holds only batches
    /// that were stored.
    pub fn covers(&self, epoch: Option<u64>, seq: u64) -> bool {
        match epoch {
            None => self.legacy.is_some_and(|hw| seq <= hw),
            Some(epoch) => self.epoch(epoch).is_some_and(|e| seq <= e.high_water),
        }
    }

    /// Records a stored batch (or, at replay, one the state covers: its digest is remembered
    /// and no mark moves back).
    pub fn record(&mut self, epoch: Option<u64>, seq: u64, digest: Digest) {
        let Some(epoch) = epoch else {
            self.legacy = Some(self.legacy.map_or(seq, |hw| hw.max(seq)));
            return;
        };
        let mut e = match self.epochs.iter().position(|e| e.epoch == epoch) {
            Some(i) => self.epochs.remove(i),
            None => EpochMarks {
                epoch,
                high_water: seq,
                recent: BTreeMap::new(),
            },
        };
        e.high_water = e.high_water.max(seq);
        e.recent.insert(seq, digest);
        while e.recent.len() > DIGESTS_KEPT {
            e.recent.pop_first();
        }
        self.epochs.push(e);
        if self.epochs.len() > EPOCHS_KEPT {
            self.epochs.remove(0);
        }
    }
}

/// Every gateway's marks.
pub type Marks = HashMap<GatewayId, GatewayMarks>;

/// The marks as `ingest-state.json` holds them. `high_water` is the epoch-less mark, the only
/// field before epochs, so a state file of an earlier server reads as it was; an earlier server
/// reading this one ignores `epochs` (it knows no epochs, and its gateways send none).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub high_water: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub epochs: BTreeMap<String, Vec<EpochMarks>>,
}

impl State {
    pub fn of(marks: &Marks) -> Self {
        let mut state = Self::default();
        for (g, m) in marks {
            if let Some(hw) = m.legacy {
                state.high_water.insert(g.to_string(), hw);
            }
            if !m.epochs.is_empty() {
                state.epochs.insert(g.to_string(), m.epochs.clone());
            }
        }
        state
    }

    /// The marks; gateway ids that no longer parse are dropped (they cannot send).
    pub fn into_marks(self) -> Marks {
        let mut marks = Marks::new();
        for (g, hw) in self.high_water {
            if let Ok(g) = GatewayId::parse(&g) {
                marks.entry(g).or_default().legacy = Some(hw);
            }
        }
        for (g, mut epochs) in self.epochs {
            if let Ok(g) = GatewayId::parse(&g) {
                // Most recent last: a file with more (edited by hand) keeps the latest.
                let extra = epochs.len().saturating_sub(EPOCHS_KEPT);
                epochs.drain(..extra);
                marks.entry(g).or_default().epochs = epochs;
            }
        }
        marks
    }
}

/// The key of a batch for log lines: `gw#seq` or `gw@epoch#seq`.
pub fn describe(b: &Batch) -> String {
    match b.epoch {
        Some(e) => format!("{}@{e}#{}", b.gateway, b.seq),
        None => format!("{}#{}", b.gateway, b.seq),
    }
}

/// Digests as `[[seq, "hex"], …]` in the state file.
mod hex_digests {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Digest;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u64, Digest>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|(seq, d)| {
            let mut hex = String::with_capacity(32);
            for b in d {
                let _ = write!(hex, "{b:02x}");
            }
            (*seq, hex)
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, Digest>, D::Error> {
        let pairs = Vec::<(u64, String)>::deserialize(d)?;
        pairs
            .into_iter()
            .map(|(seq, hex)| {
                let bad = || serde::de::Error::custom(format!("digest of seq {seq}: {hex:?}"));
                if hex.len() != 32 || !hex.is_ascii() {
                    return Err(bad());
                }
                let mut d = [0u8; 16];
                for (i, b) in d.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
                }
                Ok((seq, d))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Digest = [1; 16];
    const B: Digest = [2; 16];

    #[test]
    fn without_an_epoch_the_old_high_water_rule_holds() {
        let mut m = GatewayMarks::default();
        assert_eq!(m.verdict(None, 5, &A), Verdict::New);
        m.record(None, 5, A);
        // At or below the mark is a retry whatever it holds: the rule of today's gateways.
        assert_eq!(m.verdict(None, 5, &B), Verdict::Retry);
        assert_eq!(m.verdict(None, 0, &B), Verdict::Retry);
        assert_eq!(m.verdict(None, 6, &B), Verdict::New);
        // Epochs and the epoch-less mark are apart.
        assert_eq!(m.verdict(Some(9), 0, &B), Verdict::New);
    }

    #[test]
    fn a_new_epoch_starts_over_and_a_retry_is_known_by_its_digest() {
        let mut m = GatewayMarks::default();
        for seq in 0..10 {
            m.record(Some(1), seq, [seq as u8; 16]);
        }
        // The gateway starts over: a new epoch is new from seq 0.
        assert_eq!(m.verdict(Some(2), 0, &A), Verdict::New);
        // A retry of a stored batch: the same digest under the same (epoch, seq).
        assert_eq!(m.verdict(Some(1), 9, &[9; 16]), Verdict::Retry);
        assert_eq!(m.verdict(Some(1), 3, &[3; 16]), Verdict::Retry);
        // Backwards in the epoch with other readings (a restored backup): refused.
        assert_eq!(
            m.verdict(Some(1), 3, &A),
            Verdict::Regressed { high_water: 9 }
        );
        assert_eq!(
            m.verdict(Some(1), 9, &A),
            Verdict::Regressed { high_water: 9 }
        );
        assert_eq!(m.verdict(Some(1), 10, &A), Verdict::New);
    }

    #[test]
    fn what_is_kept_is_bounded_and_what_cannot_be_proven_a_retry_is_refused() {
        let mut m = GatewayMarks::default();
        for seq in 0..100 {
            m.record(Some(1), seq, [seq as u8; 16]);
        }
        assert_eq!(m.epochs[0].recent.len(), DIGESTS_KEPT);
        // seq 10's digest is gone: even its true retry is refused, never taken as a duplicate.
        assert_eq!(
            m.verdict(Some(1), 10, &[10; 16]),
            Verdict::Regressed { high_water: 99 }
        );
        assert_eq!(m.verdict(Some(1), 99, &[99; 16]), Verdict::Retry);
        for epoch in 2..=(EPOCHS_KEPT as u64 + 1) {
            m.record(Some(epoch), 0, A);
        }
        assert_eq!(m.epochs.len(), EPOCHS_KEPT);
        // Epoch 1, the least recently stored, is forgotten: its batches are new again.
        assert_eq!(m.verdict(Some(1), 99, &[99; 16]), Verdict::New);
        assert_eq!(m.verdict(Some(2), 0, &A), Verdict::Retry);
        // Storing in an epoch makes it the most recent again.
        m.record(Some(2), 1, B);
        m.record(Some(100), 0, A);
        assert!(m.epoch(2).is_some() && m.epoch(3).is_none());
    }

    #[test]
    fn replay_covers_what_the_state_file_holds_and_never_moves_a_mark_back() {
        let mut m = GatewayMarks::default();
        m.record(Some(1), 8, A);
        m.record(None, 4, A);
        assert!(m.covers(Some(1), 8) && m.covers(Some(1), 2) && !m.covers(Some(1), 9));
        assert!(m.covers(None, 4) && !m.covers(None, 5) && !m.covers(Some(2), 0));
        m.record(Some(1), 2, B);
        m.record(None, 1, B);
        assert_eq!((m.epochs[0].high_water, m.legacy), (8, Some(4)));
        assert_eq!(m.verdict(Some(1), 2, &B), Verdict::Retry);
    }

    #[test]
    fn the_state_file_round_trips_and_an_old_one_still_reads() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let mut marks = Marks::new();
        let m = marks.entry(gw.clone()).or_default();
        m.record(None, 7, A);
        m.record(Some(u64::MAX), 3, B);
        let json = serde_json::to_string(&State::of(&marks)).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_marks(), marks);
        // The state file of a server before epochs: the epoch-less marks only.
        let old: State = serde_json::from_str(r#"{"high_water":{"gw-1":41}}"#).unwrap();
        let marks = old.into_marks();
        assert_eq!(marks[&gw].legacy, Some(41));
        assert_eq!(marks[&gw].verdict(None, 41, &A), Verdict::Retry);
        // More epochs than are kept: the most recent (last) ones stay.
        let many = (0..6)
            .map(|e| format!(r#"{{"epoch":{e},"high_water":1,"recent":[]}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let state: State = serde_json::from_str(&format!(
            r#"{{"high_water":{{}},"epochs":{{"gw-1":[{many}]}}}}"#
        ))
        .unwrap();
        let kept: Vec<u64> = state.into_marks()[&gw]
            .epochs
            .iter()
            .map(|e| e.epoch)
            .collect();
        assert_eq!(kept, vec![2, 3, 4, 5]);
        // A damaged digest is an error naming it, not a silently empty window.
        let bad = r#"{"high_water":{},"epochs":{"gw-1":[{"epoch":1,"high_water":3,"recent":[[3,"zz"]]}]}}"#;
        let e = serde_json::from_str::<State>(bad).unwrap_err().to_string();
        assert!(e.contains("digest of seq 3"), "{e}");
    }
}
