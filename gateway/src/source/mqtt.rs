//! MQTT devices: one connection per configured broker (`[[mqtt_source]]`), subscribed with QoS 1
//! in a persistent session (`clean_session = false`, so the broker keeps messages for the
//! gateway while it is away) to every device's topic filter. Each message is decoded by its
//! device's firmware (`firmware-bridge`) and the values go to the same normalizer as Modbus
//! samples, as [`MqttSample`]s.
//!
//! A payload that does not decode is never fatal: it goes to the source's dead-letter file
//! ([`dead_letter`]) with its topic, bytes and reason, is counted on its device, and is warned
//! about at most once per [`WARN_EVERY`] per device. So is a payload over the source's
//! `max_payload_bytes` (1 MiB by default), undecoded: the client reads packets of any size MQTT
//! can frame, because one over its own limit would fail the connection before it could be
//! acknowledged and come back at every reconnect. Messages of a device that carry no
//! readings by design (Tasmota `STATE` and `LWT`, Shelly `online`, Zigbee2MQTT availability)
//! are counted as ignored, not rejected.
//!
//! Stateful firmwares talk back: a Shelly whose `NotifyStatus` deltas arrive before its full
//! status is asked for it (`Shelly.GetStatus`, answered on `<client_id>/rpc`); a Sparkplug node
//! whose BIRTH was missed is asked to rebirth (NCMD). Both requests are rate-limited per device.
//!
//! A QoS 1 message is acknowledged (PUBACK, manual acks) only once what it carried is settled:
//! its readings appended to the spool and fsynced, or let go under the full-spool policy
//! (counters held back, so their energy is in the next delta; instantaneous values dropped and
//! counted), or it carried none (ignored by design, no device, or undecodable and handed to the
//! dead-letter file, which is for diagnosis: the same bytes would fail again). Each message goes
//! to the normalizer as one [`MqttMessage`] with its acknowledgement, and the normalizer sends
//! the PUBACKs in the order the messages came. A gateway that crashes (or a spool that cannot
//! be written) before that leaves the message unacknowledged in its persistent session, and the
//! broker delivers it again when the gateway reconnects.

pub mod dead_letter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::FixedOffset;
use firmware_bridge::{
    Basis, DecodeError, EsphomeRegistry, FirmwareValue, JsonMapping, ShellyState, SparkplugHost,
    esphome, shelly, sparkplug, tasmota, zigbee2mqtt,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use self::dead_letter::{DeadLetter, DeadLetters};
use crate::backoff::Backoff;
use crate::config::mqtt::{Firmware, MqttConfig, MqttSource};

/// Per-device warnings about bad payloads are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A device is asked again for its full status (Shelly) or a rebirth (Sparkplug) after this.
const REQUEST_EVERY: Duration = Duration::from_secs(30);

/// Shelly status requests waiting for an answer, at most.
const MAX_PENDING: usize = 1024;

/// Waits between reconnect attempts: 250 ms, doubling up to 30 s (without jitter, as it
/// always was).
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30), 0.0);

/// One MQTT message for the normalizer: the samples decoded from it (none if it carried no
/// readings) and how to acknowledge it once they are settled.
#[derive(Debug)]
pub struct MqttMessage {
    pub samples: Vec<MqttSample>,
    /// `None` for QoS 0 messages (nothing to acknowledge).
    pub ack: Option<MessageAck>,
}

/// The PUBACK a QoS 1 message is owed.
#[derive(Debug)]
pub struct MessageAck {
    client: AsyncClient,
    publish: rumqttc::Publish,
}

impl MessageAck {
    /// Queues the PUBACK. Without waiting: the connection task, which sends it, may itself be
    /// waiting for the normalizer. If its queue is full the PUBACK is lost and the broker
    /// delivers the message again at the next session, which the normalizer takes as a
    /// duplicate.
    pub fn send(self) {
        if let Err(e) = self.client.try_ack(&self.publish) {
            debug!(topic = %self.publish.topic, pkid = self.publish.pkid, error = %e, "cannot queue PUBACK");
        }
    }
}

/// Values decoded from one MQTT message of one device.
#[derive(Debug, Clone)]
pub struct MqttSample {
    /// Index of the device in `config.mqtt.devices`.
    pub device: usize,
    /// When the gateway received the message, UTC ms: the timestamp of values whose payload has
    /// none (or whose device's clock is not trusted).
    pub received: i64,
    pub values: Vec<FirmwareValue>,
}

/// Counters of one MQTT device, readable while the gateway runs.
#[derive(Debug, Default)]
pub struct MqttDeviceStats {
    /// Messages on the device's topics.
    pub messages: AtomicU64,
    /// Values sent on to the normalizer.
    pub values: AtomicU64,
    /// Messages that carry no readings by design (availability, state without energy).
    pub ignored: AtomicU64,
    /// Payloads that did not decode; each went to the dead-letter file.
    pub decode_errors: AtomicU64,
    /// Full-status (Shelly) and rebirth (Sparkplug) requests published.
    pub requests: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MqttDeviceStats {
    /// Why the device's last rejected payload was rejected.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_last_error(&self, error: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }
}

/// Counters of one broker connection.
#[derive(Debug, Default)]
pub struct MqttSourceStats {
    pub connected: AtomicBool,
    /// The broker has acknowledged the subscriptions of the current connection.
    pub subscribed: AtomicBool,
    /// Sessions the broker accepted (CONNACK), the first included.
    pub connections: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: AtomicU64,
    pub messages: AtomicU64,
    /// Messages that matched no device (nor a discovery or answer topic).
    pub unrouted: AtomicU64,
    /// Messages rejected that belonged to no single device (bad discovery configs).
    pub rejected: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What one broker connection exposes while it runs.
#[derive(Debug, Clone)]
pub struct MqttSourceHandle {
    pub name: String,
    pub stats: Arc<MqttSourceStats>,
    pub dead_letters: DeadLetters,
    /// (index in `config.mqtt.devices`, its counters)
    pub devices: Vec<(usize, Arc<MqttDeviceStats>)>,
}

/// Logs one line per `WARN_EVERY` and says how many were held back in between.
#[derive(Debug, Default)]
struct RateLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(n) if now < n => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next = Some(now + WARN_EVERY);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

enum Decoder {
    Tasmota(FixedOffset),
    Shelly(Box<ShellyState>),
    Esphome,
    Zigbee2mqtt(String),
    Sparkplug(Box<SparkplugHost>),
    Json(JsonMapping),
}

struct Route {
    device: usize,
    name: String,
    filter: String,
    channel: Option<String>,
    decoder: Decoder,
    stats: Arc<MqttDeviceStats>,
    warn: RateLimit,
    /// Request topic (Shelly device prefix, Sparkplug NCMD topic) → when it was last asked.
    asked: HashMap<String, Instant>,
}

/// Something to publish back to the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub qos: QoS,
    pub payload: Vec<u8>,
}

/// What one message turned into.
#[derive(Debug, Default)]
pub struct Handled {
    pub samples: Vec<MqttSample>,
    pub publish: Vec<Outgoing>,
}

/// The decoding side of one broker connection: routes, firmware state, dead letters. Pure
/// apart from the dead-letter queue, so it is tested without a broker.
pub struct Router {
    source: MqttSource,
    routes: Vec<Route>,
    esphome: EsphomeRegistry,
    discovery_prefixes: Vec<String>,
    /// Where Shelly devices answer `Shelly.GetStatus`: `<client_id>/rpc`.
    rpc_topic: String,
    /// Request id → (route, device prefix, when asked).
    pending: HashMap<u64, (usize, String, Instant)>,
    next_id: u64,
    dead: DeadLetters,
    stats: Arc<MqttSourceStats>,
    warn: RateLimit,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("source", &self.source.name)
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl Router {
    /// The routes of the devices of source `source_index`; letters go to `dead`.
    pub fn new(config: &MqttConfig, source_index: usize, dead: DeadLetters) -> Option<Self> {
        let source = config.sources.get(source_index)?.clone();
        let mut esphome = EsphomeRegistry::new();
        let mut discovery_prefixes = Vec::new();
        let mut routes = Vec::new();
        for (i, d) in config.devices.iter().enumerate() {
            if d.source != source_index {
                continue;
            }
            let decoder = match &d.firmware {
                Firmware::Tasmota { utc_offset } => Decoder::Tasmota(*utc_offset),
                Firmware::Shelly => Decoder::Shelly(Box::default()),
                Firmware::Esphome {
                    sensors,
                    discovery_prefix,
                } => {
                    for s in sensors {
                        esphome.configure(s.clone());
                    }
                    if !discovery_prefixes.contains(discovery_prefix) {
                        discovery_prefixes.push(discovery_prefix.clone());
                    }
                    Decoder::Esphome
                }
                Firmware::Zigbee2mqtt { base_topic } => Decoder::Zigbee2mqtt(base_topic.clone()),
                Firmware::Sparkplug(c) => {
                    Decoder::Sparkplug(Box::new(SparkplugHost::new(c.clone())))
                }
                Firmware::JsonMapping(m) => Decoder::Json(m.clone()),
            };
            routes.push(Route {
                device: i,
                name: d.name(),
                filter: d.topic.clone(),
                channel: d.channel.clone(),
                decoder,
                stats: Arc::new(MqttDeviceStats::default()),
                warn: RateLimit::default(),
                asked: HashMap::new(),
            });
        }
        Some(Self {
            rpc_topic: format!("{}/rpc", source.client_id),
            source,
            routes,
            esphome,
            discovery_prefixes,
            pending: HashMap::new(),
            next_id: 1,
            dead,
            stats: Arc::new(MqttSourceStats::default()),
            warn: RateLimit::default(),
        })
    }

    pub fn handle_info(&self) -> MqttSourceHandle {
        MqttSourceHandle {
            name: self.source.name.clone(),
            stats: self.stats.clone(),
            dead_letters: self.dead.clone(),
            devices: self
                .routes
                .iter()
                .map(|r| (r.device, r.stats.clone()))
                .collect(),
        }
    }

    /// The topic filters to subscribe to: every device's, ESPHome discovery, Shelly answers.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |f: String| {
            if !out.contains(&f) {
                out.push(f);
            }
        };
        for r in &self.routes {
            add(r.filter.clone());
        }
        for p in &self.discovery_prefixes {
            add(format!("{p}/sensor/#"));
        }
        if self
            .routes
            .iter()
            .any(|r| matches!(r.decoder, Decoder::Shelly(_)))
        {
            add(self.rpc_topic.clone());
        }
        out
    }

    fn is_discovery(&self, topic: &str) -> bool {
        topic.ends_with("/config")
            && self.discovery_prefixes.iter().any(|p| {
                topic
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            })
    }

    fn reject_unowned(&mut self, topic: &str, payload: &[u8], reason: String, now: Instant) {
        inc(&self.stats.rejected);
        if let Some(suppressed) = self.warn.allow(now) {
            warn!(source = %self.source.name, topic, suppressed, reason, "rejected MQTT message (kept in the dead-letter file)");
        }
        self.dead.send(DeadLetter::new(
            &self.source.name,
            None,
            topic,
            payload,
            reason,
        ));
    }

    /// Dead-letters a payload over `max_payload_bytes` for every device whose filter matches
    /// its topic (or as nobody's), without decoding it.
    fn reject_oversized(&mut self, topic: &str, payload: &[u8], now: Instant) {
        let reason = format!(
            "{topic}: payload of {} bytes is over the source's max_payload_bytes ({}); not decoded",
            payload.len(),
            self.source.max_payload_bytes
        );
        let mut routed = false;
        for ri in 0..self.routes.len() {
            if rumqttc::matches(topic, &self.routes[ri].filter) {
                routed = true;
                inc(&self.routes[ri].stats.messages);
                self.reject(ri, topic, payload, reason.clone(), now);
            }
        }
        if !routed {
            self.reject_unowned(topic, payload, reason, now);
        }
    }

    /// Counts a payload route `ri` could not use and dead-letters it with `reason`.
    fn reject(&mut self, ri: usize, topic: &str, payload: &[u8], reason: String, now: Instant) {
        let route = &mut self.routes[ri];
        inc(&route.stats.decode_errors);
        route.stats.set_last_error(reason.clone());
        if let Some(suppressed) = route.warn.allow(now) {
            warn!(device = %route.name, topic, suppressed, reason, "bad MQTT payload (kept in the dead-letter file)");
        }
        self.dead.send(DeadLetter::new(
            &self.source.name,
            Some(route.name.clone()),
            topic,
            payload,
            reason,
        ));
    }

    /// Decodes one message for every device whose filter matches its topic.
    pub fn handle(&mut self, topic: &str, payload: &[u8], received_ms: i64) -> Handled {
        let now = Instant::now();
        inc(&self.stats.messages);
        let mut out = Handled::default();
        if payload.len() > self.source.max_payload_bytes {
            self.reject_oversized(topic, payload, now);
            return out;
        }
        let mut routed = false;
        if topic == self.rpc_topic {
            routed = true;
            self.shelly_answer(topic, payload, received_ms, now, &mut out);
        }
        if self.is_discovery(topic) {
            routed = true;
            match self.esphome.learn(topic, payload) {
                Ok(d) => {
                    debug!(source = %self.source.name, topic, discovery = ?d, "ESPHome discovery")
                }
                Err(e) => self.reject_unowned(topic, payload, e.to_string(), now),
            }
        }
        for ri in 0..self.routes.len() {
            if !rumqttc::matches(topic, &self.routes[ri].filter) {
                continue;
            }
            routed = true;
            inc(&self.routes[ri].stats.messages);
            let (decoded, mut problems) =
                self.decode_for_route(ri, topic, payload, received_ms, now, &mut out);
            let route = &mut self.routes[ri];
            match decoded {
                Ok(None) => inc(&route.stats.ignored),
                Ok(Some(values)) => {
                    if let Some(s) = sample(route, values, received_ms) {
                        out.samples.push(s);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
            if !problems.is_empty() {
                self.reject(ri, topic, payload, problems.join("; "), now);
            }
        }
        if !routed {
            inc(&self.stats.unrouted);
        }
        out
    }

    /// Decodes a message for route `ri`; requests the decoder calls for (a Shelly's full
    /// status, a Sparkplug node's rebirth) go to `out`. Beside the values, the problems the
    /// decoder met with some of them.
    fn decode_for_route(
        &mut self,
        ri: usize,
        topic: &str,
        payload: &[u8],
        received_ms: i64,
        now: Instant,
        out: &mut Handled,
    ) -> (Result<Option<Vec<FirmwareValue>>, DecodeError>, Vec<String>) {
        let client_id = &self.source.client_id;
        let esphome = &self.esphome;
        let route = &mut self.routes[ri];
        let mut problems = Vec::new();
        let decoded: Result<Option<Vec<FirmwareValue>>, DecodeError> = match &mut route.decoder {
            Decoder::Tasmota(offset) => match tasmota::Message::of_topic(topic) {
                None => Ok(None),
                Some(_) => tasmota::decode(topic, payload, *offset).map(Some),
            },
            Decoder::Shelly(state) => match shelly::parse_topic(topic) {
                None => Ok(None),
                Some(t) => state.apply(topic, payload).map(|u| {
                    if u.needs_full_status {
                        let prefix = match t {
                            shelly::Topic::Events { device }
                            | shelly::Topic::Status { device, .. }
                            | shelly::Topic::Online { device } => device,
                        };
                        if ask(&mut route.asked, prefix, now) {
                            let id = self.next_id;
                            self.next_id += 1;
                            if self.pending.len() >= MAX_PENDING {
                                self.pending.retain(|_, (_, _, at)| {
                                    now.duration_since(*at) < REQUEST_EVERY
                                });
                            }
                            if self.pending.len() < MAX_PENDING {
                                self.pending.insert(id, (ri, prefix.to_owned(), now));
                                let (topic, payload) =
                                    shelly::get_status_request(prefix, client_id, id);
                                inc(&route.stats.requests);
                                out.publish.push(Outgoing {
                                    topic,
                                    qos: QoS::AtLeastOnce,
                                    payload: payload.into_bytes(),
                                });
                            }
                        }
                    }
                    (!u.values.is_empty()).then_some(u.values)
                }),
            },
            Decoder::Esphome => {
                if esphome.spec(topic).is_none() && esphome::parse_state_topic(topic).is_none() {
                    Ok(None)
                } else {
                    esphome.decode(topic, payload).map(|v| v.map(|v| vec![v]))
                }
            }
            Decoder::Zigbee2mqtt(base) => match zigbee2mqtt::device_name(topic, base) {
                None => Ok(None),
                Some(_) => zigbee2mqtt::decode(topic, payload, base).map(Some),
            },
            Decoder::Sparkplug(host) => host.handle(topic, payload).map(|o| {
                if let Some(r) = o
                    .rebirth
                    .as_ref()
                    .filter(|r| ask(&mut route.asked, &r.topic, now))
                {
                    inc(&route.stats.requests);
                    info!(
                        device = %route.name,
                        topic = %r.topic,
                        reason = ?r.reason,
                        "asking a Sparkplug node to rebirth"
                    );
                    out.publish.push(Outgoing {
                        topic: r.topic.clone(),
                        // Sparkplug sends commands at QoS 0.
                        qos: QoS::AtMostOnce,
                        payload: sparkplug::rebirth_payload(
                            u64::try_from(received_ms).unwrap_or(0),
                        ),
                    });
                }
                problems = o
                    .problems
                    .iter()
                    .map(|p| format!("{}: {}", p.metric, p.reason))
                    .collect();
                Some(o.values)
            }),
            Decoder::Json(m) => m.decode(topic, payload).map(Some),
        };
        (decoded, problems)
    }

    /// An answer to `Shelly.GetStatus` on `<client_id>/rpc`.
    fn shelly_answer(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_ms: i64,
        now: Instant,
        out: &mut Handled,
    ) {
        let id = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
        let Some((ri, prefix, _)) = id.and_then(|id| self.pending.remove(&id)) else {
            self.reject_unowned(
                topic,
                payload,
                "an answer on the gateway's rpc topic with no request id it is waiting for".into(),
                now,
            );
            return;
        };
        let Some(route) = self.routes.get_mut(ri) else {
            return;
        };
        let Decoder::Shelly(state) = &mut route.decoder else {
            return;
        };
        match state.apply_response(&prefix, topic, payload) {
            Ok(u) => {
                if let Some(s) = sample(route, u.values, received_ms) {
                    out.samples.push(s);
                }
            }
            Err(e) => {
                let reason = e.to_string();
                inc(&route.stats.decode_errors);
                route.stats.set_last_error(reason.clone());
                if let Some(suppressed) = route.warn.allow(now) {
                    warn!(device = %route.name, topic, suppressed, reason, "bad Shelly status answer (kept in the dead-letter file)");
                }
                self.dead.send(DeadLetter::new(
                    &self.source.name,
                    Some(route.name.clone()),
                    topic,
                    payload,
                    reason,
                ));
            }
        }
    }
}

/// Whether `key` may be asked again now; records the asking.
fn ask(asked: &mut HashMap<String, Instant>, key: &str, now: Instant) -> bool {
    match asked.get(key) {
        Some(at) if now.duration_since(*at) < REQUEST_EVERY => false,
        _ => {
            if asked.len() >= MAX_PENDING {
                asked.retain(|_, at| now.duration_since(*at) < REQUEST_EVERY);
            }
            asked.insert(key.to_owned(), now);
            true
        }
    }
}

/// The readings among `values`: counters and gauges of the device's channel (all channels when
/// it names none). `Today`, `Yesterday` and `Period` are views of the counter and are left out.
fn sample(route: &Route, mut values: Vec<FirmwareValue>, received: i64) -> Option<MqttSample> {
    values.retain(|v| {
        matches!(v.basis, Basis::Total | Basis::Instant)
            && route.channel.as_deref().is_none_or(|c| v.channel == c)
    });
    route
        .stats
        .values
        .fetch_add(values.len() as u64, Ordering::Relaxed);
    if values.is_empty() {
        return None;
    }
    Some(MqttSample {
        device: route.device,
        received,
        values,
    })
}

/// The client options of a source: persistent session, QoS 1 subscriptions, TLS if configured.
pub fn options(source: &MqttSource) -> Result<MqttOptions, std::io::Error> {
    let mut o = MqttOptions::new(&source.client_id, &source.host, source.port);
    o.set_clean_session(false);
    // PUBACK only once the message is settled (see the module doc), not on arrival.
    o.set_manual_acks(true);
    o.set_keep_alive(source.keep_alive);
    // Incoming packets are read whatever their size (up to what MQTT can frame): a packet
    // over the client's limit fails the connection before its packet id is known, so it can
    // never be acknowledged, and a persistent session delivers it again at every reconnect,
    // for ever, losing every later message. Payloads over `max_payload_bytes` are
    // dead-lettered instead (`Router::handle`). What we send stays small.
    o.set_max_packet_size(crate::config::mqtt::MQTT_MAX_PACKET, 1 << 20);
    if let Some((u, p)) = &source.credentials {
        o.set_credentials(u, p);
    }
    if let Some(ca) = &source.tls_ca {
        let pem = std::fs::read(ca)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", ca.display())))?;
        crate::tls::install_crypto_provider();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: pem,
            alpn: None,
            client_auth: None,
        }));
    }
    Ok(o)
}

/// A broker connection ready to run.
#[derive(Debug)]
pub struct MqttConnection {
    router: Router,
}

impl MqttConnection {
    /// Source `index` of `config`: its routes and its dead-letter writer (files under
    /// `dead_letter_dir`). Needs a tokio runtime (the writer runs on its blocking pool).
    pub fn new(
        config: &MqttConfig,
        index: usize,
        dead_letter_dir: &std::path::Path,
    ) -> Option<Self> {
        let source = config.sources.get(index)?;
        let dead = DeadLetters::start(dead_letter_dir, &source.name, source.dead_letter_max_bytes);
        Router::new(config, index, dead).map(|router| Self { router })
    }

    pub fn handle(&self) -> MqttSourceHandle {
        self.router.handle_info()
    }

    /// Runs until `shutdown`: connects, subscribes on every (re)connection, decodes and sends
    /// samples (waiting when the normalizer is behind), reconnects with exponential backoff.
    pub async fn run(self, tx: mpsc::Sender<MqttMessage>, mut shutdown: watch::Receiver<bool>) {
        let mut router = self.router;
        let name = router.source.name.clone();
        let stats = router.stats.clone();
        let subscriptions = router.subscriptions();
        // Failed attempts since the last connection: the next wait is `RECONNECT.delay(failures)`.
        let mut failures = 0u32;
        // The CA file was there when the config was checked; if it went missing since, keep
        // trying rather than give the source up.
        let options = loop {
            match options(&router.source) {
                Ok(o) => break o,
                Err(e) => {
                    let backoff = RECONNECT.delay(failures);
                    error!(source = %name, error = %e, retry_in = ?backoff, "cannot set up the MQTT connection");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    failures = failures.saturating_add(1);
                }
            }
        };
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        info!(source = %name, host = %router.source.host, port = router.source.port, devices = router.routes.len(), "connecting to MQTT broker");
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    stats.connected.store(true, Ordering::Relaxed);
                    inc(&stats.connections);
                    failures = 0;
                    info!(source = %name, session_present = ack.session_present, "MQTT connected");
                    // Subscribing again on a resumed session is harmless and picks up devices
                    // added to the config since the session began.
                    let filters = subscriptions
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        warn!(source = %name, error = %e, "cannot queue MQTT subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count();
                    if refused > 0 {
                        error!(source = %name, refused, "the broker refused subscriptions (check its ACL)");
                    }
                    stats.subscribed.store(true, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let handled = router.handle(&p.topic, &p.payload, super::now_ms());
                    let ack = (p.qos != QoS::AtMostOnce).then(|| MessageAck {
                        client: client.clone(),
                        publish: p,
                    });
                    let message = MqttMessage {
                        samples: handled.samples,
                        ack,
                    };
                    if tx.send(message).await.is_err() {
                        return;
                    }
                    for o in handled.publish {
                        if let Err(e) = client.try_publish(o.topic, o.qos, false, o.payload) {
                            debug!(source = %name, error = %e, "cannot queue a request to a device");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    stats.subscribed.store(false, Ordering::Relaxed);
                    inc(&stats.connection_errors);
                    let backoff = RECONNECT.delay(failures);
                    warn!(source = %name, error = %e, retry_in = ?backoff, "MQTT connection failed");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        stats.connected.store(false, Ordering::Relaxed);
        // A clean DISCONNECT tells the broker not to publish a will; the session itself stays.
        if client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while eventloop.poll().await.is_ok() {}
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests;
