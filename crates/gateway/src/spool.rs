//! The on-disk spool: batches wait here until ingest has acknowledged them.
//!
//! # Format (version 1)
//!
//! One file per batch, `<seq, 20 digits>.batch`, in the spool directory:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `JNSPOOL\0` |
//! | 2 | format version, little-endian (1) |
//! | 4 | CRC-32 (IEEE) of the payload, little-endian |
//! | 4 | payload length, little-endian |
//! | n | payload: the batch as wire JSON (`reading_model::Batch`) |
//!
//! A file is written as `.<seq>.tmp`, fsynced, renamed into place and the directory fsynced, so
//! a batch file either exists whole or not at all; leftover temp files are removed at open. A file
//! whose CRC does not match is moved to `quarantine/` and counted, never sent.
//!
//! `state.json` beside the batches holds the next sequence number and the last value of every
//! counter, written (atomically, the same way) after each batch. Batches newer than the state
//! file are replayed at open, so a crash between the two writes neither repeats nor loses a delta.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use reading_model::Batch;
use serde::{Deserialize, Serialize};

use crate::counter::Counter;

const MAGIC: &[u8; 8] = b"JNSPOOL\0";
const VERSION: u16 = 1;
const HEADER: usize = 8 + 2 + 4 + 4;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Persisted normalizer state: the next batch number and each counter's last value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoolState {
    pub next_seq: u64,
    /// `account/meter/quantity` → last value.
    pub counters: BTreeMap<String, Counter>,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Bytes of pending batch files, kept in memory: the normalizer checks it before every
    /// batch, and a long outage can leave tens of thousands of files to stat otherwise.
    bytes: AtomicU64,
}

/// Writes `bytes` to `path` so that the file is either the old one or the new one, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn encode(batch: &Batch) -> Vec<u8> {
    // Serializing our own types cannot fail (no maps with non-string keys, no custom errors).
    let payload = serde_json::to_vec(batch).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Batch, SpoolError> {
    let corrupt = |offset: usize, reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(
            bytes.len(),
            format!("file of {} bytes is shorter than the header", bytes.len()),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(0, "bad magic".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(corrupt(8, format!("unsupported version {version}")));
    }
    let crc = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let len = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(corrupt(
            14,
            format!("length {len} but {} payload bytes", payload.len()),
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(10, "CRC mismatch".into()));
    }
    serde_json::from_slice(payload).map_err(|e| corrupt(HEADER + e.column(), e.to_string()))
}

impl Spool {
    /// Opens (creating) the spool, removes half-written temp files, and returns the state with
    /// batches newer than it replayed through `replay`.
    pub fn open(
        dir: &Path,
        mut replay: impl FnMut(&mut SpoolState, &Batch),
    ) -> Result<(Self, SpoolState), SpoolError> {
        fs::create_dir_all(dir.join("quarantine")).map_err(io_err(dir))?;
        for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
        let spool = Self {
            dir: dir.to_path_buf(),
            bytes: AtomicU64::new(0),
        };
        spool.bytes.store(spool.scan_bytes(), Ordering::Relaxed);
        let state_path = dir.join("state.json");
        let mut state: SpoolState = match fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SpoolError::Corrupt {
                path: state_path.clone(),
                offset: e.column(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SpoolState::default(),
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        for seq in spool.pending()? {
            if seq >= state.next_seq {
                if let Ok(batch) = spool.read(seq) {
                    replay(&mut state, &batch);
                }
                state.next_seq = seq + 1;
            }
        }
        Ok((spool, state))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    /// Durably stores a batch (returns after fsync).
    pub fn append(&self, batch: &Batch) -> Result<(), SpoolError> {
        let path = self.path(batch.seq);
        let bytes = encode(batch);
        write_atomic(&path, &bytes).map_err(io_err(&path))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn forget_bytes(&self, path: &Path) {
        if let Ok(m) = fs::metadata(path) {
            let n = m.len();
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(n))
                });
        }
    }

    pub fn save_state(&self, state: &SpoolState) -> Result<(), SpoolError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    /// Sequence numbers of spooled batches, oldest first.
    pub fn pending(&self) -> Result<Vec<u64>, SpoolError> {
        let mut seqs: Vec<u64> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".batch")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    pub fn read(&self, seq: u64) -> Result<Batch, SpoolError> {
        let path = self.path(seq);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        decode(&path, &bytes)
    }

    /// Deletes a batch ingest has acknowledged.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path(seq);
        self.forget_bytes(&path);
        fs::remove_file(&path).map_err(io_err(&path))
    }

    /// Moves a batch that cannot be sent (corrupt, or refused by ingest) aside with its reason.
    pub fn quarantine(&self, seq: u64, reason: &str) -> Result<(), SpoolError> {
        let from = self.path(seq);
        let to = self.dir.join("quarantine").join(format!("{seq:020}.batch"));
        self.forget_bytes(&from);
        fs::rename(&from, &to).map_err(io_err(&from))?;
        fs::write(to.with_extension("reason.txt"), reason).map_err(io_err(&to))
    }

    /// Bytes held by pending batches.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn scan_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use reading_model::GatewayId;

    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch::new(GatewayId::parse("gw").unwrap(), seq, vec![])
    }

    #[test]
    fn append_read_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, state) = Spool::open(dir.path(), |_, _| {}).unwrap();
        assert_eq!(state, SpoolState::default());
        spool.append(&batch(0)).unwrap();
        spool.append(&batch(1)).unwrap();
        spool
            .save_state(&SpoolState {
                next_seq: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(spool.read(1).unwrap(), batch(1));
        // Batch 1 is newer than the state file: it is replayed and next_seq moves past it.
        let mut replayed = vec![];
        let (spool, state) = Spool::open(dir.path(), |_, b| replayed.push(b.seq)).unwrap();
        assert_eq!((replayed, state.next_seq), (vec![1], 2));
        assert_eq!(spool.bytes(), spool.scan_bytes());
        spool.remove(0).unwrap();
        assert_eq!(spool.pending().unwrap(), vec![1]);
        assert_eq!(spool.bytes(), spool.scan_bytes());
    }

    #[test]
    fn corruption_is_detected_and_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), |_, _| {}).unwrap();
        spool.append(&batch(3)).unwrap();
        let p = spool.path(3);
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(&p, &bytes).unwrap();
        let e = spool.read(3).unwrap_err().to_string();
        assert!(e.contains("CRC mismatch") && e.contains("byte 10"), "{e}");
        fs::write(&p, &bytes[..5]).unwrap();
        assert!(
            spool
                .read(3)
                .unwrap_err()
                .to_string()
                .contains("shorter than the header")
        );
        spool.quarantine(3, "corrupt").unwrap();
        assert!(spool.pending().unwrap().is_empty());
        // A half-written temp file from a crash is cleaned up.
        fs::write(dir.path().join(".00000000000000000009.batch.tmp"), b"x").unwrap();
        Spool::open(dir.path(), |_, _| {}).unwrap();
        assert!(!dir.path().join(".00000000000000000009.batch.tmp").exists());
    }
}
