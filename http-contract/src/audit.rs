//! The audit trail: who read what, which gateway wrote what, what was refused and why, and what
//! an administrator changed, as an append-only JSON-lines file, rotated by size.
//!
//! ## Format (one JSON object per line, UTF-8, `\n`-terminated)
//!
//! Every entry has `ts` (RFC 3339, UTC, milliseconds) and `event`:
//!
//! - `"read"`: a request to the read API (`/api/v1/…` other than batches): `method`, `path`,
//!   `query` (the raw query string, `""` if none), `status`, `who`, and on success `rows` (rows
//!   of the answer's main table) where the endpoint reports it;
//! - `"batch"`: `POST /api/v1/batches` or a batch taken off the MQTT broker (`transport`:
//!   `"http"` or `"mqtt"`): `status` (the HTTP status, or the one an MQTT refusal would have),
//!   `who`, and on success `gateway`, `seq`, `rows` stored, `duplicate`, `accounts` (the distinct
//!   account codes of the batch);
//! - any entry refused carries `reason`, the stable word of the JSON error body;
//! - `"reload"`, `"reload_refused"`, `"start"`, `"stop"`: administrative actions on the server
//!   (`file`, and for a reload the counts of tokens and keys added, removed and changed; for a
//!   refused reload the `error`).
//!
//! `who` is `{"kind": "api_key", "name", "role", "scope"}`, `{"kind": "gateway", "gateway"}`,
//! `{"kind": "unknown"}` (a bearer no credential matches: only its sha256's first 12 hex digits
//! are kept, as `key_sha256_prefix`, never the secret) or `{"kind": "none"}` (no bearer).
//!
//! Rotation: when the file passes `max_bytes`, `audit.jsonl` becomes `audit.jsonl.1` (and
//! `.1` → `.2` …, the oldest beyond `keep` deleted) and a new file starts. Lines are written
//! whole with one `write` each and flushed; a write that fails is counted
//! ([`AuditLog::failures`], `jieneng_audit_failures_total`) and logged, and never fails the
//! request it describes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

/// The audit file of one server.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Mutex<Option<(File, u64)>>,
    failures: AtomicU64,
    entries: AtomicU64,
}

impl AuditLog {
    /// Opens (appending to) `path`, creating its directory.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            file: Mutex::new(Some((file, len))),
            failures: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        })
    }

    /// Appends `entry` (an object) with `ts` and `event` in front.
    pub fn record(&self, event: &str, entry: Map<String, Value>) {
        let mut line = Map::new();
        line.insert("ts".into(), json!(now_rfc3339()));
        line.insert("event".into(), json!(event));
        line.extend(entry);
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(e) = self.write(text.as_bytes()) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, "audit entry not written");
        } else {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(&self, line: &[u8]) -> std::io::Result<()> {
        let mut slot = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|(_, len)| *len >= self.max_bytes) {
            *slot = None;
            self.rotate()?;
        }
        if slot.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = f.metadata()?.len();
            *slot = Some((f, len));
        }
        let Some((file, len)) = slot.as_mut() else {
            return Ok(());
        };
        file.write_all(line)?;
        file.flush()?;
        *len += line.len() as u64;
        Ok(())
    }

    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        fs::rename(&self.path, numbered(1))
    }

    /// Entries that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Entries written since the server started.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who presented a request's bearer, as an audit entry names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    ApiKey {
        name: String,
        role: String,
        scope: String,
    },
    Gateway(String),
    /// A bearer no credential in force matches.
    Unknown {
        key_sha256: String,
    },
    None,
}

impl Who {
    pub fn to_json(&self) -> Value {
        match self {
            Self::ApiKey { name, role, scope } => {
                json!({"kind": "api_key", "name": name, "role": role, "scope": scope})
            }
            Self::Gateway(g) => json!({"kind": "gateway", "gateway": g}),
            Self::Unknown { key_sha256 } => json!({
                "kind": "unknown",
                "key_sha256_prefix": key_sha256.get(..12).unwrap_or(key_sha256),
            }),
            Self::None => json!({"kind": "none"}),
        }
    }
}

/// What a handler adds to its request's audit entry (a response extension): rows answered or
/// stored, the batch's gateway, seq and accounts.
#[derive(Debug, Clone, Default)]
pub struct AuditDetail(pub Map<String, Value>);

impl AuditDetail {
    pub fn rows(rows: usize) -> Self {
        let mut m = Map::new();
        m.insert("rows".into(), json!(rows));
        Self(m)
    }
}

/// An audit trail and how to name the holder of a bearer that is not a gateway token (the read
/// API's keys), for the server that composes the routers.
#[derive(Clone)]
pub struct Audit {
    pub log: std::sync::Arc<AuditLog>,
    pub resolve: Resolve,
}

/// Names the holder of a bearer's sha256, if it knows them.
pub type Resolve = std::sync::Arc<dyn Fn(&str) -> Option<Who> + Send + Sync>;

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("log", &self.log.path)
            .finish()
    }
}

/// The reason of a refusal, put on the response by [`crate::JsonError`] for the audit layer.
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

/// The audit middleware of a whole server: one entry per `/api/v1/` request (the dashboard's
/// static files, `/healthz` and `/metrics` are not audited). `resolve` names the holder of a
/// bearer's sha256.
pub async fn audit_requests(
    log: std::sync::Arc<AuditLog>,
    resolve: std::sync::Arc<dyn Fn(&str) -> Who + Send + Sync>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let query = request.uri().query().unwrap_or("").to_owned();
    let who = match crate::bearer(request.headers()) {
        Some(secret) => resolve(&crate::token_hash(secret)),
        None => Who::None,
    };
    let response = next.run(request).await;
    let mut entry = Map::new();
    entry.insert("method".into(), json!(method));
    entry.insert("path".into(), json!(path));
    entry.insert("query".into(), json!(query));
    entry.insert("status".into(), json!(response.status().as_u16()));
    entry.insert("who".into(), who.to_json());
    if path == "/api/v1/batches" {
        entry.insert("transport".into(), json!("http"));
    }
    if let Some(Refused(reason)) = response.extensions().get::<Refused>() {
        entry.insert("reason".into(), json!(reason));
    }
    if let Some(AuditDetail(detail)) = response.extensions().get::<AuditDetail>() {
        entry.extend(detail.clone());
    }
    let event = if path == "/api/v1/batches" {
        "batch"
    } else {
        "read"
    };
    log.record(event, entry);
    response
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_json_lines_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.jsonl");
        let log = AuditLog::open(&path, 200, 2).unwrap();
        for i in 0..20 {
            let mut m = Map::new();
            m.insert("i".into(), json!(i));
            log.record("read", m);
        }
        assert_eq!((log.entries(), log.failures()), (20, 0));
        let mut all = Vec::new();
        for p in [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1"),
            path.clone(),
        ] {
            let text = fs::read_to_string(&p).unwrap();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["event"], "read");
                assert!(v["ts"].as_str().unwrap().ends_with('Z'));
                all.push(v["i"].as_u64().unwrap());
            }
        }
        assert!(!path.with_extension("jsonl.3").exists(), "keep = 2");
        // The newest entries survive in order; the oldest rotated away.
        assert_eq!(all.last(), Some(&19));
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    }

    #[test]
    fn an_unknown_bearer_is_named_by_a_hash_prefix_only() {
        let who = Who::Unknown {
            key_sha256: crate::token_hash("secret"),
        };
        let j = who.to_json().to_string();
        assert!(!j.contains("secret"));
        assert_eq!(
            who.to_json()["key_sha256_prefix"].as_str().unwrap().len(),
            12
        );
    }
}
