//! Request bodies of `POST /api/v1/batches` into a [`Batch`]: content types, content codings,
//! bounded decompression, and errors that name the row and field. Pure functions over bytes —
//! no I/O, no clocks — so they are tested with fixtures and property tests.
//!
//! # Wire format, version 1 (a contract: gateways and third-party clients depend on it)
//!
//! A batch is `(gateway, epoch, seq, readings)`; `(gateway, epoch, seq)` identifies it across
//! retries. The `epoch` is optional: a sender that may start its numbering over (the jieneng
//! gateway with a new spool) names each numbering with an epoch of its own choosing, and `seq`
//! only increases within one; without an epoch, `seq` must only increase per gateway, across
//! restarts (the `store` module says what ingest does with each). It travels in one of two
//! encodings, chosen by `Content-Type`:
//!
//! * `application/json` (also assumed when there is no `Content-Type`): the object
//!   `{"version": 1, "gateway": "…", "epoch": E, "seq": N, "readings": [{…}, …]}` of
//!   [`reading_model::Batch`] (`epoch` optional, a u64); unknown fields are rejected.
//! * `application/vnd.apache.arrow.stream`: an [Arrow IPC stream] (the [`wire`] crate documents
//!   the columns) — one schema message, any number of record batches, rows in stream order.
//!   Batch-level fields are schema metadata: `jieneng.gateway` (required), `jieneng.seq`
//!   (required, decimal u64), `jieneng.epoch` (optional, decimal u64) and `jieneng.version`
//!   (decimal, default `1`).
//!
//! Either may be sent with `Content-Encoding: zstd` or `gzip` (or `identity`). An Arrow stream
//! may also compress its buffers with the IPC format's own ZSTD body compression; LZ4_FRAME
//! is refused, because an LZ4 frame cannot be bounded before it is decompressed.
//!
//! **Limits.** The request body is capped at the server's `max_body_bytes`; whatever is
//! decompressed from it — the content coding's output, and the sum of the uncompressed sizes
//! that IPC-compressed buffers declare — is capped at [`DECOMPRESSION_FACTOR`] × that. Past a
//! cap the request is refused (413) without decompressing further.
//!
//! **Errors** map to one HTTP status each (`http.rs`): the body is not a batch at all or breaks
//! the schema → 400 (`malformed`); a reading's value is wrong → 422 (`invalid`) with
//! `readings[ROW].FIELD: …`, ROW counting from 0 across all record batches of a stream; the
//! batch's gateway is not the token's → 403; a limit → 413; an unknown content type or coding
//! → 415.
//!
//! [Arrow IPC stream]: https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use reading_model::reading::ReadingError;
use reading_model::{Batch, GatewayId, WIRE_VERSION};

pub mod ipc;
pub mod json;

/// `Content-Type` of an Arrow IPC stream batch.
pub use wire::ARROW_STREAM;
/// `Content-Type` of a JSON batch.
pub const JSON: &str = "application/json";
/// Decompressed bytes allowed per byte of `max_body_bytes`.
pub const DECOMPRESSION_FACTOR: usize = 8;
/// Largest zstd window accepted (16 MiB), so a frame header cannot make the decoder allocate
/// more; `zstd -19` uses 8 MiB, only `--long` goes further.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// The encoding of a batch, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    ArrowStream,
}

impl Format {
    /// Parameters (`; charset=utf-8`) are ignored; no header means JSON.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value else {
            return Ok(Self::Json);
        };
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(JSON) {
            Ok(Self::Json)
        } else if media.eq_ignore_ascii_case(ARROW_STREAM) {
            Ok(Self::ArrowStream)
        } else {
            Err(DecodeError::Unsupported(format!(
                "Content-Type {}: a batch is {JSON} or {ARROW_STREAM}",
                clip(value)
            )))
        }
    }
}

/// The content coding of a request body, from `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Zstd,
    Gzip,
}

impl Encoding {
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        match value.map(str::trim) {
            None => Ok(Self::Identity),
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("identity") => Ok(Self::Identity),
            Some(v) if v.eq_ignore_ascii_case("zstd") => Ok(Self::Zstd),
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
                Ok(Self::Gzip)
            }
            Some(v) => Err(DecodeError::Unsupported(format!(
                "Content-Encoding {}: accepted are zstd, gzip and identity (one coding)",
                clip(v)
            ))),
        }
    }
}

/// Why a body is not an acceptable batch. `http.rs` maps each variant to one status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a batch in the declared encoding, or it breaks the schema (400).
    #[error("{0}")]
    Malformed(String),
    /// A batch-level field is wrong, e.g. an unsupported version (422).
    #[error("{field}: {message}")]
    Batch {
        field: &'static str,
        message: String,
    },
    /// One reading is wrong (422).
    #[error("{}", row_message(*.row, .field, .message))]
    Invalid {
        row: usize,
        /// The field, or empty when the row as a whole is wrong.
        field: String,
        message: String,
    },
    /// The batch names another gateway than the token's (403).
    #[error("this token belongs to gateway {token}, the batch says {batch}")]
    WrongGateway { token: GatewayId, batch: GatewayId },
    /// Decompressing would exceed `limit` bytes (413).
    #[error(
        "{what} exceeds {limit} bytes ({DECOMPRESSION_FACTOR} × max_body_bytes); send smaller batches"
    )]
    TooLarge { what: &'static str, limit: usize },
    /// A content type or coding this server does not speak (415).
    #[error("{0}")]
    Unsupported(String),
}

fn row_message(row: usize, field: &str, message: &str) -> String {
    if field.is_empty() {
        format!("readings[{row}]: {message}")
    } else {
        format!("readings[{row}].{field}: {message}")
    }
}

impl From<wire::DecodeError> for DecodeError {
    fn from(e: wire::DecodeError) -> Self {
        match e {
            wire::DecodeError::Malformed(message) => Self::Malformed(message),
            wire::DecodeError::Invalid {
                row,
                field,
                message,
            } => Self::Invalid {
                row,
                field,
                message,
            },
        }
    }
}

impl From<ReadingError> for DecodeError {
    fn from(e: ReadingError) -> Self {
        Self::Invalid {
            row: e.row,
            field: e.field.to_owned(),
            message: e.message,
        }
    }
}

/// At most 80 characters of something a client sent, for an error message.
pub(crate) fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(80) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// Decodes and checks a batch sent with `token_gateway`'s token. Whatever is decompressed is
/// capped at `max_decoded` bytes.
pub fn decode(
    body: &[u8],
    format: Format,
    encoding: Encoding,
    token_gateway: &GatewayId,
    max_decoded: usize,
) -> Result<Batch, DecodeError> {
    let bytes = decompress(body, encoding, max_decoded)?;
    let batch = match format {
        Format::Json => json::decode(&bytes, token_gateway)?,
        Format::ArrowStream => ipc::decode(&bytes, token_gateway, max_decoded)?,
    };
    batch.check()?;
    Ok(batch)
}

/// Checks what both encodings share once the envelope is known: the gateway, then the version.
pub(crate) fn check_envelope(
    token_gateway: &GatewayId,
    gateway: &GatewayId,
    version: u16,
) -> Result<(), DecodeError> {
    if gateway != token_gateway {
        return Err(DecodeError::WrongGateway {
            token: token_gateway.clone(),
            batch: gateway.clone(),
        });
    }
    if version != WIRE_VERSION {
        return Err(DecodeError::Batch {
            field: "version",
            message: format!(
                "unsupported batch version {version} (this server speaks {WIRE_VERSION})"
            ),
        });
    }
    Ok(())
}

/// Undoes the content coding, reading at most `cap` bytes of output.
pub fn decompress(
    body: &[u8],
    encoding: Encoding,
    cap: usize,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    match encoding {
        Encoding::Identity => Ok(Cow::Borrowed(body)),
        Encoding::Gzip => read_capped(flate2::read::MultiGzDecoder::new(body), cap, "gzip"),
        Encoding::Zstd => {
            let malformed = |e: std::io::Error| DecodeError::Malformed(format!("zstd body: {e}"));
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(malformed)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(malformed)?;
            read_capped(d, cap, "zstd")
        }
    }
}

fn read_capped(
    r: impl Read,
    cap: usize,
    coding: &'static str,
) -> Result<Cow<'static, [u8]>, DecodeError> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Malformed(format!("{coding} body: {e}")))?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge {
            what: "the decompressed body",
            limit: cap,
        });
    }
    Ok(Cow::Owned(out))
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "JSON",
            Self::ArrowStream => "Arrow IPC stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn content_types_and_codings() {
        assert_eq!(Format::from_content_type(None), Ok(Format::Json));
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(Some("Application/Vnd.Apache.Arrow.Stream")),
            Ok(Format::ArrowStream)
        );
        let e = Format::from_content_type(Some("text/csv")).unwrap_err();
        assert!(e.to_string().contains("text/csv"), "{e}");
        assert_eq!(Encoding::from_header(Some("ZSTD")), Ok(Encoding::Zstd));
        assert_eq!(Encoding::from_header(Some("gzip")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        let e = Encoding::from_header(Some("br")).unwrap_err();
        assert!(matches!(e, DecodeError::Unsupported(_)), "{e}");
    }

    #[test]
    fn decompression_is_capped() {
        let zeros = vec![0u8; 1 << 20];
        let z = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(z.len() < 1024);
        assert_eq!(
            decompress(&z, Encoding::Zstd, 1 << 20).unwrap().len(),
            1 << 20
        );
        let e = decompress(&z, Encoding::Zstd, (1 << 20) - 1).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooLarge {
                what: "the decompressed body",
                limit: (1 << 20) - 1
            }
        );
        assert!(e.to_string().contains("1048575 bytes"), "{e}");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(&gz, Encoding::Gzip, 1 << 20).unwrap().len(),
            1 << 20
        );
        assert!(matches!(
            decompress(&gz, Encoding::Gzip, 1000),
            Err(DecodeError::TooLarge { limit: 1000, .. })
        ));
        assert!(matches!(
            decompress(b"not gzip", Encoding::Gzip, 1000),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decompress(b"not zstd", Encoding::Zstd, 1000),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_zstd_window_larger_than_allowed_is_refused() {
        let data: Vec<u8> = (0..(1u32 << 16)).flat_map(|i| i.to_le_bytes()).collect();
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(27).unwrap();
        enc.write_all(&data).unwrap();
        let z = enc.finish().unwrap();
        // The frame asks for a 128 MiB window: refused before any of it is allocated.
        assert!(matches!(
            decompress(&z, Encoding::Zstd, 1 << 30),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn row_errors_read_like_the_json_path() {
        let e = DecodeError::Invalid {
            row: 17,
            field: "account".into(),
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "readings[17].account: x");
        let e = DecodeError::Invalid {
            row: 2,
            field: String::new(),
            message: "not an object".into(),
        };
        assert_eq!(e.to_string(), "readings[2]: not an object");
    }
}
