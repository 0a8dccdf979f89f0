//! A Modbus TCP client for the read functions (1–4) that stays in step with the line after a
//! request is given up.
//!
//! Behind a TCP-to-RS-485 converter several meters share one connection. When one of them does
//! not answer in time, the others should keep being read on the same connection, which is only
//! safe if an answer arriving after its request was given up cannot be taken for the next
//! request's. tokio-modbus 0.17's TCP client cannot guarantee that: it clears its read buffer
//! before every request (dropping a half-received frame, so the rest of it is then parsed as a
//! header), and a late frame makes the next call fail with a header mismatch while that call's
//! own answer stays queued for the call after. Here every request carries a fresh transaction
//! id, received bytes are kept across requests and cut into frames by the MBAP length, and a
//! frame whose transaction id is not the one awaited is set aside as late (its id is reported
//! so the bus can count it against the device that gave it up).
//!
//! Reading is cancellation safe: the deadline may cut a read at any byte and the next request
//! resumes framing where it stopped. Writing is not (a request frame cut half-way would leave
//! the converter out of step), so a request that could not be written in time marks the
//! connection broken.

use std::io;
use std::time::Duration;

use device_profiles::FunctionCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// MBAP header: transaction id, protocol id (0), length of what follows, unit id.
const MBAP_LEN: usize = 7;
/// The length field counts the unit id and the PDU; a PDU is at most 253 bytes.
const MAX_LENGTH_FIELD: usize = 254;

/// Why a request got no usable answer. An exception response is not one of these: it is an
/// answer.
#[derive(Debug, thiserror::Error)]
pub enum TcpFault {
    #[error("no answer in time")]
    Timeout,
    /// The connection failed or is out of step: it must be reopened.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a Modbus TCP answer to this request; the stream
    /// cannot be trusted after it.
    #[error("{0}")]
    Protocol(String),
    #[error("answered {got} values for {count} asked")]
    Short { got: usize, count: u16 },
}

/// One open Modbus TCP connection.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    /// Received bytes not yet cut into frames.
    received: Vec<u8>,
    next_transaction: u16,
    /// Transaction ids of answers that arrived after their request was given up.
    late: Vec<u16>,
    /// Set when the stream can no longer be trusted (a request half written).
    broken: bool,
}

/// A complete frame taken off the stream.
struct Frame {
    transaction: u16,
    unit: u8,
    pdu: Vec<u8>,
}

impl TcpClient {
    pub fn new(stream: TcpStream) -> Self {
        // Requests are a dozen bytes and answered one at a time: Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            received: Vec::with_capacity(512),
            next_transaction: 0,
            late: Vec::new(),
            broken: false,
        }
    }

    /// The transaction id of the request sent last.
    pub fn last_transaction(&self) -> u16 {
        self.next_transaction.wrapping_sub(1)
    }

    /// Transaction ids of the late answers set aside since the last call.
    pub fn take_late(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.late)
    }

    /// Reads `count` registers (or bits, as 0/1 words padded to whole bytes) from `unit`.
    /// `Ok(Err(code))` is an exception response.
    pub async fn read(
        &mut self,
        unit: u8,
        function: FunctionCode,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<Result<Vec<u16>, u8>, TcpFault> {
        if self.broken {
            return Err(TcpFault::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection left out of step by an earlier request",
            )));
        }
        let deadline = Instant::now() + timeout;
        let transaction = self.next_transaction;
        self.next_transaction = self.next_transaction.wrapping_add(1);
        let request = request_frame(transaction, unit, function, start, count);
        match tokio::time::timeout_at(deadline, self.stream.write_all(&request)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.broken = true;
                return Err(TcpFault::Io(e));
            }
            Err(_) => {
                self.broken = true;
                return Err(TcpFault::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request not sent within {timeout:?}"),
                )));
            }
        }
        loop {
            while let Some(frame) = self.take_frame()? {
                if frame.transaction != transaction {
                    // Only one request is ever outstanding, so any other id is an answer to a
                    // request already given up.
                    self.late.push(frame.transaction);
                    continue;
                }
                if frame.unit != unit {
                    return Err(TcpFault::Protocol(format!(
                        "transaction {transaction} sent to unit {unit} answered by unit {}",
                        frame.unit
                    )));
                }
                return parse_answer(function, count, &frame.pdu);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.received)).await
            {
                Err(_) => return Err(TcpFault::Timeout),
                Ok(Err(e)) => return Err(TcpFault::Io(e)),
                Ok(Ok(0)) => {
                    return Err(TcpFault::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    )));
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next complete frame of the received bytes, if there is one.
    fn take_frame(&mut self) -> Result<Option<Frame>, TcpFault> {
        let Some(header) = self.received.get(..MBAP_LEN) else {
            return Ok(None);
        };
        let transaction = u16::from_be_bytes([header[0], header[1]]);
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let unit = header[6];
        if protocol != 0 || !(2..=MAX_LENGTH_FIELD).contains(&length) {
            return Err(TcpFault::Protocol(format!(
                "not a Modbus TCP header (protocol id {protocol}, length {length}): {:02x?}",
                header
            )));
        }
        let total = MBAP_LEN - 1 + length;
        let Some(pdu) = self.received.get(MBAP_LEN..total) else {
            return Ok(None);
        };
        let frame = Frame {
            transaction,
            unit,
            pdu: pdu.to_vec(),
        };
        self.received.drain(..total);
        Ok(Some(frame))
    }

    pub async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

fn request_frame(
    transaction: u16,
    unit: u8,
    function: FunctionCode,
    start: u16,
    count: u16,
) -> [u8; 12] {
    let [t0, t1] = transaction.to_be_bytes();
    let [s0, s1] = start.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    // Length 6: unit id, function code, start and count.
    [t0, t1, 0, 0, 0, 6, unit, function.code(), s0, s1, c0, c1]
}

/// The words of a read answer's PDU, or its exception code.
fn parse_answer(
    function: FunctionCode,
    count: u16,
    pdu: &[u8],
) -> Result<Result<Vec<u16>, u8>, TcpFault> {
    let code = function.code();
    match pdu {
        [f, exception] if *f == code | 0x80 => Ok(Err(*exception)),
        [f, byte_count, data @ ..] if *f == code => {
            if data.len() != usize::from(*byte_count) {
                return Err(TcpFault::Protocol(format!(
                    "{function} answer says {byte_count} bytes and carries {}",
                    data.len()
                )));
            }
            let words: Vec<u16> = if function.is_bits() {
                data.iter()
                    .flat_map(|byte| (0..8).map(move |bit| u16::from((byte >> bit) & 1)))
                    .collect()
            } else {
                if data.len() % 2 != 0 {
                    return Err(TcpFault::Protocol(format!(
                        "{function} answer has an odd byte count {byte_count}"
                    )));
                }
                data.chunks_exact(2)
                    .map(|w| u16::from_be_bytes([w[0], w[1]]))
                    .collect()
            };
            if words.len() < usize::from(count) {
                return Err(TcpFault::Short {
                    got: words.len(),
                    count,
                });
            }
            Ok(Ok(words))
        }
        _ => Err(TcpFault::Protocol(format!(
            "{function} request answered with {:02x?}",
            &pdu[..pdu.len().min(8)]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn answer(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut f = transaction.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        f.push(unit);
        f.extend_from_slice(pdu);
        f
    }

    async fn pair() -> (TcpClient, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (TcpClient::new(client.unwrap()), server.unwrap().0)
    }

    async fn request(server: &mut TcpStream) -> [u8; 12] {
        let mut req = [0u8; 12];
        server.read_exact(&mut req).await.unwrap();
        req
    }

    #[tokio::test]
    async fn a_late_answer_is_set_aside_and_the_current_one_taken() {
        let (mut client, mut server) = pair().await;
        let t = Duration::from_millis(100);
        // Request 0 to unit 3 goes unanswered.
        let (r, req) = tokio::join!(
            client.read(3, FunctionCode::Input, 0x48, 2, t),
            request(&mut server)
        );
        assert!(matches!(r, Err(TcpFault::Timeout)), "{r:?}");
        assert_eq!(req, [0, 0, 0, 0, 0, 6, 3, 4, 0, 0x48, 0, 2]);
        assert_eq!(client.last_transaction(), 0);
        // Unit 3's answer arrives late, split across writes, just before unit 1's own.
        let served = async {
            let req = request(&mut server).await;
            assert_eq!(&req[..2], &[0, 1]);
            let late = answer(0, 3, &[4, 4, 0x43, 0x96, 0, 0]);
            server.write_all(&late[..5]).await.unwrap();
            server.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            server.write_all(&late[5..]).await.unwrap();
            server
                .write_all(&answer(1, 1, &[4, 4, 0x42, 0xc8, 0, 0]))
                .await
                .unwrap();
        };
        let (r, ()) = tokio::join!(
            client.read(1, FunctionCode::Input, 0x48, 2, Duration::from_secs(5)),
            served
        );
        assert_eq!(r.unwrap(), Ok(vec![0x42c8, 0]));
        assert_eq!(client.take_late(), vec![0]);
        assert!(client.take_late().is_empty());
    }

    #[tokio::test]
    async fn a_frame_cut_by_the_deadline_is_completed_by_the_next_read() {
        let (mut client, mut server) = pair().await;
        let t = Duration::from_millis(100);
        let served = async {
            request(&mut server).await;
            let a = answer(0, 1, &[3, 2, 0x12, 0x34]);
            server.write_all(&a[..8]).await.unwrap();
            request(&mut server).await;
            server.write_all(&a[8..]).await.unwrap();
            server
                .write_all(&answer(1, 1, &[3, 2, 0x56, 0x78]))
                .await
                .unwrap();
        };
        let reads = async {
            let first = client.read(1, FunctionCode::Holding, 0, 1, t).await;
            let second = client
                .read(1, FunctionCode::Holding, 0, 1, Duration::from_secs(5))
                .await;
            (first, second)
        };
        let ((first, second), ()) = tokio::join!(reads, served);
        assert!(matches!(first, Err(TcpFault::Timeout)), "{first:?}");
        assert_eq!(second.unwrap(), Ok(vec![0x5678]));
        assert_eq!(client.take_late(), vec![0]);
    }

    #[tokio::test]
    async fn exceptions_bits_and_bad_frames() {
        let (mut client, mut server) = pair().await;
        let t = Duration::from_secs(5);
        let served = async {
            request(&mut server).await;
            server.write_all(&answer(0, 1, &[0x84, 2])).await.unwrap();
            request(&mut server).await;
            server
                .write_all(&answer(1, 1, &[1, 2, 0b0000_0101, 0b1]))
                .await
                .unwrap();
            request(&mut server).await;
            server
                .write_all(&answer(2, 1, &[3, 2, 0, 1]))
                .await
                .unwrap();
            request(&mut server).await;
            server
                .write_all(&answer(3, 9, &[3, 2, 0, 1]))
                .await
                .unwrap();
        };
        let reads = async {
            let exc = client.read(1, FunctionCode::Input, 0, 2, t).await;
            let bits = client.read(1, FunctionCode::Coils, 0, 9, t).await;
            let short = client.read(1, FunctionCode::Holding, 0, 2, t).await;
            let wrong_unit = client.read(1, FunctionCode::Holding, 0, 1, t).await;
            (exc, bits, short, wrong_unit)
        };
        let ((exc, bits, short, wrong_unit), ()) = tokio::join!(reads, served);
        assert_eq!(exc.unwrap(), Err(2));
        let bits = bits.unwrap().unwrap();
        assert_eq!(&bits[..9], &[1, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert!(
            matches!(short, Err(TcpFault::Short { got: 1, count: 2 })),
            "{short:?}"
        );
        assert!(
            matches!(wrong_unit, Err(TcpFault::Protocol(_))),
            "{wrong_unit:?}"
        );
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_frame() {
        assert!(parse_answer(FunctionCode::Input, 1, &[3, 2, 0, 1]).is_err());
        assert!(parse_answer(FunctionCode::Input, 1, &[4, 3, 0, 1]).is_err());
        assert!(parse_answer(FunctionCode::Input, 1, &[]).is_err());
    }

    #[tokio::test]
    async fn a_header_that_is_not_modbus_breaks_the_read() {
        let (mut client, mut server) = pair().await;
        let served = async {
            request(&mut server).await;
            server.write_all(b"HTTP/1.1 400 Bad\r\n").await.unwrap();
        };
        let (r, ()) = tokio::join!(
            client.read(1, FunctionCode::Input, 0, 1, Duration::from_secs(5)),
            served
        );
        assert!(matches!(r, Err(TcpFault::Protocol(_))), "{r:?}");
    }
}
