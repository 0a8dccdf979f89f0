//! The on-disk spool: batches wait here until ingest has acknowledged them.
//!
//! # Format (version 4): segments and the epoch
//!
//! The spool directory holds append-only **segment files** `<id, 20 digits>.seg`, each with
//! many batches, beside each one an **ack file** `<id>.ack`, and the spool's **epoch file**
//! `epoch.json` (below). A segment file is:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `JNSPSEG\0` |
//! | 2 | format version, little-endian (4; 3 and 2 are still read) |
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
//! | 1 | body: 1 if the batch has an epoch, else 0 |
//! | 8 | body: the batch's epoch, little-endian (0 when it has none) |
//! | 1 | body: payload encoding: 1 = wire JSON, 2 = Arrow IPC stream (see [`crate::wire`]; small batches are JSON, see [`ARROW_MIN_READINGS`]) |
//! | 4 | body: number of readings, little-endian |
//! | n − 23 − g | body: the payload, exactly the request body ingest is sent |
//!
//! (gateway, epoch, seq) and the reading count sit outside the payload so that neither the
//! index nor the forwarder parses payloads: the forwarder sends the stored bytes with the
//! content type their encoding names.
//!
//! **Version 3** records have no epoch bytes (their batches have no epoch); **version 2**
//! records (segments with version 2 in their header, left by an earlier gateway) have neither
//! epoch, encoding byte nor count: their payload is wire JSON, which is parsed (and checked
//! against the header's gateway and seq) before it is sent. New records always go to a new
//! version 4 segment, so a segment never mixes versions.
//!
//! An ack file is a list of 12-byte entries: the acknowledged batch's seq (8 bytes LE) and the
//! CRC-32 of those 8 bytes. Acks are written without fsync: an ack lost in a crash only means
//! the batch is sent again, and ingest drops the resend by (gateway, epoch, seq). A damaged or
//! torn entry is ignored for the same reason.
//!
//! ## The epoch
//!
//! `seq` rises within one **epoch** of the spool, and ingest dedupes by (gateway, epoch, seq)
//! (see `ingest::store::dedupe`). The epoch is made when the spool is created: 53 random bits
//! (kept below 2^53 so that any JSON reader sees it exactly), from std's `RandomState`, whose
//! keys come from the OS RNG, hashed with the clock and the process id. It is kept in
//! `epoch.json`, `{"epoch": N}`, written atomically (temp file, fsync, rename, directory fsync)
//! before any batch is numbered in it, and sent with every batch (wire JSON `epoch`, Arrow
//! `jieneng.epoch`). A spool of an earlier version, without the file, gets an epoch at open and
//! keeps it; so does one whose file is damaged (a new epoch is always safe: ingest takes an epoch
//! it does not know as new, and storage is idempotent per reading key). A gateway that starts
//! with an empty spool (a new SD card, a reinstall) therefore numbers from 0 in a new epoch,
//! and ingest stores its batches instead of taking them for retries.
//!
//! When ingest refuses a batch because its seq goes back within its epoch without being a
//! retry (409 `seq_regressed`: a spool restored from a backup), the forwarder starts a **new
//! epoch** ([`Spool::new_epoch`]). Records keep the epoch they were written with; a pending
//! record of another epoch than the spool's (or of none: versions 2 and 3) is re-encoded under
//! the spool's epoch when it is read for sending ([`Spool::read_encoded`]), so nothing on disk
//! is rewritten and a crash in between only re-encodes it again.
//!
//! ## Writing
//!
//! Records are appended to the newest (active) segment and fsynced before `append` returns; a
//! segment is created (header written, file and directory fsynced) at the first append after
//! open and whenever the next record would take the active one past `segment_bytes`. A batch
//! larger than that gets a segment of its own. A segment whose batches are all acknowledged (or
//! quarantined) is deleted with its ack file once the state file covers it (below); the active
//! one only once it is full (or at the next open), so a spool keeping up with ingest appends to
//! one file instead of creating one per batch.
//!
//! ## Opening after a crash
//!
//! Every segment is read and checked record by record. A record that is not whole and valid is
//! resolved by looking for the next valid record after it: if there is one, the bytes between
//! are damage in the middle of the file and are moved to `quarantine/` with the segment and
//! byte offset in the reason; if there is none, they are a **torn tail** (a crash during an
//! append that never returned) and are cut off, a copy kept in `quarantine/`. Neither stops the
//! gateway. A segment with a bad header is moved to `quarantine/` whole; the sequence numbers
//! of its records whose CRC holds are not given out again (the state snapshot may be older).
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
//! The normalizer's state — the next sequence number and the last value of every counter — is
//! what its spooled readings say: a counter's last value is its newest cumulative reading not
//! flagged `glitch`, and the `glitch` readings after it are its undecided drop (see
//! [`crate::counter`]). So
//! a record's fsync makes the state it leads to durable too, and `state.json` is only a
//! **snapshot** that lets records go: it says "everything below `next_seq` is in here". It is
//! written atomically (temp file, fsync, rename, directory fsync) when a segment whose batches
//! are all settled still holds a record the snapshot does not cover ([`Spool::state_due`]):
//! such a segment is kept until [`Spool::save_state`] has run, so no record is deleted before
//! the snapshot covers it. That is one snapshot per segment, not one per batch.
//!
//! At open, every record still on disk whose seq is at or past the snapshot's `next_seq` —
//! pending or already acknowledged — is replayed over it in seq order, and the result is saved
//! before any settled segment is deleted. A crash at any point therefore neither repeats nor
//! loses a delta, and never reuses a sequence number. A record that cannot be replayed
//! (damaged) only makes the next delta of its counters span its interval as well.
//!
//! ## Version 1 (file per batch)
//!
//! Earlier gateways stored one file per batch, `<seq>.batch` (see [`legacy`]). At open, such
//! files are decoded, appended to a segment (fsynced) and only then deleted, so a spool left by
//! an older version is forwarded as usual; one that does not decode is quarantined.

mod legacy;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use reading_model::{Batch, GatewayId, Reading};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::counter::Counter;

const MAGIC: &[u8; 8] = b"JNSPSEG\0";
const VERSION: u16 = 4;
/// Segments of this version are still read: records without the epoch.
const VERSION_NO_EPOCH: u16 = 3;
/// Segments of this version are still read: records without encoding byte or count, JSON.
const VERSION_JSON_ONLY: u16 = 2;
/// The versions read.
const VERSIONS: [u16; 3] = [VERSION, VERSION_NO_EPOCH, VERSION_JSON_ONLY];
/// Epochs stay below 2^53, exact in any JSON reader.
const EPOCH_MASK: u64 = (1 << 53) - 1;
const SEGMENT_HEADER: u64 = 8 + 2;
const RECORD_MARKER: &[u8; 4] = b"JNRC";
const RECORD_HEADER: usize = 4 + 4 + 4;
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
    #[error("spool: cannot encode batch {seq}: {reason}")]
    Encode { seq: u64, reason: String },
}

/// [`Batch`]'s wire JSON, serialized from borrowed readings.
#[derive(Serialize)]
struct BatchRef<'a> {
    version: u16,
    gateway: &'a GatewayId,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    seq: u64,
    readings: &'a [Reading],
}

/// How a record's payload is encoded; each is a body ingest accepts as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Wire JSON (`reading_model::Batch`): what version 2 segments hold.
    Json,
    /// An Arrow IPC stream ([`crate::wire`]): what the gateway writes.
    Arrow,
}

impl Encoding {
    fn byte(self) -> u8 {
        match self {
            Self::Json => 1,
            Self::Arrow => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Json),
            2 => Some(Self::Arrow),
            _ => None,
        }
    }

    /// The `Content-Type` the payload is sent with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Arrow => crate::wire::ARROW_STREAM,
        }
    }
}

/// A batch as the spool stores it and the forwarder sends it: the payload is the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub gateway: GatewayId,
    /// The epoch the payload names (`None`: records of versions 2 and 3).
    pub epoch: Option<u64>,
    pub seq: u64,
    pub encoding: Encoding,
    /// Readings in the payload (for counters; the payload is not parsed to count them).
    pub readings: u32,
    pub payload: Vec<u8>,
}

/// Batches of fewer readings are stored and sent as JSON: an Arrow stream starts with its
/// schema and dictionaries (about 3.5 KB), which JSON only outgrows at about 30 readings.
pub const ARROW_MIN_READINGS: usize = 32;

impl EncodedBatch {
    /// Encodes readings once, as the body the forwarder will send: an Arrow IPC stream, or
    /// JSON for a batch of fewer than [`ARROW_MIN_READINGS`].
    pub fn new(
        gateway: &GatewayId,
        epoch: Option<u64>,
        seq: u64,
        version: u16,
        readings: &[Reading],
    ) -> Result<Self, SpoolError> {
        if readings.len() >= ARROW_MIN_READINGS {
            return Self::arrow(gateway, epoch, seq, version, readings);
        }
        let batch = BatchRef {
            version,
            gateway,
            epoch,
            seq,
            readings,
        };
        let payload = serde_json::to_vec(&batch).map_err(|e| SpoolError::Encode {
            seq,
            reason: e.to_string(),
        })?;
        Ok(Self {
            gateway: gateway.clone(),
            epoch,
            seq,
            encoding: Encoding::Json,
            readings: readings.len() as u32,
            payload,
        })
    }

    /// Encodes readings as an Arrow IPC stream.
    pub fn arrow(
        gateway: &GatewayId,
        epoch: Option<u64>,
        seq: u64,
        version: u16,
        readings: &[Reading],
    ) -> Result<Self, SpoolError> {
        let payload = crate::wire::encode(gateway, epoch, seq, version, readings).map_err(|e| {
            SpoolError::Encode {
                seq,
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            gateway: gateway.clone(),
            epoch,
            seq,
            encoding: Encoding::Arrow,
            readings: u32::try_from(readings.len()).unwrap_or(u32::MAX),
            payload,
        })
    }
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
    /// Pending records re-encoded under the spool's epoch when read for sending.
    pub reencoded: u64,
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
    /// The segment's format version (its records' layout).
    version: u16,
    /// Pending batches whose record is in this segment.
    live: usize,
    /// The highest seq of a record in it: the segment may go only once the state snapshot
    /// covers it.
    max_seq: Option<u64>,
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
    /// `next_seq` of the last state snapshot saved: records below it may be deleted.
    state_covers: u64,
    /// The highest seq found in segments quarantined whole at open.
    quarantined_seq: Option<u64>,
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
    /// The epoch batches are numbered in (see the module doc); changed only with `epoch.json`.
    epoch: AtomicU64,
}

/// `epoch.json`.
#[derive(Debug, Serialize, Deserialize)]
struct EpochFile {
    epoch: u64,
}

/// A new epoch, other than `not`: 53 bits of std's `RandomState` (its keys come from the OS
/// RNG) over the clock and the process id.
fn fresh_epoch(not: Option<u64>) -> u64 {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        h.write_u32(std::process::id());
        let epoch = h.finish() & EPOCH_MASK;
        if Some(epoch) != not {
            return epoch;
        }
    }
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

/// Encodes one batch as a (version 4) segment record.
fn encode_record(batch: &EncodedBatch) -> Vec<u8> {
    let gateway = batch.gateway.as_str().as_bytes();
    // Gateway ids are short by validation; a longer one is cut rather than overflow the byte.
    let gateway = &gateway[..gateway.len().min(255)];
    let body_len = 1 + gateway.len() + 8 + 9 + 1 + 4 + batch.payload.len();
    let mut out = Vec::with_capacity(RECORD_HEADER + body_len);
    out.extend_from_slice(RECORD_MARKER);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, once the body is in place
    out.push(gateway.len() as u8);
    out.extend_from_slice(gateway);
    out.extend_from_slice(&batch.seq.to_le_bytes());
    out.push(u8::from(batch.epoch.is_some()));
    out.extend_from_slice(&batch.epoch.unwrap_or(0).to_le_bytes());
    out.push(batch.encoding.byte());
    out.extend_from_slice(&batch.readings.to_le_bytes());
    out.extend_from_slice(&batch.payload);
    let crc = crc32fast::hash(&out[RECORD_HEADER..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The smallest record body of a segment version: an empty gateway id, a seq, (version 4) the
/// epoch, and (versions 3 and 4) the encoding byte and the reading count.
fn min_body(version: u16) -> usize {
    match version {
        VERSION_JSON_ONLY => 1 + 8,
        VERSION_NO_EPOCH => 1 + 8 + 1 + 4,
        _ => 1 + 8 + 9 + 1 + 4,
    }
}

/// A record's header fields, checked.
#[derive(Debug, PartialEq, Eq)]
struct RecordHead<'a> {
    gateway: &'a [u8],
    seq: u64,
    /// The batch's epoch (version 4 records say; earlier ones have none).
    epoch: Option<u64>,
    encoding: Encoding,
    /// Readings in the payload (version 3 records say; version 2 ones do not).
    readings: Option<u32>,
    payload: &'a [u8],
    /// Bytes of the whole record.
    len: usize,
}

/// Checks the record of a `version` segment starting at `bytes[0]`; the error says what is
/// wrong and at which byte (relative to `bytes`).
fn check_record(bytes: &[u8], version: u16) -> Result<RecordHead<'_>, (usize, String)> {
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
    if !(min_body(version)..=MAX_BODY).contains(&n) {
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
    let fixed = min_body(version) - 1;
    if 1 + g + fixed > n {
        return Err((
            RECORD_HEADER,
            format!("gateway id of {g} bytes overruns the record"),
        ));
    }
    let gateway = &body[1..1 + g];
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[1 + g..1 + g + 8]);
    let mut at = 1 + g + 8;
    let epoch = if version == VERSION {
        let mut e = [0u8; 8];
        e.copy_from_slice(&body[at + 1..at + 9]);
        let epoch = match body[at] {
            0 => None,
            1 => Some(u64::from_le_bytes(e)),
            b => return Err((RECORD_HEADER + at, format!("epoch flag {b} is not 0 or 1"))),
        };
        at += 9;
        epoch
    } else {
        None
    };
    let (encoding, readings) = if version == VERSION_JSON_ONLY {
        (Encoding::Json, None)
    } else {
        let encoding = Encoding::from_byte(body[at]).ok_or_else(|| {
            (
                RECORD_HEADER + at,
                format!("unknown payload encoding {}", body[at]),
            )
        })?;
        let count = u32::from_le_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]);
        (encoding, Some(count))
    };
    Ok(RecordHead {
        gateway,
        seq: u64::from_le_bytes(seq),
        epoch,
        encoding,
        readings,
        payload: &body[1 + g + fixed..],
        len: RECORD_HEADER + n,
    })
}

/// Decodes a whole record of a `version` segment read from `path` at `offset`: its batch,
/// checked against its header.
fn decode_record(
    path: &Path,
    offset: u64,
    bytes: &[u8],
    version: u16,
) -> Result<Batch, SpoolError> {
    let corrupt = |at: usize, reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset: offset + at as u64,
        reason,
    };
    let head = check_record(bytes, version).map_err(|(at, reason)| corrupt(at, reason))?;
    let payload_at = head.len - head.payload.len();
    let batch: Batch = match head.encoding {
        Encoding::Json => serde_json::from_slice(head.payload)
            .map_err(|e| corrupt(payload_at + e.column(), e.to_string()))?,
        Encoding::Arrow => {
            crate::wire::decode(head.payload).map_err(|reason| corrupt(payload_at, reason))?
        }
    };
    if batch.seq != head.seq
        || batch.epoch != head.epoch
        || batch.gateway.as_str().as_bytes() != head.gateway
    {
        return Err(corrupt(
            RECORD_HEADER,
            format!(
                "record says batch {} of epoch {:?} of {:?}, payload says {} of epoch {:?} of {}",
                head.seq,
                head.epoch,
                String::from_utf8_lossy(head.gateway),
                batch.seq,
                batch.epoch,
                batch.gateway
            ),
        ));
    }
    Ok(batch)
}

/// The next offset at or after `from` where a valid record starts.
fn resync(bytes: &[u8], from: usize, version: u16) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER <= bytes.len() {
        let found = bytes[at..]
            .windows(RECORD_MARKER.len())
            .position(|w| w == RECORD_MARKER)?;
        at += found;
        if check_record(&bytes[at..], version).is_ok() {
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
    /// converts version-1 batch files, and returns the state with every record newer than
    /// its snapshot (pending or acknowledged) replayed through `replay`, oldest first.
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
                state_covers: 0,
                quarantined_seq: None,
                stats: SpoolStats {
                    max_bytes: limits.max_bytes,
                    ..SpoolStats::default()
                },
                last_full_warning: None,
            }),
            epoch: AtomicU64::new(0),
        };
        spool.open_epoch()?;
        // Records already acknowledged but still on disk: the snapshot may not cover them.
        let mut settled = BTreeMap::new();
        for &id in &listing.segments {
            spool.load_segment(id, &mut settled)?;
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
        lock(&spool.index).state_covers = state.next_seq;
        let mut on_disk = settled;
        on_disk.extend(
            lock(&spool.index)
                .queue
                .iter()
                .map(|(&seq, &loc)| (seq, loc)),
        );
        let mut replayed = 0;
        for (&seq, &loc) in on_disk.range(state.next_seq..) {
            match spool.read_at(loc) {
                Ok(batch) => replay(&mut state, &batch),
                // A pending one is found damaged by the forwarder too and quarantined; either
                // way the next delta of its counters spans its interval as well.
                Err(e) => warn!(seq, error = %e, "cannot replay spooled batch"),
            }
            state.next_seq = seq + 1;
            replayed += 1;
        }
        let quarantined_seq = lock(&spool.index).quarantined_seq;
        if let Some(seq) = quarantined_seq.filter(|&s| s >= state.next_seq) {
            // Counters cannot be replayed from a quarantined segment: the next delta of each
            // spans its batches instead.
            state.next_seq = seq + 1;
            replayed += 1;
        }
        if replayed > 0 {
            // Settled segments go only once the snapshot covers them.
            spool.save_state(&state)?;
        } else {
            spool.delete_settled()?;
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

    fn epoch_path(&self) -> PathBuf {
        self.dir.join("epoch.json")
    }

    /// Reads `epoch.json`, or makes the spool's first epoch when there is none (a new spool, or
    /// one of an earlier version) or it is damaged.
    fn open_epoch(&self) -> Result<(), SpoolError> {
        let path = self.epoch_path();
        let problem = match fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<EpochFile>(&b) {
                Ok(f) => {
                    self.epoch.store(f.epoch, Ordering::Release);
                    return Ok(());
                }
                Err(e) => Some(e.to_string()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let epoch = self.save_epoch(None)?;
        match problem {
            Some(problem) => {
                warn!(path = %path.display(), problem, epoch, "damaged epoch file; batches go on in a new epoch");
            }
            None => info!(epoch, "spool epoch created"),
        }
        Ok(())
    }

    /// Makes an epoch other than `not`, saves it (atomically, fsynced) and makes it the spool's.
    fn save_epoch(&self, not: Option<u64>) -> Result<u64, SpoolError> {
        let epoch = fresh_epoch(not);
        let path = self.epoch_path();
        let bytes = serde_json::to_vec(&EpochFile { epoch }).unwrap_or_default();
        write_atomic(&path, &bytes).map_err(io_err(&path))?;
        self.epoch.store(epoch, Ordering::Release);
        Ok(epoch)
    }

    /// The epoch batches are numbered in now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Starts a new epoch (saved before it is returned): what ingest's 409 `seq_regressed`
    /// asks for. Pending batches of earlier epochs are sent under it ([`Spool::read_encoded`]).
    pub fn new_epoch(&self) -> Result<u64, SpoolError> {
        let old = self.epoch();
        let epoch = self.save_epoch(Some(old))?;
        info!(old, epoch, "spool started a new epoch");
        Ok(epoch)
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

    /// Checks one segment at open and adds its pending batches to the index, and its
    /// acknowledged ones to `settled` (for the replay of counters).
    fn load_segment(&self, id: u64, settled: &mut BTreeMap<u64, Loc>) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        let mut bytes = fs::read(&path).map_err(io_err(&path))?;
        if bytes.len() < SEGMENT_HEADER as usize && segment_header().starts_with(&bytes) {
            // Created but its header never made it to disk: nothing was ever appended to it.
            fs::remove_file(&path).map_err(io_err(&path))?;
            return Ok(());
        }
        let mut version = VERSION;
        let header_problem = if bytes.len() < SEGMENT_HEADER as usize || &bytes[..8] != MAGIC {
            Some("bad magic at byte 0".to_owned())
        } else {
            version = u16::from_le_bytes([bytes[8], bytes[9]]);
            (!VERSIONS.contains(&version))
                .then(|| format!("unsupported version {version} at byte 8"))
        };
        if let Some(problem) = header_problem {
            warn!(path = %path.display(), problem, "segment quarantined whole");
            // Its batches may have been sent already: their numbers must not be used again
            // (ingest would drop the new batches as duplicates). Records whose CRC holds say
            // which numbers they had.
            let seen = VERSIONS
                .into_iter()
                .filter_map(|v| {
                    let mut at = usize::try_from(SEGMENT_HEADER).ok()?;
                    let mut max = None;
                    while let Some(next) = resync(&bytes, at, v) {
                        let head = check_record(&bytes[next..], v).ok()?;
                        max = max.max(Some(head.seq));
                        at = next + head.len;
                    }
                    max
                })
                .max();
            if let Some(seq) = seen {
                let mut index = lock(&self.index);
                index.quarantined_seq = index.quarantined_seq.max(Some(seq));
            }
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
            match check_record(&bytes[at..], version) {
                Ok(head) => {
                    records.push((head.seq, at as u64, head.len as u64));
                    at += head.len;
                }
                Err((_, reason)) => match resync(&bytes, at + 1, version) {
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
        let max_seq = records.iter().map(|r| r.0).max();
        for (seq, offset, len) in records {
            let loc = Loc {
                segment: id,
                offset,
                len,
            };
            // A seq seen before (an interrupted migration) keeps its first record.
            if acked.contains(&seq) || index.queue.contains_key(&seq) {
                settled.entry(seq).or_insert(loc);
                continue;
            }
            index.queue.insert(seq, loc);
            live += 1;
        }
        // A segment with nothing pending stays until `open` has replayed it and saved the
        // state (`delete_settled`).
        let n = bytes.len() as u64;
        index.bytes += n;
        index.segments.insert(
            id,
            Segment {
                bytes: n,
                version,
                live,
                max_seq,
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
                version: VERSION,
                live: 0,
                max_seq: None,
                ack: None,
            },
        );
        Ok(Writer {
            segment: id,
            file,
            len: SEGMENT_HEADER,
        })
    }

    /// Durably stores a batch (returns after fsync), encoded as [`EncodedBatch::new`] does.
    /// Appends regardless of the bound: callers that must respect it ask
    /// [`Spool::has_room`] first.
    pub fn append(&self, batch: &Batch) -> Result<(), SpoolError> {
        self.append_encoded(&EncodedBatch::new(
            &batch.gateway,
            batch.epoch,
            batch.seq,
            batch.version,
            &batch.readings,
        )?)
    }

    /// Durably stores an encoded batch (returns after fsync), like [`Spool::append`].
    pub fn append_encoded(&self, batch: &EncodedBatch) -> Result<(), SpoolError> {
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
            s.max_seq = s.max_seq.max(Some(batch.seq));
        }
        Ok(())
    }

    /// Whether a segment may go: none of its batches is pending, the state snapshot covers
    /// all of its records, and appends do not go to it (a spool that keeps up with ingest then
    /// appends to one file rather than creating and fsyncing one per batch; the active
    /// segment goes when it is full or at the next open).
    fn deletable(index: &Index, id: u64) -> bool {
        index.active != Some(id)
            && index
                .segments
                .get(&id)
                .is_some_and(|s| s.live == 0 && s.max_seq.is_none_or(|m| m < index.state_covers))
    }

    /// Deletes a segment if it may go (see [`Spool::deletable`]).
    fn delete_locked(&self, index: &mut Index, id: u64) -> Result<(), SpoolError> {
        if !Self::deletable(index, id) {
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

    /// Whether a settled segment waits for a state snapshot before it can be deleted: the
    /// normalizer then calls [`Spool::save_state`] with its committed state.
    pub fn state_due(&self) -> bool {
        let index = lock(&self.index);
        index.segments.iter().any(|(&id, s)| {
            index.active != Some(id)
                && s.live == 0
                && s.max_seq.is_some_and(|m| m >= index.state_covers)
        })
    }

    /// Saves the state snapshot (atomically, fsynced) and deletes the settled segments it now
    /// covers. `state` must be the state after every batch appended so far.
    pub fn save_state(&self, state: &SpoolState) -> Result<(), SpoolError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        write_atomic(&path, &bytes).map_err(io_err(&path))?;
        {
            let mut index = lock(&self.index);
            index.state_covers = index.state_covers.max(state.next_seq);
        }
        self.delete_settled()
    }

    /// Deletes every segment that may go.
    fn delete_settled(&self) -> Result<(), SpoolError> {
        let mut index = lock(&self.index);
        let ids: Vec<u64> = index.segments.keys().copied().collect();
        for id in ids {
            self.delete_locked(&mut index, id)?;
        }
        Ok(())
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

    fn segment_version(&self, segment: u64) -> u16 {
        lock(&self.index)
            .segments
            .get(&segment)
            .map_or(VERSION, |s| s.version)
    }

    /// The batch of the record at `loc`, checked.
    fn read_at(&self, loc: Loc) -> Result<Batch, SpoolError> {
        let bytes = self.read_record(loc)?;
        let version = self.segment_version(loc.segment);
        decode_record(&self.segment_path(loc.segment), loc.offset, &bytes, version)
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
        self.read_at(self.locate(seq)?)
    }

    /// A pending batch for sending, under the spool's current epoch: as stored when it is of
    /// that epoch (its payload is the request body; only the record's CRC and header are
    /// checked), else decoded and encoded again with the current epoch (see the module doc).
    pub fn read_encoded(&self, seq: u64) -> Result<EncodedBatch, SpoolError> {
        let stored = self.read_stored(seq)?;
        let epoch = self.epoch();
        if stored.epoch == Some(epoch) {
            return Ok(stored);
        }
        let batch = self.read(seq)?;
        let again = EncodedBatch::new(
            &batch.gateway,
            Some(epoch),
            batch.seq,
            batch.version,
            &batch.readings,
        )?;
        lock(&self.index).stats.reencoded += 1;
        Ok(again)
    }

    /// A pending batch as stored: its payload is the request body. Only the record's CRC and
    /// header are checked; a version 2 (JSON) payload is parsed as well, to check it against
    /// the header and count its readings.
    pub fn read_stored(&self, seq: u64) -> Result<EncodedBatch, SpoolError> {
        let loc = self.locate(seq)?;
        let mut bytes = self.read_record(loc)?;
        let path = self.segment_path(loc.segment);
        let version = self.segment_version(loc.segment);
        let head = check_record(&bytes, version).map_err(|(at, reason)| SpoolError::Corrupt {
            path: path.clone(),
            offset: loc.offset + at as u64,
            reason,
        })?;
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: path.clone(),
            offset: loc.offset + RECORD_HEADER as u64,
            reason,
        };
        let gateway = std::str::from_utf8(head.gateway)
            .ok()
            .and_then(|g| GatewayId::parse(g).ok())
            .ok_or_else(|| corrupt("the gateway id is not one".into()))?;
        let (seq, epoch, encoding, payload_len) =
            (head.seq, head.epoch, head.encoding, head.payload.len());
        let readings = match head.readings {
            Some(n) => n,
            None => {
                let batch = decode_record(&path, loc.offset, &bytes, version)?;
                u32::try_from(batch.readings.len()).unwrap_or(u32::MAX)
            }
        };
        // The payload is the record's tail: keep the buffer, drop the header in front.
        bytes.drain(..bytes.len() - payload_len);
        Ok(EncodedBatch {
            gateway,
            epoch,
            seq,
            encoding,
            readings,
            payload: bytes,
        })
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
