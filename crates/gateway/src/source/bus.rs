//! One owner per bus. A bus is what one connection reaches: a TCP `host:port` (a meter, or a
//! converter with several unit ids behind it) or a serial port (an RS-485 line with several
//! meters on it). Such a line answers one request at a time, so every device on it sends its
//! reads to the bus's task over a channel and the task performs them in turn on its single
//! connection, keeping the inter-frame gap on serial lines.
//!
//! The task opens the connection on demand. A lost connection (I/O error, a frame out of step)
//! is dropped and reopened for the next request, at once after the first failure and then
//! with exponential backoff and jitter while failures follow each other (a dead converter is
//! not hammered). While a reopen is not yet due, requests fail at once rather than queue, so a
//! poll is never attributed to a tick long past. Any answer, exceptions included, resets the
//! backoff.
//!
//! A timeout alone does not drop a TCP connection: behind a converter it usually means one
//! meter is dead while the others answer, and reconnecting would disturb them. Answers that
//! arrive after their request was given up are recognised by their transaction id and
//! discarded (see [`super::tcp`]). The connection is dropped only when it looks dead itself:
//! timeouts of several different units follow each other with no answer in between (all of
//! the bus's units, or three of them), or the bus has a single unit. A serial line is reopened
//! after any timeout, since nothing there tells a late answer from the next one.
//!
//! Counters go to the device whose request caused them: `requests` (sent on the line),
//! `timeouts`, `exceptions`, `reconnects` (opens after the bus's first one), and `late_answers`
//! (to the device whose request was given up).

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use device_profiles::FunctionCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::DeviceStats;
use super::modbus::{Connection, ReadError};
use crate::config::SourceConfig;

/// What identifies a bus: devices with equal keys share one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BusKey {
    Tcp { host: String, port: u16 },
    Serial(PathBuf),
}

impl BusKey {
    pub fn of(source: &SourceConfig) -> Self {
        match source {
            SourceConfig::ModbusTcp { host, port, .. } => Self::Tcp {
                host: host.clone(),
                port: *port,
            },
            SourceConfig::ModbusRtu { port, .. } => Self::Serial(port.clone()),
        }
    }
}

impl std::fmt::Display for BusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Serial(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The longest wait between two reopen attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);
/// The wait after the second consecutive failure; it doubles with each further one.
const RECONNECT_BASE: Duration = Duration::from_millis(200);

/// `base · 2^(n-1)`, capped, with ±25 % jitter so gateways restarted together do not
/// reconnect in step.
pub fn backoff(base: Duration, n: u32, cap: Duration) -> Duration {
    let exp = base
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(cap);
    jitter(exp)
}

/// `d` scaled by a random factor in [0.75, 1.25).
pub fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per instance: enough randomness for jitter without a dependency.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.75 + unit / 2.0)
}

struct ReadRequest {
    device: String,
    unit: u8,
    function: FunctionCode,
    start: u16,
    count: u16,
    stats: Arc<DeviceStats>,
    reply: oneshot::Sender<Result<Vec<u16>, ReadError>>,
}

/// A handle to a bus's owner task. Cloned into every device poller of the bus; the task ends
/// when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Bus {
    key: Arc<BusKey>,
    tx: mpsc::Sender<ReadRequest>,
    units: Arc<UnitSet>,
}

/// The unit ids the bus's devices use, announced by their pollers before the first poll, so
/// the task knows from the start whether a timeout leaves other units to keep the line for.
#[derive(Debug, Default)]
struct UnitSet([AtomicU64; 4]);

impl UnitSet {
    fn insert(&self, unit: u8) {
        self.0[usize::from(unit / 64)].fetch_or(1 << (unit % 64), Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.0
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }
}

impl std::fmt::Debug for ReadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRequest")
            .field("device", &self.device)
            .field("unit", &self.unit)
            .field("function", &self.function)
            .field("start", &self.start)
            .field("count", &self.count)
            .finish()
    }
}

impl Bus {
    /// Starts the owner task of the bus `source` is on. `source` gives the connection
    /// settings (all devices of a serial line share them: validation checks it).
    pub fn spawn(source: &SourceConfig, timeout: Duration) -> (Self, JoinHandle<()>) {
        let key = Arc::new(BusKey::of(source));
        let (tx, rx) = mpsc::channel(64);
        let units = Arc::new(UnitSet::default());
        let task = tokio::spawn(run(key.clone(), source.clone(), timeout, rx, units.clone()));
        (Self { key, tx, units }, task)
    }

    /// Tells the bus a device on it uses `unit` (pollers call it once, before polling).
    pub fn announce(&self, unit: u8) {
        self.units.insert(unit);
    }

    pub fn key(&self) -> &BusKey {
        &self.key
    }

    /// One request, performed by the bus task in its turn.
    pub async fn read(
        &self,
        device: &str,
        unit: u8,
        stats: &Arc<DeviceStats>,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let (reply, answer) = oneshot::channel();
        let closed = || ReadError::Connection {
            device: device.to_owned(),
            message: format!("bus {} has stopped", self.key),
        };
        self.tx
            .send(ReadRequest {
                device: device.to_owned(),
                unit,
                function,
                start,
                count,
                stats: stats.clone(),
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// How many answers given up are remembered to attribute their late arrival.
const GIVEN_UP_MEMORY: usize = 64;
/// Timeouts of this many different units in a row, with no answer between, mark the
/// connection itself dead (fewer if the bus has fewer units).
const SILENT_UNITS_DEAD: usize = 3;

async fn run(
    key: Arc<BusKey>,
    source: SourceConfig,
    timeout: Duration,
    mut rx: mpsc::Receiver<ReadRequest>,
    units: Arc<UnitSet>,
) {
    let name = key.to_string();
    let mut conn: Option<Connection> = None;
    let mut opened_before = false;
    // Consecutive failures without any answer in between.
    let mut failures: u32 = 0;
    let mut next_open = Instant::now();
    // Units that timed out on this connection since its last answer.
    let mut silent_units: BTreeSet<u8> = BTreeSet::new();
    // Requests given up on this connection: transaction id and the device that sent it.
    let mut given_up: VecDeque<(u16, Arc<DeviceStats>)> = VecDeque::new();
    while let Some(req) = rx.recv().await {
        // The poller gave up waiting (shutdown): do not put a frame on the line for nobody.
        if req.reply.is_closed() {
            continue;
        }
        if conn.is_none() {
            let now = Instant::now();
            if now < next_open {
                let _ = req.reply.send(Err(ReadError::Connection {
                    device: req.device,
                    message: format!(
                        "{name}: reconnecting in {:?} after {failures} failures",
                        next_open - now
                    ),
                }));
                continue;
            }
            if opened_before {
                DeviceStats::inc(&req.stats.reconnects);
            }
            opened_before = true;
            silent_units.clear();
            given_up.clear();
            match Connection::open(&name, &source, timeout).await {
                Ok(c) => {
                    debug!(bus = %name, "connected");
                    conn = Some(c);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    next_open = Instant::now() + reopen_delay(failures);
                    let _ = req.reply.send(Err(match e {
                        ReadError::Connection { message, .. } => ReadError::Connection {
                            device: req.device,
                            message,
                        },
                        other => other,
                    }));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        DeviceStats::inc(&req.stats.requests);
        let result = c
            .read_unit(&req.device, req.unit, req.function, req.start, req.count)
            .await;
        for late in c.take_late_answers() {
            match given_up.iter().find(|(t, _)| *t == late) {
                Some((_, stats)) => DeviceStats::inc(&stats.late_answers),
                None => debug!(bus = %name, transaction = late, "answer to no request of ours"),
            }
        }
        let drop_connection = match &result {
            Err(e @ ReadError::Timeout { .. }) => {
                DeviceStats::inc(&req.stats.timeouts);
                failures = failures.saturating_add(1);
                if let Some(t) = c.last_transaction() {
                    if given_up.len() == GIVEN_UP_MEMORY {
                        given_up.pop_front();
                    }
                    given_up.push_back((t, req.stats.clone()));
                }
                silent_units.insert(req.unit);
                let units = units.len().max(1);
                let dead = !c.survives_timeout()
                    || units == 1
                    || silent_units.len() >= units.min(SILENT_UNITS_DEAD);
                if !dead && failures.is_power_of_two() {
                    debug!(bus = %name, unit = req.unit, error = %e, "timeout; the connection stays");
                }
                dead
            }
            Err(e) if !e.keeps_connection() => {
                failures = failures.saturating_add(1);
                true
            }
            Err(e) => {
                if matches!(e, ReadError::Exception { .. }) {
                    DeviceStats::inc(&req.stats.exceptions);
                }
                failures = 0;
                silent_units.clear();
                false
            }
            Ok(_) => {
                if failures > 0 {
                    info!(bus = %name, after_failures = failures, "bus answers again");
                }
                failures = 0;
                silent_units.clear();
                false
            }
        };
        if drop_connection {
            conn = None;
            next_open = Instant::now() + reopen_delay(failures);
            if failures.is_power_of_two()
                && let Err(e) = &result
            {
                warn!(bus = %name, failures, error = %e, "connection dropped");
            }
        }
        let _ = req.reply.send(result);
    }
    if let Some(mut c) = conn {
        c.close().await;
    }
}

/// The first failure reopens at once (a converter closing idle sockets is normal); after
/// that the wait grows.
fn reopen_delay(failures: u32) -> Duration {
    if failures <= 1 {
        Duration::ZERO
    } else {
        backoff(RECONNECT_BASE, failures - 1, MAX_RECONNECT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for n in 1..40 {
            let d = backoff(base, n, cap);
            let exp = base.saturating_mul(1 << (n - 1).min(16)).min(cap);
            assert!(
                d >= exp.mul_f64(0.75) && d <= exp.mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
        assert_eq!(reopen_delay(1), Duration::ZERO);
        assert!(reopen_delay(2) > Duration::ZERO);
        assert!(reopen_delay(100) <= MAX_RECONNECT_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn devices_on_one_line_or_converter_share_a_bus() {
        let tcp = |host: &str, port, unit| SourceConfig::ModbusTcp {
            host: host.into(),
            port,
            unit,
            retries: 2,
        };
        assert_eq!(
            BusKey::of(&tcp("10.0.0.5", 502, 1)),
            BusKey::of(&tcp("10.0.0.5", 502, 7))
        );
        assert_ne!(
            BusKey::of(&tcp("10.0.0.5", 502, 1)),
            BusKey::of(&tcp("10.0.0.5", 503, 1))
        );
        let rtu = |unit| SourceConfig::ModbusRtu {
            port: "/dev/ttyUSB0".into(),
            baud: 9600,
            parity: crate::config::Parity::Even,
            data_bits: 8,
            stop_bits: 1,
            unit,
            retries: 2,
        };
        assert_eq!(BusKey::of(&rtu(1)), BusKey::of(&rtu(2)));
    }
}
