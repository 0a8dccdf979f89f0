//! The whole path with real peers: pymodbus servers as meters → gateway (Modbus TCP, counters,
//! spool, HTTP) → ingest (auth, WAL, Parquet) → DuckDB and pyarrow reading the files as they are.
//! The energy the stored deltas add up to must equal what the meters counted, exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig};

use ingest::{IngestConfig, Server};
use jieneng_tests::{Peer, run_json};
use reading_model::GatewayId;
use serde_json::json;
use test_support::{ModbusMeter, SiteConfig};

const TOKEN: &str = "whole-path-test-token-0001";

/// (name, profile, account, item, start kWh, step kWh, steps)
const METERS: &[(&str, &str, &str, &str, f64, f64, u32)] = &[
    (
        "lighting",
        "eastron/sdm630",
        "110108A001",
        "01A10",
        1000.0,
        0.125,
        8,
    ),
    (
        "main",
        "chint/dtsu666",
        "110108A001",
        "01000",
        20_000.0,
        0.25,
        8,
    ),
    (
        "school-main",
        "eastron/sdm630",
        "110108D002",
        "01000",
        512.5,
        0.375,
        6,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_to_parquet_energy_is_exact() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spec: Vec<_> = METERS
        .iter()
        .map(|(name, profile, _, _, start, step, steps)| {
            json!({"name": name, "profile": profile, "start": start, "step": step, "steps": steps, "interval": 0.3})
        })
        .collect();
    let meters = Peer::spawn("meter_server.py", &[&serde_json::to_string(&spec)?])?;
    let ports = meters.next_json(Duration::from_secs(30))?["ports"].clone();

    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-test")?, TOKEN);
    let server = Server::start(&serve).await?;

    let mut site = SiteConfig::new("gw-test", &dir.path().join("spool"), server.addr, TOKEN)
        .gateway("poll_interval", 0.5)
        .gateway("request_timeout", 2);
    for (name, profile, account, item, ..) in METERS {
        let port = ports[name]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow::anyhow!("no port for {name}"))?;
        site = site.modbus_tcp_meter(&ModbusMeter {
            account,
            item,
            ..ModbusMeter::new(name, profile, port)
        });
    }
    let site = site.toml();
    let gateway = Gateway::build(GatewayConfig::parse("test site", &site, None)?)?
        .start(Duration::from_secs(10))?;

    // Each meter reports when it has finished counting; then two more polls see the final values.
    let mut advanced = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while advanced.len() < METERS.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = meters.next_json(left)?;
        advanced.insert(
            msg["done"].as_str().unwrap_or_default().to_owned(),
            msg["advanced"].as_f64().unwrap_or(f64::NAN),
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.stop().await;
    server.stop().await?;
    drop(meters);

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    assert_eq!(
        out["duplicates"], 0,
        "one row per (account, meter, quantity, ts): {out}"
    );
    assert_eq!(out["compression"], "ZSTD", "{out}");
    assert_eq!(out["schema"]["ts"], "timestamp[ms, tz=UTC]", "{out}");
    let energy = out["energy"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    assert_eq!(energy.len(), METERS.len(), "{out}");
    for (name, _, account, item, _, step, steps) in METERS {
        let row = energy
            .iter()
            .find(|r| r["meter"] == *name)
            .ok_or_else(|| anyhow::anyhow!("no rows for meter {name}: {out}"))?;
        let expected = step * f64::from(*steps);
        assert_eq!(advanced[*name], expected, "the meter's own count");
        assert_eq!(row["account"], *account);
        assert_eq!(row["item"], *item);
        // Exactly, not approximately: every delta and every partial sum is a dyadic fraction.
        assert_eq!(row["sum"].as_f64(), Some(expected), "meter {name}: {row}");
        assert!(
            row["deltas"].as_u64().unwrap_or(0) >= 2,
            "several polls per meter: {row}"
        );
    }
    Ok(())
}
