//! The HTTP API: `POST /api/v1/batches` for gateways, `/healthz`, `/metrics`.
//!
//! A batch is JSON or an Arrow IPC stream, optionally zstd- or gzip-coded ([`crate::decode`]
//! documents the wire format). Answers: 200 once the WAL is fsynced (`duplicate: true` for a
//! retry of a stored (gateway, epoch, seq)); errors are JSON `{"error", "reason"}` (plus `row`
//! and `field` for a bad reading): 400 `malformed`, 401 `unauthenticated`, 403 `wrong_gateway`,
//! 409 `seq_regressed` (the seq goes back within its epoch and the batch is not a retry of the
//! one stored: start a new epoch and resend), 413 `too_large`, 415 `unsupported_media_type`,
//! 422 `invalid`, 503 `storage` (retry). Every reject is counted by reason in `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_contract::audit::{AuditDetail, AuditLog};
use http_contract::credential::{Credentials, Presented, now_ms};
use http_contract::{JsonError, Rejects, bearer, token_hash};
use reading_model::GatewayId;
use serde_json::json;

use crate::decode::{self, DECOMPRESSION_FACTOR, DecodeError, Encoding, Format};
use crate::store::{Appended, Store, StoreMetrics};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    /// sha256(token) → gateway, replaced whole on a reload. Shared with the broker's login
    /// check, which must not hold the store (rumqttd keeps it until the process ends).
    pub tokens: Arc<Credentials<GatewayId>>,
    /// Bumped by a reload that removes or changes a token: the MQTT relay closes every
    /// connection, since it cannot tell which token each logged in with, and gateways log in
    /// again with what is in force (their unacknowledged batches stay spooled and are resent).
    pub revocations: tokio::sync::watch::Sender<u64>,
    /// Refusals by reason; shared with the read API's router when the binary merges them.
    pub rejects: Arc<Rejects>,
    /// TLS handshakes that failed (shared with the TLS listener).
    pub tls_handshake_failures: Arc<AtomicU64>,
    /// Batches taken off the embedded MQTT broker.
    pub mqtt_batches: AtomicU64,
    /// The audit trail, when the server keeps one (HTTP requests are written by the audit
    /// middleware; MQTT batches by the relay's subscriber).
    pub audit: Option<Arc<AuditLog>>,
}

/// What an audit entry says of a batch: gateway, seq, the distinct accounts and rows.
pub(crate) fn batch_detail(
    batch: &reading_model::Batch,
) -> serde_json::Map<String, serde_json::Value> {
    let accounts: std::collections::BTreeSet<&str> =
        batch.readings.iter().map(|r| r.account.as_str()).collect();
    let mut m = serde_json::Map::new();
    m.insert("gateway".into(), json!(batch.gateway.as_str()));
    m.insert("seq".into(), json!(batch.seq));
    m.insert("accounts".into(), json!(accounts));
    m
}

/// The entry's outcome fields once the store has answered.
pub(crate) fn appended_detail(
    mut m: serde_json::Map<String, serde_json::Value>,
    appended: &Appended,
) -> serde_json::Map<String, serde_json::Value> {
    let (rows, duplicate) = match appended {
        Appended::Stored { rows } => (*rows, false),
        Appended::Duplicate | Appended::Regressed { .. } => (0, true),
    };
    m.insert("rows".into(), json!(rows));
    m.insert("duplicate".into(), json!(duplicate));
    m
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
    let gateway = match app.tokens.present(&token_hash(token), now_ms()) {
        Presented::Valid(gateway) => gateway,
        Presented::Expired { expired_ms } => {
            return Err(app.reject(
                StatusCode::UNAUTHORIZED,
                "expired",
                format!(
                    "gateway token expired at {}",
                    reading_model::time::rfc3339_ms(expired_ms)
                ),
            ));
        }
        Presented::Unknown => {
            return Err(app.reject(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown gateway token".into(),
            ));
        }
    };
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
    let (seq, epoch) = (batch.seq, batch.epoch);
    let detail = app.audit.as_ref().map(|_| batch_detail(&batch));
    let audited = |mut r: Response, appended: &Appended| {
        if let Some(d) = detail.clone() {
            r.extensions_mut()
                .insert(AuditDetail(appended_detail(d, appended)));
        }
        r
    };
    match app.store.append(batch).await {
        Ok(a @ Appended::Stored { rows }) => Ok(audited(
            (
                StatusCode::OK,
                axum::Json(json!({ "seq": seq, "stored": rows, "duplicate": false })),
            )
                .into_response(),
            &a,
        )),
        Ok(a @ Appended::Duplicate) => Ok(audited(
            (
                StatusCode::OK,
                axum::Json(json!({ "seq": seq, "stored": 0, "duplicate": true })),
            )
                .into_response(),
            &a,
        )),
        Ok(Appended::Regressed { high_water }) => Err(app.reject(
            StatusCode::CONFLICT,
            SEQ_REGRESSED,
            regressed_message(seq, epoch, high_water),
        )),
        Err(e) => Err(app.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage",
            format!("not stored, retry: {e}"),
        )),
    }
}

/// The reject reason of a batch that goes back within its epoch (HTTP 409, MQTT alike).
pub const SEQ_REGRESSED: &str = "seq_regressed";

/// What a sender is told about its batch `seq` of `epoch` below the mark `high_water`.
pub(crate) fn regressed_message(seq: u64, epoch: Option<u64>, high_water: u64) -> String {
    format!(
        "batch seq {seq} of epoch {} is at or below the epoch's high-water mark {high_water} \
         and is not a retry of the batch stored under that seq (a spool restored from a \
         backup?); not stored: start a new epoch and send it again",
        epoch.map_or_else(|| "none".to_owned(), |e| e.to_string())
    )
}

/// The HTTP status that goes with a refusal reason (for the audit entries of MQTT batches,
/// which have no status of their own).
pub(crate) fn status_of_reason(reason: &str) -> u16 {
    match reason {
        "malformed" => 400,
        "unauthenticated" | "expired" => 401,
        "wrong_gateway" => 403,
        "too_large" => 413,
        "unsupported_media_type" => 415,
        "invalid" => 422,
        SEQ_REGRESSED => 409,
        "storage" => 503,
        _ => 500,
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

/// How a metric's atomic counter is shown.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// As the integer it counts.
    Count,
    /// Microseconds shown as seconds with six decimals.
    Micros,
}

/// One store metric: name, help, Prometheus type, how it is shown, and where it is counted.
type StoreMetric = (
    &'static str,
    &'static str,
    &'static str,
    Shown,
    fn(&StoreMetrics) -> &AtomicU64,
);

/// The store's metrics shown before the server's own.
const STORE_METRICS: &[StoreMetric] = &[
    (
        "jieneng_batches_total",
        "Batches stored.",
        "counter",
        Shown::Count,
        |m| &m.batches,
    ),
    (
        "jieneng_batches_duplicate_total",
        "Batches recognised as retries.",
        "counter",
        Shown::Count,
        |m| &m.duplicates,
    ),
    (
        "jieneng_batches_regressed_total",
        "Batches refused (409) as going back within their epoch without being a retry.",
        "counter",
        Shown::Count,
        |m| &m.regressed,
    ),
    (
        "jieneng_rows_total",
        "Readings stored.",
        "counter",
        Shown::Count,
        |m| &m.rows,
    ),
    (
        "jieneng_wal_fsyncs_total",
        "WAL group commits.",
        "counter",
        Shown::Count,
        |m| &m.wal_fsyncs,
    ),
    (
        "jieneng_wal_bytes_total",
        "Bytes appended to the WAL.",
        "counter",
        Shown::Count,
        |m| &m.wal_bytes,
    ),
    (
        "jieneng_rows_in_memory",
        "Acknowledged rows not yet in Parquet.",
        "gauge",
        Shown::Count,
        |m| &m.rows_in_memory,
    ),
    (
        "jieneng_flushes_total",
        "Parquet flushes.",
        "counter",
        Shown::Count,
        |m| &m.flushes,
    ),
    (
        "jieneng_flush_failures_total",
        "Failed Parquet flushes.",
        "counter",
        Shown::Count,
        |m| &m.flush_failures,
    ),
    (
        "jieneng_flush_seconds_total",
        "Time spent flushing.",
        "counter",
        Shown::Micros,
        |m| &m.flush_micros,
    ),
    (
        "jieneng_files_published_total",
        "Parquet files published.",
        "counter",
        Shown::Count,
        |m| &m.files_published,
    ),
];

/// The store's metrics shown after the server's own (the order `/metrics` has always had).
const STORE_METRICS_AFTER: &[StoreMetric] = &[
    (
        "jieneng_flush_last_seconds",
        "Duration of the last flush.",
        "gauge",
        Shown::Micros,
        |m| &m.flush_last_micros,
    ),
    (
        "jieneng_wal_size_bytes",
        "Bytes of WAL segments on disk (acknowledged rows not yet in Parquet).",
        "gauge",
        Shown::Count,
        |m| &m.wal_size,
    ),
    (
        "jieneng_compactions_total",
        "Date partitions compacted.",
        "counter",
        Shown::Count,
        |m| &m.compactions,
    ),
    (
        "jieneng_compaction_failures_total",
        "Failed compactions.",
        "counter",
        Shown::Count,
        |m| &m.compaction_failures,
    ),
    (
        "jieneng_superseded_unmoved_total",
        "Compacted-away files left in the readings tree (a glob sees their rows twice until the grace period ends).",
        "counter",
        Shown::Count,
        |m| &m.superseded_unmoved,
    ),
    (
        "jieneng_compaction_files_total",
        "Files merged away by compaction.",
        "counter",
        Shown::Count,
        |m| &m.compaction_files,
    ),
    (
        "jieneng_compaction_seconds_total",
        "Time spent compacting.",
        "counter",
        Shown::Micros,
        |m| &m.compaction_micros,
    ),
    (
        "jieneng_compaction_last_seconds",
        "Duration of the last compaction.",
        "gauge",
        Shown::Micros,
        |m| &m.compaction_last_micros,
    ),
    (
        "jieneng_rollups_total",
        "Dates whose hourly and daily rollups were recomputed.",
        "counter",
        Shown::Count,
        |m| &m.rollups,
    ),
    (
        "jieneng_maintenance_failures_total",
        "Failed compaction/rollup/retention passes.",
        "counter",
        Shown::Count,
        |m| &m.maintenance_failures,
    ),
    (
        "jieneng_partitions_expired_total",
        "Date partitions removed by retention.",
        "counter",
        Shown::Count,
        |m| &m.partitions_expired,
    ),
];

/// One metric in Prometheus text format.
fn metric(out: &mut String, name: &str, help: &str, kind: &str, value: std::fmt::Arguments<'_>) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = String::new();
    store_metrics(&mut out, &app.store.metrics, STORE_METRICS);
    server_metrics(&mut out, &app);
    store_metrics(&mut out, &app.store.metrics, STORE_METRICS_AFTER);
    out.push_str(&app.rejects.prometheus());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn store_metrics(out: &mut String, m: &StoreMetrics, table: &[StoreMetric]) {
    for &(name, help, kind, shown, counter) in table {
        let v = counter(m).load(Ordering::Relaxed);
        match shown {
            Shown::Count => metric(out, name, help, kind, format_args!("{v}")),
            Shown::Micros => metric(out, name, help, kind, format_args!("{:.6}", v as f64 / 1e6)),
        }
    }
}

/// The counters the server keeps itself (not the store's).
fn server_metrics(out: &mut String, app: &App) {
    metric(
        out,
        "jieneng_mqtt_batches_total",
        "Batches received over MQTT (stored, duplicate or refused).",
        "counter",
        format_args!("{}", app.mqtt_batches.load(Ordering::Relaxed)),
    );
    metric(
        out,
        "jieneng_tls_handshake_failures_total",
        "TLS handshakes that failed (untrusted certificate, plain text on the TLS port, timeout).",
        "counter",
        format_args!("{}", app.tls_handshake_failures.load(Ordering::Relaxed)),
    );
    if let Some(audit) = &app.audit {
        metric(
            out,
            "jieneng_audit_entries_total",
            "Audit trail entries written since the server started.",
            "counter",
            format_args!("{}", audit.entries()),
        );
        metric(
            out,
            "jieneng_audit_failures_total",
            "Audit trail entries that could not be written (the request they describe went on).",
            "counter",
            format_args!("{}", audit.failures()),
        );
    }
}
