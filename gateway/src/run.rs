//! Wires sources, the normalizer, the spool and the forwarder together, and stops them in
//! order: pollers first, then the normalizer writes what it holds to the spool, then the
//! forwarder drains the spool for a bounded time. Whatever is not acknowledged stays spooled.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reading_model::{Quality, Reading, WIRE_VERSION};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{ForwardMode, GatewayConfig};
use crate::forward::mqtt::MqttLink;
use crate::forward::{ForwardError, ForwardStats, Forwarder, http_client, tls_client_config};
use crate::normalize::normalize_mqtt;
use crate::normalize::{normalize_into, replay, replay_readings};
use crate::source::bus::{Bus, BusKey, SharedBus};
use crate::source::modbus::{device_plan, poll_device};
use crate::source::mqtt::{MessageAck, MqttConnection, MqttMessage, MqttSourceHandle};
use crate::source::{DeviceStats, Sample};
use crate::spool::{
    ARROW_MIN_READINGS, EncodedBatch, Encoding, Spool, SpoolError, SpoolLimits, SpoolState,
};
use crate::wire::StreamEncoder;

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
    /// Cumulative readings flagged `glitch`: below their counter and not (yet) a new counter,
    /// negative or not finite. Stored without a delta (see [`crate::counter`]).
    pub glitches: AtomicU64,
    /// Confirmed resets and undeclared meter swaps: each leaves an interval whose consumption
    /// no read observed (logged with the interval).
    pub resets: AtomicU64,
    pub spool_full: AtomicBool,
}

/// Normalizes samples and spools them as batches: a batch is cut when no sample has arrived
/// for a moment (the end of a poll cycle), when its first reading is [`MAX_BATCH_AGE`] old, or
/// when it holds `max_batch_readings`, so a site polled every second or slower spools, fsyncs
/// and forwards one batch per cycle.
///
/// Readings are encoded into the open batch [`CHUNK_READINGS`] at a time (one Arrow record
/// batch each, [`StreamEncoder`]), so a cycle of tens of thousands of readings is held as
/// compressed columns rather than as [`Reading`]s; only its cumulative readings are kept,
/// for the counters.
///
/// Two states are kept: `working` advances with every sample; `committed` only with what is
/// durably in the spool (what the spool's records and state snapshot say at the next open). If
/// the spool is full, the open batch and pending readings are let go and `working` falls back
/// to `committed`: the meters keep counting, so the first delta after the spool has room again
/// spans the whole wait and no energy is lost.
struct Normalizer {
    config: Arc<GatewayConfig>,
    spool: Arc<Spool>,
    committed: SpoolState,
    working: SpoolState,
    notify: Arc<Notify>,
    stats: Arc<NormalizerStats>,
    open: Option<OpenBatch>,
}

/// Readings encoded into the open batch at a time.
const CHUNK_READINGS: usize = 4096;

/// The longest a reading waits in the open batch: a batch is cut when its first reading is
/// this old, even if samples keep coming.
const MAX_BATCH_AGE: Duration = Duration::from_secs(1);

/// The batch being written: its seq, its body so far, and what its readings were.
struct OpenBatch {
    seq: u64,
    /// The spool's epoch when the batch was opened (the spool re-encodes it if that changes).
    epoch: u64,
    encoder: StreamEncoder,
    /// Its cumulative readings, in order: the committed counters advance to them once the
    /// batch is spooled.
    cumulative: Vec<Reading>,
    /// How many instantaneous readings it holds.
    instant: u64,
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
    let chunk = CHUNK_READINGS.min(config.forward.max_batch_readings);
    let mut n = Normalizer {
        config,
        spool,
        committed: state.clone(),
        working: state,
        notify,
        stats,
        open: None,
    };
    let mut pending: Vec<Reading> = Vec::new();
    // PUBACKs owed for MQTT messages whose readings are in `pending` or the open batch,
    // oldest first.
    let mut acks: Vec<MessageAck> = Vec::new();
    let linger = Duration::from_millis(200);
    // When the oldest reading not yet spooled arrived.
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let next = if pending.is_empty() && n.open.is_none() {
            since = None;
            recv_either(&mut rx, &mut mqtt_rx).await.map(Some)
        } else {
            let now = tokio::time::Instant::now();
            let first = *since.get_or_insert(now);
            // A source that never pauses (a saturated serial line, a busy MQTT broker) still
            // gets its readings spooled, and its messages acknowledged, every MAX_BATCH_AGE.
            let deadline = (now + linger).min(first + MAX_BATCH_AGE);
            match tokio::time::timeout_at(deadline, recv_either(&mut rx, &mut mqtt_rx)).await {
                Ok(s) => s.map(Some),
                Err(_) => Some(None),
            }
        };
        match next {
            Some(Some(input)) => {
                let before = pending.len();
                match input {
                    Input::Modbus(sample) => {
                        normalize_into(&n.config, &mut n.working, &sample, &mut pending);
                    }
                    Input::Mqtt(message) => {
                        for sample in &message.samples {
                            pending.extend(normalize_mqtt(&n.config, &mut n.working, sample));
                        }
                        acks.extend(message.ack);
                    }
                }
                n.count_flags(&pending[before..]);
                if pending.len() >= chunk {
                    n.encode_pending(&mut pending).await;
                }
            }
            Some(None) => n.cut(&mut pending).await,
            None => {
                n.cut(&mut pending).await;
                settle(&mut acks);
                return;
            }
        }
        // Everything received so far is spooled (or let go under the full-spool policy):
        // the messages it came in are settled.
        if pending.is_empty() && n.open.is_none() {
            settle(&mut acks);
        }
    }
}

/// What a batch's body is made from when it is spooled.
enum Body {
    /// Encoded already (the open batch, finished).
    Encoded(EncodedBatch),
    /// Readings too few for an Arrow stream's overhead: encoded as the spool decides.
    Small(Vec<Reading>),
}

/// Why a batch did not reach the spool.
enum NotSpooled {
    /// The spool is at its bound.
    Full,
    /// The blocking task that held it failed, or its body could not be encoded.
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
    /// Encodes `pending` into the open batch (opening one if none is), spooling the open
    /// batch each time it reaches `max_batch_readings`. Leaves `pending` empty, its capacity
    /// kept for the next chunk.
    async fn encode_pending(&mut self, pending: &mut Vec<Reading>) {
        let max = self.config.forward.max_batch_readings;
        while !pending.is_empty() {
            let rows = self.open.as_ref().map_or(0, |o| o.encoder.rows());
            if rows >= max {
                if let Err(e) = self.spool_open().await {
                    self.let_go(e, 0, 0, pending);
                    return;
                }
                continue;
            }
            let take = (max - rows).min(pending.len());
            let written = match self.open.as_mut() {
                Some(open) => open.encoder.write(&pending[..take]),
                None => StreamEncoder::new(
                    &self.config.gateway.id,
                    Some(self.spool.epoch()),
                    self.committed.next_seq,
                    WIRE_VERSION,
                )
                .and_then(|mut encoder| {
                    encoder.write(&pending[..take])?;
                    self.open = Some(OpenBatch {
                        seq: self.committed.next_seq,
                        epoch: self.spool.epoch(),
                        encoder,
                        cumulative: Vec::new(),
                        instant: 0,
                    });
                    Ok(())
                }),
            };
            if let Err(e) = written {
                error!(seq = self.committed.next_seq, error = %e, "cannot encode readings; counters fall back to what is spooled");
                self.let_go(NotSpooled::Lost, 0, 0, pending);
                return;
            }
            if let Some(open) = self.open.as_mut() {
                for r in pending.drain(..take) {
                    if r.quantity.is_cumulative() {
                        open.cumulative.push(r);
                    } else {
                        open.instant += 1;
                    }
                }
            }
        }
        if self.open.as_ref().is_some_and(|o| o.encoder.rows() >= max)
            && let Err(e) = self.spool_open().await
        {
            self.let_go(e, 0, 0, pending);
        }
    }

    /// The end of a poll cycle (or of the sources): spools the open batch with everything
    /// pending.
    async fn cut(&mut self, pending: &mut Vec<Reading>) {
        if self.open.is_none() && pending.len() < ARROW_MIN_READINGS {
            if pending.is_empty() {
                return;
            }
            let readings = std::mem::take(pending);
            let seq = self.committed.next_seq;
            let (cumulative, instant) = count(&readings);
            if let Err(e) = self.spool_body(seq, Body::Small(readings), None).await {
                self.let_go(e, cumulative, instant, pending);
            }
            return;
        }
        self.encode_pending(pending).await;
        if self.open.is_some()
            && let Err(e) = self.spool_open().await
        {
            self.let_go(e, 0, 0, pending);
        }
    }

    /// Finishes the open batch and spools it. On failure its readings are counted as let go.
    async fn spool_open(&mut self) -> Result<(), NotSpooled> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let OpenBatch {
            seq,
            epoch,
            encoder,
            cumulative,
            instant,
        } = open;
        let readings = encoder.rows();
        let body = match encoder.finish() {
            Ok(payload) => EncodedBatch {
                gateway: self.config.gateway.id.clone(),
                epoch: Some(epoch),
                seq,
                encoding: Encoding::Arrow,
                readings: u32::try_from(readings).unwrap_or(u32::MAX),
                payload,
            },
            Err(e) => {
                error!(seq, error = %e, "cannot encode readings; counters fall back to what is spooled");
                self.count_let_go(cumulative.len(), instant);
                return Err(NotSpooled::Lost);
            }
        };
        let held = cumulative.len();
        let spooled = self
            .spool_body(seq, Body::Encoded(body), Some(cumulative))
            .await;
        if spooled.is_err() {
            self.count_let_go(held, instant);
        }
        spooled
    }

    /// Lets go of `pending` (and of `cumulative` and `instant` readings already taken from
    /// it) after a batch was not spooled: counters fall back to what is spooled, so their next
    /// deltas span the wait and no energy is lost.
    fn let_go(
        &mut self,
        why: NotSpooled,
        cumulative: usize,
        instant: u64,
        pending: &mut Vec<Reading>,
    ) {
        let (c, i) = count(pending);
        pending.clear();
        let open = self.open.take();
        let (oc, oi) = open.map_or((0, 0), |o| (o.cumulative.len(), o.instant));
        self.count_let_go(cumulative + c + oc, instant + i + oi);
        if matches!(why, NotSpooled::Full) && !self.stats.spool_full.swap(true, Ordering::Relaxed) {
            error!(
                max_bytes = self.config.gateway.spool_max_bytes,
                "spool full: ingest has not acknowledged for a while; holding counters back \
                 (their next deltas will span the wait) and dropping instantaneous values"
            );
        }
        self.working = self.committed.clone();
    }

    /// Counts the glitches and confirmed resets among new readings.
    fn count_flags(&self, readings: &[Reading]) {
        for r in readings {
            let counter = match r.quality {
                Quality::Glitch => &self.stats.glitches,
                Quality::Reset => &self.stats.resets,
                _ => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_let_go(&self, cumulative: usize, instant: u64) {
        self.stats
            .readings_held_back
            .fetch_add(cumulative as u64, Ordering::Relaxed);
        self.stats
            .readings_dropped
            .fetch_add(instant, Ordering::Relaxed);
    }

    /// Spools one batch as `seq`, retrying while the disk fails; the committed counters then
    /// advance to its cumulative readings (`cumulative`, or the readings of a small body).
    ///
    /// Its fsync also makes the counters it advances durable (the spool replays them at
    /// open), so no state file is written per batch: only when the spool asks for a snapshot
    /// before it deletes a segment ([`Spool::state_due`]), which is also checked while the
    /// spool is full, since that is when the space is wanted.
    async fn spool_body(
        &mut self,
        seq: u64,
        body: Body,
        cumulative: Option<Vec<Reading>>,
    ) -> Result<(), NotSpooled> {
        let mut body = Some(body);
        let mut delay = Duration::from_millis(100);
        loop {
            // The committed state covers every batch appended so far, which is what a snapshot
            // must cover.
            let snapshot = self.spool.state_due().then(|| self.committed.clone());
            let sp = self.spool.clone();
            let gateway = self.config.gateway.id.clone();
            let Some(b) = body.take() else {
                return Err(NotSpooled::Lost);
            };
            let res = tokio::task::spawn_blocking(move || {
                let stored = (|| {
                    if let Some(state) = &snapshot {
                        sp.save_state(state)?;
                    }
                    if !sp.has_room() {
                        return Ok(false);
                    }
                    match &b {
                        Body::Encoded(encoded) => sp.append_encoded(encoded)?,
                        Body::Small(readings) => sp.append_encoded(&EncodedBatch::new(
                            &gateway,
                            Some(sp.epoch()),
                            seq,
                            WIRE_VERSION,
                            readings,
                        )?)?,
                    }
                    Ok::<_, SpoolError>(true)
                })();
                (stored, b)
            })
            .await;
            let (stored, b) = match res {
                Ok(r) => r,
                Err(e) => {
                    // The batch went with the task: it is let go as under a full spool, so
                    // counters fall back to what is spooled and lose no energy.
                    error!(seq, error = %e, "spool task failed; counters fall back to what is spooled");
                    return Err(NotSpooled::Lost);
                }
            };
            match stored {
                Ok(true) => {
                    let readings = match (&b, &cumulative) {
                        (_, Some(c)) => c.as_slice(),
                        (Body::Small(r), None) => r.as_slice(),
                        (Body::Encoded(_), None) => &[],
                    };
                    replay_readings(&mut self.committed, readings);
                    let n = match &b {
                        Body::Encoded(e) => u64::from(e.readings),
                        Body::Small(r) => r.len() as u64,
                    };
                    self.committed.next_seq = seq + 1;
                    self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    self.stats.readings_spooled.fetch_add(n, Ordering::Relaxed);
                    if self.stats.spool_full.swap(false, Ordering::Relaxed) {
                        info!(
                            "spool has room again; counters resume from their last spooled values"
                        );
                    }
                    self.notify.notify_one();
                    return Ok(());
                }
                Ok(false) => return Err(NotSpooled::Full),
                // A failing disk (not a full spool): keep the batch and try again; pollers keep
                // their pace and the sample channel applies back-pressure if this lasts.
                Err(e) => {
                    self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                    error!(seq, error = %e, retry_in = ?delay, "cannot spool batch");
                }
            }
            body = Some(b);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// How many of `readings` are cumulative and how many instantaneous.
fn count(readings: &[Reading]) -> (usize, u64) {
    let cumulative = readings
        .iter()
        .filter(|r| r.quantity.is_cumulative())
        .count();
    (cumulative, (readings.len() - cumulative) as u64)
}

#[cfg(test)]
mod tests {
    use device_profiles::DecodedValue;
    use reading_model::Unit;
    use tokio::time::Instant;

    use super::*;
    use crate::normalize::tests::SITE;

    /// A source that never pauses as long as the linger (a saturated serial line, a busy MQTT
    /// broker) must not hold its readings, and the PUBACKs behind them, until the batch is
    /// full: the batch is cut once its first reading is `MAX_BATCH_AGE` old.
    #[tokio::test]
    async fn a_batch_is_cut_at_its_age_while_samples_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(GatewayConfig::parse("site.toml", SITE, None).unwrap());
        let (spool, state) = Spool::open(dir.path(), SpoolLimits::for_max(64 << 20), |_, _| {})
            .expect("open the spool");
        let spool = Arc::new(spool);
        let (tx, rx) = mpsc::channel(64);
        let (mqtt_tx, mqtt_rx) = mpsc::channel(1);
        let normalizer = tokio::spawn(run_normalizer(
            config.clone(),
            spool.clone(),
            state,
            rx,
            mqtt_rx,
            Arc::new(Notify::new()),
            Arc::new(NormalizerStats::default()),
        ));
        let power = config.devices[0]
            .profile
            .registers
            .iter()
            .position(|r| r.name == "power_l2")
            .unwrap();
        // A sample every 50 ms, a quarter of the 200 ms linger, for 1.5 × MAX_BATCH_AGE.
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < MAX_BATCH_AGE * 3 / 2 {
            let sample = Sample {
                device: 0,
                ts: 1_767_225_600_000 + sent * 1_000,
                values: vec![(
                    power,
                    DecodedValue {
                        raw: 500.0,
                        value: 0.5,
                        unit: Unit::Kilowatt,
                    },
                )],
            };
            tx.send(sample).await.unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spooled_while_flowing = spool.pending().unwrap();
        // Both sources gone: the normalizer cuts what is left and returns.
        drop((tx, mqtt_tx));
        normalizer.await.unwrap();

        assert!(
            !spooled_while_flowing.is_empty(),
            "no batch spooled after {:?} of samples without a pause",
            start.elapsed()
        );
        // Cutting early loses nothing: every sample's reading is spooled exactly once.
        let spooled: usize = spool
            .pending()
            .unwrap()
            .into_iter()
            .map(|seq| spool.read(seq).unwrap().readings.len())
            .sum();
        assert_eq!(spooled, sent as usize);
    }
}
