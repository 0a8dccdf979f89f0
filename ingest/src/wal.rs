//! The write-ahead log: every accepted batch is here, fsynced, before its 2xx.
//!
//! # Format (version 3)
//!
//! The log is a directory of segments `wal-<id, 20 digits>.log`, appended in id order. Each
//! segment starts with the 8-byte magic `JNWAL\0\0` followed by the version byte (`\x03`),
//! then records:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | payload length n, little-endian |
//! | 4 | CRC-32 (IEEE) of the payload, little-endian |
//! | n | payload: one batch, binary (below) |
//!
//! The payload (integers little-endian; `str` is a u32 byte length and UTF-8 bytes):
//!
//! | field | encoding |
//! |---|---|
//! | wire version | u16 |
//! | gateway | str |
//! | epoch | u8: 0 none, 1 present; then the epoch as u64 if present |
//! | seq | u64 |
//! | string table | u32 count, then that many `str` |
//! | rows | u32 count, then per row: |
//! | — ts | i64, UTC ms |
//! | — account, meter, category, item, quantity, unit, quality | u32 each: index into the string table (codes and names as in the wire JSON: `110108A001`, `01`, `01A10`, `energy_import`, `kWh`, `good`) |
//! | — value | f64 |
//! | — present | u8: bit 0 delta, bit 1 kgce, bit 2 kgco2e, bit 3 factor |
//! | — delta, kgce, kgco2e | f64 each, only those present |
//! | — factor | u32 string index, if present |
//!
//! Every string of a record (accounts, meters, factor ids and the enum names) is written once
//! in its table, so a row is ~50 bytes and encoding it copies numbers instead of formatting
//! JSON: WAL records as JSON took a quarter of the server's time under load.
//!
//! Version 2 payloads are the same without the epoch field (their batches have none); version 1
//! segments (payload: the batch as wire JSON, `reading_model::Batch`). Both, written before an
//! upgrade, are still replayed as they are; new segments are always version 3. A segment of
//! an unknown (newer) version stops the server instead of being skipped, so that a downgrade
//! never drops acknowledged batches.
//!
//! Replay reads segments in order and stops a segment at the first record that is short or
//! fails its CRC: that is a torn write from a crash, which was never acknowledged, so the
//! segment is cut there (truncated) and the server starts. So a write that fails while the
//! server runs (a full disk, an I/O error) must not leave its partial record in the segment
//! for the next record to follow: every record after it would be cut at the next replay.
//! [`Wal::append`] cuts the segment back to its last whole record on any error, and where even
//! that fails, the next append starts a new segment first. A segment is deleted once the rows
//! of all its records are published as Parquet (see `store`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

/// The magic without its last byte, the version.
const MAGIC_PREFIX: &[u8; 7] = b"JNWAL\0\0";
const VERSION: u8 = 3;
/// Records without the epoch field.
const VERSION_NO_EPOCH: u8 = 2;
const MAGIC: &[u8; 8] = b"JNWAL\0\0\x03";
const MAGIC_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "wal {path}: segment version {version}, this server reads versions 1 to 3 (was it written by a newer jieneng?)"
    )]
    Version { path: PathBuf, version: u8 },
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
    /// A failed append could not be cut back: the segment may end in a partial record.
    torn: bool,
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

/// The record's string table while encoding: each distinct string once.
#[derive(Default)]
struct Strings<'a> {
    index: HashMap<&'a str, u32>,
    table: Vec<&'a str>,
}

impl<'a> Strings<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        *self.index.entry(s).or_insert_with(|| {
            self.table.push(s);
            (self.table.len() - 1) as u32
        })
    }
}

/// A field's index with the previous row's kept: neighbouring rows mostly share account,
/// category, unit and factor, so most rows skip the hash lookup.
struct Last<'a>(Option<(&'a str, u32)>);

impl<'a> Last<'a> {
    fn id(&mut self, strings: &mut Strings<'a>, s: &'a str) -> u32 {
        match self.0 {
            Some((last, id)) if std::ptr::eq(last, s) || last == s => id,
            _ => {
                let id = strings.id(s);
                self.0 = Some((s, id));
                id
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends `batch` as one version-3 record (length, CRC, payload) to `out`; returns where its
/// payload lies in `out` (what the store digests to recognise a retry).
pub fn encode_record(batch: &Batch, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    let start = out.len();
    out.extend_from_slice(&[0; 8]); // length and CRC, filled in below
    let mut strings = Strings::default();
    let mut last: [Last; 7] = std::array::from_fn(|_| Last(None));
    let mut factor_last = Last(None);
    // Rows first into their own buffer: the string table precedes them but is known only after.
    let mut rows = Vec::with_capacity(batch.readings.len() * 64);
    for r in &batch.readings {
        rows.extend_from_slice(&r.ts.to_le_bytes());
        let fields = [
            r.account.as_str(),
            r.meter.as_str(),
            r.category.code(),
            r.item.as_str(),
            r.quantity.name(),
            r.unit.symbol(),
            r.quality.name(),
        ];
        for (s, last) in fields.into_iter().zip(last.iter_mut()) {
            rows.extend_from_slice(&last.id(&mut strings, s).to_le_bytes());
        }
        rows.extend_from_slice(&r.value.to_le_bytes());
        let present = u8::from(r.delta.is_some())
            | u8::from(r.kgce.is_some()) << 1
            | u8::from(r.kgco2e.is_some()) << 2
            | u8::from(r.factor.is_some()) << 3;
        rows.push(present);
        for v in [r.delta, r.kgce, r.kgco2e].into_iter().flatten() {
            rows.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(f) = &r.factor {
            rows.extend_from_slice(&factor_last.id(&mut strings, f).to_le_bytes());
        }
    }
    out.extend_from_slice(&batch.version.to_le_bytes());
    put_str(out, batch.gateway.as_str());
    match batch.epoch {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    out.extend_from_slice(&batch.seq.to_le_bytes());
    out.extend_from_slice(&(strings.table.len() as u32).to_le_bytes());
    for s in &strings.table {
        put_str(out, s);
    }
    out.extend_from_slice(&(batch.readings.len() as u32).to_le_bytes());
    out.extend_from_slice(&rows);
    let payload = &out[start + 8..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    start + 8..out.len()
}

/// A cursor over a payload; `None` when it runs short.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// A string-table entry parsed as one field's type, at most once per record.
struct Parsed<'a, T> {
    table: &'a [&'a str],
    cache: Vec<Option<T>>,
    parse: fn(&str) -> Option<T>,
}

impl<'a, T: Clone> Parsed<'a, T> {
    fn new(table: &'a [&'a str], parse: fn(&str) -> Option<T>) -> Self {
        Self {
            table,
            cache: vec![None; table.len()],
            parse,
        }
    }
    fn get(&mut self, id: u32) -> Option<T> {
        let slot = self.cache.get_mut(id as usize)?;
        if slot.is_none() {
            *slot = Some((self.parse)(self.table[id as usize])?);
        }
        slot.clone()
    }
}

/// Decodes a version-3 payload; `None` if it is not a well-formed batch.
pub fn decode_record(payload: &[u8]) -> Option<Batch> {
    decode_payload(payload, true)
}

/// Decodes a version-2 (`with_epoch` false) or version-3 payload.
fn decode_payload(payload: &[u8], with_epoch: bool) -> Option<Batch> {
    let mut c = Cursor(payload);
    let version = c.u16()?;
    let gateway = GatewayId::parse(c.str()?).ok()?;
    let epoch = if with_epoch {
        match c.u8()? {
            0 => None,
            1 => Some(c.u64()?),
            _ => return None,
        }
    } else {
        None
    };
    let seq = c.u64()?;
    let n = c.u32()? as usize;
    // Each entry takes at least its 4-byte length: a count beyond that is corrupt.
    if n > c.0.len() / 4 {
        return None;
    }
    let table: Vec<&str> = (0..n).map(|_| c.str()).collect::<Option<_>>()?;
    let mut account = Parsed::new(&table, |s| AccountCode::parse(s).ok());
    let mut meter = Parsed::new(&table, |s| MeterId::parse(s).ok());
    let mut category = Parsed::new(&table, |s| Category::parse(s).ok());
    let mut item = Parsed::new(&table, |s| EnergyCode::parse(s).ok());
    let mut quantity = Parsed::new(&table, |s| Quantity::parse(s).ok());
    let mut unit = Parsed::new(&table, |s| Unit::parse(s).ok());
    let mut quality = Parsed::new(&table, |s| Quality::parse(s).ok());
    let mut factor = Parsed::new(&table, |s| Some(s.to_owned()));
    let rows = c.u32()? as usize;
    // A row is at least 8 + 7·4 + 8 + 1 bytes.
    if rows > c.0.len() / 45 {
        return None;
    }
    let mut readings = Vec::with_capacity(rows);
    for _ in 0..rows {
        let ts = c.i64()?;
        let account = account.get(c.u32()?)?;
        let meter = meter.get(c.u32()?)?;
        let category = category.get(c.u32()?)?;
        let item = item.get(c.u32()?)?;
        let quantity = quantity.get(c.u32()?)?;
        let unit = unit.get(c.u32()?)?;
        let quality = quality.get(c.u32()?)?;
        let value = c.f64()?;
        let present = c.u8()?;
        let mut opt = |bit: u8| -> Option<Option<f64>> {
            if present & bit != 0 {
                c.f64().map(Some)
            } else {
                Some(None)
            }
        };
        let (delta, kgce, kgco2e) = (opt(1)?, opt(2)?, opt(4)?);
        let factor = if present & 8 != 0 {
            Some(factor.get(c.u32()?)?)
        } else {
            None
        };
        readings.push(Reading {
            ts,
            account,
            meter,
            category,
            item,
            quantity,
            unit,
            value,
            delta,
            kgce,
            kgco2e,
            factor,
            quality,
        });
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(Batch {
        version,
        gateway,
        epoch,
        seq,
        readings,
    })
}

/// Reads one segment; returns its batches, the length of its valid prefix and its length.
fn read_segment(path: &Path) -> Result<(Vec<Batch>, u64, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    let total = bytes.len() as u64;
    if bytes.len() < MAGIC_LEN || &bytes[..MAGIC_PREFIX.len()] != MAGIC_PREFIX {
        // A segment whose header never reached the disk holds nothing acknowledged.
        return Ok((vec![], 0, total));
    }
    let version = bytes[MAGIC_PREFIX.len()];
    let decode: fn(&[u8]) -> Option<Batch> = match version {
        1 => |payload| serde_json::from_slice::<Batch>(payload).ok(),
        VERSION_NO_EPOCH => |payload| decode_payload(payload, false),
        VERSION => decode_record,
        _ => {
            return Err(WalError::Version {
                path: path.to_path_buf(),
                version,
            });
        }
    };
    let mut pos = MAGIC_LEN;
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
        match decode(payload) {
            Some(b) => batches.push(b),
            None => break,
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
                f.set_len(valid.max(MAGIC_LEN as u64).min(total))
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
        let mut file = match OpenOptions::new().create_new(true).append(true).open(&path) {
            // An earlier attempt that failed before its first record (a full disk while
            // writing the magic) left the file: it holds no record, so it is reused. Without
            // this, every later rotation would fail and no flush could ever close a segment.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && fs::metadata(&path).is_ok_and(|m| m.len() <= MAGIC_LEN as u64) =>
            {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(0).map_err(io_err(&path))?;
                f
            }
            other => other.map_err(io_err(&path))?,
        };
        file.write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment: id,
            file,
            bytes: MAGIC_LEN as u64,
            torn: false,
        })
    }

    /// Appends encoded records and fsyncs: when this returns, they are durable. On an error
    /// nothing of `records` stays in the segment (or, if it cannot be cut back, the next append
    /// goes to a new segment), so a later append is never hidden behind a torn record.
    pub fn append(&mut self, records: &[u8]) -> Result<(), WalError> {
        if self.torn {
            self.rotate()?;
        }
        let path = segment_path(&self.dir, self.segment);
        let written = self
            .file
            .write_all(records)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cutting back frees blocks, so it works on a full disk; the fsync after it makes
            // the cut durable before anything else is appended.
            let cut = self
                .file
                .set_len(self.bytes)
                .and_then(|()| self.file.sync_data());
            if cut.is_err() {
                self.torn = true;
            }
            return Err(io_err(&path)(e));
        }
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
    use reading_model::{Category, EnergyCode, GatewayId, Quality, Quantity, Reading, Unit};

    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch::new(GatewayId::parse("gw").unwrap(), seq, vec![])
    }

    /// A lighting reading with every optional field set.
    fn reading(meter: &str, ts: i64) -> Reading {
        let mut r = test_support::ReadingBuilder::new(meter, ts)
            .item("01A10")
            .value(1234.56)
            .delta(Some(0.25))
            .kgce(Some(0.25 * 0.1229))
            .kgco2e(Some(0.25 * 0.5366))
            .build();
        r.factor = Some("mee-nbs-2023/grid/华北".to_owned());
        r
    }

    #[test]
    fn a_record_gives_back_every_field_of_every_reading() {
        let mut readings = vec![reading("m1", 1_767_225_600_000), reading("m2", -5)];
        // Optional fields absent, other enums: each row decodes on its own.
        readings.push(Reading {
            quantity: Quantity::PowerActive,
            unit: Unit::Kilowatt,
            delta: None,
            kgce: None,
            kgco2e: Some(-0.0),
            factor: None,
            quality: Quality::Estimated,
            value: f64::MIN_POSITIVE,
            ..reading("m1", 7)
        });
        readings.push(Reading {
            category: Category::Water,
            item: EnergyCode::parse("02000").unwrap(),
            quantity: Quantity::Volume,
            unit: Unit::CubicMetre,
            factor: Some("another".to_owned()),
            ..reading("m3", 8)
        });
        let b = Batch::new(GatewayId::parse("gw-7").unwrap(), u64::MAX, readings);
        let mut buf = Vec::new();
        encode_record(&b, &mut buf);
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 8);
        assert_eq!(
            u32::from_le_bytes(buf[4..8].try_into().unwrap()),
            crc32fast::hash(&buf[8..])
        );
        assert_eq!(decode_record(&buf[8..]), Some(b));
        // A payload cut anywhere is refused, never half a batch.
        for cut in 0..buf.len() - 8 {
            assert_eq!(decode_record(&buf[8..8 + cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn version_1_segments_from_before_an_upgrade_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let old = Batch::new(
            GatewayId::parse("gw").unwrap(),
            4,
            vec![reading("m1", 1_767_225_600_000)],
        );
        // A version-1 segment as the previous release wrote it: JSON payloads.
        let mut bytes = b"JNWAL\0\0\x01".to_vec();
        let payload = serde_json::to_vec(&old).unwrap();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&[9, 0, 0]); // and a torn tail
        fs::write(segment_path(dir.path(), 3), &bytes).unwrap();
        let (mut wal, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(r.batches, vec![old.clone()]);
        assert_eq!(r.truncated.len(), 1);
        // New records go to a version-3 segment after it, and both replay in order.
        assert_eq!(wal.segment(), 4);
        let mut buf = Vec::new();
        encode_record(&batch(5), &mut buf);
        wal.append(&buf).unwrap();
        drop(wal);
        assert_eq!(
            &fs::read(segment_path(dir.path(), 4)).unwrap()[..8],
            b"JNWAL\0\0\x03"
        );
        let (_, r) = Wal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = r.batches.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }

    #[test]
    fn the_epoch_is_kept_and_version_2_segments_replay_without_one() {
        let b = Batch::new(
            GatewayId::parse("gw-7").unwrap(),
            3,
            vec![reading("m1", 1_767_225_600_000)],
        );
        let mut buf = Vec::new();
        let with = b.clone().with_epoch(Some(u64::MAX));
        let payload = encode_record(&with, &mut buf);
        assert_eq!(payload, 8..buf.len());
        assert_eq!(decode_record(&buf[8..]), Some(with));
        // A version-2 record as the previous release wrote it: the same without the epoch byte.
        let mut v3 = Vec::new();
        encode_record(&b, &mut v3);
        let mut payload = v3[8..].to_vec();
        let at = 2 + 4 + "gw-7".len();
        assert_eq!(payload.remove(at), 0, "no epoch");
        let mut seg = b"JNWAL\0\0\x02".to_vec();
        seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        seg.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 0), &seg).unwrap();
        let (_, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(r.batches, vec![b]);
        assert!(r.truncated.is_empty());
    }

    #[test]
    fn a_segment_of_an_unknown_version_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 0), b"JNWAL\0\0\x09rest").unwrap();
        let e = Wal::open(dir.path()).unwrap_err();
        assert!(matches!(e, WalError::Version { version: 9, .. }), "{e}");
        // And the segment is left as it was.
        assert_eq!(
            fs::read(segment_path(dir.path(), 0)).unwrap(),
            b"JNWAL\0\0\x09rest"
        );
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
