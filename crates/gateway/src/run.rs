//! Wires sources, the normalizer, the spool and the forwarder together, and stops them in
//! order: pollers first, then the normalizer writes what it holds to the spool, then the
//! forwarder drains the spool for a bounded time. Whatever is not acknowledged stays spooled.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reading_model::{Reading, WIRE_VERSION};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{ForwardMode, GatewayConfig};
use crate::forward::mqtt::MqttLink;
use crate::forward::{ForwardError, ForwardStats, Forwarder, http_client, tls_client_config};
use crate::normalize::normalize_mqtt;
use crate::normalize::{normalize, replay, replay_readings};
use crate::source::bus::{Bus, BusKey, SharedBus};
use crate::source::modbus::{device_plan, poll_device};
use crate::source::mqtt::{MessageAck, MqttConnection, MqttMessage, MqttSourceHandle};
use crate::source::{DeviceStats, Sample};
use crate::spool::{EncodedBatch, Spool, SpoolError, SpoolLimits, SpoolState};

/// A gateway built from a validated config: spool opened, state recovered.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    spool: Arc<Spool>,
    state: SpoolState,
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub devices: Vec<Arc<DeviceStats>>,
    /// One per `[[mqtt_source]]`: connection, device and dead-letter counters.
    pub mqtt: Vec<MqttSourceHandle>,
    pub forward: Arc<ForwardStats>,
    pub normalizer: Arc<NormalizerStats>,
    pub spool: Arc<Spool>,
}

impl GatewayHandle {
    /// Stops polling, spools what is pending, drains the spool (bounded), and waits.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl Gateway {
    pub fn build(config: GatewayConfig) -> Result<Self, SpoolError> {
        let limits = SpoolLimits::for_max(config.gateway.spool_max_bytes);
        let (spool, state) = Spool::open(&config.gateway.spool_dir, limits, replay)?;
        Ok(Self {
            config: Arc::new(config),
            spool: Arc::new(spool),
            state,
        })
    }

    /// Starts every task; `drain` bounds how long `stop` waits for ingest.
    pub fn start(self, drain: Duration) -> Result<GatewayHandle, ForwardError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<Sample>(1024);
        let timeout = Duration::from_secs_f64(self.config.gateway.request_timeout);
        let mut tasks = Vec::new();
        let mut device_stats = Vec::new();
        let mut pollers = Vec::new();
        // One owner task per shared bus (TCP host:port or serial port): devices behind one
        // converter or on one RS-485 line share its connection. A bus task ends when its last
        // poller drops its handle.
        // A device alone on its bus (a meter with its own address) owns the line instead.
        let mut on_bus: BTreeMap<BusKey, usize> = BTreeMap::new();
        for d in &self.config.devices {
            *on_bus.entry(BusKey::of(&d.source)).or_default() += 1;
        }
        let mut buses: BTreeMap<BusKey, SharedBus> = BTreeMap::new();
        for (i, d) in self.config.devices.iter().enumerate() {
            let stats = Arc::new(DeviceStats::default());
            device_stats.push(stats.clone());
            let plan = device_plan(d, self.config.gateway.max_gap);
            let key = BusKey::of(&d.source);
            let bus = if on_bus.get(&key).copied().unwrap_or(0) <= 1 {
                Bus::owned(&d.source, timeout)
            } else {
                match buses.entry(key) {
                    Entry::Occupied(e) => e.get().bus(),
                    Entry::Vacant(e) => {
                        let (shared, task) = Bus::spawn(&d.source, timeout);
                        pollers.push(task);
                        e.insert(shared).bus()
                    }
                }
            };
            info!(device = %d.name(), profile = %d.profile.id, bus = %bus.key(), requests = plan.requests.len(), "polling");
            pollers.push(tokio::spawn(poll_device(
                i,
                Arc::new(d.clone()),
                plan,
                bus,
                stats,
                tx.clone(),
                shutdown_rx.clone(),
            )));
        }
        drop(buses);
        drop(tx);
        // MQTT sources send to the normalizer on their own channel, so Modbus polling and its
        // sample type stay as they are.
        let (mqtt_tx, mqtt_rx) = mpsc::channel::<MqttMessage>(1024);
        let mut mqtt = Vec::new();
        let dead_letters = self.config.gateway.spool_dir.join("dead-letters");
        for i in 0..self.config.mqtt.sources.len() {
            if let Some(conn) = MqttConnection::new(&self.config.mqtt, i, &dead_letters) {
                mqtt.push(conn.handle());
                pollers.push(tokio::spawn(conn.run(mqtt_tx.clone(), shutdown_rx.clone())));
            }
        }
        drop(mqtt_tx);

        let notify = Arc::new(Notify::new());
        let fwd_stats = Arc::new(ForwardStats::default());
        let forward = &self.config.forward;
        let client = http_client(forward)?;
        let mqtt_link = match forward.mode {
            ForwardMode::Http => None,
            ForwardMode::Mqtt => {
                let tls = forward
                    .url
                    .starts_with("mqtts:")
                    .then(|| tls_client_config(forward.ca_file.as_deref()))
                    .transpose()?;
                Some(MqttLink::connect(
                    &forward.url,
                    &self.config.gateway.id,
                    &self.config.token,
                    tls,
                )?)
            }
        };
        let forwarder = Forwarder {
            client,
            url: forward.url.clone(),
            token: self.config.token.clone(),
            spool: self.spool.clone(),
            stats: fwd_stats.clone(),
            mqtt: mqtt_link,
            timeout: Duration::from_secs_f64(forward.timeout),
        };
        // The forwarder is told to stop only after the normalizer has spooled its last batch.
        let (fwd_shutdown, fwd_shutdown_rx) = watch::channel(false);
        let normalizer_stats = Arc::new(NormalizerStats::default());
        let normalizer = tokio::spawn(run_normalizer(
            self.config.clone(),
            self.spool.clone(),
            self.state,
            rx,
            mqtt_rx,
            notify.clone(),
            normalizer_stats.clone(),
        ));
        let forwarder = tokio::spawn(forwarder.run(notify, fwd_shutdown_rx, drain));
        tasks.push(tokio::spawn(async move {
            for p in pollers {
                let _ = p.await;
            }
            // Pollers are gone, so the sample channel closes and the normalizer finishes.
            let _ = normalizer.await;
            let _ = fwd_shutdown.send(true);
            let _ = forwarder.await;
        }));
        Ok(GatewayHandle {
            shutdown,
            tasks,
            devices: device_stats,
            mqtt,
            forward: fwd_stats,
            normalizer: normalizer_stats,
            spool: self.spool,
        })
    }
}

/// What the normalizer did with readings, readable while the gateway runs.
#[derive(Debug, Default)]
pub struct NormalizerStats {
    pub batches_spooled: AtomicU64,
    pub readings_spooled: AtomicU64,
    /// Cumulative readings held back while the spool was full (their energy is in later deltas).
    pub readings_held_back: AtomicU64,
    /// Instantaneous readings dropped while the spool was full.
    pub readings_dropped: AtomicU64,
    /// Attempts to spool a batch that failed on the disk (not a full spool); retried.
    pub spool_errors: AtomicU64,
    pub spool_full: AtomicBool,
}

/// Normalizes samples and spools them as batches: a batch is cut when it is full or when no
/// sample has arrived for a moment (the end of a poll cycle).
///
/// Two states are kept: `working` advances with every sample; `committed` only with what is
/// durably in the spool (what the spool's records and state snapshot say at the next open). If the spool is full, pending readings
/// are let go and `working` falls back to `committed`: the meters keep counting, so the first
/// delta after the spool has room again spans the whole wait and no energy is lost.
struct Normalizer {
    config: Arc<GatewayConfig>,
    spool: Arc<Spool>,
    committed: SpoolState,
    working: SpoolState,
    notify: Arc<Notify>,
    stats: Arc<NormalizerStats>,
}

async fn run_normalizer(
    config: Arc<GatewayConfig>,
    spool: Arc<Spool>,
    state: SpoolState,
    mut rx: mpsc::Receiver<Sample>,
    mut mqtt_rx: mpsc::Receiver<MqttMessage>,
    notify: Arc<Notify>,
    stats: Arc<NormalizerStats>,
) {
    let mut n = Normalizer {
        config,
        spool,
        committed: state.clone(),
        working: state,
        notify,
        stats,
    };
    let mut pending: Vec<Reading> = Vec::new();
    // PUBACKs owed for MQTT messages whose readings are in `pending`, oldest first.
    let mut acks: Vec<MessageAck> = Vec::new();
    let linger = Duration::from_millis(200);
    loop {
        let next = if pending.is_empty() {
            recv_either(&mut rx, &mut mqtt_rx).await.map(Some)
        } else {
            match tokio::time::timeout(linger, recv_either(&mut rx, &mut mqtt_rx)).await {
                Ok(s) => s.map(Some),
                Err(_) => Some(None),
            }
        };
        match next {
            Some(Some(input)) => {
                match input {
                    Input::Modbus(sample) => {
                        pending.extend(normalize(&n.config, &mut n.working, &sample));
                    }
                    Input::Mqtt(message) => {
                        for sample in &message.samples {
                            pending.extend(normalize_mqtt(&n.config, &mut n.working, sample));
                        }
                        acks.extend(message.ack);
                    }
                }
                if pending.len() >= n.config.forward.max_batch_readings {
                    n.spool_pending(&mut pending).await;
                }
            }
            Some(None) => n.spool_pending(&mut pending).await,
            None => {
                n.spool_pending(&mut pending).await;
                settle(&mut acks);
                return;
            }
        }
        // Everything received so far is spooled (or let go under the full-spool policy):
        // the messages it came in are settled.
        if pending.is_empty() {
            settle(&mut acks);
        }
    }
}

/// Why a batch did not reach the spool.
enum NotSpooled {
    /// The spool is at its bound: the readings, given back.
    Full(Vec<Reading>),
    /// The blocking task that held them failed.
    Lost,
}

/// Sends the PUBACKs of settled MQTT messages, in the order the messages came.
fn settle(acks: &mut Vec<MessageAck>) {
    for ack in acks.drain(..) {
        ack.send();
    }
}

enum Input {
    Modbus(Sample),
    Mqtt(MqttMessage),
}

/// The next sample of either source kind; `None` once both channels are closed.
async fn recv_either(
    rx: &mut mpsc::Receiver<Sample>,
    mqtt: &mut mpsc::Receiver<MqttMessage>,
) -> Option<Input> {
    tokio::select! {
        Some(s) = rx.recv() => Some(Input::Modbus(s)),
        Some(s) = mqtt.recv() => Some(Input::Mqtt(s)),
        else => None,
    }
}

impl Normalizer {
    async fn spool_pending(&mut self, pending: &mut Vec<Reading>) {
        let max = self.config.forward.max_batch_readings;
        while !pending.is_empty() {
            // The whole of `pending` when it fits in one batch (the usual case): moved, not
            // copied.
            let readings = if pending.len() <= max {
                std::mem::take(pending)
            } else {
                pending.drain(..max).collect()
            };
            if let Err(not_spooled) = self.spool_batch(readings).await {
                let (held, full) = match not_spooled {
                    NotSpooled::Full(held) => (held, true),
                    NotSpooled::Lost => (Vec::new(), false),
                };
                let rest = std::mem::take(pending);
                let all = held.iter().chain(&rest);
                let (cumulative, instant): (Vec<&Reading>, Vec<&Reading>) =
                    all.partition(|r| r.quantity.is_cumulative());
                self.stats
                    .readings_held_back
                    .fetch_add(cumulative.len() as u64, Ordering::Relaxed);
                self.stats
                    .readings_dropped
                    .fetch_add(instant.len() as u64, Ordering::Relaxed);
                if full && !self.stats.spool_full.swap(true, Ordering::Relaxed) {
                    error!(
                        max_bytes = self.config.gateway.spool_max_bytes,
                        "spool full: ingest has not acknowledged for a while; holding counters back \
                         (their next deltas will span the wait) and dropping instantaneous values"
                    );
                }
                self.working = self.committed.clone();
                return;
            }
        }
    }

    /// Spools one batch; gives the readings back if the spool is full.
    ///
    /// The batch is encoded here, once, as the body the forwarder will send. Its fsync also
    /// makes the counters it advances durable (the spool replays them at open), so no state
    /// file is written per batch: only when the spool asks for a snapshot before it deletes a
    /// segment ([`Spool::state_due`]), which is also checked while the spool is full, since that
    /// is when the space is wanted.
    async fn spool_batch(&mut self, readings: Vec<Reading>) -> Result<(), NotSpooled> {
        if readings.is_empty() {
            return Ok(());
        }
        let seq = self.committed.next_seq;
        let mut readings = readings;
        let mut delay = Duration::from_millis(100);
        loop {
            // The committed state covers every batch appended so far, which is what a snapshot
            // must cover.
            let snapshot = self.spool.state_due().then(|| self.committed.clone());
            let sp = self.spool.clone();
            let gateway = self.config.gateway.id.clone();
            let batch = std::mem::take(&mut readings);
            let res = tokio::task::spawn_blocking(move || {
                let stored = (|| {
                    if let Some(state) = &snapshot {
                        sp.save_state(state)?;
                    }
                    if !sp.has_room() {
                        return Ok(false);
                    }
                    let encoded = EncodedBatch::new(&gateway, seq, WIRE_VERSION, &batch)?;
                    sp.append_encoded(&encoded)?;
                    Ok::<_, SpoolError>(true)
                })();
                (stored, batch)
            })
            .await;
            let (stored, batch) = match res {
                Ok(r) => r,
                Err(e) => {
                    // The readings went with the task: let them go as a full spool does, so
                    // counters fall back to what is spooled and lose no energy.
                    error!(seq, error = %e, "spool task failed; counters fall back to what is spooled");
                    return Err(NotSpooled::Lost);
                }
            };
            readings = batch;
            match stored {
                Ok(true) => {
                    replay_readings(&mut self.committed, &readings);
                    self.committed.next_seq = seq + 1;
                    self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .readings_spooled
                        .fetch_add(readings.len() as u64, Ordering::Relaxed);
                    if self.stats.spool_full.swap(false, Ordering::Relaxed) {
                        info!(
                            "spool has room again; counters resume from their last spooled values"
                        );
                    }
                    self.notify.notify_one();
                    return Ok(());
                }
                Ok(false) => return Err(NotSpooled::Full(readings)),
                // A failing disk (not a full spool): keep the batch and try again; pollers keep
                // their pace and the sample channel applies back-pressure if this lasts.
                Err(e) => {
                    self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                    error!(seq, error = %e, retry_in = ?delay, "cannot spool batch");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}
