//! The write path running: the store, the HTTP listener (the batch API, and whatever routes the
//! binary merges in, such as the read API), the embedded broker, the flush timer, and an
//! orderly stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http_contract::Rejects;
use http_contract::audit::{Audit, Who, audit_requests};
use http_contract::credential::{Change, Credentials, Presented, now_ms};
use storage::LiveReadings;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{GatewayAuth, IngestConfig};
use crate::http::{App, router};
use crate::mqtt::{self, MqttHandle};
use crate::store::{FlushReport, Store, StoreError, StoreThreads};
use crate::tls::TlsListener;

#[derive(Debug)]
pub struct Server;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    pub addr: SocketAddr,
    /// Where gateways reach the embedded MQTT broker, when it is on.
    pub mqtt_addr: Option<SocketAddr>,
    mqtt: Option<MqttHandle>,
    pub store: Store,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<()>,
    timer: JoinHandle<()>,
    threads: StoreThreads,
}

impl Server {
    /// Opens the store (replaying the WAL), binds the listener and serves the batch API.
    pub async fn start(config: &IngestConfig) -> anyhow::Result<ServerHandle> {
        Self::start_with(config, Arc::default(), |_| Ok(Router::new())).await
    }

    /// [`Server::start`], with the routes `more` makes from the store's acknowledged rows
    /// merged into the same listener, and refusals counted in `rejects` (shared with those
    /// routes, so `/metrics` shows all of them).
    pub async fn start_with(
        config: &IngestConfig,
        rejects: Arc<Rejects>,
        more: impl FnOnce(Arc<dyn LiveReadings>) -> anyhow::Result<Router>,
    ) -> anyhow::Result<ServerHandle> {
        Self::start_audited(config, rejects, None, more).await
    }

    /// [`Server::start_with`], writing every API request and every MQTT batch to `audit`'s
    /// trail (`http_contract::audit`), its holders named by the gateway tokens or else by
    /// `audit.resolve`.
    pub async fn start_audited(
        config: &IngestConfig,
        rejects: Arc<Rejects>,
        audit: Option<Audit>,
        more: impl FnOnce(Arc<dyn LiveReadings>) -> anyhow::Result<Router>,
    ) -> anyhow::Result<ServerHandle> {
        std::fs::create_dir_all(&config.data_dir)?;
        let (store, threads) =
            Store::open(&config.data_dir, config.flush_rows, config.storage.clone())?;
        let app = Arc::new(App {
            store: store.clone(),
            tokens: Arc::new(Credentials::new(GatewayAuth::credentials(&config.gateway))),
            revocations: watch::channel(0).0,
            rejects,
            tls_handshake_failures: Arc::default(),
            mqtt_batches: Default::default(),
            audit: audit.as_ref().map(|a| a.log.clone()),
        });
        // Certificate problems surface now, before anything listens.
        let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let mut http_rx = rx.clone();
        let failures = app.tls_handshake_failures.clone();
        let mqtt = if config.mqtt.enabled {
            Some(
                mqtt::start(
                    &config.mqtt,
                    tls.clone(),
                    app.clone(),
                    config.max_body_bytes,
                    rx.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let mut routes = router(app.clone(), config.max_body_bytes).merge(more(store.live())?);
        if let Some(audit) = audit {
            let tokens = app.tokens.clone();
            let others = audit.resolve.clone();
            let resolve: Arc<dyn Fn(&str) -> Who + Send + Sync> =
                Arc::new(move |hash: &str| match tokens.present(hash, now_ms()) {
                    Presented::Valid(gateway) => Who::Gateway(gateway.as_str().to_owned()),
                    _ => others(hash).unwrap_or_else(|| Who::Unknown {
                        key_sha256: hash.to_owned(),
                    }),
                });
            let log = audit.log.clone();
            routes = routes.layer(axum::middleware::from_fn(move |request, next| {
                audit_requests(log.clone(), resolve.clone(), request, next)
            }));
        }
        let stopped = async move {
            let _ = http_rx.wait_for(|s| *s).await;
        };
        let http = match tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls, failures)?;
                tokio::spawn(async move {
                    let serve = axum::serve(listener, routes).with_graceful_shutdown(stopped);
                    if let Err(e) = serve.await {
                        error!(error = %e, "HTTPS server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                let serve = axum::serve(listener, routes).with_graceful_shutdown(stopped);
                if let Err(e) = serve.await {
                    error!(error = %e, "HTTP server failed");
                }
            }),
        };
        let interval = Duration::from_secs_f64(config.flush_interval);
        let timer_store = store.clone();
        let mut timer_rx = rx;
        let timer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {
                        if let Err(e) = timer_store.flush().await {
                            error!(error = %e, "scheduled flush failed");
                        }
                    }
                    _ = timer_rx.changed() => return,
                }
            }
        });
        info!(%addr, tls = config.tls.is_some(), data_dir = %config.data_dir.display(), "ingest listening");
        Ok(ServerHandle {
            addr,
            mqtt_addr: mqtt.as_ref().map(|m| m.addr),
            mqtt,
            store,
            app,
            shutdown,
            http,
            timer,
            threads,
        })
    }
}

impl ServerHandle {
    /// Puts `gateways`' tokens in force in place of the running ones (HTTP and MQTT logins at
    /// once), for a reload of a server file that has been validated.
    pub fn reload_gateways(&self, gateways: &[GatewayAuth]) -> Change {
        let change = self.app.tokens.replace(GatewayAuth::credentials(gateways));
        if change.removed > 0 || change.changed > 0 {
            self.app.revocations.send_modify(|n| *n += 1);
        }
        change
    }

    /// Stops accepting requests, flushes every acknowledged row to Parquet, stops the threads.
    pub async fn stop(self) -> Result<FlushReport, StoreError> {
        let _ = self.shutdown.send(true);
        let ServerHandle {
            store,
            threads,
            http,
            timer,
            mqtt,
            app,
            ..
        } = self;
        // The handle's own reference to the handlers' state (for reloads) holds a store clone.
        drop(app);
        let _ = http.await;
        if let Some(m) = mqtt {
            m.stop().await;
        }
        let _ = timer.await;
        let report = store.flush().await;
        // Leave the files as tools that glob the directory should find them: compacted, with
        // rollups up to date, nothing compacted-away left over.
        if let Err(e) = store.maintain(true).await {
            error!(error = %e, "final compaction failed; the next start retries it");
        }
        drop(store);
        // The HTTP handlers' clones of the store are gone with the server task; the writer
        // thread sees its channel close and ends, then the flusher.
        tokio::task::spawn_blocking(move || threads.join())
            .await
            .ok();
        report
    }
}
