//! The Arrow IPC stream encoding of a batch, wire format v1
//! (`Content-Type: application/vnd.apache.arrow.stream`): the [`wire`] crate holds the
//! contract (its crate doc), the schema and the column reading; this module adds what a
//! server needs in front of it for bytes from outside.
//!
//! Before arrow-rs sees the bytes, [`check_framing`] walks the messages: every length must lie
//! inside the body, so no length field can make the reader allocate more than was sent, and
//! the uncompressed sizes that IPC-compressed buffers declare are summed and capped like a
//! compressed request body (LZ4_FRAME is refused: its size is unbounded until decompressed).
//! Then the batch's gateway must be the token's, and a panic inside arrow-rs on some corner of
//! the format costs only its request.

use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::ipc::{CompressionType, MessageHeader, root_as_message};
use reading_model::{Batch, GatewayId, WIRE_VERSION};
/// The reference encoder, for tests, benchmarks and forwarders.
pub use wire::encode_reference as encode;
pub use wire::{META_GATEWAY, META_SEQ, META_VERSION};

use super::{DecodeError, check_envelope};

const CONTINUATION: u32 = 0xFFFF_FFFF;

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

/// Decodes an Arrow IPC stream batch sent with `token_gateway`'s token; IPC-compressed buffers
/// may declare at most `max_decoded` uncompressed bytes in all.
pub fn decode(
    bytes: &[u8],
    token_gateway: &GatewayId,
    max_decoded: usize,
) -> Result<Batch, DecodeError> {
    check_framing(bytes, max_decoded)?;
    // The framing is sound; a panic inside arrow-rs on some other corner of the format must
    // still cost only this request.
    catch_unwind(AssertUnwindSafe(|| read(bytes, token_gateway))).unwrap_or_else(|_| {
        Err(malformed(
            "Arrow IPC stream: the reader failed on this input (please report it)",
        ))
    })
}

/// Walks the stream's messages without decoding them: every metadata and body length lies
/// inside `bytes`, only ZSTD body compression is used, and compressed buffers declare at most
/// `max_decoded` uncompressed bytes in all.
pub fn check_framing(bytes: &[u8], max_decoded: usize) -> Result<(), DecodeError> {
    let word = |pos: usize| -> Result<u32, DecodeError> {
        bytes
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| malformed(format!("Arrow IPC stream: truncated at byte {pos}")))
    };
    if bytes.is_empty() {
        return Err(malformed("Arrow IPC stream: empty body"));
    }
    let mut pos = 0usize;
    let mut declared: u64 = 0;
    while pos < bytes.len() {
        let start = pos;
        let mut len = word(pos)?;
        pos += 4;
        if len == CONTINUATION {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            if pos != bytes.len() {
                return Err(malformed(format!(
                    "Arrow IPC stream: {} bytes after the end-of-stream marker at byte {start}",
                    bytes.len() - pos
                )));
            }
            return Ok(());
        }
        let len = i32::from_le_bytes(len.to_le_bytes());
        let left = bytes.len() - pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                malformed(format!(
                    "Arrow IPC stream: the message at byte {start} declares {len} metadata bytes, {left} remain"
                ))
            })?;
        let message = root_as_message(&bytes[pos..pos + len]).map_err(|e| {
            malformed(format!(
                "Arrow IPC stream: the message at byte {start} is not an Arrow message: {e}"
            ))
        })?;
        pos += len;
        let left = bytes.len() - pos;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                malformed(format!(
                    "Arrow IPC stream: the message at byte {start} declares a {} byte body, {left} remain",
                    message.bodyLength()
                ))
            })?;
        let body = &bytes[pos..pos + body_len];
        pos += body_len;
        let batch = match message.header_type() {
            MessageHeader::Schema => None,
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => {
                message.header_as_dictionary_batch().and_then(|d| d.data())
            }
            other => {
                return Err(malformed(format!(
                    "Arrow IPC stream: unexpected {other:?} message at byte {start}"
                )));
            }
        };
        let Some(compression) = batch.and_then(|b| b.compression()) else {
            continue;
        };
        if compression.codec() != CompressionType::ZSTD {
            return Err(malformed(format!(
                "Arrow IPC stream: {:?} body compression is not accepted (its size is unbounded until decompressed); use ZSTD",
                compression.codec()
            )));
        }
        for buffer in batch.and_then(|b| b.buffers()).into_iter().flatten() {
            let range = usize::try_from(buffer.offset()).ok().and_then(|o| {
                let l = usize::try_from(buffer.length()).ok()?;
                (o.checked_add(l)? <= body.len()).then_some(o..o + l)
            });
            let Some(range) = range else {
                return Err(malformed(format!(
                    "Arrow IPC stream: a buffer of the message at byte {start} lies outside its body"
                )));
            };
            // Each compressed buffer starts with its uncompressed length, i64 LE (-1: stored).
            if let Some(prefix) = body[range].get(..8) {
                let n = i64::from_le_bytes(prefix.try_into().unwrap_or_default());
                declared = declared.saturating_add(u64::try_from(n).unwrap_or(0));
                if declared > max_decoded as u64 {
                    return Err(DecodeError::TooLarge {
                        what: "the uncompressed size of the Arrow stream's buffers",
                        limit: max_decoded,
                    });
                }
            }
        }
    }
    Err(malformed(
        "Arrow IPC stream: no end-of-stream marker; the body was cut short or the writer not closed",
    ))
}

fn read(bytes: &[u8], token_gateway: &GatewayId) -> Result<Batch, DecodeError> {
    let reader = wire::BatchReader::new(bytes)?;
    let gateway = reader.gateway()?;
    let version = reader.version()?.unwrap_or(WIRE_VERSION);
    check_envelope(token_gateway, &gateway, version)?;
    let epoch = reader.epoch()?;
    let seq = reader.seq()?;
    reader.check_schema()?;
    Ok(Batch {
        version,
        gateway,
        epoch,
        seq,
        readings: reader.readings()?,
    })
}

#[cfg(test)]
mod tests;
