//! Wires sources, the normalizer, the spool and the forwarder together, and stops them in
//! order: pollers first, then the normalizer writes what it holds to the spool, then the
//! forwarder drains the spool for a bounded time. Whatever is not acknowledged stays spooled.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reading_model::{Batch, Reading};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{ForwardMode, GatewayConfig};
use crate::forward::mqtt::MqttLink;
use crate::forward::{ForwardError, ForwardStats, Forwarder, http_client, tls_client_config};
use crate::normalize::normalize_mqtt;
use crate::normalize::{normalize, replay};
use crate::source::bus::{Bus, BusKey};
use crate::source::modbus::{device_plan, poll_device};
use crate::source::mqtt::{MqttConnection, MqttSample, MqttSourceHandle};
use crate::source::{DeviceStats, Sample};
use crate::spool::{Spool, SpoolError, SpoolLimits, SpoolState};

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
        // One owner task per bus (TCP host:port or serial port): devices behind one converter
        // or on one RS-485 line share its connection. A bus task ends when its last poller
        // drops its handle.
        let mut buses: BTreeMap<BusKey, Bus> = BTreeMap::new();
        for (i, d) in self.config.devices.iter().enumerate() {
            let stats = Arc::new(DeviceStats::default());
            device_stats.push(stats.clone());
            let plan = device_plan(d, self.config.gateway.max_gap);
            let bus = match buses.entry(BusKey::of(&d.source)) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(e) => {
                    let (bus, task) = Bus::spawn(&d.source, timeout);
                    pollers.push(task);
                    e.insert(bus).clone()
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
        let (mqtt_tx, mqtt_rx) = mpsc::channel::<MqttSample>(1024);
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
    pub spool_full: AtomicBool,
}

/// Normalizes samples and spools them as batches: a batch is cut when it is full or when no
/// sample has arrived for a moment (the end of a poll cycle).
///
/// Two states are kept: `working` advances with every sample; `committed` only with what is
/// durably in the spool, and is what `state.json` holds. If the spool is full, pending readings
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
    mut mqtt_rx: mpsc::Receiver<MqttSample>,
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
                    Input::Mqtt(sample) => {
                        pending.extend(normalize_mqtt(&n.config, &mut n.working, &sample));
                    }
                }
                if pending.len() >= n.config.forward.max_batch_readings {
                    n.spool_pending(&mut pending).await;
                }
            }
            Some(None) => n.spool_pending(&mut pending).await,
            None => {
                n.spool_pending(&mut pending).await;
                return;
            }
        }
    }
}

enum Input {
    Modbus(Sample),
    Mqtt(MqttSample),
}

/// The next sample of either source kind; `None` once both channels are closed.
async fn recv_either(
    rx: &mut mpsc::Receiver<Sample>,
    mqtt: &mut mpsc::Receiver<MqttSample>,
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
            let take = pending.len().min(max);
            let readings: Vec<Reading> = pending.drain(..take).collect();
            if let Err(held) = self.spool_batch(readings).await {
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
                if !self.stats.spool_full.swap(true, Ordering::Relaxed) {
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
    async fn spool_batch(&mut self, readings: Vec<Reading>) -> Result<(), Vec<Reading>> {
        if readings.is_empty() {
            return Ok(());
        }
        let batch = Batch::new(
            self.config.gateway.id.clone(),
            self.committed.next_seq,
            readings,
        );
        // The state saved with a batch is the committed state advanced by exactly that batch,
        // never by readings still waiting in memory.
        let mut next = self.committed.clone();
        replay(&mut next, &batch);
        next.next_seq = batch.seq + 1;
        let mut delay = Duration::from_millis(100);
        loop {
            let sp = self.spool.clone();
            let b = batch.clone();
            let st = next.clone();
            let res = tokio::task::spawn_blocking(move || {
                if !sp.has_room() {
                    return Ok(false);
                }
                sp.append(&b)?;
                sp.save_state(&st)?;
                Ok::<_, SpoolError>(true)
            })
            .await;
            match res {
                Ok(Ok(true)) => {
                    self.committed = next;
                    self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .readings_spooled
                        .fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
                    if self.stats.spool_full.swap(false, Ordering::Relaxed) {
                        info!(
                            "spool has room again; counters resume from their last spooled values"
                        );
                    }
                    self.notify.notify_one();
                    return Ok(());
                }
                Ok(Ok(false)) => return Err(batch.readings),
                // A failing disk (not a full spool): keep the batch and try again; pollers keep
                // their pace and the sample channel applies back-pressure if this lasts.
                Ok(Err(e)) => {
                    error!(seq = batch.seq, error = %e, retry_in = ?delay, "cannot spool batch");
                }
                Err(e) => error!(error = %e, "spool task failed"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}
