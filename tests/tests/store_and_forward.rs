//! Store-and-forward under faults: ingest is down while the meters advance, and the gateway is
//! restarted midway. When ingest comes up, every reading arrives, exactly once, and the energy
//! adds up exactly to what the meters counted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig};

use ingest::{IngestConfig, Server};
use jieneng_tests::{Peer, run_json};
use reading_model::GatewayId;
use serde_json::json;
use test_support::{ModbusMeter, SiteConfig};

const TOKEN: &str = "store-and-forward-token-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_down_and_gateway_restarted_nothing_lost_nothing_doubled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = json!([
        {"name": "main", "profile": "chint/dtsu666", "start": 3000.0, "step": 0.5, "steps": 24, "interval": 0.25},
        {"name": "lighting", "profile": "eastron/sdm630", "start": 100.0, "step": 0.125, "steps": 24, "interval": 0.25},
    ]);
    let meters = Peer::spawn("meter_server.py", &[&spec.to_string()])?;
    let ports = meters.next_json(Duration::from_secs(30))?["ports"].clone();

    // Ingest's address is reserved now but nothing listens there until later.
    let ingest_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let port = |name: &str| {
        ports[name]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow::anyhow!("no port for {name}"))
    };
    let site = SiteConfig::new("gw-saf", &dir.path().join("spool"), ingest_addr, TOKEN)
        .gateway("poll_interval", 0.5)
        .gateway("request_timeout", 2)
        .forward("timeout", 2)
        .modbus_tcp_meter(&ModbusMeter::new("main", "chint/dtsu666", port("main")?))
        .modbus_tcp_meter(&ModbusMeter {
            item: "01A10",
            ..ModbusMeter::new("lighting", "eastron/sdm630", port("lighting")?)
        })
        .toml();
    let config = || GatewayConfig::parse("saf site", &site, None);

    // First life of the gateway: polls and spools while ingest is unreachable.
    let first = Gateway::build(config()?)?.start(Duration::from_millis(500))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first_spool = first.spool.clone();
    first.stop().await;
    assert!(
        first_spool.pending_count() > 0,
        "batches wait in the spool while ingest is down"
    );
    drop(first_spool);

    // Second life: resumes its counters and sequence from the spool, meters still advancing.
    let second = Gateway::build(config()?)?.start(Duration::from_secs(10))?;
    let mut done = 0;
    while done < 2 {
        let msg = meters.next_json(Duration::from_secs(60))?;
        if msg.get("done").is_some() {
            done += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Ingest comes up; the gateway's retries find it and drain the spool.
    let serve = IngestConfig {
        listen: ingest_addr,
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-saf")?, TOKEN);
    let server = Server::start(&serve).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !second.spool.pending()?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "spool not drained: {:?}",
            second.spool.pending()?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.stop().await;
    server.stop().await?;
    drop(meters);

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    assert_eq!(out["duplicates"], 0, "{out}");
    for (meter, expected) in [("main", 0.5 * 24.0), ("lighting", 0.125 * 24.0)] {
        let row = out["energy"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["meter"] == meter))
            .ok_or_else(|| anyhow::anyhow!("no rows for {meter}: {out}"))?;
        assert_eq!(row["sum"].as_f64(), Some(expected), "meter {meter}: {row}");
    }
    Ok(())
}

/// A spool already at its limit while ingest is down: the gateway holds its counters back
/// instead of spooling, and once ingest drains the spool the first deltas span the wait, so
/// the energy still adds up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_holds_counters_back_and_loses_no_energy() -> anyhow::Result<()> {
    use reading_model::{
        AccountCode, Batch, Category, EnergyCode, MeterId, Quality, Quantity, Reading, Unit,
    };

    let dir = tempfile::tempdir()?;
    let spec = json!([
        {"name": "main", "profile": "eastron/sdm630", "start": 640.0, "step": 0.25, "steps": 16, "interval": 0.25},
    ]);
    let meters = Peer::spawn("meter_server.py", &[&spec.to_string()])?;
    let ports = meters.next_json(Duration::from_secs(30))?["ports"].clone();

    let spool_dir = dir.path().join("spool");
    let ingest_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let site = format!(
        "[gateway]\nid = \"gw-full\"\nspool_dir = \"{}\"\npoll_interval = 0.5\nspool_max_bytes = 1048576\n\n\
         [forward]\nurl = \"http://{ingest_addr}/api/v1/batches\"\ntoken = \"{TOKEN}\"\ntimeout = 10\n\n\
         [[device]]\nmeter = \"main\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
         profile = \"eastron/sdm630\"\nregisters = [\"energy_import\", \"power_total\"]\n\
         source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {} }}\n",
        spool_dir.display(),
        ports["main"],
    );
    let config = || GatewayConfig::parse("full site", &site, None);

    // First life: the meter's baseline reaches the spool (ingest is down).
    let first = Gateway::build(config()?)?.start(Duration::from_millis(300))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.spool.pending()?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "nothing spooled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop().await;

    // Then the spool fills past its 1 MiB limit, as if ingest had been unreachable for long:
    // batches of another meter's readings, numbered as the gateway's next batches. (Values
    // vary so the Arrow streams the spool stores do not compress to nothing.)
    let (spool, mut state) = gateway::spool::Spool::open(
        &spool_dir,
        gateway::spool::SpoolLimits::for_max(1 << 20),
        gateway::normalize::replay,
    )?;
    let t0 = 1_767_225_600_000i64;
    let mut i = 0i64;
    while spool.bytes() < 1 << 20 {
        let filler: Vec<Reading> = (0..8000)
            .map(|_| {
                i += 1;
                Reading {
                    ts: t0 + i * 60_000,
                    account: AccountCode::parse("110102E003").unwrap(),
                    meter: MeterId::parse("filler").unwrap(),
                    category: Category::Electricity,
                    item: EnergyCode::parse("01000").unwrap(),
                    quantity: Quantity::PowerActive,
                    unit: Unit::Kilowatt,
                    value: (i as f64 * 0.618_034).fract() * 1000.0,
                    delta: None,
                    kgce: None,
                    kgco2e: None,
                    factor: None,
                    quality: Quality::Good,
                }
            })
            .collect();
        spool.append(&Batch::new(
            GatewayId::parse("gw-full")?,
            state.next_seq,
            filler,
        ))?;
        state.next_seq += 1;
        anyhow::ensure!(
            i < 2_000_000,
            "the spool does not fill: {} bytes",
            spool.bytes()
        );
    }
    spool.save_state(&state)?;
    drop(spool);

    // Second life: the spool is full, so counters are held back while the meter counts on.
    let gw = Gateway::build(config()?)?.start(Duration::from_secs(10))?;
    let msg = meters.next_json(Duration::from_secs(60))?;
    assert!(msg.get("done").is_some(), "{msg}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let held = gw.normalizer.readings_held_back.load(Ordering::Relaxed);
    assert!(held > 0, "the full spool held counters back");
    let stats = gw.spool.stats();
    assert!(
        stats.full && stats.times_full == 1,
        "the full gauge is up: {stats:?}"
    );

    let serve = IngestConfig {
        listen: ingest_addr,
        flush_rows: 100_000,
        max_body_bytes: 4 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-full")?, TOKEN);
    let server = Server::start(&serve).await?;
    // The spool drains; then the first batch spooled after it has room carries a delta that
    // spans the whole wait. Two such batches, in case one poll lost a register on a busy machine.
    let spooled_before = gw.normalizer.batches_spooled.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    while gw.normalizer.batches_spooled.load(Ordering::Relaxed) < spooled_before + 2
        || !gw.spool.pending()?.is_empty()
    {
        anyhow::ensure!(Instant::now() < deadline, "spool not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
    server.stop().await?;
    drop(meters);

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    assert_eq!(out["duplicates"], 0, "{out}");
    let row = out["energy"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["meter"] == "main"))
        .ok_or_else(|| anyhow::anyhow!("no rows for main: {out}"))?;
    assert_eq!(row["sum"].as_f64(), Some(0.25 * 16.0), "{row}");
    Ok(())
}
