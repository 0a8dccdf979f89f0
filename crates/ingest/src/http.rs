//! The HTTP API: `POST /api/v1/batches` for gateways, `/healthz`, `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use reading_model::{Batch, GatewayId};
use serde_json::json;

use crate::config::token_hash;
use crate::store::{Appended, Store};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    /// sha256(token) → gateway.
    pub tokens: HashMap<String, GatewayId>,
    pub rejects: Mutex<BTreeMap<&'static str, u64>>,
}

/// An API error: a status and a message that names the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": self.message, "reason": self.reason })),
        )
            .into_response()
    }
}

impl App {
    fn reject(&self, status: StatusCode, reason: &'static str, message: String) -> ApiError {
        *self
            .rejects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
        tracing::debug!(reason, %message, "batch rejected");
        ApiError {
            status,
            reason,
            message,
        }
    }
}

pub fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/api/v1/batches", post(post_batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn post_batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            app.reject(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing Authorization: Bearer <gateway token>".into(),
            )
        })?;
    let gateway = app
        .tokens
        .get(&token_hash(token.trim()))
        .cloned()
        .ok_or_else(|| {
            app.reject(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown gateway token".into(),
            )
        })?;
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        app.reject(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "batch JSON: {e} (byte offset {})",
                byte_offset(&body, e.line(), e.column())
            ),
        )
    })?;
    if batch.gateway != gateway {
        return Err(app.reject(
            StatusCode::FORBIDDEN,
            "wrong_gateway",
            format!(
                "this token belongs to gateway {gateway}, the batch says {}",
                batch.gateway
            ),
        ));
    }
    batch
        .check()
        .map_err(|e| app.reject(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
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

/// The byte offset of a (1-based) line and column, for error messages.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in body.split(|&b| b == b'\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1);
        }
        offset += l.len() + 1;
    }
    offset
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
    out.push_str("# HELP jieneng_rejects_total Requests rejected, by reason.\n# TYPE jieneng_rejects_total counter\n");
    for (reason, n) in app.rejects.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!(
            "jieneng_rejects_total{{reason=\"{reason}\"}} {n}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
