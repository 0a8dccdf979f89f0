//! Load generator for durable ingest over HTTP with Arrow batches: starts an in-process server
//! on a temporary data directory, and several clients POST wire-v1 Arrow IPC streams over
//! loopback (each its own gateway, seq counting up) for a while. Prints sustained readings/s
//! (every one acknowledged, so fsynced in the WAL) and ack latency p50/p99.
//!
//! ```sh
//! cargo run --release -p ingest --example ingest_load -- \
//!     --seconds 20 --clients 4 --rows 10000 [--zstd] [--rate 100000] [--dir /var/tmp]
//! ```
//!
//! Batches are encoded before the clock starts (a pool per client; each POST patches a fresh
//! seq in), so the figure is the server's — though clients still share the machine's cores. `--rate` paces the clients to that many readings/s in total,
//! for latency at a given load; without it they send as fast as acks come back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use ingest::decode::{ARROW_STREAM, ipc};
use ingest::{IngestConfig, Server};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

#[derive(Debug)]
struct Args {
    seconds: f64,
    clients: usize,
    rows: usize,
    zstd: bool,
    rate: Option<f64>,
    dir: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10.0,
        clients: 4,
        rows: 10_000,
        zstd: false,
        rate: None,
        dir: PathBuf::from("/var/tmp"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--clients" => a.clients = value()?.parse()?,
            "--rows" => a.rows = value()?.parse()?,
            "--rate" => a.rate = Some(value()?.parse()?),
            "--dir" => a.dir = value()?.into(),
            "--zstd" => a.zstd = true,
            other => anyhow::bail!(
                "unknown argument {other}; see the example's doc comment for its options"
            ),
        }
    }
    anyhow::ensure!(
        a.clients > 0 && a.rows > 0 && a.seconds > 0.0,
        "positive values only"
    );
    Ok(a)
}

/// Batch `seq` of client `c`: `rows` readings of 100 meters in 2 accounts, 15-minute steps.
fn batch(c: usize, seq: u64, rows: usize) -> anyhow::Result<Batch> {
    let accounts = [
        AccountCode::parse("110108A001")?,
        AccountCode::parse("110108D002")?,
    ];
    let meters: Vec<MeterId> = (0..100)
        .map(|m| MeterId::parse(&format!("c{c}-m{m}")))
        .collect::<Result<_, _>>()?;
    let item = EnergyCode::parse("01A10")?;
    let readings = (0..rows)
        .map(|i| {
            let step = seq as i64 * rows as i64 / 100 + (i / 100) as i64;
            Reading {
                ts: 1_764_547_200_000 + step * 900_000,
                account: accounts[i % 2].clone(),
                meter: meters[i % 100].clone(),
                category: Category::Electricity,
                item,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 1000.0 + step as f64 * 0.25,
                delta: Some(0.25),
                kgce: Some(0.25 * 0.1229),
                kgco2e: Some(0.25 * 0.5366),
                factor: Some("mee-nbs-2023/grid/华北".to_owned()),
                quality: Quality::Good,
            }
        })
        .collect();
    Ok(Batch::new(
        GatewayId::parse(&format!("load-{c}"))?,
        seq,
        readings,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir_in(&a.dir)?;
    let token = |c: usize| format!("load-generator-token-{c:04}");
    let mut config = IngestConfig {
        flush_interval: 10.0,
        flush_rows: 500_000,
        max_body_bytes: 64 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    };
    for c in 0..a.clients {
        config = config.with_gateway(GatewayId::parse(&format!("load-{c}"))?, &token(c));
    }
    let server = Server::start(&config).await?;
    let url = format!("http://{}/api/v1/batches", server.addr);

    // A pool of batches per client, encoded before the clock starts with a fixed-width seq
    // placeholder that each send overwrites: every POST is a new (gateway, seq), and the
    // pool's rows repeat every POOL batches (storage keeps one row per key; the WAL all).
    const POOL: u64 = 16;
    const PLACEHOLDER: &[u8] = b"00000000000000000000";
    eprintln!(
        "encoding {POOL} batches of {} readings per client ({})…",
        a.rows,
        if a.zstd {
            "ZSTD buffers"
        } else {
            "uncompressed"
        }
    );
    let mut bodies = Vec::new();
    let mut bytes = 0usize;
    for c in 0..a.clients {
        let mut mine = Vec::new();
        for k in 0..POOL {
            // A 20-digit seq, so that any seq fits in its place.
            let b = batch(c, k, a.rows)?;
            let body = ipc::encode(
                &Batch {
                    seq: 10_000_000_000_000_000_000,
                    ..b
                },
                a.zstd,
            )?;
            let at = body
                .windows(PLACEHOLDER.len())
                .position(|w| w == b"10000000000000000000")
                .context("seq not found in the encoded stream")?;
            bytes += body.len();
            mine.push((body, at));
        }
        bodies.push(mine);
    }
    eprintln!(
        "{:.1} bytes per reading on the wire; running {} s with {} clients",
        bytes as f64 / (POOL as f64 * (a.clients * a.rows) as f64),
        a.seconds,
        a.clients
    );

    // reqwest is built without its own TLS provider (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64((a.rows * a.clients) as f64 / r));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mine) in bodies.into_iter().enumerate() {
        let (client, url, token) = (client.clone(), url.clone(), token(c));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ticks = interval.map(tokio::time::interval);
            for seq in 1u64.. {
                let (template, at) = &mine[(seq % POOL) as usize];
                let mut body = template.clone();
                body[*at..*at + PLACEHOLDER.len()].copy_from_slice(format!("{seq:020}").as_bytes());
                if let Some(t) = ticks.as_mut() {
                    t.tick().await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header(reqwest::header::CONTENT_TYPE, ARROW_STREAM)
                    .body(body)
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                anyhow::ensure!(status.is_success(), "{status}: {text}");
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let report = server.stop().await?;
    latencies.sort();
    let readings = latencies.len() * a.rows;
    println!(
        "{readings} readings in {} batches acknowledged in {:.2} s: {:.0} readings/s; ack latency p50 {:.1} ms, p99 {:.1} ms; final flush {} rows in {} files",
        latencies.len(),
        elapsed.as_secs_f64(),
        readings as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        report.rows,
        report.files,
    );
    Ok(())
}
