//! Modbus under faults, with real peers. A pymodbus converter with two meters behind one TCP
//! port answers an exception for one register range, goes silent for a while, and drops its
//! connections; the gateway reports the exception by name and keeps the other values, takes
//! the meters offline and back online, reconnects, keeps both meters on one connection, and
//! the readings reach a real ingest server with no kilowatt-hour lost. Then Modbus RTU over a
//! pseudo-terminal pair: a tokio-modbus RTU server with two unit ids on one line, read by the
//! gateway's RTU source; and the same against a pymodbus RTU server on a pseudo-terminal.
//!
//! No assertion is about time: deadlines only bound how long a test waits before failing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::source::bus::Bus;
use gateway::source::modbus::{device_plan, poll_device};
use gateway::source::{DeviceStats, Sample};
use gateway::{Gateway, GatewayConfig};

use ingest::{IngestConfig, Server};
use jieneng_tests::{peer, python, run_json};
use reading_model::GatewayId;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "modbus-faults-test-token-01";

/// A peer that takes commands on stdin (one JSON line each) and answers on stdout.
struct Controlled {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Controlled {
    fn spawn(script: &str, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(python())
            .arg(peer(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn next_json(&self, timeout: Duration) -> anyhow::Result<Value> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|e| anyhow::anyhow!("peer said nothing within {timeout:?}: {e}"))?;
        Ok(serde_json::from_str(&line)?)
    }

    fn command(&mut self, cmd: &str) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{}", json!({ "cmd": cmd }))?;
        self.stdin.flush()?;
        self.next_json(Duration::from_secs(10))
    }
}

impl Drop for Controlled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds, failing with `what` after `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn snapshot(s: &DeviceStats) -> String {
    format!(
        "polls {} failed {} requests {} exceptions {} timeouts {} reconnects {} online {} last error {:?}",
        get(&s.polls),
        get(&s.failed_polls),
        get(&s.requests),
        get(&s.exceptions),
        get(&s.timeouts),
        get(&s.reconnects),
        s.online.load(Ordering::Relaxed),
        s.last_error()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one fault scenario against one pymodbus peer, its phases in the order the peer plays them"
)]
async fn exceptions_silence_and_dropped_connections() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Unit 1 refuses its power registers (SDM630 input 0x0034, 2 words).
    let mut conv = Controlled::spawn(
        "fault_meter.py",
        &[&json!({"units": [1, 2], "exceptions": [[1, 0x34, 2]]}).to_string()],
    )?;
    let port = conv.next_json(Duration::from_secs(30))?["port"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no port"))?;

    let serve = IngestConfig {
        flush_interval: 0.5,
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-faults")?, TOKEN);
    let server = Server::start(&serve).await?;
    // max_gap = 0 keeps energy (0x0048) and power (0x0034) in separate requests, so the
    // exception costs unit 1 its power only.
    let mut site = format!(
        "[gateway]\nid = \"gw-faults\"\nspool_dir = \"{}\"\npoll_interval = 0.5\nrequest_timeout = 0.4\nmax_gap = 0\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n",
        dir.path().join("spool").display(),
        server.addr
    );
    for unit in [1, 2] {
        site.push_str(&format!(
            "[[device]]\nmeter = \"u{unit}\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
             profile = \"eastron/sdm630\"\nregisters = [\"energy_import\", \"power_total\"]\n\
             source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port}, unit = {unit}, retries = 1 }}\n\n"
        ));
    }
    let config = GatewayConfig::parse("faults site", &site, None)?;
    for d in &config.devices {
        assert_eq!(
            device_plan(d, config.gateway.max_gap).requests.len(),
            2,
            "energy and power in separate requests"
        );
    }
    let gw = Gateway::build(config)?.start(Duration::from_secs(10))?;
    let (u1, u2) = (gw.devices[0].clone(), gw.devices[1].clone());
    let limit = Duration::from_secs(30);

    // (a) An exception for unit 1's power, by name; its energy and all of unit 2 still read.
    until("both meters online, unit 1's exception seen", limit, || {
        u1.online.load(Ordering::Relaxed)
            && u2.online.load(Ordering::Relaxed)
            && get(&u1.exceptions) >= 2
            && get(&u2.polls) >= 2
    })
    .await?;
    let err = u1.last_error().unwrap_or_default();
    assert!(
        err.contains("illegal data address") && err.contains("0x0034"),
        "{err}"
    );
    assert_eq!(get(&u1.failed_polls), 0, "a partial answer is a good poll");
    assert_eq!(get(&u2.exceptions), 0, "{}", snapshot(&u2));
    assert_eq!(u2.last_error(), None);
    let stats = conv.command("stats")?;
    assert_eq!(
        stats["max_open"], 1,
        "both units on one connection: {stats}"
    );

    // (b) Silence: requests time out, polls fail after their retry, both go offline.
    let before = (get(&u1.timeouts), get(&u2.timeouts), get(&u1.failed_polls));
    conv.command("silent")?;
    until("both meters offline after timeouts", limit, || {
        !u1.online.load(Ordering::Relaxed)
            && !u2.online.load(Ordering::Relaxed)
            && get(&u2.failed_polls) >= 2
    })
    .await?;
    assert!(
        get(&u1.timeouts) + get(&u2.timeouts) > before.0 + before.1,
        "{} / {}",
        snapshot(&u1),
        snapshot(&u2)
    );
    assert!(get(&u1.failed_polls) > before.2, "{}", snapshot(&u1));
    // The last error is the timeout itself or, once failures follow each other, the refusal
    // to send while the reopen backs off.
    let err = u2.last_error().unwrap_or_default();
    assert!(
        err.contains("no answer within") || err.contains("reconnecting in"),
        "{}",
        snapshot(&u2)
    );
    // A connection that timed out is dropped, so a reopen follows.
    let reconnects_silent = get(&u1.reconnects) + get(&u2.reconnects);
    assert!(
        reconnects_silent >= 1,
        "{} / {}",
        snapshot(&u1),
        snapshot(&u2)
    );

    conv.command("answer")?;
    let resumed_ms = chrono_now_ms();
    let polls_at_resume = get(&u2.polls);
    until("both meters online again", limit, || {
        u1.online.load(Ordering::Relaxed)
            && u2.online.load(Ordering::Relaxed)
            && get(&u2.polls) >= polls_at_resume + 2
    })
    .await?;

    // (c) The converter drops the connection: the gateway reconnects and reads on.
    let reconnects_before = get(&u1.reconnects) + get(&u2.reconnects);
    let failed_before = get(&u2.failed_polls);
    let dropped = conv.command("drop")?;
    assert_eq!(
        dropped["dropped"], 1,
        "one connection for both units: {dropped}"
    );
    let dropped_ms = chrono_now_ms();
    until("a reconnect after the drop", limit, || {
        get(&u1.reconnects) + get(&u2.reconnects) > reconnects_before
    })
    .await?;
    let polls_after_drop = get(&u2.polls);
    until("polls go on after the reconnect", limit, || {
        u1.online.load(Ordering::Relaxed)
            && u2.online.load(Ordering::Relaxed)
            && get(&u2.polls) >= polls_after_drop + 2
    })
    .await?;
    // The retry of the request that met the closed socket reconnected within the same poll.
    assert_eq!(
        get(&u2.failed_polls),
        failed_before,
        "a dropped connection costs no poll: {}",
        snapshot(&u2)
    );
    let stats = conv.command("stats")?;
    assert!(stats["connects"].as_u64() >= Some(2), "{stats}");
    assert_eq!(stats["max_open"], 1, "never two connections: {stats}");

    gw.stop().await;
    server.stop().await?;
    let reads = conv.command("stats")?["reads"].clone();
    drop(conv);

    // What reached ingest, read back from the Parquet files by DuckDB.
    let out = run_json("read_rows.py", &[&serve.data_dir.display().to_string()])?;
    let rows = out["rows"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no rows: {out}"))?;
    let row = |meter: &str, quantity: &str| {
        rows.iter()
            .find(|r| r["meter"] == meter && r["quantity"] == quantity)
            .cloned()
    };
    assert!(
        row("u1", "power_active").is_none(),
        "unit 1's power was refused, so none is stored: {out}"
    );
    let p2 = row("u2", "power_active").ok_or_else(|| anyhow::anyhow!("u2 power: {out}"))?;
    assert_eq!(p2["last_value"].as_f64(), Some(1.0), "1000 W is 1 kW: {p2}");
    for (meter, start) in [("u1", 100.0), ("u2", 200.0)] {
        let e =
            row(meter, "energy_import").ok_or_else(|| anyhow::anyhow!("{meter} energy: {out}"))?;
        let first = e["first_value"].as_f64().unwrap_or(f64::NAN);
        let last = e["last_value"].as_f64().unwrap_or(f64::NAN);
        // Every stored value is one the meter served (start + k · 0.125 kWh).
        assert!(
            first >= start && ((first - start) / 0.125).fract() == 0.0,
            "{e}"
        );
        // Readings resumed after the silence and after the drop.
        assert!(
            e["last_ts"].as_i64() > Some(resumed_ms.max(dropped_ms)),
            "{e}"
        );
        // No energy lost across the outages: the deltas add up to last − first, exactly.
        assert_eq!(e["delta_sum"].as_f64(), Some(last - first), "{meter}: {e}");
        assert!(
            e["rows"].as_u64() >= Some(4),
            "{meter}: several readings: {e}"
        );
        let served = reads[&meter[1..]].as_u64().unwrap_or(0);
        assert!(served >= e["rows"].as_u64().unwrap_or(0), "{reads} {e}");
    }
    Ok(())
}

/// An energy register that reads 0.0 once mid-run (a meter rebooting, a bad read) while the
/// meter goes on counting: the read is stored flagged `glitch` without a delta, and the stored
/// deltas add up to exactly what the meter counted between the first and last stored reads.
/// (Taken as a reset, the next good read's delta was the whole register, ~100 kWh invented.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_energy_register_reading_zero_once_invents_no_energy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut conv = Controlled::spawn(
        "fault_meter.py",
        &[&json!({"units": [1], "zero_once": {"1": 4}}).to_string()],
    )?;
    let port = conv.next_json(Duration::from_secs(30))?["port"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no port"))?;
    let serve = IngestConfig {
        flush_interval: 0.5,
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-glitch")?, TOKEN);
    let server = Server::start(&serve).await?;
    let site = format!(
        "[gateway]\nid = \"gw-glitch\"\nspool_dir = \"{}\"\npoll_interval = 0.5\nrequest_timeout = 0.4\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [[device]]\nmeter = \"u1\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
         profile = \"eastron/sdm630\"\nregisters = [\"energy_import\"]\n\
         source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port}, unit = 1 }}\n",
        dir.path().join("spool").display(),
        server.addr
    );
    let gw = Gateway::build(GatewayConfig::parse("glitch site", &site, None)?)?
        .start(Duration::from_secs(10))?;
    let u1 = gw.devices[0].clone();
    until(
        "eight polls, the zero among them",
        Duration::from_secs(30),
        || get(&u1.polls) >= 8,
    )
    .await?;
    let normalizer = gw.normalizer.clone();
    gw.stop().await;
    server.stop().await?;
    assert_eq!(normalizer.glitches.load(Ordering::Relaxed), 1);
    assert_eq!(normalizer.resets.load(Ordering::Relaxed), 0);
    let reads = conv.command("stats")?["reads"]["1"].as_u64().unwrap_or(0);
    drop(conv);

    let out = run_json("read_rows.py", &[&serve.data_dir.display().to_string()])?;
    let e = out["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["meter"] == "u1" && r["quantity"] == "energy_import")
        })
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    let first = e["first_value"].as_f64().unwrap_or(f64::NAN);
    let last = e["last_value"].as_f64().unwrap_or(f64::NAN);
    // Unit 1 starts at 100 kWh and counts 0.125 kWh at every read, the zero one included.
    assert!(first >= 100.0 && last > first, "{e}");
    assert_eq!(
        e["delta_sum"].as_f64(),
        Some(last - first),
        "stored energy is the meter's true consumption: {e}"
    );
    // The zero is kept and flagged, not taken for a reset (a slow poll may flag a gap).
    let qualities = e["qualities"].as_array().cloned().unwrap_or_default();
    assert!(qualities.contains(&json!("glitch")), "{e}");
    assert!(!qualities.contains(&json!("reset")), "{e}");
    assert!(e["rows"].as_u64() >= Some(6), "{e}");
    assert!(
        reads >= e["rows"].as_u64().unwrap_or(0),
        "{reads} reads: {e}"
    );
    Ok(())
}

/// Four meters behind one converter: units 1 and 2 answer, unit 3 answers only after its
/// request was given up (the answer arrives while others are being read), unit 4 never answers.
/// The live units are read at every poll, on the one connection, without a reconnect; no late
/// answer is taken for another request's (each unit's energy is in its own range and grows with
/// every read, so a stale or foreign answer would show); the late answers are counted against
/// unit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_late_units_behind_a_converter_leave_the_others_alone() -> anyhow::Result<()> {
    let mut conv = Controlled::spawn(
        "fault_meter.py",
        &[&json!({"units": [1, 2, 3, 4], "late": {"3": 0.6}, "dead": [4]}).to_string()],
    )?;
    let port = conv.next_json(Duration::from_secs(30))?["port"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no port"))?;
    // Energy and power in one request per device; two retries, which an offline device does
    // not spend on timeouts.
    let mut site = "[gateway]\nid = \"gw-dead\"\nspool_dir = \"/nonexistent\"\npoll_interval = 1\nrequest_timeout = 0.25\n\n\
                    [forward]\nurl = \"http://127.0.0.1:9/api/v1/batches\"\ntoken = \"dead-unit-test-token-01\"\n\n"
        .to_owned();
    for unit in 1..=4 {
        site.push_str(&format!(
            "[[device]]\nmeter = \"u{unit}\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
             profile = \"eastron/sdm630\"\nregisters = [\"energy_import\", \"power_total\"]\n\
             source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port}, unit = {unit}, retries = 2 }}\n\n"
        ));
    }
    let config = GatewayConfig::parse("dead unit site", &site, None)?;
    let mut poll = poll_config(config)?;
    let [u1, u2, u3, u4] = [0, 1, 2, 3].map(|i| poll.stats[i].clone());
    let snapshots = || {
        [&u1, &u2, &u3, &u4]
            .iter()
            .map(|s| format!("{} late {}", snapshot(s), get(&s.late_answers)))
            .collect::<Vec<_>>()
    };

    // Per live device, (tick, energy kWh) of every sample.
    let mut energy: [Vec<(i64, f64)>; 2] = [Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while energy.iter().any(|e| e.len() < 8) || get(&u3.late_answers) < 2 {
        let s = tokio::time::timeout_at(deadline, poll.samples.recv())
            .await
            .map_err(|_| anyhow::anyhow!("too few samples: {:?}", snapshots()))?
            .ok_or_else(|| anyhow::anyhow!("pollers stopped"))?;
        anyhow::ensure!(
            s.device < 2,
            "unit {} never answers in time, yet gave a sample: {s:?}",
            s.device + 1
        );
        let kwh = s
            .values
            .iter()
            .find(|(_, v)| v.unit.to_string() == "kWh")
            .map(|(_, v)| v.value)
            .ok_or_else(|| anyhow::anyhow!("no energy in {s:?}"))?;
        energy[s.device].push((s.ts, kwh));
    }
    let stats = conv.command("stats")?;
    poll.stop().await;

    for (i, samples) in energy.iter().enumerate() {
        let unit = (i + 1) as f64;
        for w in samples.windows(2) {
            assert!(w[1].0 > w[0].0, "one sample per tick: {samples:?}");
            // Each of the unit's reads adds 0.125 kWh: a repeated or foreign answer would not
            // be exactly one step up.
            assert_eq!(w[1].1 - w[0].1, 0.125, "unit {unit}: {samples:?}");
        }
        for (_, kwh) in samples {
            assert!(
                *kwh >= 100.0 * unit && *kwh < 100.0 * (unit + 1.0),
                "unit {unit} answered with another unit's energy: {samples:?}"
            );
        }
    }
    let snap = snapshots();
    for s in [&u1, &u2, &u3, &u4] {
        assert_eq!(get(&s.reconnects), 0, "no reconnect: {snap:?}");
    }
    for s in [&u1, &u2] {
        assert_eq!(get(&s.failed_polls), 0, "{snap:?}");
        assert_eq!(get(&s.timeouts), 0, "{snap:?}");
        assert_eq!(get(&s.late_answers), 0, "{snap:?}");
        assert!(s.online.load(Ordering::Relaxed), "{snap:?}");
    }
    for s in [&u3, &u4] {
        assert!(!s.online.load(Ordering::Relaxed), "{snap:?}");
        assert!(get(&s.timeouts) >= 2, "{snap:?}");
        // Once offline, a device has one attempt per poll: the first poll may spend its
        // retries, later ones do not.
        assert!(
            get(&s.requests) <= get(&s.polls) + 2,
            "an offline device's timeouts are not retried: {snap:?}"
        );
    }
    assert_eq!(get(&u4.late_answers), 0, "{snap:?}");
    assert_eq!(stats["connects"], 1, "one connection throughout: {stats}");
    Ok(())
}

fn chrono_now_ms() -> i64 {
    gateway::source::now_ms()
}

/// Builds a site whose devices are on the serial port `port`, and polls them straight into a
/// channel (no spool, no ingest) so the test sees the decoded values themselves.
struct RtuPoll {
    stats: Vec<Arc<DeviceStats>>,
    samples: mpsc::Receiver<Sample>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn poll_rtu(port: &str, baud: u32, parity: &str, units: &[u8]) -> anyhow::Result<RtuPoll> {
    let mut site = "[gateway]\nid = \"gw-rtu\"\nspool_dir = \"/nonexistent\"\npoll_interval = 0.2\nrequest_timeout = 1\n\n\
                    [forward]\nurl = \"http://127.0.0.1:9/api/v1/batches\"\ntoken = \"rtu-test-token-000001\"\n\n"
        .to_owned();
    for unit in units {
        site.push_str(&format!(
            "[[device]]\nmeter = \"rtu{unit}\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
             profile = \"eastron/sdm630\"\nregisters = [\"energy_import\", \"power_total\"]\n\
             source = {{ type = \"modbus-rtu\", port = \"{port}\", baud = {baud}, parity = \"{parity}\", unit = {unit} }}\n\n"
        ));
    }
    poll_config(GatewayConfig::parse("rtu site", &site, None)?)
}

/// Polls every device of `config` (all on one bus) straight into a channel.
fn poll_config(config: GatewayConfig) -> anyhow::Result<RtuPoll> {
    let timeout = Duration::from_secs_f64(config.gateway.request_timeout);
    let (tx, samples) = mpsc::channel(64);
    let (shutdown, shutdown_rx) = watch::channel(false);
    // One bus for the line, as the gateway's run loop does for devices sharing a port.
    let (bus, bus_task) = Bus::spawn(&config.devices[0].source, timeout);
    let mut tasks = vec![bus_task];
    let mut stats = Vec::new();
    for (i, d) in config.devices.iter().enumerate() {
        let s = Arc::new(DeviceStats::default());
        stats.push(s.clone());
        tasks.push(tokio::spawn(poll_device(
            i,
            Arc::new(d.clone()),
            device_plan(d, config.gateway.max_gap),
            bus.bus(),
            s,
            tx.clone(),
            shutdown_rx.clone(),
        )));
    }
    Ok(RtuPoll {
        stats,
        samples,
        shutdown,
        tasks,
    })
}

impl RtuPoll {
    /// Waits for a sample of every device; per device, the decoded (energy kWh, power kW).
    async fn one_sample_each(&mut self, n: usize) -> anyhow::Result<Vec<(f64, f64)>> {
        let mut got: Vec<Option<(f64, f64)>> = vec![None; n];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.iter().any(Option::is_none) {
            let s = tokio::time::timeout_at(deadline, self.samples.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no sample from every RTU device: {:?}",
                        self.stats.iter().map(|s| snapshot(s)).collect::<Vec<_>>()
                    )
                })?
                .ok_or_else(|| anyhow::anyhow!("pollers stopped"))?;
            // Profile register order: the sample maps register index → value; energy is the
            // one in kWh, power the one in kW.
            let mut energy = None;
            let mut power = None;
            for (_, v) in &s.values {
                match v.unit.to_string().as_str() {
                    "kWh" => energy = Some(v.value),
                    "kW" => power = Some(v.value),
                    _ => {}
                }
            }
            if let (Some(e), Some(p)) = (energy, power) {
                got[s.device] = Some((e, p));
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        drop(self.samples);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A simulated RS-485 line: two SDM630s (units 1 and 2) answered by tokio-modbus's RTU server.
mod line {
    use std::future::{Ready, ready};
    use std::sync::Mutex;

    use tokio_modbus::server::Service;
    use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

    /// Energy of unit u: 1000·u + 0.5 kWh; power: 250·u W.
    #[derive(Debug, Default)]
    pub struct Meters {
        pub requests: Mutex<Vec<u8>>,
    }

    fn f32_words(v: f32) -> [u16; 2] {
        let b = v.to_be_bytes();
        [
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ]
    }

    impl Service for Meters {
        type Request = SlaveRequest<'static>;
        type Response = Option<Response>;
        type Exception = ExceptionCode;
        type Future = Ready<Result<Self::Response, Self::Exception>>;

        fn call(&self, req: Self::Request) -> Self::Future {
            let unit = req.slave;
            if !(1..=2).contains(&unit) {
                // Nobody at this address on the line: silence, as on a real bus.
                return ready(Ok(None));
            }
            if let Ok(mut r) = self.requests.lock() {
                r.push(unit);
            }
            let Request::ReadInputRegisters(start, count) = req.request else {
                return ready(Err(ExceptionCode::IllegalFunction));
            };
            let mut regs = vec![0u16; 0x100];
            let energy = f32_words(1000.0 * f32::from(unit) + 0.5);
            let power = f32_words(250.0 * f32::from(unit));
            regs[0x48..0x4a].copy_from_slice(&energy);
            regs[0x34..0x36].copy_from_slice(&power);
            let (s, n) = (usize::from(start), usize::from(count));
            match regs.get(s..s + n) {
                Some(words) => ready(Ok(Some(Response::ReadInputRegisters(words.to_vec())))),
                None => ready(Err(ExceptionCode::IllegalDataAddress)),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_two_units_on_one_pseudo_terminal_line() -> anyhow::Result<()> {
    use tokio_serial::SerialPort as _;

    // The meter side keeps the master end; the gateway opens the slave end by its path, as it
    // would /dev/ttyUSB0, with its baud and parity.
    let (master, slave) = tokio_serial::SerialStream::pair()?;
    let path = slave
        .name()
        .ok_or_else(|| anyhow::anyhow!("the pty has no name"))?;
    let meters = Arc::new(line::Meters::default());
    let server =
        tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(meters.clone()));

    let mut poll = poll_rtu(&path, 9600, "even", &[1, 2])?;
    let values = poll.one_sample_each(2).await?;
    assert_eq!(values, vec![(1000.5, 0.25), (2000.5, 0.5)]);
    for s in &poll.stats {
        assert!(s.online.load(Ordering::Relaxed), "{}", snapshot(s));
        assert_eq!(get(&s.exceptions), 0, "{}", snapshot(s));
    }
    let served = meters
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert!(served.contains(&1) && served.contains(&2), "{served:?}");
    poll.stop().await;
    server.abort();
    drop(slave);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_against_pymodbus_serial_server() -> anyhow::Result<()> {
    // pymodbus serves an RTU line on one pseudo-terminal; the script relays it to a second one
    // whose path the gateway opens (what socat would do, without socat).
    let meter = Controlled::spawn("serial_meter.py", &[&json!({"units": [3, 4]}).to_string()])?;
    let port = meter.next_json(Duration::from_secs(30))?["port"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no port"))?
        .to_owned();
    // No parity: pyserial cannot set it on a Linux pseudo-terminal (see serial_meter.py).
    let mut poll = poll_rtu(&port, 19_200, "none", &[3, 4])?;
    let values = poll.one_sample_each(2).await?;
    // Energy of unit u: 100·u kWh (+0.125 per read), power 1000 W.
    for ((energy, power), unit) in values.iter().zip([3.0, 4.0]) {
        assert!(
            *energy >= 100.0 * unit && (energy - 100.0 * unit) % 0.125 == 0.0,
            "{values:?}"
        );
        assert_eq!(*power, 1.0, "{values:?}");
    }
    poll.stop().await;
    Ok(())
}
