//! Wires sources, the normalizer, the spool and the forwarder together, and stops them in
//! order: pollers first, then the normalizer writes what it holds to the spool, then the
//! forwarder drains the spool for a bounded time. Whatever is not acknowledged stays spooled.

use std::sync::Arc;
use std::time::Duration;

use reading_model::{Batch, Reading};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::GatewayConfig;
use crate::forward::{ForwardStats, Forwarder};
use crate::normalize::{normalize, replay};
use crate::source::modbus::{device_plan, poll_device};
use crate::source::{DeviceStats, Sample};
use crate::spool::{Spool, SpoolError, SpoolState};

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
    pub forward: Arc<ForwardStats>,
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
        let (spool, state) = Spool::open(&config.gateway.spool_dir, replay)?;
        Ok(Self {
            config: Arc::new(config),
            spool: Arc::new(spool),
            state,
        })
    }

    /// Starts every task; `drain` bounds how long `stop` waits for ingest.
    pub fn start(self, drain: Duration) -> Result<GatewayHandle, reqwest::Error> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<Sample>(1024);
        let timeout = Duration::from_secs_f64(self.config.gateway.request_timeout);
        let mut tasks = Vec::new();
        let mut device_stats = Vec::new();
        let mut pollers = Vec::new();
        for (i, d) in self.config.devices.iter().enumerate() {
            let stats = Arc::new(DeviceStats::default());
            device_stats.push(stats.clone());
            let plan = device_plan(d, self.config.gateway.max_gap);
            info!(device = %d.name(), profile = %d.profile.id, requests = plan.requests.len(), "polling");
            pollers.push(tokio::spawn(poll_device(
                i,
                Arc::new(d.clone()),
                plan,
                timeout,
                stats,
                tx.clone(),
                shutdown_rx.clone(),
            )));
        }
        drop(tx);

        let notify = Arc::new(Notify::new());
        let fwd_stats = Arc::new(ForwardStats::default());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(self.config.forward.timeout))
            .build()?;
        let forwarder = Forwarder {
            client,
            url: self.config.forward.url.clone(),
            token: self.config.token.clone(),
            spool: self.spool.clone(),
            stats: fwd_stats.clone(),
        };
        // The forwarder is told to stop only after the normalizer has spooled its last batch.
        let (fwd_shutdown, fwd_shutdown_rx) = watch::channel(false);
        let normalizer = tokio::spawn(run_normalizer(
            self.config.clone(),
            self.spool.clone(),
            self.state,
            rx,
            notify.clone(),
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
            forward: fwd_stats,
            spool: self.spool,
        })
    }
}

/// Normalizes samples and spools them as batches: a batch is cut when it is full or when no
/// sample has arrived for a moment (the end of a poll cycle).
async fn run_normalizer(
    config: Arc<GatewayConfig>,
    spool: Arc<Spool>,
    mut state: SpoolState,
    mut rx: mpsc::Receiver<Sample>,
    notify: Arc<Notify>,
) {
    let max = config.forward.max_batch_readings;
    let mut pending: Vec<Reading> = Vec::new();
    let linger = Duration::from_millis(200);
    loop {
        let next = if pending.is_empty() {
            rx.recv().await.map(Some)
        } else {
            match tokio::time::timeout(linger, rx.recv()).await {
                Ok(s) => s.map(Some),
                Err(_) => Some(None),
            }
        };
        match next {
            Some(Some(sample)) => {
                pending.extend(normalize(&config, &mut state, &sample));
                while pending.len() >= max {
                    let rest = pending.split_off(max);
                    let full = std::mem::replace(&mut pending, rest);
                    spool_batch(&config, &spool, &mut state, full, &notify).await;
                }
            }
            Some(None) => {
                let full = std::mem::take(&mut pending);
                spool_batch(&config, &spool, &mut state, full, &notify).await;
            }
            None => {
                let full = std::mem::take(&mut pending);
                spool_batch(&config, &spool, &mut state, full, &notify).await;
                return;
            }
        }
    }
}

async fn spool_batch(
    config: &GatewayConfig,
    spool: &Arc<Spool>,
    state: &mut SpoolState,
    readings: Vec<Reading>,
    notify: &Notify,
) {
    if readings.is_empty() {
        return;
    }
    let batch = Batch::new(config.gateway.id.clone(), state.next_seq, readings);
    let mut delay = Duration::from_millis(100);
    loop {
        let sp = spool.clone();
        let b = batch.clone();
        let mut st = state.clone();
        st.next_seq = batch.seq + 1;
        let res = tokio::task::spawn_blocking(move || {
            sp.append(&b)?;
            sp.save_state(&st)?;
            Ok::<_, SpoolError>(st)
        })
        .await;
        match res {
            Ok(Ok(st)) => {
                *state = st;
                notify.notify_one();
                return;
            }
            // A full or failing disk: keep the batch in memory and try again; pollers keep
            // their own pace, the sample channel applies back-pressure if this lasts.
            Ok(Err(e)) => {
                error!(seq = batch.seq, error = %e, retry_in = ?delay, "cannot spool batch");
            }
            Err(e) => error!(error = %e, "spool task failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
