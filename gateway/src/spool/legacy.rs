//! Version 1 of the spool: one file per batch, `<seq, 20 digits>.batch`, read only to migrate a
//! spool left by an earlier gateway.
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `JNSPOOL\0` |
//! | 2 | format version, little-endian (1) |
//! | 4 | CRC-32 (IEEE) of the payload, little-endian |
//! | 4 | payload length, little-endian |
//! | n | payload: the batch as wire JSON (`reading_model::Batch`) |

use std::path::Path;

use reading_model::Batch;

use super::SpoolError;

const MAGIC: &[u8; 8] = b"JNSPOOL\0";
const VERSION: u16 = 1;
const HEADER: usize = 8 + 2 + 4 + 4;

/// Decodes a version 1 batch file.
pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Batch, SpoolError> {
    let corrupt = |offset: usize, reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
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

/// Encodes a batch as a version 1 file, as the earlier gateway wrote it (tests build old
/// spools with it).
#[cfg(test)]
pub(super) fn encode(batch: &Batch) -> Vec<u8> {
    let payload = serde_json::to_vec(batch).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}
