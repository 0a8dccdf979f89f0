//! Load run (issue 3, item 9): N simulated Modbus TCP meters × 40 registers on loopback, polled
//! every second by the real `jieneng-gateway run` process, forwarding to a minimal HTTP sink.
//! Reports the gateway process's CPU (% of one core, from /proc/<pid>/stat utime+stime over the
//! measuring window) and peak RSS (VmHWM), the requests/s and values/s achieved, and missed
//! cycles; then the same for a bare tokio-modbus client doing the same reads.
//!
//! The meters and the sink run in this process, the gateway and the bare client each in their
//! own child process, so what is measured is the poller alone. 1,000 meters need about 2,100
//! file descriptors between the processes: run it through `scripts/gateway-load`, which raises
//! `ulimit -n` and builds the release binaries.
//!
//! Each meter answers holding registers 0..40: 36 u16 instantaneous values and two u32 energy
//! counters that advance with every read.

use std::collections::BTreeMap;
use std::future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// Registers each meter serves (and each poll reads).
const REGISTERS: u16 = 40;
/// u16 instantaneous values: voltage, current, power, frequency, in turn.
const INSTANT: u16 = 36;

#[derive(Parser, Debug)]
#[command(about = "Load run: simulated Modbus TCP meters polled by jieneng-gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the meters and the sink, then measure the gateway and the bare client.
    Run {
        /// The release `jieneng-gateway` binary.
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long, default_value_t = 1000)]
        meters: usize,
        /// Length of each measuring window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Time given to each poller to connect and settle before its window starts.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        /// Measure only the gateway.
        #[arg(long)]
        skip_bare: bool,
    },
    /// (internal) The bare client: one tokio-modbus connection per port in the file, 40
    /// holding registers read from each every second, nothing else.
    BareClient {
        #[arg(long)]
        ports: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            gateway,
            meters,
            seconds,
            warmup,
            skip_bare,
        } => run(&gateway, meters, seconds, warmup, skip_bare),
        Cmd::BareClient { ports } => bare_client(&ports),
    }
}

/// One simulated meter: its read counter and its energy counters.
#[derive(Debug, Default)]
struct Meter {
    reads: AtomicU64,
}

#[derive(Debug, Clone)]
struct MeterService {
    meter: Arc<Meter>,
    index: u16,
}

impl MeterService {
    fn registers(&self) -> Vec<u16> {
        let n = self.meter.reads.fetch_add(1, Ordering::Relaxed);
        let mut regs = Vec::with_capacity(usize::from(REGISTERS));
        for i in 0..INSTANT {
            // Values that move a little from read to read, in each quantity's range.
            let wobble = ((n + u64::from(i)) % 7) as u16;
            regs.push(match i % 4 {
                0 => 2300 + wobble,                  // 0.1 V
                1 => 150 + self.index % 50 + wobble, // 0.01 A
                2 => 3000 + wobble * 10,             // W
                _ => 5000 + wobble,                  // 0.01 Hz
            });
        }
        // Energy import grows 0.01 kWh a read, export a tenth of that.
        let import = 100_000 + u32::from(self.index) * 100 + n as u32;
        let export = 1_000 + (n / 10) as u32;
        for v in [import, export] {
            regs.push((v >> 16) as u16);
            regs.push(v as u16);
        }
        regs
    }
}

impl Service for MeterService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        future::ready(match req {
            Request::ReadHoldingRegisters(start, count)
                if start.checked_add(count).is_some_and(|end| end <= REGISTERS) =>
            {
                let regs = self.registers();
                Ok(Response::ReadHoldingRegisters(
                    regs[usize::from(start)..usize::from(start + count)].to_vec(),
                ))
            }
            Request::ReadHoldingRegisters(..) => Err(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

async fn start_meters(n: usize) -> anyhow::Result<(Vec<Arc<Meter>>, Vec<u16>)> {
    let mut meters = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a meter (is `ulimit -n` high enough?)")?;
        ports.push(listener.local_addr()?.port());
        let meter = Arc::new(Meter::default());
        let service = MeterService {
            meter: meter.clone(),
            index: u16::try_from(i).unwrap_or(u16::MAX),
        };
        let server = Server::new(listener);
        tokio::spawn(async move {
            let on_connected = |stream, addr| {
                let service = service.clone();
                async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        meters.push(meter);
    }
    Ok((meters, ports))
}

/// What the sink received.
#[derive(Debug, Default)]
struct SinkStats {
    batches: AtomicU64,
    readings: AtomicU64,
    bytes: AtomicU64,
    /// Bodies that were neither a JSON batch nor an Arrow stream: counted, not parsed.
    opaque: AtomicU64,
}

/// A minimal ingest stand-in: every POST is acknowledged with 200 and counted.
async fn start_sink() -> anyhow::Result<(std::net::SocketAddr, Arc<SinkStats>)> {
    use axum::body::Bytes;
    use axum::extract::State;
    let stats = Arc::new(SinkStats::default());
    async fn accept(State(s): State<Arc<SinkStats>>, body: Bytes) -> &'static str {
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        // The gateway sends large batches as Arrow IPC streams, small ones as JSON.
        let readings = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v["readings"].as_array().map(Vec::len),
            Err(_) => gateway::wire::decode(&body).ok().map(|b| b.readings.len()),
        };
        match readings {
            Some(n) => {
                s.readings.fetch_add(n as u64, Ordering::Relaxed);
            }
            None => {
                s.opaque.fetch_add(1, Ordering::Relaxed);
            }
        }
        "{}"
    }
    let app = axum::Router::new()
        .route("/api/v1/batches", axum::routing::post(accept))
        .with_state(stats.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, stats))
}

fn profile_toml() -> String {
    let mut p = String::from(
        "# 40 holding registers: the load run's simulated meter (benches/src/bin/gateway_load.rs).\n\
         format = 1\nvendor = \"Load\"\nmodel = \"Meter40\"\n\
         description = \"Load-run meter: 36 u16 instantaneous values and 2 u32 energy counters\"\n\
         word_order = \"big\"\nmax_registers = 125\n",
    );
    for i in 0..INSTANT {
        let (quantity, unit, scale) = match i % 4 {
            0 => ("voltage", "V", "0.1"),
            1 => ("current", "A", "0.01"),
            2 => ("power_active", "W", "1"),
            _ => ("frequency", "Hz", "0.01"),
        };
        p.push_str(&format!(
            "\n[[register]]\nname = \"r{i:02}\"\nquantity = \"{quantity}\"\nfunction = 3\naddress = {i}\n\
             type = \"u16\"\nunit = \"{unit}\"\nscale = {scale}\n"
        ));
    }
    for (j, q) in ["energy_import", "energy_export"].iter().enumerate() {
        p.push_str(&format!(
            "\n[[register]]\nname = \"{q}\"\nquantity = \"{q}\"\nfunction = 3\naddress = {}\n\
             type = \"u32\"\nunit = \"kWh\"\nscale = 0.01\n",
            INSTANT + 2 * j as u16
        ));
    }
    p
}

fn site_toml(dir: &Path, sink: std::net::SocketAddr, ports: &[u16]) -> String {
    let mut s = format!(
        "[gateway]\nid = \"gw-load\"\nspool_dir = \"{}\"\nprofile_dir = \"{}\"\npoll_interval = 1\nrequest_timeout = 2\n\n\
         [forward]\nurl = \"http://{sink}/api/v1/batches\"\ntoken = \"load-run-token-0123456789\"\n\n",
        dir.join("spool").display(),
        dir.join("profiles").display(),
    );
    for (i, port) in ports.iter().enumerate() {
        s.push_str(&format!(
            "[[device]]\nmeter = \"m{i:04}\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
             profile = \"load/meter40\"\nsource = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port}, unit = 1 }}\n\n"
        ));
    }
    s
}

/// CPU ticks (utime + stime) of a process.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A `Vm…` line of /proc/<pid>/status, in kB.
fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("empty status line")?
        .parse()?)
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Sleeps until half a second past the next whole second, so a window of whole seconds holds
/// exactly one tick of a 1-second, wall-clock aligned schedule per second.
fn sleep_to_half_second() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = now.subsec_millis();
    let wait = if into < 500 { 500 - into } else { 1500 - into };
    std::thread::sleep(Duration::from_millis(u64::from(wait)));
}

#[derive(Debug)]
struct Window {
    label: &'static str,
    seconds: f64,
    cpu_percent: f64,
    hwm_kb: u64,
    rss_kb: u64,
    requests: u64,
    missed_cycles: u64,
    meters_never_read: usize,
    readings_forwarded: Option<u64>,
}

impl Window {
    fn print(&self, meters: usize) {
        let rps = self.requests as f64 / self.seconds;
        println!("== {}", self.label);
        println!(
            "  window {:.1} s, {meters} meters × {REGISTERS} registers, polled every 1 s",
            self.seconds
        );
        println!(
            "  CPU {:.2} % of one core (utime+stime over the window)",
            self.cpu_percent
        );
        println!(
            "  peak RSS (VmHWM) {:.1} MB, RSS at the end {:.1} MB",
            self.hwm_kb as f64 / 1024.0,
            self.rss_kb as f64 / 1024.0
        );
        println!(
            "  {rps:.0} requests/s, {:.0} registers/s read",
            rps * f64::from(REGISTERS)
        );
        if let Some(r) = self.readings_forwarded {
            println!(
                "  {:.0} readings/s forwarded to the sink",
                r as f64 / self.seconds
            );
        }
        println!(
            "  missed cycles: {} of {} (meters never read in the window: {})",
            self.missed_cycles,
            meters as u64 * self.seconds.round() as u64,
            self.meters_never_read
        );
    }
}

/// Measures `pid` over `seconds` whole seconds of polls.
fn measure(
    label: &'static str,
    pid: u32,
    meters: &[Arc<Meter>],
    seconds: u64,
    sink: Option<&SinkStats>,
) -> anyhow::Result<Window> {
    let hz = clock_ticks_per_second()? as f64;
    sleep_to_half_second();
    let reads = |m: &[Arc<Meter>]| -> Vec<u64> {
        m.iter().map(|m| m.reads.load(Ordering::Relaxed)).collect()
    };
    let forwarded = |s: Option<&SinkStats>| s.map(|s| s.readings.load(Ordering::Relaxed));
    let (t0, c0, r0, f0) = (
        Instant::now(),
        cpu_ticks(pid)?,
        reads(meters),
        forwarded(sink),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (c1, r1, f1) = (cpu_ticks(pid)?, reads(meters), forwarded(sink));
    let wall = t0.elapsed().as_secs_f64();
    let per_meter: Vec<u64> = r1.iter().zip(&r0).map(|(a, b)| a - b).collect();
    Ok(Window {
        label,
        seconds: wall,
        cpu_percent: (c1 - c0) as f64 / hz / wall * 100.0,
        hwm_kb: status_kb(pid, "VmHWM:")?,
        rss_kb: status_kb(pid, "VmRSS:")?,
        requests: per_meter.iter().sum(),
        missed_cycles: per_meter.iter().map(|&n| seconds.saturating_sub(n)).sum(),
        meters_never_read: per_meter.iter().filter(|&&n| n == 0).count(),
        readings_forwarded: f1.zip(f0).map(|(a, b)| a - b),
    })
}

/// Waits until every meter has been read at least once (the poller is connected to all).
fn wait_all_read(meters: &[Arc<Meter>], child: &mut Child, limit: Duration) -> anyhow::Result<()> {
    let base: Vec<u64> = meters
        .iter()
        .map(|m| m.reads.load(Ordering::Relaxed))
        .collect();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the poller exited early: {status}");
        }
        let unread = meters
            .iter()
            .zip(&base)
            .filter(|(m, b)| m.reads.load(Ordering::Relaxed) == **b)
            .count();
        if unread == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{unread} meters not read within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks a child to stop as Ctrl-C would (the gateway drains its spool), then waits.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn run(gateway: &Path, n: usize, seconds: u64, warmup: u64, skip_bare: bool) -> anyhow::Result<()> {
    // The meters and the sink get one worker thread: they stand in for other machines and
    // should leave the second core to the process being measured.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (meters, ports) = rt.block_on(start_meters(n))?;
    let (sink_addr, sink) = rt.block_on(start_sink())?;
    let dir = std::env::temp_dir().join(format!("jieneng-load-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("profiles/load"))?;
    std::fs::write(dir.join("profiles/load/meter40.toml"), profile_toml())?;
    let site = dir.join("site.toml");
    std::fs::write(&site, site_toml(&dir, sink_addr, &ports))?;
    println!(
        "{n} meters on 127.0.0.1 ports {}..={}, sink on {sink_addr}, files in {}",
        ports.iter().min().unwrap_or(&0),
        ports.iter().max().unwrap_or(&0),
        dir.display()
    );

    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let mut gw = Command::new(gateway)
        .args(["run", "--config"])
        .arg(&site)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", gateway.display()))?;
    let result = (|| {
        wait_all_read(&meters, &mut gw, Duration::from_secs(warmup.max(30)))?;
        std::thread::sleep(Duration::from_secs(warmup));
        measure(
            "jieneng-gateway run",
            gw.id(),
            &meters,
            seconds,
            Some(&sink),
        )
    })();
    stop(&mut gw)?;
    let gw_window = result?;
    gw_window.print(n);
    println!(
        "  sink: {} batches, {} readings, {:.1} MB, {} neither JSON nor Arrow",
        sink.batches.load(Ordering::Relaxed),
        sink.readings.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        sink.opaque.load(Ordering::Relaxed)
    );

    if !skip_bare {
        let ports_file = dir.join("ports.txt");
        let mut f = std::fs::File::create(&ports_file)?;
        for p in &ports {
            writeln!(f, "{p}")?;
        }
        drop(f);
        let mut bare = Command::new(std::env::current_exe()?)
            .args(["bare-client", "--ports"])
            .arg(&ports_file)
            .stdin(Stdio::null())
            .spawn()?;
        let result = (|| {
            wait_all_read(&meters, &mut bare, Duration::from_secs(warmup.max(30)))?;
            std::thread::sleep(Duration::from_secs(warmup));
            measure(
                "bare tokio-modbus client",
                bare.id(),
                &meters,
                seconds,
                None,
            )
        })();
        bare.kill()?;
        bare.wait()?;
        result?.print(n);
    }
    let _ = std::fs::remove_dir_all(dir.join("spool"));
    Ok(())
}

/// Reads 40 holding registers from every meter at every whole second, over one tokio-modbus
/// TCP connection per meter, and throws the words away.
fn bare_client(ports: &Path) -> anyhow::Result<()> {
    let ports: Vec<u16> = std::fs::read_to_string(ports)?
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio_modbus::client::Reader as _;
        let mut tasks = Vec::new();
        for port in ports {
            tasks.push(tokio::spawn(async move {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let mut ctx = tokio_modbus::client::tcp::connect(addr).await?;
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    let wait = 1000 - u64::from(now.subsec_millis());
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        ctx.read_holding_registers(0, REGISTERS),
                    )
                    .await
                    {
                        Ok(Ok(Ok(_words))) => {}
                        Ok(Ok(Err(e))) => *errors.entry(e.to_string()).or_default() += 1,
                        Ok(Err(e)) => *errors.entry(e.to_string()).or_default() += 1,
                        Err(_) => *errors.entry("timeout".into()).or_default() += 1,
                    }
                    if errors.values().sum::<u64>() > 100 {
                        return Err::<(), anyhow::Error>(anyhow::anyhow!(
                            "meter on port {port}: {errors:?}"
                        ));
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}
