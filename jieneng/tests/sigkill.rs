//! The crash test: `jieneng serve` (the real binary) under load from clients that record which
//! batches were acknowledged, killed with SIGKILL at random moments and restarted, many times,
//! while a pyarrow reader keeps opening every visible Parquet file. At the end (DuckDB reading
//! the files as they are): every acknowledged reading is stored exactly once, unacknowledged
//! ones at most once, and the reader never met a partial or corrupt file.
//!
//! It lives in the `jieneng` package rather than `tests/` because only the binary's own
//! package can be sure cargo built the binary (`CARGO_BIN_EXE_jieneng`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jieneng_tests::{Peer, run_json};
use serde_json::json;
use tokio::sync::watch;

const CLIENTS: usize = 4;
const METERS: usize = 16;
// Issue 16 asks for 100 kills or more; each life is 0.1–0.7 s of load.
const CYCLES: usize = 100;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z

fn token(c: usize) -> String {
    format!("crash-test-token-{c:04}")
}

/// A small deterministic generator (xorshift): random kill moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The line without terminal colour codes, should the logger add them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Server log lines seen over all lives: (compactions, WAL replays, torn WAL tails cut).
static COMPACTED: AtomicUsize = AtomicUsize::new(0);
static REPLAYED: AtomicUsize = AtomicUsize::new(0);
static TORN: AtomicUsize = AtomicUsize::new(0);

/// A server process, killed when dropped so that a failing test leaves none behind.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server and waits for the address it logs.
fn start(config: &std::path::Path) -> anyhow::Result<(Serve, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jieneng"))
        .args(["serve", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = strip_ansi(&String::from_utf8_lossy(&line));
            if !sent
                && line.contains("ingest listening")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
            {
                let _ = tx.send(addr.to_owned());
                sent = true;
            }
            for (what, n) in [
                ("compacted", &COMPACTED),
                ("replayed WAL", &REPLAYED),
                ("torn tail", &TORN),
            ] {
                if line.contains(what) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Keep draining so the server never blocks on a full pipe.
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((Serve(child), addr)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the server did not say where it listens: {e}")
        }
    }
}

/// The readings of client `c`'s batch `seq`: one per meter at the batch's instant, and again
/// the first meter's reading of the previous batch, so batches overlap on a key.
fn batch(c: usize, seq: u64) -> serde_json::Value {
    let reading = |m: usize, s: u64| {
        json!({
            "ts": T0 + s as i64 * 60_000,
            "account": "110108A001",
            "meter": format!("c{c}-m{m:02}"),
            "category": "01",
            "item": "01000",
            "quantity": "energy_import",
            "unit": "kWh",
            "value": s as f64,
            "delta": 1.0,
        })
    };
    let mut readings: Vec<_> = (0..METERS).map(|m| reading(m, seq)).collect();
    if seq > 1 {
        readings.push(reading(0, seq - 1));
    }
    json!({"version": 1, "gateway": format!("gw-{c}"), "seq": seq, "readings": readings})
}

/// Sends batches one after another to whatever address the server has now; records the
/// sequence numbers answered 2xx. A batch not answered is sent again, like a gateway would.
async fn client(
    c: usize,
    mut addr: watch::Receiver<Option<String>>,
    mut stop: watch::Receiver<bool>,
    acked: Arc<Mutex<BTreeSet<(usize, u64)>>>,
    sent: Arc<Mutex<BTreeSet<(usize, u64)>>>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut seq = 1u64;
    while !*stop.borrow() {
        let Some(a) = addr.borrow_and_update().clone() else {
            tokio::select! {
                _ = addr.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        lock(&sent).insert((c, seq));
        let r = http
            .post(format!("http://{a}/api/v1/batches"))
            .bearer_auth(token(c))
            .json(&batch(c, seq))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                lock(&acked).insert((c, seq));
                seq += 1;
            }
            Ok(r) => anyhow::bail!("client {c} batch {seq}: {}", r.status()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one crash scenario (load, SIGKILL, restart, read back with two peers), read top to bottom"
)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_shows_no_partial_file()
-> anyhow::Result<()> {
    // reqwest is built without a TLS provider of its own (ring-only workspace).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let config = dir.path().join("serve.toml");
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nflush_interval = 0.2\nflush_rows = 3000\n\n\
         [mqtt]\nenabled = false\n\n\
         [storage]\ncompact_files = 3\ncompact_after = 0.5\ncompact_grace = 0\n\n",
        data.display()
    );
    for c in 0..CLIENTS {
        toml.push_str(&format!(
            "[[gateway]]\nid = \"gw-{c}\"\ntoken_sha256 = \"{}\"\n\n",
            http_contract::token_hash(&token(c))
        ));
    }
    std::fs::write(&config, toml)?;

    let stop_file = dir.path().join("stop-reader");
    let reader = Peer::spawn(
        "watch_parquet.py",
        &[
            &data.display().to_string(),
            &stop_file.display().to_string(),
        ],
    )?;
    let (addr_tx, addr_rx) = watch::channel(None::<String>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                c,
                addr_rx.clone(),
                stop_rx.clone(),
                acked.clone(),
                sent.clone(),
            ))
        })
        .collect();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut acked_at_kill = Vec::new();
    for _ in 0..CYCLES {
        let (mut child, addr) = start(&config)?;
        addr_tx.send_replace(Some(addr));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(600))).await;
        // SIGKILL: no flush, no goodbye.
        child.0.kill()?;
        child.0.wait()?;
        addr_tx.send_replace(None);
        acked_at_kill.push(lock(&acked).len());
    }
    // A last life: the clients' outstanding batches get answered, then a clean stop.
    let (mut child, addr) = start(&config)?;
    addr_tx.send_replace(Some(addr.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send_replace(true);
    for c in clients {
        c.await??;
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -INT failed");
    let exit = child.0.wait()?;
    anyhow::ensure!(exit.success(), "jieneng serve did not stop cleanly: {exit}");
    std::fs::write(&stop_file, b"")?;
    let read = reader.next_json(Duration::from_secs(60))?;
    let elapsed = started.elapsed();

    let acked = lock(&acked).clone();
    let sent = lock(&sent).clone();
    let (compacted, replayed, torn) = (
        COMPACTED.load(Ordering::Relaxed),
        REPLAYED.load(Ordering::Relaxed),
        TORN.load(Ordering::Relaxed),
    );
    eprintln!(
        "{CYCLES} kills in {elapsed:?}; acknowledged batches at each kill: {acked_at_kill:?}; \
         {} acknowledged, {} sent; server logs: {compacted} compactions, {replayed} WAL \
         replays, {torn} torn tails; reader: {read}",
        acked.len(),
        sent.len()
    );
    // The kills hit the interesting moments: acknowledged rows not yet in Parquet (replayed
    // at the next start), and compactions happened between kills.
    assert!(replayed > 0, "no restart had a WAL to replay");
    assert!(compacted > 0, "no compaction ran");
    // The kills landed while batches were coming in, not all before or after.
    anyhow::ensure!(
        acked_at_kill.windows(2).filter(|w| w[1] > w[0]).count() >= CYCLES / 2,
        "most lives acknowledged something: {acked_at_kill:?}"
    );
    assert_eq!(
        read["errors"],
        json!([]),
        "a reader saw a partial file: {read}"
    );
    assert!(read["reads"].as_u64().unwrap_or(0) > 0, "{read}");
    assert!(metrics.contains("jieneng_wal_size_bytes"), "{metrics}");

    let stored = run_json("count_keys.py", &[&data.display().to_string()])?;
    assert_eq!(
        stored["duplicates"],
        json!([]),
        "one stored row per key: {}",
        stored["duplicates"]
    );
    let keys: BTreeMap<String, BTreeSet<i64>> = serde_json::from_value(stored["keys"].clone())?;
    let mut missing = Vec::new();
    for &(c, seq) in &acked {
        for m in 0..METERS {
            let ts = T0 + seq as i64 * 60_000;
            if !keys
                .get(&format!("c{c}-m{m:02}"))
                .is_some_and(|t| t.contains(&ts))
            {
                missing.push((c, seq, m));
            }
        }
    }
    if !missing.is_empty() {
        let mut per_batch: BTreeMap<(usize, u64), usize> = BTreeMap::new();
        for &(c, seq, _) in &missing {
            *per_batch.entry((c, seq)).or_default() += 1;
        }
        eprintln!("missing (client, seq) -> meters: {per_batch:?}");
        if std::env::var_os("JIENENG_KEEP_CRASH_DIR").is_some() {
            eprintln!("data kept in {}", dir.keep().display());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged readings are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Nothing that was never sent is there (at most once is checked by `duplicates`).
    let expected = sent.len() * METERS;
    let rows = stored["rows"].as_u64().unwrap_or(0) as usize;
    assert!(
        rows >= acked.len() * METERS && rows <= expected,
        "rows {rows}: between {} acknowledged and {expected} sent",
        acked.len() * METERS
    );
    // No compacted-away file, no temp file left after a clean stop.
    for part in std::fs::read_dir(data.join("readings"))? {
        let part = part?.path();
        let (live, superseded) = storage::partition_files(&part)?;
        assert!(superseded.is_empty(), "{superseded:?}");
        assert_eq!(live.len(), 1, "one compacted file per partition: {live:?}");
        for f in std::fs::read_dir(&part)? {
            let name = f?.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "a temp file is left: {name}");
        }
    }
    Ok(())
}
