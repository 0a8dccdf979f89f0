//! The dead-letter file: every MQTT message the gateway could not decode, kept so that a bad
//! payload can be looked at (and replayed once its decoder or config is fixed) instead of being
//! lost or crashing anything.
//!
//! # Format
//!
//! JSON lines, one object per message, in `<spool_dir>/dead-letters/<source>.jsonl`:
//!
//! ```json
//! {"time":"2026-11-27T10:00:00.123Z","source":"building","device":"110108A001/plug-1",
//!  "topic":"tele/plug1/SENSOR","reason":"tele/plug1/SENSOR: malformed JSON at byte 12: …",
//!  "payload_len":34,"payload_hex":"7b22454e45…"}
//! ```
//!
//! `device` is `null` when the message belonged to no configured device (an ESPHome discovery
//! message, a Shelly answer nobody asked for). The payload is hex, so any bytes survive; payloads
//! longer than [`MAX_PAYLOAD`] bytes keep their first [`MAX_PAYLOAD`] bytes and say so with
//! `"truncated":true`.
//!
//! # Bound
//!
//! The current file grows to half of `max_bytes`; the next letter then renames it to
//! `<source>.1.jsonl` (replacing the older one) and starts a new file. The two files together stay
//! under `max_bytes`, and what is dropped first is the oldest half. Letters are written by their
//! own blocking task behind a bounded queue; when the queue is full (a flood of bad messages faster
//! than the disk), letters are dropped and counted rather than stalling the MQTT connection.
//! Writes are flushed but not fsync'd: this file is for diagnosis, not an acknowledged record.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use serde::Serialize;
use tracing::error;

/// Bytes of a payload kept in its letter.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// Letters waiting for the writer thread.
const QUEUE: usize = 4096;

/// One rejected message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// RFC 3339, UTC, when the gateway received the message.
    pub time: String,
    pub source: String,
    pub device: Option<String>,
    pub topic: String,
    pub reason: String,
    pub payload_len: usize,
    pub payload_hex: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl DeadLetter {
    pub fn new(
        source: &str,
        device: Option<String>,
        topic: &str,
        payload: &[u8],
        reason: String,
    ) -> Self {
        let kept = &payload[..payload.len().min(MAX_PAYLOAD)];
        let mut hex = String::with_capacity(kept.len() * 2);
        for b in kept {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_owned(),
            device,
            topic: topic.to_owned(),
            reason,
            payload_len: payload.len(),
            payload_hex: hex,
            truncated: kept.len() < payload.len(),
        }
    }
}

/// Counters of one dead-letter file.
#[derive(Debug, Default)]
pub struct DeadLetterStats {
    /// Letters written to the file.
    pub written: AtomicU64,
    /// Letters lost: the queue was full or the file could not be written.
    pub dropped: AtomicU64,
    /// Times the file was rotated (the oldest letters dropped).
    pub rotations: AtomicU64,
}

/// The file and its rotation, owned by the writer thread.
#[derive(Debug)]
pub struct DeadLetterFile {
    current: PathBuf,
    previous: PathBuf,
    half: u64,
    file: Option<File>,
    size: u64,
}

impl DeadLetterFile {
    /// `dir/<name>.jsonl` and `dir/<name>.1.jsonl`, together at most `max_bytes`.
    pub fn new(dir: &Path, name: &str, max_bytes: u64) -> Self {
        Self {
            current: dir.join(format!("{name}.jsonl")),
            previous: dir.join(format!("{name}.1.jsonl")),
            half: (max_bytes / 2).max(1),
            file: None,
            size: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.current
    }

    /// Appends one letter, rotating first if it would take the file past its half.
    /// Returns whether a rotation happened.
    pub fn append(&mut self, letter: &DeadLetter) -> io::Result<bool> {
        let mut line = serde_json::to_vec(letter).map_err(io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.file.is_none() {
            if let Some(dir) = self.current.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.current)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        let mut rotated = false;
        if self.size > 0 && self.size + len > self.half {
            self.file = None;
            std::fs::rename(&self.current, &self.previous)?;
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.current)?,
            );
            self.size = 0;
            rotated = true;
        }
        if let Some(f) = &mut self.file {
            f.write_all(&line)?;
            f.flush()?;
        }
        self.size += len;
        Ok(rotated)
    }
}

/// Hands letters to the writer thread. Cloneable; the thread ends when the last one is dropped.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    tx: SyncSender<DeadLetter>,
    pub stats: Arc<DeadLetterStats>,
    path: PathBuf,
}

impl DeadLetters {
    /// Starts the writer of `dir/<name>.jsonl` on tokio's blocking pool (so starting cannot
    /// fail); the file is created with the first letter, and a directory that cannot be created
    /// shows as dropped letters and an error line per letter.
    pub fn start(dir: &Path, name: &str, max_bytes: u64) -> Self {
        let mut file = DeadLetterFile::new(dir, name, max_bytes);
        let path = file.path().to_path_buf();
        let stats = Arc::new(DeadLetterStats::default());
        let (tx, rx) = sync_channel::<DeadLetter>(QUEUE);
        let st = stats.clone();
        tokio::task::spawn_blocking(move || {
            for letter in rx {
                match file.append(&letter) {
                    Ok(rotated) => {
                        st.written.fetch_add(1, Ordering::Relaxed);
                        if rotated {
                            st.rotations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        st.dropped.fetch_add(1, Ordering::Relaxed);
                        // One line per failed write: a failing disk must show.
                        error!(file = %file.path().display(), error = %e, "cannot write dead letter");
                    }
                }
            }
        });
        Self { tx, stats, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a letter; counts it as dropped if the writer is that far behind.
    pub fn send(&self, letter: DeadLetter) {
        match self.tx.try_send(letter) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> DeadLetter {
        DeadLetter::new(
            "s",
            Some("110108A001/plug".into()),
            "tele/plug/SENSOR",
            format!("payload {n}").as_bytes(),
            format!("reason {n}"),
        )
    }

    #[test]
    fn letters_keep_any_bytes_as_hex() {
        let l = DeadLetter::new("s", None, "t", &[0x00, 0xff, b'{'], "bad".into());
        assert_eq!(l.payload_hex, "00ff7b");
        assert_eq!(l.payload_len, 3);
        assert!(!l.truncated);
        let big = vec![b'x'; MAX_PAYLOAD + 5];
        let l = DeadLetter::new("s", None, "t", &big, "big".into());
        assert!(l.truncated);
        assert_eq!(l.payload_len, MAX_PAYLOAD + 5);
        assert_eq!(l.payload_hex.len(), 2 * MAX_PAYLOAD);
    }

    #[test]
    fn the_files_stay_under_their_bound_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096;
        let mut f = DeadLetterFile::new(dir.path(), "s", max);
        let mut rotations = 0;
        for n in 0..200 {
            if f.append(&letter(n)).unwrap() {
                rotations += 1;
            }
            let total: u64 = ["s.jsonl", "s.1.jsonl"]
                .iter()
                .filter_map(|p| std::fs::metadata(dir.path().join(p)).ok())
                .map(|m| m.len())
                .sum();
            assert!(total <= max, "{total} bytes after letter {n}");
        }
        assert!(rotations > 2);
        let last = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = last
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.last().unwrap()["reason"], "reason 199");
        assert_eq!(lines[0]["topic"], "tele/plug/SENSOR");
        // The older half holds the letters just before the current file's first.
        let older = std::fs::read_to_string(dir.path().join("s.1.jsonl")).unwrap();
        let first_current: usize = lines[0]["reason"].as_str().unwrap()[7..].parse().unwrap();
        let last_older: serde_json::Value =
            serde_json::from_str(older.lines().last().unwrap()).unwrap();
        assert_eq!(
            last_older["reason"].as_str().unwrap(),
            format!("reason {}", first_current - 1)
        );
    }

    #[test]
    fn reopening_continues_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = DeadLetterFile::new(dir.path(), "s", 1 << 20);
        f.append(&letter(1)).unwrap();
        drop(f);
        let mut f = DeadLetterFile::new(dir.path(), "s", 1 << 20);
        f.append(&letter(2)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(f.size, text.len() as u64);
    }
}
