//! The write-ahead log: every accepted batch is here, fsynced, before its 2xx.
//!
//! # Format (version 1)
//!
//! The log is a directory of segments `wal-<id, 20 digits>.log`, appended in id order. Each
//! segment starts with the 8-byte magic `JNWAL\0\0\x01` (the last byte is the version), then
//! records:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | payload length n, little-endian |
//! | 4 | CRC-32 (IEEE) of the payload, little-endian |
//! | n | payload: the batch as wire JSON (`reading_model::Batch`) |
//!
//! Replay reads segments in order and stops a segment at the first record that is short or
//! fails its CRC: that is a torn write from a crash, which was never acknowledged, so the
//! segment is cut there (truncated) and the server starts. A segment is deleted once the rows
//! of all its records are published as Parquet (see `store`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use reading_model::Batch;

const MAGIC: &[u8; 8] = b"JNWAL\0\0\x01";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub batches: Vec<Batch>,
    /// Segments cut at a torn or corrupt record: (segment, byte offset kept).
    pub truncated: Vec<(PathBuf, u64)>,
}

#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
    bytes: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("wal-{id:020}.log"))
}

/// Segment ids present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

pub fn encode_record(batch: &Batch, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(batch).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Reads one segment; returns its batches and the length of its valid prefix.
fn read_segment(path: &Path) -> Result<(Vec<Batch>, u64, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    let total = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        // A segment whose header never reached the disk holds nothing acknowledged.
        return Ok((vec![], 0, total));
    }
    let mut pos = MAGIC.len();
    let mut batches = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Batch>(payload) {
            Ok(b) => batches.push(b),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    Ok((batches, pos as u64, total))
}

impl Wal {
    /// Replays every segment (cutting torn tails) and opens a fresh segment for appends.
    pub fn open(dir: &Path) -> Result<(Self, Replay), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut replay = Replay::default();
        let ids = segments(dir)?;
        for &id in &ids {
            let path = segment_path(dir, id);
            let (batches, valid, total) = read_segment(&path)?;
            if valid < total {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(valid.max(MAGIC.len() as u64).min(total))
                    .map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                replay.truncated.push((path.clone(), valid));
            }
            replay.batches.extend(batches);
        }
        let next = ids.last().map_or(0, |i| i + 1);
        let wal = Self::create_segment(dir, next)?;
        Ok((wal, replay))
    }

    fn create_segment(dir: &Path, id: u64) -> Result<Self, WalError> {
        let path = segment_path(dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(MAGIC).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment: id,
            file,
            bytes: MAGIC.len() as u64,
        })
    }

    /// Appends encoded records and fsyncs: when this returns, they are durable.
    pub fn append(&mut self, records: &[u8]) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.segment);
        self.file.write_all(records).map_err(io_err(&path))?;
        self.file.sync_data().map_err(io_err(&path))?;
        self.bytes += records.len() as u64;
        Ok(())
    }

    /// Starts a new segment; returns the id of the last closed one.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let closed = self.segment;
        *self = Self::create_segment(&self.dir, closed + 1)?;
        Ok(closed)
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the current segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Bytes of all segments in `dir` (for the WAL size gauge); 0 if it cannot be listed.
pub fn disk_bytes(dir: &Path) -> u64 {
    segments(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| fs::metadata(segment_path(dir, id)).ok())
        .map(|m| m.len())
        .sum()
}

/// Deletes segments with id ≤ `upto` (their rows are published).
pub fn remove_upto(dir: &Path, upto: u64) -> Result<(), WalError> {
    for id in segments(dir)? {
        if id <= upto {
            let p = segment_path(dir, id);
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use reading_model::GatewayId;

    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch::new(GatewayId::parse("gw").unwrap(), seq, vec![])
    }

    #[test]
    fn append_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, r) = Wal::open(dir.path()).unwrap();
        assert!(r.batches.is_empty());
        let mut buf = Vec::new();
        encode_record(&batch(1), &mut buf);
        encode_record(&batch(2), &mut buf);
        wal.append(&buf).unwrap();
        let seg = segment_path(dir.path(), wal.segment());
        drop(wal);
        // A torn third record: half its bytes reached the disk.
        let mut third = Vec::new();
        encode_record(&batch(3), &mut third);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&third[..third.len() / 2]).unwrap();
        drop(f);
        let (wal, r) = Wal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = r.batches.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(r.truncated.len(), 1);
        assert_eq!(fs::metadata(&seg).unwrap().len(), (8 + buf.len()) as u64);
        // A flipped bit in a record is caught by its CRC.
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        fs::write(&seg, &bytes).unwrap();
        drop(wal);
        let (_, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(r.batches.len(), 1);
        remove_upto(dir.path(), u64::MAX).unwrap();
        assert!(segments(dir.path()).unwrap().is_empty());
    }
}
