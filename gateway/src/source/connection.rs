//! An open connection to one bus (a TCP socket or a serial port) and the errors of a read on
//! it. The [`super::bus`] owns one per bus; device pollers ([`super::modbus`]) see its
//! [`ReadError`]s.

use std::net::SocketAddr;
use std::time::Duration;

use device_profiles::{FunctionCode, ReadPlan};
use tokio_modbus::client::{Client as _, Context, Reader};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{ExceptionCode, Slave};

use super::tcp::{TcpClient, TcpFault};
use crate::config::{Parity, SourceConfig};

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
    /// The peer sent something that is not an answer to the request: the connection is out
    /// of step and is reopened.
    #[error("{device}: protocol: {message}")]
    Protocol { device: String, message: String },
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
    /// Whether the unit answered (an exception or a short answer), so the rest of its plan is
    /// still worth asking for. Anything else means the unit or its line is not answering; the
    /// bus decides separately whether the connection itself is dropped.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, Self::Exception { .. } | Self::ShortAnswer { .. })
    }

    /// Whether asking again may help: not for an answer (an exception or a short answer
    /// would come back the same), except "busy", which asks for exactly that.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Exception { code, .. } => {
                *code == u8::from(ExceptionCode::ServerDeviceBusy)
                    || *code == u8::from(ExceptionCode::Acknowledge)
            }
            Self::ShortAnswer { .. } => false,
            Self::Timeout { .. }
            | Self::Io { .. }
            | Self::Connection { .. }
            | Self::Protocol { .. } => true,
        }
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

/// An open connection to one bus: a TCP socket (a meter or a converter with several unit ids
/// behind it) or a serial port. Requests name their unit; on a serial line the inter-frame gap
/// is kept between frames.
pub struct Connection {
    link: Link,
    name: String,
    timeout: Duration,
    unit: u8,
    /// Silence to keep between frames (serial lines only).
    gap: Option<Duration>,
    /// When the last frame on the line ended (request answered or given up).
    last_frame: Option<tokio::time::Instant>,
}

/// TCP goes through our own client (it keeps the line in step after a timeout, see
/// [`super::tcp`]); serial lines through tokio-modbus's RTU client.
enum Link {
    Tcp(TcpClient),
    Rtu(Context),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("bus", &self.name)
            .field("gap", &self.gap)
            .finish()
    }
}

/// The silence between two RTU frames: 3.5 character times, fixed at 1.75 ms above 19200 baud
/// (Modbus over Serial Line §2.5.1.1), where timers could not keep the shorter gap anyway.
pub fn inter_frame_gap(baud: u32, parity: Parity, data_bits: u8, stop_bits: u8) -> Duration {
    if baud > 19_200 {
        return Duration::from_micros(1_750);
    }
    let bits = 1 + u32::from(data_bits) + u32::from(parity != Parity::None) + u32::from(stop_bits);
    // 3.5 characters of `bits` bits each, in microseconds, rounded up.
    let micros = (u64::from(bits) * 7 * 1_000_000).div_ceil(2 * u64::from(baud.max(1)));
    Duration::from_micros(micros)
}

impl Connection {
    pub async fn open(
        name: &str,
        source: &SourceConfig,
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        let conn_err = |message: String| ReadError::Connection {
            device: name.to_owned(),
            message,
        };
        let (link, gap) = match source {
            SourceConfig::ModbusTcp { host, port, .. } => {
                let addr: SocketAddr = match tokio::time::timeout(
                    timeout,
                    tokio::net::lookup_host((host.as_str(), *port)),
                )
                .await
                {
                    Ok(Ok(mut addrs)) => addrs
                        .next()
                        .ok_or_else(|| conn_err(format!("{host}:{port} resolves to no address")))?,
                    Ok(Err(e)) => return Err(conn_err(format!("{host}:{port}: {e}"))),
                    Err(_) => {
                        return Err(conn_err(format!("{host}:{port}: name lookup timed out")));
                    }
                };
                let stream =
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return Err(conn_err(format!("{addr}: {e}"))),
                        Err(_) => {
                            return Err(conn_err(format!(
                                "{addr}: connect timed out after {timeout:?}"
                            )));
                        }
                    };
                (Link::Tcp(TcpClient::new(stream)), None)
            }
            SourceConfig::ModbusRtu {
                port,
                baud,
                parity,
                data_bits,
                stop_bits,
                ..
            } => {
                let builder = tokio_serial::new(port.to_string_lossy(), *baud)
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .data_bits(match data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if *stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .flow_control(tokio_serial::FlowControl::None);
                let serial = tokio_serial::SerialStream::open(&builder)
                    .map_err(|e| conn_err(format!("{}: {e}", port.display())))?;
                let ctx = tokio_modbus::client::rtu::attach_slave(serial, Slave(source.unit()));
                (
                    Link::Rtu(ctx),
                    Some(inter_frame_gap(*baud, *parity, *data_bits, *stop_bits)),
                )
            }
        };
        Ok(Self {
            link,
            name: name.to_owned(),
            timeout,
            unit: source.unit(),
            gap,
            // A freshly opened line may carry a half frame: start with one gap of silence.
            last_frame: gap.map(|_| tokio::time::Instant::now()),
        })
    }

    /// Reads `count` registers (or bits, as 0/1 words) starting at `start` from the unit the
    /// connection was opened for.
    pub async fn read(
        &mut self,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let unit = self.unit;
        self.read_unit(&self.name.clone(), unit, function, start, count)
            .await
    }

    /// Reads from unit `unit` on this bus; `device` names it in errors.
    pub async fn read_unit(
        &mut self,
        device: &str,
        unit: u8,
        function: FunctionCode,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ReadError> {
        let timeout_error = || ReadError::Timeout {
            device: device.to_owned(),
            function,
            start,
            count,
            timeout: self.timeout,
        };
        let exception = |code: u8| {
            let code = ExceptionCode::new(code);
            ReadError::Exception {
                device: device.to_owned(),
                function,
                start,
                count,
                code: u8::from(code),
                name: exception_name(code),
            }
        };
        let short = |got: usize| ReadError::ShortAnswer {
            device: device.to_owned(),
            function,
            start,
            count,
            got,
        };
        let ctx = match &mut self.link {
            Link::Tcp(client) => {
                return match client
                    .read(unit, function, start, count, self.timeout)
                    .await
                {
                    Ok(Ok(words)) => Ok(words),
                    Ok(Err(code)) => Err(exception(code)),
                    Err(TcpFault::Timeout) => Err(timeout_error()),
                    Err(TcpFault::Short { got, .. }) => Err(short(got)),
                    Err(TcpFault::Io(source)) => Err(ReadError::Io {
                        device: device.to_owned(),
                        source,
                    }),
                    Err(TcpFault::Protocol(message)) => Err(ReadError::Protocol {
                        device: device.to_owned(),
                        message,
                    }),
                };
            }
            Link::Rtu(ctx) => ctx,
        };
        if let (Some(gap), Some(last)) = (self.gap, self.last_frame) {
            tokio::time::sleep_until(last + gap).await;
        }
        ctx.set_slave(Slave(unit));
        let fut = async {
            match function {
                FunctionCode::Holding => ctx.read_holding_registers(start, count).await,
                FunctionCode::Input => ctx.read_input_registers(start, count).await,
                FunctionCode::Coils => ctx
                    .read_coils(start, count)
                    .await
                    .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
                FunctionCode::DiscreteInputs => ctx
                    .read_discrete_inputs(start, count)
                    .await
                    .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
            }
        };
        let answer = tokio::time::timeout(self.timeout, fut).await;
        if self.gap.is_some() {
            self.last_frame = Some(tokio::time::Instant::now());
        }
        let words = match answer {
            Err(_) => return Err(timeout_error()),
            Ok(Err(e)) => {
                return Err(ReadError::Io {
                    device: device.to_owned(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Ok(Ok(Err(code))) => return Err(exception(u8::from(code))),
            Ok(Ok(Ok(words))) => words,
        };
        // Coils come back padded to whole bytes; registers must match exactly.
        if words.len() < usize::from(count) {
            return Err(short(words.len()));
        }
        Ok(words)
    }

    /// Whether the connection is still in step after a request timed out, so a late answer
    /// cannot be taken for the next request's. True for TCP (transaction ids tell answers
    /// apart); on a serial line nothing does, so it is reopened.
    pub fn survives_timeout(&self) -> bool {
        matches!(self.link, Link::Tcp(_))
    }

    /// The transaction id of the last request (TCP only).
    pub fn last_transaction(&self) -> Option<u16> {
        match &self.link {
            Link::Tcp(client) => Some(client.last_transaction()),
            Link::Rtu(_) => None,
        }
    }

    /// Transaction ids of answers that arrived after their request was given up, since the
    /// last call (TCP only; they were discarded).
    pub fn take_late_answers(&mut self) -> Vec<u16> {
        match &mut self.link {
            Link::Tcp(client) => client.take_late(),
            Link::Rtu(_) => Vec::new(),
        }
    }

    /// Closes the connection politely (TCP FIN; a serial port is just released).
    pub async fn close(&mut self) {
        match &mut self.link {
            Link::Tcp(client) => {
                let _ = tokio::time::timeout(self.timeout, client.close()).await;
            }
            Link::Rtu(ctx) => {
                let _ = tokio::time::timeout(self.timeout, ctx.disconnect()).await;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inter_frame_gap_is_three_and_a_half_characters() {
        // 9600 8E1: 11 bits a character, 3.5 characters = 38.5 bits = 4.0104 ms.
        assert_eq!(
            inter_frame_gap(9600, Parity::Even, 8, 1),
            Duration::from_micros(4011)
        );
        // 9600 8N1: 10 bits, 35 bits = 3.6458 ms.
        assert_eq!(
            inter_frame_gap(9600, Parity::None, 8, 1),
            Duration::from_micros(3646)
        );
        // 19200 is still timed by characters; above it the gap is fixed at 1.75 ms.
        assert_eq!(
            inter_frame_gap(19_200, Parity::Even, 8, 1),
            Duration::from_micros(2006)
        );
        assert_eq!(
            inter_frame_gap(38_400, Parity::Even, 8, 1),
            Duration::from_micros(1750)
        );
        assert_eq!(
            inter_frame_gap(115_200, Parity::None, 8, 2),
            Duration::from_micros(1750)
        );
    }

    #[test]
    fn answers_are_not_retried_but_busy_and_lost_lines_are() {
        let exc = |code: ExceptionCode| ReadError::Exception {
            device: "d".into(),
            function: FunctionCode::Holding,
            start: 0,
            count: 1,
            code: u8::from(code),
            name: exception_name(code),
        };
        assert!(!exc(ExceptionCode::IllegalDataAddress).is_retryable());
        assert!(exc(ExceptionCode::ServerDeviceBusy).is_retryable());
        assert!(
            ReadError::Connection {
                device: "d".into(),
                message: "refused".into()
            }
            .is_retryable()
        );
    }
}
