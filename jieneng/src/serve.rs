//! `jieneng serve`: ingest's write path and the read API on one listener. The composition lives
//! here, not in either crate, so that neither service depends on the other: ingest takes the
//! read API's routes as an opaque router, the read API takes ingest's acknowledged rows as
//! `storage::LiveReadings`, and both count refusals into one `Rejects`.

use std::sync::{Arc, OnceLock};

use http_contract::Rejects;
use http_contract::audit::{Audit, AuditLog};
use http_contract::credential::Change;
use ingest::{Server, ServerHandle};
use serde_json::{Map, Value, json};

use crate::config::ServeConfig;

/// Opens the store, binds the listener and serves the batch API, the read API and the
/// dashboard.
pub async fn start(config: &ServeConfig) -> anyhow::Result<ServerHandle> {
    Ok(start_serving(config).await?.server)
}

/// [`start`], keeping hold of the read API so that credentials can be reloaded.
pub async fn start_serving(config: &ServeConfig) -> anyhow::Result<Serving> {
    let rejects = Arc::new(Rejects::default());
    let api_config = config.api();
    let api_rejects = rejects.clone();
    let made: Arc<OnceLock<Arc<api::Api>>> = Arc::new(OnceLock::new());
    let slot = made.clone();
    let audit = if config.audit.enabled {
        let file = config.audit.file(&config.data_dir);
        let log = AuditLog::open(&file, config.audit.max_bytes, config.audit.keep)
            .map_err(|e| anyhow::anyhow!("audit.path {}: {e}", file.display()))?;
        let keys = made.clone();
        Some(Audit {
            log: Arc::new(log),
            resolve: Arc::new(move |hash: &str| keys.get().and_then(|api| api.who(hash))),
        })
    } else {
        None
    };
    let log = audit.as_ref().map(|a| a.log.clone());
    let server = Server::start_audited(&config.ingest(), rejects, audit, move |live| {
        let api = Arc::new(api::Api::new(&api_config, Some(live), api_rejects)?);
        let _ = slot.set(api.clone());
        Ok(api::router(api).merge(api::assets::router()))
    })
    .await?;
    let api = made
        .get()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the read API was not built"))?;
    let serving = Serving { server, api, log };
    serving.admin("start", Map::new());
    Ok(serving)
}

/// A running server: ingest with the read API merged in.
#[derive(Debug)]
pub struct Serving {
    pub server: ServerHandle,
    api: Arc<api::Api>,
    log: Option<Arc<AuditLog>>,
}

/// What a reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub gateway_tokens: Change,
    pub api_keys: Change,
}

impl Serving {
    /// Puts the gateway tokens and API keys of `config` (a server file already loaded and
    /// validated, so a broken file never gets here) in force in place of the running ones.
    /// Everything else in the file takes effect at the next start.
    pub fn reload(&self, config: &ServeConfig) -> Reloaded {
        let r = Reloaded {
            gateway_tokens: self.server.reload_gateways(&config.ingest().gateway),
            api_keys: self.api.reload_keys(&config.api_key),
        };
        let counts = |c: Change| json!({"added": c.added, "removed": c.removed, "changed": c.changed, "now": c.now});
        let mut m = Map::new();
        m.insert("gateway_tokens".into(), counts(r.gateway_tokens));
        m.insert("api_keys".into(), counts(r.api_keys));
        self.admin("reload", m);
        r
    }

    /// Writes an administrative action (`reload_refused`, …) to the audit trail, if kept.
    pub fn admin(&self, event: &str, entry: Map<String, Value>) {
        if let Some(log) = &self.log {
            log.record(event, entry);
        }
    }

    /// Stops accepting requests and flushes every acknowledged row to Parquet.
    pub async fn stop(self) -> anyhow::Result<ingest::store::FlushReport> {
        // The read API holds the store's live rows: the store's threads end only once every
        // holder of a store clone is gone.
        drop(self.api);
        let report = self.server.stop().await?;
        if let Some(log) = &self.log {
            let mut m = Map::new();
            m.insert("rows_flushed".into(), json!(report.rows));
            log.record("stop", m);
        }
        Ok(report)
    }
}
