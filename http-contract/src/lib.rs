//! The parts of jieneng's HTTP contract that the batch API (`ingest`) and the read API (`api`)
//! share, in one place so that they cannot drift apart:
//!
//! - [`JsonError`]: every refusal is `{"error": <message naming the problem>, "reason": <a
//!   stable word>}` with its status, plus `row` and `field` when one reading of a batch is at
//!   fault. Clients branch on `reason`; people read `error`.
//! - [`Rejects`]: refusals counted by reason, shown on `/metrics` as
//!   `jieneng_rejects_total{reason="…"}`, one family for both APIs.
//! - [`bearer`] and [`token_hash`]: secrets (gateway tokens, API keys) arrive as
//!   `Authorization: Bearer <secret>` and are stored and compared only as their sha256.
//! - [`audit`]: the audit trail (JSON lines) and the middleware that writes it.
//! - [`credential`]: the set of secrets in force, with expiry, replaced whole on a reload.

pub mod audit;
pub mod credential;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A refused request: status, a stable reason, a message that names the problem, and the
/// reading at fault for errors about one reading of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// `(row, field)` of the reading at fault.
    pub at: Option<(usize, String)>,
}

impl JsonError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            at: None,
        }
    }

    /// The same error, about reading `row`'s `field`.
    pub fn at(mut self, row: usize, field: impl Into<String>) -> Self {
        self.at = Some((row, field.into()));
        self
    }

    /// The JSON body as sent.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.message, "reason": self.reason });
        if let Some((row, field)) = &self.at {
            body["row"] = json!(row);
            body["field"] = json!(field);
        }
        body
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response
            .extensions_mut()
            .insert(audit::Refused(self.reason));
        response
    }
}

/// Refusals by reason, for `/metrics`. Shared by every router of one server.
#[derive(Debug, Default)]
pub struct Rejects(Mutex<BTreeMap<&'static str, u64>>);

impl Rejects {
    /// Counts one refusal under `reason`.
    pub fn count(&self, reason: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// The count under `reason` so far.
    pub fn get(&self, reason: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// The `jieneng_rejects_total` family in Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP jieneng_rejects_total Requests rejected, by reason.\n\
             # TYPE jieneng_rejects_total counter\n",
        );
        for (reason, n) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "jieneng_rejects_total{{reason=\"{reason}\"}} {n}");
        }
        out
    }
}

/// The secret of `Authorization: Bearer <secret>`, trimmed; `None` without one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// sha256 of a secret, lowercase hex: what configs store instead of the secret.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_about_a_reading_names_its_row_and_field() {
        let e =
            JsonError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "bad unit").at(3, "unit");
        assert_eq!(
            e.body(),
            json!({"error": "bad unit", "reason": "invalid", "row": 3, "field": "unit"})
        );
        let plain = JsonError::new(StatusCode::FORBIDDEN, "forbidden", "no");
        assert_eq!(plain.body(), json!({"error": "no", "reason": "forbidden"}));
    }

    #[test]
    fn rejects_are_one_prometheus_family_in_reason_order() {
        let r = Rejects::default();
        r.count("unauthenticated");
        r.count("api_forbidden");
        r.count("unauthenticated");
        assert_eq!(r.get("unauthenticated"), 2);
        assert!(r.prometheus().ends_with(
            "jieneng_rejects_total{reason=\"api_forbidden\"} 1\n\
             jieneng_rejects_total{reason=\"unauthenticated\"} 2\n"
        ));
    }

    #[test]
    fn secrets_are_compared_as_sha256_of_the_trimmed_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
