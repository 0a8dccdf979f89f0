//! The on-disk spool: batches wait here until ingest has acknowledged them.
//!
//! # Format (version 2): segments
//!
//! The spool directory holds append-only **segment files** `<id, 20 digits>.seg`, each with
//! many batches, and beside each one an **ack file** `<id>.ack`. A segment file is:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `JNSPSEG\0` |
//! | 2 | format version, little-endian (2) |
//! | … | records, back to back |
//!
//! and one record is:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | record marker `JNRC` (lets a reader find the next record after a damaged one) |
//! | 4 | body length `n`, little-endian |
//! | 4 | CRC-32 (IEEE) of the body, little-endian |
//! | 1 | body: gateway id length `g` |
//! | g | body: gateway id, UTF-8 |
//! | 8 | body: batch sequence number, little-endian |
//! | n − 9 − g | body: the batch as wire JSON (`reading_model::Batch`) |
//!
//! (gateway, seq) sit outside the JSON so the index is built without parsing payloads; they must
//! agree with the payload's own, which a read checks.
//!
//! An ack file is a list of 12-byte entries: the acknowledged batch's seq (8 bytes LE) and the
//! CRC-32 of those 8 bytes. Acks are written without fsync: an ack lost in a crash only means
//! the batch is sent again, and ingest drops the resend by (gateway, seq). A damaged or torn
//! entry is ignored for the same reason.
//!
//! ## Writing
//!
//! Records are appended to the newest (active) segment and fsynced before `append` returns; a
//! segment is created (header written, file and directory fsynced) at the first append after
//! open and whenever the next record would take the active one past `segment_bytes`. A batch
//! larger than that gets a segment of its own. A segment whose batches are all acknowledged (or
//! quarantined) is deleted with its ack file; the active one only once it is full (or at the
//! next open), so a spool keeping up with ingest appends to one file instead of creating one
//! per batch.
//!
//! ## Opening after a crash
//!
//! Every segment is read and checked record by record. A record that is not whole and valid is
//! resolved by looking for the next valid record after it: if there is one, the bytes between
//! are damage in the middle of the file and are moved to `quarantine/` with the segment and
//! byte offset in the reason; if there is none, they are a **torn tail** (a crash during an
//! append that never returned) and are cut off, a copy kept in `quarantine/`. Neither stops the
//! gateway. A segment with a bad header is moved to `quarantine/` whole.
//!
//! The in-memory index (seq → segment, offset, length) is rebuilt from the segments and ack
//! files; the forwarder asks it for the oldest pending batch without touching the disk.
//!
//! ## Size bound and what happens when full
//!
//! `bytes()` is the size of all segment files, including acknowledged records in segments that
//! still hold a pending one. When it reaches `max_bytes`, [`Spool::has_room`] says no: the
//! normalizer then holds cumulative readings back (the meters keep counting, so the first delta
//! spooled afterwards spans the wait and no energy is lost) and drops instantaneous ones,
//! counting both (see `run`). The spool sets its `full` gauge, counts how often it became
//! full, and logs a warning at most once a minute while it stays full.
//!
//! ## State
//!
//! `state.json` holds the next sequence number and the last value of every counter, written
//! atomically (temp file, fsync, rename, directory fsync) after each batch. Batches newer than
//! the state file are replayed at open, so a crash between the two writes neither repeats nor
//! loses a delta.
//!
//! ## Version 1 (file per batch)
//!
//! Earlier gateways stored one file per batch, `<seq>.batch` (see [`legacy`]). At open, such
//! files are decoded, appended to a segment (fsynced) and only then deleted, so a spool left by
//! an older version is forwarded as usual; one that does not decode is quarantined.

mod legacy;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reading_model::Batch;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::counter::Counter;

const MAGIC: &[u8; 8] = b"JNSPSEG\0";
const VERSION: u16 = 2;
const SEGMENT_HEADER: u64 = 8 + 2;
const RECORD_MARKER: &[u8; 4] = b"JNRC";
const RECORD_HEADER: usize = 4 + 4 + 4;
/// The smallest body: an empty gateway id and a seq.
const MIN_BODY: usize = 1 + 8;
/// No batch comes near this; a length beyond it is damage, not a record.
const MAX_BODY: usize = 1 << 30;
const ACK_ENTRY: usize = 8 + 4;
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("spool: batch {seq} is already spooled")]
    Duplicate { seq: u64 },
    #[error("spool: batch {seq} is not pending")]
    NotPending { seq: u64 },
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

/// How much the spool may hold and how it is cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Above this many bytes of segments, [`Spool::has_room`] says no.
    pub max_bytes: u64,
    /// A new segment is started when the next record would take the active one past this.
    pub segment_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self::for_max(1 << 30)
    }
}

impl SpoolLimits {
    /// Segments of a 32nd of the bound (64 KiB ..= 8 MiB): small enough that acknowledged
    /// records are given back to the disk soon, large enough that files stay few.
    pub fn for_max(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_bytes: (max_bytes / 32).clamp(64 << 10, 8 << 20),
        }
    }
}

/// What the spool holds and has been through, for stats and alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files.
    pub bytes: u64,
    pub max_bytes: u64,
    pub pending_batches: u64,
    pub segments: u64,
    /// Gauge: the spool is at its bound.
    pub full: bool,
    /// How often the spool went from having room to being full.
    pub times_full: u64,
    /// Batches and damaged byte ranges moved to `quarantine/`.
    pub quarantined: u64,
    /// Bytes cut off torn segment tails at open.
    pub torn_bytes_cut: u64,
    /// Version 1 batch files converted to segments at open.
    pub migrated: u64,
}

/// Where a pending batch's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct Segment {
    bytes: u64,
    /// Pending batches whose record is in this segment.
    live: usize,
    ack: Option<File>,
}

#[derive(Debug)]
struct Index {
    /// seq → record, oldest first.
    queue: BTreeMap<u64, Loc>,
    segments: BTreeMap<u64, Segment>,
    bytes: u64,
    next_segment: u64,
    /// The segment appends go to, if one is open.
    active: Option<u64>,
    stats: SpoolStats,
    last_full_warning: Option<Instant>,
}

#[derive(Debug)]
struct Writer {
    segment: u64,
    file: File,
    len: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Lock order: `writer` before `index`, never the other way. Appends hold `writer` through
    /// their fsync, so the forwarder's look at `index` never waits on the disk.
    writer: Mutex<Option<Writer>>,
    index: Mutex<Index>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the index consistent (updates are single
    // statements after the I/O), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_header() -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Encodes one batch as a segment record.
fn encode_record(batch: &Batch) -> Vec<u8> {
    // Serializing our own types cannot fail (no maps with non-string keys, no custom errors).
    let payload = serde_json::to_vec(batch).unwrap_or_default();
    let gateway = batch.gateway.as_str().as_bytes();
    // Gateway ids are short by validation; a longer one is cut rather than overflow the byte.
    let gateway = &gateway[..gateway.len().min(255)];
    let mut body = Vec::with_capacity(MIN_BODY + gateway.len() + payload.len());
    body.push(gateway.len() as u8);
    body.extend_from_slice(gateway);
    body.extend_from_slice(&batch.seq.to_le_bytes());
    body.extend_from_slice(&payload);
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(RECORD_MARKER);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A record's header fields, checked.
#[derive(Debug, PartialEq, Eq)]
struct RecordHead<'a> {
    gateway: &'a [u8],
    seq: u64,
    payload: &'a [u8],
    /// Bytes of the whole record.
    len: usize,
}

/// Checks the record starting at `bytes[0]`; the error says what is wrong and at which byte
/// (relative to `bytes`).
fn check_record(bytes: &[u8]) -> Result<RecordHead<'_>, (usize, String)> {
    if bytes.len() < RECORD_HEADER {
        return Err((
            0,
            format!("{} bytes, shorter than a record header", bytes.len()),
        ));
    }
    if &bytes[..4] != RECORD_MARKER {
        return Err((0, "no record marker".into()));
    }
    let n = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&n) {
        return Err((4, format!("implausible record length {n}")));
    }
    let Some(body) = bytes.get(RECORD_HEADER..RECORD_HEADER + n) else {
        return Err((
            4,
            format!(
                "record of {n} bytes but only {} follow",
                bytes.len() - RECORD_HEADER
            ),
        ));
    };
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32fast::hash(body) != crc {
        return Err((8, "CRC mismatch".into()));
    }
    let g = usize::from(body[0]);
    if 1 + g + 8 > n {
        return Err((
            RECORD_HEADER,
            format!("gateway id of {g} bytes overruns the record"),
        ));
    }
    let gateway = &body[1..1 + g];
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[1 + g..1 + g + 8]);
    Ok(RecordHead {
        gateway,
        seq: u64::from_le_bytes(seq),
        payload: &body[1 + g + 8..],
        len: RECORD_HEADER + n,
    })
}

/// Decodes a whole record read from `path` at `offset`.
/// The record's batch, checked against its header, and its payload (the wire JSON) as stored.
fn decode_record<'a>(
    path: &Path,
    offset: u64,
    bytes: &'a [u8],
) -> Result<(Batch, &'a [u8]), SpoolError> {
    let corrupt = |at: usize, reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset: offset + at as u64,
        reason,
    };
    let head = check_record(bytes).map_err(|(at, reason)| corrupt(at, reason))?;
    let payload_at = head.len - head.payload.len();
    let batch: Batch = serde_json::from_slice(head.payload)
        .map_err(|e| corrupt(payload_at + e.column(), e.to_string()))?;
    if batch.seq != head.seq || batch.gateway.as_str().as_bytes() != head.gateway {
        return Err(corrupt(
            RECORD_HEADER,
            format!(
                "record says batch {} of {:?}, payload says {} of {}",
                head.seq,
                String::from_utf8_lossy(head.gateway),
                batch.seq,
                batch.gateway
            ),
        ));
    }
    Ok((batch, head.payload))
}

/// The next offset at or after `from` where a valid record starts.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER <= bytes.len() {
        let found = bytes[at..]
            .windows(RECORD_MARKER.len())
            .position(|w| w == RECORD_MARKER)?;
        at += found;
        if check_record(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

fn ack_entry(seq: u64) -> [u8; ACK_ENTRY] {
    let mut e = [0u8; ACK_ENTRY];
    e[..8].copy_from_slice(&seq.to_le_bytes());
    e[8..].copy_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    e
}

fn read_acks(path: &Path) -> Result<BTreeSet<u64>, SpoolError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut acked = BTreeSet::new();
    let mut bad = 0;
    for e in bytes.chunks_exact(ACK_ENTRY) {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&e[..8]);
        if crc32fast::hash(&seq).to_le_bytes() == e[8..] {
            acked.insert(u64::from_le_bytes(seq));
        } else {
            bad += 1;
        }
    }
    if bad > 0 || bytes.len() % ACK_ENTRY != 0 {
        // Losing an ack only resends a batch, which ingest drops as a duplicate.
        warn!(path = %path.display(), damaged = bad, torn = bytes.len() % ACK_ENTRY, "ignoring damaged acknowledgements; those batches will be sent again");
    }
    Ok(acked)
}

/// Files of a spool directory, by kind.
#[derive(Debug, Default)]
struct Listing {
    segments: BTreeSet<u64>,
    acks: BTreeSet<u64>,
    legacy: BTreeSet<u64>,
}

fn list(dir: &Path) -> Result<Listing, SpoolError> {
    let mut l = Listing::default();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            // A temp file is a write that never completed: state.json has its previous version.
            fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
        } else if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
            l.segments.insert(id);
        } else if let Some(id) = name.strip_suffix(".ack").and_then(|s| s.parse().ok()) {
            l.acks.insert(id);
        } else if let Some(seq) = name.strip_suffix(".batch").and_then(|s| s.parse().ok()) {
            l.legacy.insert(seq);
        }
    }
    Ok(l)
}

impl Spool {
    /// Opens (creating) the spool: checks every segment, cuts torn tails, quarantines damage,
    /// converts version-1 batch files, and returns the state with batches newer than it
    /// replayed through `replay`.
    pub fn open(
        dir: &Path,
        limits: SpoolLimits,
        mut replay: impl FnMut(&mut SpoolState, &Batch),
    ) -> Result<(Self, SpoolState), SpoolError> {
        fs::create_dir_all(dir.join("quarantine")).map_err(io_err(dir))?;
        let listing = list(dir)?;
        let spool = Self {
            dir: dir.to_path_buf(),
            limits,
            writer: Mutex::new(None),
            index: Mutex::new(Index {
                queue: BTreeMap::new(),
                segments: BTreeMap::new(),
                bytes: 0,
                next_segment: listing
                    .segments
                    .iter()
                    .chain(&listing.acks)
                    .max()
                    .map_or(0, |m| m + 1),
                active: None,
                stats: SpoolStats {
                    max_bytes: limits.max_bytes,
                    ..SpoolStats::default()
                },
                last_full_warning: None,
            }),
        };
        for &id in &listing.segments {
            spool.load_segment(id)?;
        }
        for &id in listing.acks.difference(&listing.segments) {
            let p = spool.ack_path(id);
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        for &seq in &listing.legacy {
            spool.migrate(seq)?;
        }

        let state_path = dir.join("state.json");
        let mut state: SpoolState = match fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SpoolError::Corrupt {
                path: state_path.clone(),
                offset: e.column() as u64,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SpoolState::default(),
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        for seq in spool.pending()? {
            if seq >= state.next_seq {
                match spool.read(seq) {
                    Ok(batch) => replay(&mut state, &batch),
                    // The forwarder will find it damaged too and quarantine it.
                    Err(e) => warn!(seq, error = %e, "cannot replay spooled batch"),
                }
                state.next_seq = seq + 1;
            }
        }
        let s = spool.stats();
        if s.pending_batches > 0 || s.quarantined > 0 || s.torn_bytes_cut > 0 {
            info!(
                pending = s.pending_batches,
                segments = s.segments,
                bytes = s.bytes,
                quarantined = s.quarantined,
                torn_bytes_cut = s.torn_bytes_cut,
                migrated = s.migrated,
                "spool opened"
            );
        }
        Ok((spool, state))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.seg"))
    }

    fn ack_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.ack"))
    }

    fn quarantine_path(&self, name: &str) -> PathBuf {
        self.dir.join("quarantine").join(name)
    }

    /// Keeps `bytes` and the reason they were set aside in `quarantine/<name>`.
    fn set_aside(&self, name: &str, bytes: &[u8], reason: &str) -> Result<(), SpoolError> {
        let to = self.quarantine_path(name);
        fs::write(&to, bytes).map_err(io_err(&to))?;
        let why = self.quarantine_path(&format!("{name}.reason.txt"));
        fs::write(&why, reason).map_err(io_err(&why))?;
        lock(&self.index).stats.quarantined += 1;
        Ok(())
    }

    /// Checks one segment at open and adds its pending batches to the index.
    fn load_segment(&self, id: u64) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        let mut bytes = fs::read(&path).map_err(io_err(&path))?;
        if bytes.len() < SEGMENT_HEADER as usize && segment_header().starts_with(&bytes) {
            // Created but its header never made it to disk: nothing was ever appended to it.
            fs::remove_file(&path).map_err(io_err(&path))?;
            return Ok(());
        }
        let header_problem = if bytes.len() < SEGMENT_HEADER as usize || &bytes[..8] != MAGIC {
            Some("bad magic at byte 0".to_owned())
        } else {
            let v = u16::from_le_bytes([bytes[8], bytes[9]]);
            (v != VERSION).then(|| format!("unsupported version {v} at byte 8"))
        };
        if let Some(problem) = header_problem {
            warn!(path = %path.display(), problem, "segment quarantined whole");
            let name = format!("{id:020}.seg");
            self.set_aside(&name, &bytes, &format!("{}: {problem}", path.display()))?;
            fs::remove_file(&path).map_err(io_err(&path))?;
            let _ = fs::remove_file(self.ack_path(id));
            return Ok(());
        }

        let acked = read_acks(&self.ack_path(id))?;
        let mut records = Vec::new();
        let mut at = SEGMENT_HEADER as usize;
        while at < bytes.len() {
            match check_record(&bytes[at..]) {
                Ok(head) => {
                    records.push((head.seq, at as u64, head.len as u64));
                    at += head.len;
                }
                Err((_, reason)) => match resync(&bytes, at + 1) {
                    Some(next) => {
                        let reason = format!(
                            "{}: corrupt at byte {at} ({reason}); {} bytes up to the next good record at byte {next} set aside",
                            path.display(),
                            next - at
                        );
                        warn!(segment = %path.display(), offset = at, "damaged record quarantined");
                        self.set_aside(&format!("{id:020}.seg@{at}"), &bytes[at..next], &reason)?;
                        at = next;
                    }
                    None => {
                        let cut = bytes.len() - at;
                        warn!(segment = %path.display(), offset = at, bytes = cut, reason, "torn tail cut (an append interrupted by a crash)");
                        self.set_aside(
                            &format!("{id:020}.seg@{at}.torn"),
                            &bytes[at..],
                            &format!(
                                "{}: torn tail of {cut} bytes from byte {at}: {reason}",
                                path.display()
                            ),
                        )?;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        f.set_len(at as u64).map_err(io_err(&path))?;
                        f.sync_all().map_err(io_err(&path))?;
                        bytes.truncate(at);
                        lock(&self.index).stats.torn_bytes_cut += cut as u64;
                    }
                },
            }
        }

        let mut index = lock(&self.index);
        let mut live = 0;
        for (seq, offset, len) in records {
            // A seq seen before (an interrupted migration) keeps its first record.
            if acked.contains(&seq) || index.queue.contains_key(&seq) {
                continue;
            }
            index.queue.insert(
                seq,
                Loc {
                    segment: id,
                    offset,
                    len,
                },
            );
            live += 1;
        }
        if live == 0 {
            drop(index);
            fs::remove_file(&path).map_err(io_err(&path))?;
            let ack = self.ack_path(id);
            if let Err(e) = fs::remove_file(&ack)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(io_err(&ack)(e));
            }
            return Ok(());
        }
        let n = bytes.len() as u64;
        index.bytes += n;
        index.segments.insert(
            id,
            Segment {
                bytes: n,
                live,
                ack: None,
            },
        );
        Ok(())
    }

    /// Moves one version-1 batch file into a segment, then deletes it.
    fn migrate(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(format!("{seq:020}.batch"));
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        match legacy::decode(&path, &bytes) {
            Ok(batch) => {
                match self.append(&batch) {
                    // Already moved before a crash interrupted the migration.
                    Ok(()) | Err(SpoolError::Duplicate { .. }) => {}
                    Err(e) => return Err(e),
                }
                lock(&self.index).stats.migrated += 1;
            }
            Err(e) => {
                warn!(error = %e, "version-1 batch file quarantined");
                self.set_aside(&format!("{seq:020}.batch"), &bytes, &e.to_string())?;
            }
        }
        fs::remove_file(&path).map_err(io_err(&path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))
    }

    /// Creates the next segment and makes it the active one.
    fn new_segment(&self) -> Result<Writer, SpoolError> {
        let id = {
            let mut index = lock(&self.index);
            let id = index.next_segment;
            index.next_segment += 1;
            id
        };
        let path = self.segment_path(id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let written = file
            .write_all(&segment_header())
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path)(e));
        }
        let mut index = lock(&self.index);
        index.bytes += SEGMENT_HEADER;
        index.active = Some(id);
        index.segments.insert(
            id,
            Segment {
                bytes: SEGMENT_HEADER,
                live: 0,
                ack: None,
            },
        );
        Ok(Writer {
            segment: id,
            file,
            len: SEGMENT_HEADER,
        })
    }

    /// Durably stores a batch (returns after fsync). Appends regardless of the bound: callers
    /// that must respect it ask [`Spool::has_room`] first.
    pub fn append(&self, batch: &Batch) -> Result<(), SpoolError> {
        let mut writer = lock(&self.writer);
        if lock(&self.index).queue.contains_key(&batch.seq) {
            return Err(SpoolError::Duplicate { seq: batch.seq });
        }
        let record = encode_record(batch);
        let n = record.len() as u64;
        let rotate = writer
            .as_ref()
            .is_some_and(|w| w.len > SEGMENT_HEADER && w.len + n > self.limits.segment_bytes);
        if rotate && let Some(old) = writer.take() {
            let mut index = lock(&self.index);
            index.active = None;
            self.delete_locked(&mut index, old.segment)?;
        }
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(self.new_segment()?),
        };
        let path = self.segment_path(w.segment);
        if let Err(e) = w.file.write_all(&record).and_then(|()| w.file.sync_data()) {
            // Take the partial record back; if even that fails, leave this segment to the
            // checks at the next open and write on in a new one.
            if w.file.set_len(w.len).is_err() {
                *writer = None;
                lock(&self.index).active = None;
            }
            return Err(io_err(&path)(e));
        }
        let loc = Loc {
            segment: w.segment,
            offset: w.len,
            len: n,
        };
        w.len += n;
        let mut index = lock(&self.index);
        index.queue.insert(batch.seq, loc);
        index.bytes += n;
        if let Some(s) = index.segments.get_mut(&loc.segment) {
            s.bytes += n;
            s.live += 1;
        }
        Ok(())
    }

    /// Deletes a segment none of whose batches is pending, unless appends go to it: a spool
    /// that keeps up with ingest then appends to one file rather than creating (and fsyncing)
    /// one per batch. The active segment goes when it is full or at the next open.
    fn delete_locked(&self, index: &mut Index, id: u64) -> Result<(), SpoolError> {
        if index.active == Some(id) || index.segments.get(&id).is_none_or(|s| s.live > 0) {
            return Ok(());
        }
        if let Some(s) = index.segments.remove(&id) {
            index.bytes = index.bytes.saturating_sub(s.bytes);
        }
        let path = self.segment_path(id);
        fs::remove_file(&path).map_err(io_err(&path))?;
        let ack = self.ack_path(id);
        match fs::remove_file(&ack) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&ack)(e)),
            _ => Ok(()),
        }
    }

    /// Records that `seq` is no longer pending and gives its segment back when it was the last.
    fn settle(&self, seq: u64) -> Result<(), SpoolError> {
        let mut index = lock(&self.index);
        let Some(loc) = index.queue.remove(&seq) else {
            return Err(SpoolError::NotPending { seq });
        };
        let ack_path = self.ack_path(loc.segment);
        let Some(seg) = index.segments.get_mut(&loc.segment) else {
            return Ok(());
        };
        seg.live = seg.live.saturating_sub(1);
        // The ack is written even when the segment is about to go: the active segment stays,
        // and the ack must outlive a crash meanwhile.
        let file = match seg.ack.as_mut() {
            Some(f) => f,
            None => seg.ack.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&ack_path)
                    .map_err(io_err(&ack_path))?,
            ),
        };
        // No fsync: see the module doc.
        file.write_all(&ack_entry(seq)).map_err(io_err(&ack_path))?;
        if seg.live == 0 {
            return self.delete_locked(&mut index, loc.segment);
        }
        Ok(())
    }

    pub fn save_state(&self, state: &SpoolState) -> Result<(), SpoolError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    /// Sequence numbers of spooled batches, oldest first, from memory. (A `Result` since the
    /// file-per-batch spool listed its directory here; it no longer fails.)
    pub fn pending(&self) -> Result<Vec<u64>, SpoolError> {
        Ok(lock(&self.index).queue.keys().copied().collect())
    }

    /// The oldest pending batch, from memory.
    pub fn first_pending(&self) -> Option<u64> {
        lock(&self.index).queue.keys().next().copied()
    }

    /// How many batches are pending, from memory.
    pub fn pending_count(&self) -> usize {
        lock(&self.index).queue.len()
    }

    fn locate(&self, seq: u64) -> Result<Loc, SpoolError> {
        lock(&self.index)
            .queue
            .get(&seq)
            .copied()
            .ok_or(SpoolError::NotPending { seq })
    }

    fn read_record(&self, loc: Loc) -> Result<Vec<u8>, SpoolError> {
        let path = self.segment_path(loc.segment);
        let mut f = File::open(&path).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(loc.offset)).map_err(io_err(&path))?;
        let mut buf = vec![0u8; usize::try_from(loc.len).unwrap_or(0)];
        f.read_exact(&mut buf).map_err(io_err(&path))?;
        Ok(buf)
    }

    /// Reads a pending batch (blocking I/O).
    pub fn read(&self, seq: u64) -> Result<Batch, SpoolError> {
        self.read_with_payload(seq).map(|(batch, _)| batch)
    }

    /// The batch (checked like [`Spool::read`]) and its wire JSON exactly as spooled, so the
    /// forwarder sends those bytes instead of serialising the batch again.
    pub fn read_with_payload(&self, seq: u64) -> Result<(Batch, Vec<u8>), SpoolError> {
        let loc = self.locate(seq)?;
        let bytes = self.read_record(loc)?;
        let (batch, payload) = decode_record(&self.segment_path(loc.segment), loc.offset, &bytes)?;
        Ok((batch, payload.to_vec()))
    }

    /// Marks a batch ingest has acknowledged; its segment is deleted with its last batch.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        self.settle(seq)
    }

    /// Sets a batch that cannot be sent (corrupt, or refused by ingest) aside with its reason,
    /// as `quarantine/<seq>.record` (the record as it was in its segment).
    pub fn quarantine(&self, seq: u64, reason: &str) -> Result<(), SpoolError> {
        let loc = self.locate(seq)?;
        let bytes = self.read_record(loc).unwrap_or_default();
        let reason = format!(
            "{} byte {}: {reason}",
            self.segment_path(loc.segment).display(),
            loc.offset
        );
        self.set_aside(&format!("{seq:020}.record"), &bytes, &reason)?;
        self.settle(seq)
    }

    /// Bytes of segment files.
    pub fn bytes(&self) -> u64 {
        lock(&self.index).bytes
    }

    /// Whether the spool is below its bound. Updates the `full` gauge, counts each time the
    /// spool becomes full, and warns at most once a minute while it stays full.
    pub fn has_room(&self) -> bool {
        let mut index = lock(&self.index);
        let full = index.bytes >= self.limits.max_bytes;
        if full && !index.stats.full {
            index.stats.times_full += 1;
        }
        index.stats.full = full;
        if full
            && index
                .last_full_warning
                .is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY)
        {
            index.last_full_warning = Some(Instant::now());
            warn!(
                bytes = index.bytes,
                max_bytes = self.limits.max_bytes,
                pending = index.queue.len(),
                times_full = index.stats.times_full,
                "spool full: waiting for ingest to acknowledge batches"
            );
        }
        !full
    }

    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    pub fn stats(&self) -> SpoolStats {
        let index = lock(&self.index);
        SpoolStats {
            bytes: index.bytes,
            full: index.bytes >= self.limits.max_bytes,
            pending_batches: index.queue.len() as u64,
            segments: index.segments.len() as u64,
            ..index.stats
        }
    }
}

#[cfg(test)]
mod tests;
