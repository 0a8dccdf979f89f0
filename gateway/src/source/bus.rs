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
//!
//! A bus with a single device (a meter with its own TCP address, the usual case) has no task:
//! its poller owns the [`Line`] and performs its requests itself, by the same rules. That
//! saves a task, a channel and two wake-ups per request for each such meter.

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
use super::connection::{Connection, ReadError};
use crate::backoff::Backoff;
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
/// The wait after the second consecutive failure; it doubles with each further one, with
/// ±25 % jitter so gateways restarted together do not reconnect in step.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), MAX_RECONNECT_BACKOFF, 0.25);

struct ReadRequest {
    device: String,
    unit: u8,
    function: FunctionCode,
    start: u16,
    count: u16,
    stats: Arc<DeviceStats>,
    reply: oneshot::Sender<Result<Vec<u16>, ReadError>>,
}

/// A device poller's way to its bus: to the owner task of a shared bus (the task ends when
/// the last handle is dropped), or the line itself when the device is alone on it.
#[derive(Debug)]
pub struct Bus {
    key: Arc<BusKey>,
    units: Arc<UnitSet>,
    way: Way,
}

#[derive(Debug)]
enum Way {
    Shared(mpsc::Sender<ReadRequest>),
    Owned(Box<Line>),
}

/// A handle to a shared bus's owner task, from which each of its devices' [`Bus`] is made.
#[derive(Debug, Clone)]
pub struct SharedBus {
    key: Arc<BusKey>,
    tx: mpsc::Sender<ReadRequest>,
    units: Arc<UnitSet>,
}

impl SharedBus {
    /// A handle for one more device of the bus.
    pub fn bus(&self) -> Bus {
        Bus {
            key: self.key.clone(),
            units: self.units.clone(),
            way: Way::Shared(self.tx.clone()),
        }
    }
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
    /// Starts the owner task of the bus `source` is on, for several devices. `source` gives
    /// the connection settings (all devices of a serial line share them: validation checks
    /// it).
    pub fn spawn(source: &SourceConfig, timeout: Duration) -> (SharedBus, JoinHandle<()>) {
        let key = Arc::new(BusKey::of(source));
        let (tx, rx) = mpsc::channel(64);
        let units = Arc::new(UnitSet::default());
        let line = Line::new(key.clone(), source.clone(), timeout, units.clone());
        let task = tokio::spawn(run(line, rx));
        (SharedBus { key, tx, units }, task)
    }

    /// The bus of a device alone on it: no task, the poller performs its requests.
    pub fn owned(source: &SourceConfig, timeout: Duration) -> Self {
        let key = Arc::new(BusKey::of(source));
        let units = Arc::new(UnitSet::default());
        let line = Line::new(key.clone(), source.clone(), timeout, units.clone());
        Self {
            key,
            units,
            way: Way::Owned(Box::new(line)),
        }
    }

    /// Closes an owned line politely (a shared one closes when its task ends).
    pub async fn close(&mut self) {
        if let Way::Owned(line) = &mut self.way {
            line.close().await;
        }
    }

    /// Tells the bus a device on it uses `unit` (pollers call it once, before polling).
    pub fn announce(&self, unit: u8) {
        self.units.insert(unit);
    }

    pub fn key(&self) -> &BusKey {
        &self.key
    }

    /// One request, performed by the bus task in its turn (or here, on an owned line).
    pub async fn read(
        &mut self,
        device: &str,
        unit: u8,
        stats: &Arc<DeviceStats>,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let tx = match &mut self.way {
            Way::Owned(line) => {
                return line
                    .perform(device, unit, stats, function, start, count)
                    .await;
            }
            Way::Shared(tx) => tx,
        };
        let (reply, answer) = oneshot::channel();
        let closed = || ReadError::Connection {
            device: device.to_owned(),
            message: format!("bus {} has stopped", self.key),
        };
        tx.send(ReadRequest {
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

/// One bus line and what its owner knows about it: the connection (opened on demand), the
/// failures since the last answer, when a reopen is due, the units that went silent, and the
/// requests given up (to attribute late answers).
#[derive(Debug)]
pub struct Line {
    name: String,
    source: SourceConfig,
    timeout: Duration,
    units: Arc<UnitSet>,
    conn: Option<Connection>,
    opened_before: bool,
    /// Consecutive failures without any answer in between.
    failures: u32,
    next_open: Instant,
    /// Units that timed out on this connection since its last answer.
    silent_units: BTreeSet<u8>,
    /// Requests given up on this connection: transaction id and the device that sent it.
    given_up: VecDeque<(u16, Arc<DeviceStats>)>,
}

impl Line {
    fn new(key: Arc<BusKey>, source: SourceConfig, timeout: Duration, units: Arc<UnitSet>) -> Self {
        Self {
            name: key.to_string(),
            source,
            timeout,
            units,
            conn: None,
            opened_before: false,
            failures: 0,
            next_open: Instant::now(),
            silent_units: BTreeSet::new(),
            given_up: VecDeque::new(),
        }
    }

    /// Performs one request: opens the connection if it is due, reads, and decides from the
    /// outcome whether the connection stays (see the module doc).
    async fn perform(
        &mut self,
        device: &str,
        unit: u8,
        stats: &Arc<DeviceStats>,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let name = &self.name;
        if self.conn.is_none() {
            let now = Instant::now();
            if now < self.next_open {
                return Err(ReadError::Connection {
                    device: device.to_owned(),
                    message: format!(
                        "{name}: reconnecting in {:?} after {} failures",
                        self.next_open - now,
                        self.failures
                    ),
                });
            }
            if self.opened_before {
                DeviceStats::inc(&stats.reconnects);
            }
            self.opened_before = true;
            self.silent_units.clear();
            self.given_up.clear();
            match Connection::open(name, &self.source, self.timeout).await {
                Ok(c) => {
                    debug!(bus = %name, "connected");
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.next_open = Instant::now() + reopen_delay(self.failures);
                    return Err(match e {
                        ReadError::Connection { message, .. } => ReadError::Connection {
                            device: device.to_owned(),
                            message,
                        },
                        other => other,
                    });
                }
            }
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(ReadError::Connection {
                device: device.to_owned(),
                message: format!("{name}: not connected"),
            });
        };
        DeviceStats::inc(&stats.requests);
        let result = c.read_unit(device, unit, function, start, count).await;
        for late in c.take_late_answers() {
            match self.given_up.iter().find(|(t, _)| *t == late) {
                Some((_, stats)) => DeviceStats::inc(&stats.late_answers),
                None => debug!(bus = %name, transaction = late, "answer to no request of ours"),
            }
        }
        let drop_connection = match &result {
            Err(e @ ReadError::Timeout { .. }) => {
                DeviceStats::inc(&stats.timeouts);
                self.failures = self.failures.saturating_add(1);
                if let Some(t) = c.last_transaction() {
                    if self.given_up.len() == GIVEN_UP_MEMORY {
                        self.given_up.pop_front();
                    }
                    self.given_up.push_back((t, stats.clone()));
                }
                self.silent_units.insert(unit);
                let units = self.units.len().max(1);
                let dead = !c.survives_timeout()
                    || units == 1
                    || self.silent_units.len() >= units.min(SILENT_UNITS_DEAD);
                if !dead && self.failures.is_power_of_two() {
                    debug!(bus = %name, unit, error = %e, "timeout; the connection stays");
                }
                dead
            }
            Err(e) if !e.keeps_connection() => {
                self.failures = self.failures.saturating_add(1);
                true
            }
            Err(e) => {
                if matches!(e, ReadError::Exception { .. }) {
                    DeviceStats::inc(&stats.exceptions);
                }
                self.failures = 0;
                self.silent_units.clear();
                false
            }
            Ok(_) => {
                if self.failures > 0 {
                    info!(bus = %name, after_failures = self.failures, "bus answers again");
                }
                self.failures = 0;
                self.silent_units.clear();
                false
            }
        };
        if drop_connection {
            self.conn = None;
            self.next_open = Instant::now() + reopen_delay(self.failures);
            if self.failures.is_power_of_two()
                && let Err(e) = &result
            {
                warn!(bus = %name, failures = self.failures, error = %e, "connection dropped");
            }
        }
        result
    }

    async fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            c.close().await;
        }
    }
}

/// The owner task of a shared bus: performs its devices' requests in turn.
async fn run(mut line: Line, mut rx: mpsc::Receiver<ReadRequest>) {
    while let Some(req) = rx.recv().await {
        // The poller gave up waiting (shutdown): do not put a frame on the line for nobody.
        if req.reply.is_closed() {
            continue;
        }
        let result = line
            .perform(
                &req.device,
                req.unit,
                &req.stats,
                req.function,
                req.start,
                req.count,
            )
            .await;
        let _ = req.reply.send(result);
    }
    line.close().await;
}

/// The first failure reopens at once (a converter closing idle sockets is normal); after
/// that the wait grows.
fn reopen_delay(failures: u32) -> Duration {
    if failures <= 1 {
        Duration::ZERO
    } else {
        RECONNECT.delay(failures - 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_at_once_then_back_off_to_the_cap() {
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
