//! Forwarding over MQTT to ingest's embedded broker.
//!
//! A batch is published with QoS 1 to `jieneng/v1/<gateway>/batches`: the spooled body of wire
//! version 1, as over HTTP (an Arrow IPC stream or, for a small batch, JSON; ingest tells them
//! apart by the first byte, MQTT 3.1.1 having no content type). The broker's PUBACK only says
//! the *broker* has the message, in memory; it says nothing about ingest's WAL. So the spool does not trust it: ingest answers on
//! `jieneng/v1/<gateway>/acks` once the batch is fsynced (or refused), with the JSON
//! `{"seq": N, "stored": n, "duplicate": bool}` or `{"seq": N | null, "reason": "…", "error":
//! "…"}`, and only an answer naming the batch's seq lets the forwarder delete it. No answer
//! within the forward timeout → the same batch is sent again, and ingest's (gateway, epoch, seq)
//! dedupe makes the resend harmless. This is the same guarantee as HTTP's "2xx only after fsync".
//!
//! The acks topic is subscribed (and the SUBACK seen) before anything is published on a
//! connection, so an answer cannot slip past; while the connection is down nothing is
//! published (rumqttc would queue and replay it), the attempt is simply retried with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reading_model::GatewayId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ForwardError, Outcome};

/// Ingest's answer on the acks topic.
#[derive(Debug, Deserialize)]
pub struct Ack {
    pub seq: Option<u64>,
    /// The epoch of the batch answered (ingest before epochs sends none).
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
    /// Set when the batch was not stored: the reject reason, as in HTTP error bodies.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A connection to ingest's broker, kept up by its own task.
#[derive(Debug)]
pub struct MqttLink {
    client: AsyncClient,
    batches_topic: String,
    /// True between a SUBACK of the acks topic and the next connection error.
    ready: Arc<AtomicBool>,
    acks: Mutex<mpsc::Receiver<Ack>>,
    task: JoinHandle<()>,
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The largest batch a gateway publishes; ingest's broker takes its `max_body_bytes`.
const MAX_PACKET: usize = 64 << 20;

impl MqttLink {
    /// Connects to `url` (`mqtt://host:port` on loopback, `mqtts://host:port` otherwise) as
    /// client and user `gateway`, with the token as password.
    pub fn connect(
        url: &str,
        gateway: &GatewayId,
        token: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ForwardError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| ForwardError::Mqtt(format!("{url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| ForwardError::Mqtt(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port()
            .ok_or_else(|| ForwardError::Mqtt(format!("{url}: no port")))?;
        let mut options = MqttOptions::new(gateway.as_str(), host, port);
        options
            .set_credentials(gateway.as_str(), token)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, MAX_PACKET);
        if parsed.scheme() == "mqtts" {
            let tls = tls.ok_or_else(|| {
                ForwardError::Mqtt(format!("{url}: mqtts needs a TLS client config"))
            })?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let batches_topic = format!("jieneng/v1/{gateway}/batches");
        let acks_topic = format!("jieneng/v1/{gateway}/acks");
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(256);
        let task = {
            let (client, ready) = (client.clone(), ready.clone());
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut failures = 0u32;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            // try_: this task drives the event loop, so it must not wait on it.
                            if let Err(e) = client.try_subscribe(&acks_topic, QoS::AtLeastOnce) {
                                warn!(error = %e, "cannot subscribe to the acks topic");
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if failures > 0 {
                                info!(%url, "connected to ingest's broker again");
                            }
                            failures = 0;
                            ready.store(true, Ordering::Release);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) if p.topic == acks_topic => {
                            match serde_json::from_slice::<Ack>(&p.payload) {
                                Ok(ack) => {
                                    // Full means nobody is waiting: late answers to old
                                    // attempts, safe to drop.
                                    let _ = tx.try_send(ack);
                                }
                                Err(e) => warn!(topic = %p.topic, error = %e, "unreadable ack"),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            ready.store(false, Ordering::Release);
                            if failures.is_power_of_two() || failures == 0 {
                                warn!(%url, attempt = failures, error = %e, "MQTT connection failed");
                            }
                            failures = failures.saturating_add(1);
                            // rumqttc reconnects on the next poll; don't spin meanwhile.
                            tokio::time::sleep(super::RETRY.delay(failures.min(6))).await;
                        }
                    }
                }
            })
        };
        Ok(Self {
            client,
            batches_topic,
            ready,
            acks: Mutex::new(rx),
            task,
        })
    }

    /// Publishes batch `seq` of `epoch` and waits up to `timeout` for ingest's answer about it.
    pub(super) async fn send(
        &self,
        seq: u64,
        epoch: Option<u64>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Outcome {
        if !self.ready.load(Ordering::Acquire) {
            return Outcome::Retry("not connected to ingest's MQTT broker".into());
        }
        // One batch in flight at a time: the forwarder sends oldest first and waits.
        let mut acks = self.acks.lock().await;
        if let Err(e) = self
            .client
            .publish(&self.batches_topic, QoS::AtLeastOnce, false, body)
            .await
        {
            return Outcome::Retry(format!("publish: {e}"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ack = match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Some(a)) => a,
                Ok(None) => return Outcome::Retry("MQTT link closed".into()),
                Err(_) => {
                    return Outcome::Retry(format!(
                        "no ack from ingest for seq {seq} within {timeout:?}"
                    ));
                }
            };
            // An answer naming another epoch is about this seq before a new epoch (a late answer
            // to an earlier attempt); one naming none comes from an ingest before epochs, or is
            // about a body whose epoch could not be read.
            if ack.seq != Some(seq) || ack.epoch.is_some_and(|e| Some(e) != epoch) {
                // An answer to an earlier attempt at another batch, or to a body ingest could
                // not read the seq from: not about this batch.
                debug!(seq, ?epoch, ack = ?ack, "ack for another batch ignored");
                continue;
            }
            return match ack.reason.as_deref() {
                None => Outcome::Acknowledged,
                Some("seq_regressed") => {
                    Outcome::Regressed(format!("seq_regressed: {}", ack.error.unwrap_or_default()))
                }
                // Same split as the HTTP statuses: a bad batch stays bad, the rest may pass later.
                Some(r @ ("malformed" | "invalid" | "too_large" | "unsupported_media_type")) => {
                    Outcome::Refused(format!("{r}: {}", ack.error.unwrap_or_default()))
                }
                Some(r) => Outcome::Retry(format!("{r}: {}", ack.error.unwrap_or_default())),
            };
        }
    }
}
