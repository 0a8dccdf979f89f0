//! The HTTP API: `POST /api/v1/batches` for gateways, `/healthz`, `/metrics`.
//!
//! A batch is JSON or an Arrow IPC stream, optionally zstd- or gzip-coded ([`crate::decode`]
//! documents the wire format). Answers: 200 once the WAL is fsynced (`duplicate: true` for a
//! retry of a stored (gateway, seq)); errors are JSON `{"error", "reason"}` (plus `row` and
//! `field` for a bad reading): 400 `malformed`, 401 `unauthenticated`, 403 `wrong_gateway`,
//! 413 `too_large`, 415 `unsupported_media_type`, 422 `invalid`, 503 `storage` (retry). Every
//! reject is counted by reason in `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_contract::{JsonError, Rejects, bearer, token_hash};
use reading_model::GatewayId;
use serde_json::json;

use crate::decode::{self, DECOMPRESSION_FACTOR, DecodeError, Encoding, Format};
use crate::store::{Appended, Store};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    /// sha256(token) → gateway.
    pub tokens: HashMap<String, GatewayId>,
    /// Refusals by reason; shared with the read API's router when the binary merges them.
    pub rejects: Arc<Rejects>,
    /// TLS handshakes that failed (shared with the TLS listener).
    pub tls_handshake_failures: Arc<AtomicU64>,
    /// Batches taken off the embedded MQTT broker.
    pub mqtt_batches: AtomicU64,
}

/// A refused batch: the JSON error every jieneng API answers with.
pub type ApiError = JsonError;

impl App {
    /// Counts a refused batch under `reason` (HTTP or MQTT alike).
    pub(crate) fn count_reject(&self, reason: &'static str, message: String) -> String {
        self.rejects.count(reason);
        tracing::debug!(reason, %message, "batch rejected");
        message
    }

    fn reject(&self, status: StatusCode, reason: &'static str, message: String) -> ApiError {
        let message = self.count_reject(reason, message);
        JsonError::new(status, reason, message)
    }

    fn decode_error(&self, e: DecodeError) -> ApiError {
        let (status, reason) = status_of(&e);
        let at = match &e {
            DecodeError::Invalid { row, field, .. } => Some((*row, field.clone())),
            _ => None,
        };
        JsonError {
            at,
            ..self.reject(status, reason, e.to_string())
        }
    }
}

/// Request limits: the body as sent, and whatever is decompressed from it.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body: usize,
    max_decoded: usize,
}

pub fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/api/v1/batches", post(post_batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(Limits {
            max_body,
            max_decoded: max_body.saturating_mul(DECOMPRESSION_FACTOR),
        }))
        .with_state(app)
}

async fn post_batch(
    State(app): State<Arc<App>>,
    Extension(limits): Extension<Limits>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(|| {
        app.reject(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing Authorization: Bearer <gateway token>".into(),
        )
    })?;
    let gateway = app.tokens.get(&token_hash(token)).cloned().ok_or_else(|| {
        app.reject(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "unknown gateway token".into(),
        )
    })?;
    let header_text = |name: header::HeaderName| {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| DecodeError::Unsupported(format!("{name}: not text")))
            })
            .transpose()
    };
    let format = header_text(header::CONTENT_TYPE)
        .and_then(Format::from_content_type)
        .map_err(|e| app.decode_error(e))?;
    let encoding = header_text(header::CONTENT_ENCODING)
        .and_then(Encoding::from_header)
        .map_err(|e| app.decode_error(e))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            app.reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body exceeds max_body_bytes = {} bytes; send smaller batches",
                    limits.max_body
                ),
            )
        } else {
            app.reject(StatusCode::BAD_REQUEST, "malformed", e.body_text())
        }
    })?;
    // Decompressing and decoding megabytes is CPU work: off the async workers.
    let decoded = tokio::task::spawn_blocking(move || {
        decode::decode(&body, format, encoding, &gateway, limits.max_decoded)
    })
    .await
    .map_err(|e| {
        app.reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("decoding failed: {e}"),
        )
    })?;
    let batch = decoded.map_err(|e| app.decode_error(e))?;
    let seq = batch.seq;
    match app.store.append(batch).await {
        Ok(Appended::Stored { rows }) => Ok((
            StatusCode::OK,
            axum::Json(json!({ "seq": seq, "stored": rows, "duplicate": false })),
        )
            .into_response()),
        Ok(Appended::Duplicate) => Ok((
            StatusCode::OK,
            axum::Json(json!({ "seq": seq, "stored": 0, "duplicate": true })),
        )
            .into_response()),
        Err(e) => Err(app.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage",
            format!("not stored, retry: {e}"),
        )),
    }
}

/// The one place where a decoding error becomes a status and a reject reason.
pub(crate) fn status_of(e: &DecodeError) -> (StatusCode, &'static str) {
    match e {
        DecodeError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
        DecodeError::Batch { .. } | DecodeError::Invalid { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        }
        DecodeError::WrongGateway { .. } => (StatusCode::FORBIDDEN, "wrong_gateway"),
        DecodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        DecodeError::Unsupported(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.store.metrics;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, v: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    line(
        "jieneng_batches_total",
        "Batches stored.",
        "counter",
        g(&m.batches).to_string(),
    );
    line(
        "jieneng_batches_duplicate_total",
        "Batches recognised as retries.",
        "counter",
        g(&m.duplicates).to_string(),
    );
    line(
        "jieneng_rows_total",
        "Readings stored.",
        "counter",
        g(&m.rows).to_string(),
    );
    line(
        "jieneng_wal_fsyncs_total",
        "WAL group commits.",
        "counter",
        g(&m.wal_fsyncs).to_string(),
    );
    line(
        "jieneng_wal_bytes_total",
        "Bytes appended to the WAL.",
        "counter",
        g(&m.wal_bytes).to_string(),
    );
    line(
        "jieneng_rows_in_memory",
        "Acknowledged rows not yet in Parquet.",
        "gauge",
        g(&m.rows_in_memory).to_string(),
    );
    line(
        "jieneng_flushes_total",
        "Parquet flushes.",
        "counter",
        g(&m.flushes).to_string(),
    );
    line(
        "jieneng_flush_failures_total",
        "Failed Parquet flushes.",
        "counter",
        g(&m.flush_failures).to_string(),
    );
    line(
        "jieneng_flush_seconds_total",
        "Time spent flushing.",
        "counter",
        format!("{:.6}", g(&m.flush_micros) as f64 / 1e6),
    );
    line(
        "jieneng_files_published_total",
        "Parquet files published.",
        "counter",
        g(&m.files_published).to_string(),
    );
    line(
        "jieneng_mqtt_batches_total",
        "Batches received over MQTT (stored, duplicate or refused).",
        "counter",
        g(&app.mqtt_batches).to_string(),
    );
    line(
        "jieneng_tls_handshake_failures_total",
        "TLS handshakes that failed (untrusted certificate, plain text on the TLS port, timeout).",
        "counter",
        g(&app.tls_handshake_failures).to_string(),
    );
    line(
        "jieneng_flush_last_seconds",
        "Duration of the last flush.",
        "gauge",
        format!("{:.6}", g(&m.flush_last_micros) as f64 / 1e6),
    );
    line(
        "jieneng_wal_size_bytes",
        "Bytes of WAL segments on disk (acknowledged rows not yet in Parquet).",
        "gauge",
        g(&m.wal_size).to_string(),
    );
    line(
        "jieneng_compactions_total",
        "Date partitions compacted.",
        "counter",
        g(&m.compactions).to_string(),
    );
    line(
        "jieneng_compaction_failures_total",
        "Failed compactions.",
        "counter",
        g(&m.compaction_failures).to_string(),
    );
    line(
        "jieneng_compaction_files_total",
        "Files merged away by compaction.",
        "counter",
        g(&m.compaction_files).to_string(),
    );
    line(
        "jieneng_compaction_seconds_total",
        "Time spent compacting.",
        "counter",
        format!("{:.6}", g(&m.compaction_micros) as f64 / 1e6),
    );
    line(
        "jieneng_compaction_last_seconds",
        "Duration of the last compaction.",
        "gauge",
        format!("{:.6}", g(&m.compaction_last_micros) as f64 / 1e6),
    );
    line(
        "jieneng_rollups_total",
        "Dates whose hourly and daily rollups were recomputed.",
        "counter",
        g(&m.rollups).to_string(),
    );
    line(
        "jieneng_maintenance_failures_total",
        "Failed compaction/rollup/retention passes.",
        "counter",
        g(&m.maintenance_failures).to_string(),
    );
    line(
        "jieneng_partitions_expired_total",
        "Date partitions removed by retention.",
        "counter",
        g(&m.partitions_expired).to_string(),
    );
    out.push_str(&app.rejects.prometheus());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
