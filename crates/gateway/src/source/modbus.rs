//! Modbus TCP polling: one task per device, its profile's registers read with the fewest
//! requests the planner allows, each request under a timeout; a failed connection is dropped
//! and re-opened at the next tick.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use device_profiles::{FunctionCode, PlanLimits, ReadPlan, RegisterDef, decode_total, plan_reads};
use tokio::sync::{mpsc, watch};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};
use tracing::{info, warn};

use super::{DeviceStats, Sample, next_tick, now_ms};
use crate::config::{Device, SourceConfig};

/// Why one read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{device}: {function} {start:#06x}+{count}: exception {code} ({name})")]
    Exception {
        device: String,
        function: FunctionCode,
        start: u16,
        count: u16,
        code: u8,
        name: &'static str,
    },
    #[error("{device}: {function} {start:#06x}+{count}: no answer within {timeout:?}")]
    Timeout {
        device: String,
        function: FunctionCode,
        start: u16,
        count: u16,
        timeout: Duration,
    },
    #[error("{device}: {source}")]
    Io {
        device: String,
        source: std::io::Error,
    },
    #[error("{device}: connection: {message}")]
    Connection { device: String, message: String },
    #[error("{device}: {function} {start:#06x}: answered {got} values for {count} asked")]
    ShortAnswer {
        device: String,
        function: FunctionCode,
        start: u16,
        count: u16,
        got: usize,
    },
}

impl ReadError {
    /// A protocol exception leaves the connection usable; anything else drops it.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, Self::Exception { .. } | Self::ShortAnswer { .. })
    }
}

/// The Modbus name of an exception code.
pub fn exception_name(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "non-standard exception",
    }
}

/// An open connection to one device.
pub struct Connection {
    ctx: Context,
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("device", &self.name)
            .finish()
    }
}

impl Connection {
    pub async fn open(
        name: &str,
        source: &SourceConfig,
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        let SourceConfig::ModbusTcp { host, port, unit } = source;
        let conn_err = |message: String| ReadError::Connection {
            device: name.to_owned(),
            message,
        };
        let addr: SocketAddr =
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), *port)))
                .await
            {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or_else(|| conn_err(format!("{host}:{port} resolves to no address")))?,
                Ok(Err(e)) => return Err(conn_err(format!("{host}:{port}: {e}"))),
                Err(_) => return Err(conn_err(format!("{host}:{port}: name lookup timed out"))),
            };
        let ctx = match tokio::time::timeout(
            timeout,
            tokio_modbus::client::tcp::connect_slave(addr, Slave(*unit)),
        )
        .await
        {
            Ok(Ok(ctx)) => ctx,
            Ok(Err(e)) => return Err(conn_err(format!("{addr}: {e}"))),
            Err(_) => {
                return Err(conn_err(format!(
                    "{addr}: connect timed out after {timeout:?}"
                )));
            }
        };
        Ok(Self {
            ctx,
            name: name.to_owned(),
            timeout,
        })
    }

    /// Reads `count` registers (or bits, as 0/1 words) starting at `start`.
    pub async fn read(
        &mut self,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let fut = async {
            match function {
                FunctionCode::Holding => self.ctx.read_holding_registers(start, count).await,
                FunctionCode::Input => self.ctx.read_input_registers(start, count).await,
                FunctionCode::Coils => self
                    .ctx
                    .read_coils(start, count)
                    .await
                    .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
                FunctionCode::DiscreteInputs => self
                    .ctx
                    .read_discrete_inputs(start, count)
                    .await
                    .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
            }
        };
        let words = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                return Err(ReadError::Timeout {
                    device: self.name.clone(),
                    function,
                    start,
                    count,
                    timeout: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(ReadError::Io {
                    device: self.name.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Ok(Ok(Err(code))) => {
                return Err(ReadError::Exception {
                    device: self.name.clone(),
                    function,
                    start,
                    count,
                    code: u8::from(code),
                    name: exception_name(code),
                });
            }
            Ok(Ok(Ok(words))) => words,
        };
        // Coils come back padded to whole bytes; registers must match exactly.
        if words.len() < usize::from(count) {
            return Err(ReadError::ShortAnswer {
                device: self.name.clone(),
                function,
                start,
                count,
                got: words.len(),
            });
        }
        Ok(words)
    }

    /// Executes a plan; per request, its words or the error that stopped it.
    pub async fn read_plan(&mut self, plan: &ReadPlan) -> Vec<Result<Vec<u16>, ReadError>> {
        let mut out = Vec::with_capacity(plan.requests.len());
        for q in &plan.requests {
            let r = self.read(q.function, q.start, q.count).await;
            let fatal = r.as_ref().is_err_and(|e| !e.keeps_connection());
            out.push(r);
            if fatal {
                break;
            }
        }
        out
    }
}

/// The plan for a configured device.
pub fn device_plan(device: &Device, max_gap: u16) -> ReadPlan {
    plan_reads(
        &device.profile,
        &device.registers,
        PlanLimits {
            max_registers: device.profile.max_registers,
            max_gap,
        },
    )
}

/// Polls one device until `shutdown` turns true, sending a sample per successful poll.
pub async fn poll_device(
    index: usize,
    device: Arc<Device>,
    plan: ReadPlan,
    timeout: Duration,
    stats: Arc<DeviceStats>,
    samples: mpsc::Sender<Sample>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = device.name();
    let mut conn: Option<Connection> = None;
    let mut failures: u64 = 0;
    loop {
        let tick = next_tick(now_ms(), device.poll_interval);
        let wait = Duration::from_millis(u64::try_from(tick - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        DeviceStats::inc(&stats.polls);
        match poll_once(&name, &device, &plan, timeout, &stats, &mut conn).await {
            Ok(values) => {
                if failures > 0 || !stats.online.load(std::sync::atomic::Ordering::Relaxed) {
                    info!(device = %name, after_failures = failures, "device online");
                }
                stats
                    .online
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                failures = 0;
                let sample = Sample {
                    device: index,
                    ts: tick,
                    values,
                };
                if samples.send(sample).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                DeviceStats::inc(&stats.failed_polls);
                failures += 1;
                // One line when a device goes offline and then one per power of two failures,
                // so a dead meter cannot flood the log.
                if failures.is_power_of_two() {
                    warn!(device = %name, failures, error = %e, "device offline");
                }
                stats
                    .online
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

async fn poll_once(
    name: &str,
    device: &Device,
    plan: &ReadPlan,
    timeout: Duration,
    stats: &DeviceStats,
    conn: &mut Option<Connection>,
) -> Result<Vec<(usize, device_profiles::DecodedValue)>, ReadError> {
    if conn.is_none() {
        DeviceStats::inc(&stats.reconnects);
        *conn = Some(Connection::open(name, &device.source, timeout).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(ReadError::Connection {
            device: name.to_owned(),
            message: "not connected".into(),
        });
    };
    let answers = c.read_plan(plan).await;
    // First the words of every register that answered, then the values: an accumulator and
    // the registers declared `fraction_of` it decode together as one value.
    let mut words_of: HashMap<usize, Vec<u16>> = HashMap::new();
    let mut first_error = None;
    for (q, answer) in plan.requests.iter().zip(answers) {
        DeviceStats::inc(&stats.requests);
        match answer {
            Ok(words) => {
                for &i in &q.registers {
                    let reg = &device.profile.registers[i];
                    let off = usize::from(reg.address - q.start);
                    let n = usize::from(reg.data_type.words());
                    if let Some(w) = words.get(off..off + n) {
                        words_of.insert(i, w.to_vec());
                    }
                }
            }
            Err(e) => {
                match &e {
                    ReadError::Exception { .. } => DeviceStats::inc(&stats.exceptions),
                    ReadError::Timeout { .. } => DeviceStats::inc(&stats.timeouts),
                    _ => {}
                }
                if !e.keeps_connection() {
                    *conn = None;
                }
                first_error.get_or_insert(e);
            }
        }
    }
    let profile = &device.profile;
    let index_of = |reg: &RegisterDef| profile.registers.iter().position(|r| std::ptr::eq(r, reg));
    let mut values = Vec::new();
    for &i in &device.registers {
        let reg = &profile.registers[i];
        if reg.is_fraction() || !words_of.contains_key(&i) {
            continue;
        }
        let words = |r: &RegisterDef| index_of(r).and_then(|j| words_of.get(&j));
        match decode_total(profile, &reg.name, words, device.ratios) {
            Ok(v) => values.push((i, v)),
            Err(e) => {
                DeviceStats::inc(&stats.decode_errors);
                tracing::debug!(device = %name, register = %reg.name, error = %e, "decode failed");
            }
        }
    }
    match first_error {
        // Partial answers are still worth keeping; a poll with no value at all is a failure.
        Some(e) if values.is_empty() => Err(e),
        _ => Ok(values),
    }
}
