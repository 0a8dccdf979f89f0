//! MQTT ingestion: an embedded broker (rumqttd) that gateways publish batches to, and ingest's
//! own subscriber, which stores them exactly as `POST /api/v1/batches` does.
//!
//! # Topics and payloads (wire version 1, a contract like the HTTP API)
//!
//! * A gateway publishes a batch with QoS 1 to `jieneng/v1/<gateway>/batches`. The payload is
//!   the batch as JSON or as an Arrow IPC stream ([`crate::decode`] documents both); MQTT 3.1.1
//!   has no content type, so a payload whose first non-blank byte is `{` is JSON and anything
//!   else is read as Arrow. There is no content coding (an Arrow stream may compress its buffers
//!   itself). The size limit is the server's `max_body_bytes`.
//! * Ingest answers on `jieneng/v1/<gateway>/acks` (QoS 1) **after the WAL is fsynced**:
//!   `{"seq": N, "stored": n, "duplicate": bool}`; or, for a batch it will not store,
//!   `{"seq": N | null, "reason": "…", "error": "…"}` with the reasons of the HTTP API
//!   (`storage` means retry; `seq_regressed` means start a new epoch and resend, like HTTP's
//!   409; `seq` is null when it cannot be read from the payload). An answer about a batch with
//!   an epoch also carries `"epoch": E`, so a late answer about the same seq of an earlier
//!   epoch is not taken for this one.
//!
//! The broker's PUBACK to the gateway means only that the broker holds the message in memory:
//! rumqttd keeps no disk log, and a crash or restart of ingest loses what it held. A gateway
//! must therefore keep a batch until the ack naming its seq arrives, and resend it otherwise;
//! (gateway, epoch, seq) dedupe makes resends harmless. The jieneng gateway does exactly that, which
//! gives MQTT the same guarantee as HTTP. A client that trusts PUBACK alone gets at-most-once.
//!
//! # Authentication
//!
//! A gateway connects with client id and user name both equal to its gateway id and its token as
//! password (checked against the configured sha256). Ingest's subscriber logs in with a random
//! password made at start. The batch's gateway must be the topic's ([`crate::decode`] checks it
//! as it checks the token's gateway over HTTP). **Limit:** rumqttd 0.20 has no per-topic access
//! control, so an authenticated gateway could publish to another gateway's topic a batch naming
//! that gateway; over MQTT, a gateway's token therefore vouches for "a configured gateway", not for
//! one particular one. Use HTTP where gateways do not trust each other.
//!
//! # Listener
//!
//! rumqttd listens on a loopback port of its own; gateways connect to `[mqtt] listen`, where
//! ingest accepts the connection, ends TLS if the server has `[tls]` (rumqttd's TLS would bring a
//! second rustls), and relays the bytes. That relay is also how [`MqttHandle::stop`] closes the
//! broker to the outside: rumqttd has no shutdown, so its thread stays until the process ends.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use reading_model::GatewayId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use http_contract::credential::{Presented, now_ms};
use http_contract::token_hash;

use crate::config::MqttSettings;
use crate::decode::{self, DECOMPRESSION_FACTOR, Encoding, Format, ipc::META_SEQ};
use crate::http::{App, SEQ_REGRESSED, regressed_message, status_of};
use crate::store::Appended;
use crate::tls::HANDSHAKE_TIMEOUT;

/// The filter ingest subscribes to.
pub const BATCHES_FILTER: &str = "jieneng/v1/+/batches";
/// Ingest's own user name: a `/` keeps it out of the gateway id space.
const INGEST_USER: &str = "jieneng/ingest";
/// Batches being decoded and stored at once; beyond it the subscriber stops reading (and the
/// broker buffers), so memory stays bounded.
const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded MQTT broker: {0}")]
    Broker(String),
}

/// The running broker front and subscriber.
#[derive(Debug)]
pub struct MqttHandle {
    /// Where gateways connect (the bound address, for `listen` with port 0).
    pub addr: SocketAddr,
    front: JoinHandle<()>,
    subscriber: JoinHandle<()>,
}

impl MqttHandle {
    /// Closes the listener and every gateway connection, and stops the subscriber once
    /// `stopped` fires (batches being stored finish first: their tasks are awaited).
    pub async fn stop(self) {
        self.front.abort();
        let _ = self.front.await;
        let _ = self.subscriber.await;
    }
}

fn random_password() -> Result<String, MqttError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| MqttError::Broker(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Starts the broker, its front listener and ingest's subscriber.
pub async fn start(
    settings: &MqttSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
    max_body: usize,
    stopped: watch::Receiver<bool>,
) -> Result<MqttHandle, MqttError> {
    let broker_error = |m: String| MqttError::Broker(m);
    // rumqttd cannot say which port it got, so it gets one that was free a moment ago.
    let inner = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| broker_error(format!("no free loopback port: {e}")))?;
    let front = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| MqttError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = front.local_addr().map_err(|source| MqttError::Listen {
        addr: settings.listen,
        source,
    })?;

    let password = random_password()?;
    let tokens = app.tokens.clone();
    let ingest_password = password.clone();
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_body,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let ok = if user == INGEST_USER {
            same(pass.as_bytes(), ingest_password.as_bytes())
        } else {
            // The token set is read at each login, so a reload (SIGHUP) or an expiry takes
            // effect for the next connection.
            client_id == user
                && matches!(
                    tokens.present(&token_hash(&pass), now_ms()),
                    Presented::Valid(gw) if gw.as_str() == user
                )
        };
        if !ok {
            debug!(client_id, user, "MQTT login refused");
        }
        async move { ok }
    });
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // A segment must hold the largest batch.
            max_segment_size: max_body.max(1 << 20) * 2,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([(
            "jieneng".to_owned(),
            rumqttd::ServerSettings {
                name: "jieneng-mqtt".to_owned(),
                listen: inner,
                tls: None,
                next_connection_delay_ms: 1,
                connections,
            },
        )])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // Returns only when its listener could not start.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| broker_error(format!("spawn: {e}")))?;
    // The subscriber's first CONNACK says rumqttd is up. (A bare TCP probe closed before CONNECT
    // would make rumqttd log an ERROR at every start.)
    let (ready, connected) = tokio::sync::oneshot::channel();
    let revocations = app.revocations.subscribe();
    let subscriber = tokio::spawn(subscribe(inner, password, app, max_body, stopped, ready));
    match tokio::time::timeout(Duration::from_secs(5), connected).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => {
            subscriber.abort();
            return Err(MqttError::Broker(format!(
                "not accepting MQTT connections on {inner} after 5 s"
            )));
        }
    }
    let front = tokio::spawn(relay(front, inner, tls.map(TlsAcceptor::from), revocations));
    info!(%addr, "MQTT broker listening");
    Ok(MqttHandle {
        addr,
        front,
        subscriber,
    })
}

/// Accepts gateway connections (ending TLS if configured) and relays them to rumqttd. Aborting
/// this task drops the connection set, which closes every relayed connection; so does a reload
/// that revokes a token (`revocations` changes).
async fn relay(
    front: TcpListener,
    inner: SocketAddr,
    tls: Option<TlsAcceptor>,
    revocations: watch::Receiver<u64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = front.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "MQTT listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let tls = tls.clone();
                let mut revoked = revocations.clone();
                revoked.mark_unchanged();
                connections.spawn(async move {
                    let relayed = async { match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => pipe(stream, inner).await,
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                            }
                        }
                        None => pipe(tcp, inner).await,
                    } };
                    let result = tokio::select! {
                        r = relayed => r,
                        _ = revoked.changed() => {
                            info!(%peer, "MQTT connection closed: a reload revoked a gateway token");
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "MQTT connection ended");
                    }
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn pipe<S>(mut outside: S, inner: SocketAddr) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut broker = TcpStream::connect(inner).await?;
    broker.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut outside, &mut broker).await?;
    Ok(())
}

/// Ingest's subscriber: reads batches off the broker and stores them, until `stopped`.
async fn subscribe(
    inner: SocketAddr,
    password: String,
    app: Arc<App>,
    max_body: usize,
    mut stopped: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut options = MqttOptions::new("jieneng-ingest", inner.ip().to_string(), inner.port());
    options
        .set_credentials(INGEST_USER, password)
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        // Batches come in, only small acks go out.
        .set_max_packet_size(max_body + 4096, 1 << 20)
        .set_inflight(IN_FLIGHT as u16);
    let (client, mut eventloop) = AsyncClient::new(options, IN_FLIGHT);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                // try_: this loop drives the client, it cannot wait on itself.
                if let Err(e) = client.try_subscribe(BATCHES_FILTER, QoS::AtLeastOnce) {
                    error!(error = %e, "cannot subscribe to {BATCHES_FILTER}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (app, client) = (app.clone(), client.clone());
                tasks.spawn(async move {
                    handle(&app, &client, &p.topic, p.payload, max_body).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            Ok(_) => {}
            Err(e) if ready.is_some() => {
                // rumqttd's thread is still starting its listener.
                debug!(error = %e, "embedded MQTT broker not listening yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                warn!(error = %e, "ingest's MQTT subscriber lost the broker; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // Batches already taken are stored and acked before the store is flushed and closed.
    while tasks.join_next().await.is_some() {}
    let _ = client.try_disconnect();
}

/// Stores one published batch and answers on the gateway's acks topic.
async fn handle(app: &App, client: &AsyncClient, topic: &str, payload: Bytes, max_body: usize) {
    app.mqtt_batches.fetch_add(1, Ordering::Relaxed);
    let Some(gateway) = topic
        .strip_prefix("jieneng/v1/")
        .and_then(|t| t.strip_suffix("/batches"))
        .and_then(|g| GatewayId::parse(g).ok())
    else {
        app.count_reject(
            "malformed",
            format!("MQTT topic {topic}: not jieneng/v1/<gateway>/batches"),
        );
        return;
    };
    let acks = format!("jieneng/v1/{gateway}/acks");
    // A connection outlives the token it logged in with: a gateway whose every token has been
    // revoked (reload) or has expired since is refused here, batch by batch.
    if !app.tokens.any_valid(now_ms(), |g| *g == gateway) {
        let error = format!("gateway {gateway} has no token in force (revoked or expired)");
        app.count_reject("unauthenticated", format!("MQTT {topic}: {error}"));
        audit_mqtt(app, &gateway, Some("unauthenticated"), serde_json::Map::new);
        let answer = json!({ "seq": null, "reason": "unauthenticated", "error": error });
        if let Err(e) = client
            .publish(acks, QoS::AtLeastOnce, false, answer.to_string())
            .await
        {
            warn!(%gateway, error = %e, "cannot publish refusal");
        }
        return;
    }
    let (epoch, answer) = store(app, &gateway, topic, payload, max_body).await;
    let mut answer = match answer {
        Ok(answer) => answer,
        Err((seq, reason, error)) => {
            app.count_reject(reason, format!("MQTT {topic}: {error}"));
            audit_mqtt(app, &gateway, Some(reason), || {
                let mut m = serde_json::Map::new();
                m.insert("seq".into(), json!(seq));
                m
            });
            json!({ "seq": seq, "reason": reason, "error": error })
        }
    };
    if let (Some(epoch), Some(answer)) = (epoch, answer.as_object_mut()) {
        answer.insert("epoch".into(), epoch.into());
    }
    if let Err(e) = client
        .publish(acks, QoS::AtLeastOnce, false, answer.to_string())
        .await
    {
        // The gateway hears nothing, times out and resends; dedupe answers the resend.
        warn!(%gateway, error = %e, "cannot publish ack");
    }
}

type Refusal = (Option<u64>, &'static str, String);

/// One audit entry for a batch taken off the broker, in the format the HTTP batches have
/// (`http_contract::audit`): the status is the one the HTTP API would have answered.
fn audit_mqtt(
    app: &App,
    gateway: &GatewayId,
    reason: Option<&'static str>,
    detail: impl FnOnce() -> serde_json::Map<String, serde_json::Value>,
) {
    let Some(log) = &app.audit else { return };
    let mut entry = serde_json::Map::new();
    entry.insert("transport".into(), json!("mqtt"));
    entry.insert(
        "who".into(),
        http_contract::audit::Who::Gateway(gateway.as_str().to_owned()).to_json(),
    );
    let status = match reason {
        None => 200,
        Some(r) => crate::http::status_of_reason(r),
    };
    entry.insert("status".into(), json!(status));
    if let Some(r) = reason {
        entry.insert("reason".into(), json!(r));
    }
    entry.extend(detail());
    log.record("batch", entry);
}

/// Stores one batch: its epoch (when it was decoded and has one) and the answer.
async fn store(
    app: &App,
    gateway: &GatewayId,
    topic: &str,
    payload: Bytes,
    max_body: usize,
) -> (Option<u64>, Result<serde_json::Value, Refusal>) {
    let batch = match decode_batch(gateway, payload, max_body).await {
        Ok(b) => b,
        Err(refusal) => return (None, Err(refusal)),
    };
    let (seq, epoch) = (batch.seq, batch.epoch);
    debug!(%gateway, seq, ?epoch, topic, rows = batch.readings.len(), "MQTT batch");
    let detail = app
        .audit
        .as_ref()
        .map(|_| crate::http::batch_detail(&batch));
    let appended = app.store.append(batch).await;
    if let (Some(d), Ok(a @ (Appended::Stored { .. } | Appended::Duplicate))) = (detail, &appended)
    {
        audit_mqtt(app, gateway, None, || crate::http::appended_detail(d, a));
    }
    let answer = match appended {
        Ok(Appended::Stored { rows }) => {
            Ok(json!({ "seq": seq, "stored": rows, "duplicate": false }))
        }
        Ok(Appended::Duplicate) => Ok(json!({ "seq": seq, "stored": 0, "duplicate": true })),
        Ok(Appended::Regressed { high_water }) => Err((
            Some(seq),
            SEQ_REGRESSED,
            regressed_message(seq, epoch, high_water),
        )),
        Err(e) => Err((Some(seq), "storage", format!("not stored, retry: {e}"))),
    };
    (epoch, answer)
}

/// Decodes a published payload (off the async workers), or says why not.
async fn decode_batch(
    gateway: &GatewayId,
    payload: Bytes,
    max_body: usize,
) -> Result<reading_model::Batch, Refusal> {
    if payload.len() > max_body {
        return Err((
            None,
            "too_large",
            format!("{} bytes exceed max_body_bytes = {max_body}", payload.len()),
        ));
    }
    let format = if payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Format::Json
    } else {
        Format::ArrowStream
    };
    let gw = gateway.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let decoded = decode::decode(
            &payload,
            format,
            Encoding::Identity,
            &gw,
            max_body.saturating_mul(DECOMPRESSION_FACTOR),
        );
        let seq = decoded
            .as_ref()
            .map(|b| b.seq)
            .ok()
            .or_else(|| peek_seq(&payload, format));
        (decoded, seq)
    })
    .await;
    let (decoded, seq) =
        decoded.map_err(|e| (None, "internal", format!("decoding failed: {e}")))?;
    decoded.map_err(|e| (seq, status_of(&e).1, e.to_string()))
}

/// The seq of a batch that failed to decode, if it can still be read, so the gateway can tell
/// which of its batches was refused.
fn peek_seq(payload: &[u8], format: Format) -> Option<u64> {
    match format {
        Format::Json => {
            #[derive(serde::Deserialize)]
            struct Seq {
                seq: u64,
            }
            serde_json::from_slice::<Seq>(payload).ok().map(|s| s.seq)
        }
        Format::ArrowStream => {
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(payload), None)
                    .ok()?;
            reader.schema().metadata().get(META_SEQ)?.parse().ok()
        }
    }
}
