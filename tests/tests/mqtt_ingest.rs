//! MQTT ingestion through the embedded broker: a gateway forwarder in MQTT mode → broker →
//! ingest's subscriber → WAL → Parquet, exactly once across an ingest restart (with batches
//! spooled while it was down and a resent batch), and the broker's refusals: a wrong password,
//! a batch for another gateway, a payload that is not a batch.
//!
//! One test function per broker: rumqttd cannot be shut down, so each lives until the process
//! ends (the relay in front of it is closed by `stop`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::forward::mqtt::MqttLink;
use gateway::forward::{ForwardStats, Forwarder};
use gateway::spool::Spool;
use ingest::config::MqttSettings;
use ingest::{IngestConfig, Server};
use jieneng_tests::run_json;
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, watch};

const TOKEN: &str = "mqtt-test-gateway-token-01";
const RAW_TOKEN: &str = "mqtt-test-raw-client-token";
const ROWS: usize = 25;

fn batch(gateway: &str, seq: u64) -> anyhow::Result<Batch> {
    let readings = (0..ROWS)
        .map(|i| {
            Ok(Reading {
                ts: 1_764_547_200_000 + (seq as i64 * ROWS as i64 + i as i64) * 900_000,
                account: AccountCode::parse("110108A001")?,
                meter: MeterId::parse(&format!("m{}", i % 5))?,
                category: Category::Electricity,
                item: EnergyCode::parse("01000")?,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 100.0 + (seq as usize * ROWS + i) as f64,
                delta: Some(1.0),
                kgce: None,
                kgco2e: None,
                factor: None,
                quality: Quality::Good,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Batch::new(GatewayId::parse(gateway)?, seq, readings))
}

fn serve_config(
    data_dir: &Path,
    mqtt_listen: std::net::SocketAddr,
) -> anyhow::Result<IngestConfig> {
    Ok(IngestConfig {
        mqtt: MqttSettings {
            enabled: true,
            listen: mqtt_listen,
        },
        flush_interval: 3600.0,
        flush_rows: 1_000_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(data_dir.to_path_buf())
    }
    .with_gateway(GatewayId::parse("gw-mqtt")?, TOKEN)
    .with_gateway(GatewayId::parse("gw-raw")?, RAW_TOKEN))
}

async fn wait_until(
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done()? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A raw MQTT client: its first event (ConnAck, or the error the broker's refusal causes).
async fn raw_client(
    port: u16,
    client_id: &str,
    user: &str,
    password: &str,
) -> (
    AsyncClient,
    rumqttc::EventLoop,
    Result<Event, rumqttc::ConnectionError>,
) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 16);
    let first = tokio::time::timeout(Duration::from_secs(10), events.poll())
        .await
        .unwrap_or(Err(rumqttc::ConnectionError::NetworkTimeout));
    (client, events, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario across a restart: publish, kill, restart, republish, count, read top to bottom"
)]
async fn mqtt_batches_are_stored_exactly_once_across_a_restart() -> anyhow::Result<()> {
    gateway::forward::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Server::start(&serve_config(&data, "127.0.0.1:0".parse()?)?).await?;
    let mqtt_addr = server
        .mqtt_addr
        .ok_or_else(|| anyhow::anyhow!("no broker"))?;

    // The gateway side: a spool and a forwarder in MQTT mode.
    let (spool, _) = Spool::open(
        &dir.path().join("spool"),
        gateway::spool::SpoolLimits::default(),
        |_, _| {},
    )?;
    let spool = Arc::new(spool);
    for seq in 1..=4 {
        spool.append(&batch("gw-mqtt", seq)?)?;
    }
    let stats = Arc::new(ForwardStats::default());
    let gw = GatewayId::parse("gw-mqtt")?;
    let forwarder = Forwarder {
        client: reqwest::Client::new(),
        url: format!("mqtt://{mqtt_addr}"),
        token: TOKEN.to_owned(),
        spool: spool.clone(),
        stats: stats.clone(),
        mqtt: Some(MqttLink::connect(
            &format!("mqtt://{mqtt_addr}"),
            &gw,
            TOKEN,
            None,
        )?),
        timeout: Duration::from_secs(3),
    };
    let notify = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(forwarder.run(notify.clone(), stopped, Duration::from_millis(100)));
    wait_until("the first batches", || Ok(spool.pending()?.is_empty())).await?;
    assert_eq!(
        server.store.metrics.rows.load(Ordering::Relaxed),
        4 * ROWS as u64
    );

    // Ingest stops (flushing to Parquet); meanwhile the gateway spools more, and batch 2 again
    // as if its ack had been lost.
    let first = server.stop().await?;
    assert_eq!(first.rows, 4 * ROWS);
    for seq in [2, 5, 6, 7, 8] {
        spool.append(&batch("gw-mqtt", seq)?)?;
    }
    notify.notify_one();
    wait_until("retries while ingest is down", || {
        Ok(stats.retries.load(Ordering::Relaxed) >= 2)
    })
    .await?;
    assert_eq!(
        spool.pending()?,
        vec![2, 5, 6, 7, 8],
        "nothing deleted without ingest's ack"
    );

    // Ingest comes back on the same MQTT address; the forwarder reconnects and drains.
    let server = Server::start(&serve_config(&data, mqtt_addr)?).await?;
    wait_until("the spool to drain after the restart", || {
        Ok(spool.pending()?.is_empty())
    })
    .await?;
    let _ = stop.send(true);
    task.await?;
    assert_eq!(
        server.store.metrics.duplicates.load(Ordering::Relaxed),
        1,
        "batch 2 recognised"
    );
    assert_eq!(
        server.store.metrics.rows.load(Ordering::Relaxed),
        4 * ROWS as u64
    );
    assert_eq!(stats.sent_batches.load(Ordering::Relaxed), 9);
    assert_eq!(stats.quarantined.load(Ordering::Relaxed), 0);

    // The broker's refusals, with a second gateway's raw client.
    let port = mqtt_addr.port();
    let (_, _, first) = raw_client(port, "gw-raw", "gw-raw", "not-the-token-at-all").await;
    assert!(
        !matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "wrong password accepted: {first:?}"
    );
    let (_, _, first) = raw_client(port, "someone", "gw-raw", RAW_TOKEN).await;
    assert!(
        !matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "client id other than the gateway accepted: {first:?}"
    );
    let (client, mut events, first) = raw_client(port, "gw-raw", "gw-raw", RAW_TOKEN).await;
    assert!(
        matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "{first:?}"
    );
    client
        .subscribe("jieneng/v1/gw-raw/acks", QoS::AtLeastOnce)
        .await?;
    let mut acks = Vec::new();
    let mut subscribed = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.len() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "acks: only {acks:?}");
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await??;
        match event {
            Event::Incoming(Packet::SubAck(_)) if !subscribed => {
                subscribed = true;
                // A batch naming another gateway on gw-raw's topic, then a payload that is
                // not a batch at all.
                let other = serde_json::to_vec(&batch("gw-mqtt", 100)?)?;
                client
                    .publish("jieneng/v1/gw-raw/batches", QoS::AtLeastOnce, false, other)
                    .await?;
                client
                    .publish(
                        "jieneng/v1/gw-raw/batches",
                        QoS::AtLeastOnce,
                        false,
                        "{\"nope\"",
                    )
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) => {
                acks.push(serde_json::from_slice::<serde_json::Value>(&p.payload)?);
            }
            _ => {}
        }
    }
    acks.sort_by_key(|a| a["seq"].as_u64());
    assert_eq!(acks[0]["seq"], serde_json::Value::Null, "{acks:?}");
    assert_eq!(acks[0]["reason"], "malformed", "{acks:?}");
    assert_eq!(acks[1]["seq"], 100, "{acks:?}");
    assert_eq!(acks[1]["reason"], "wrong_gateway", "{acks:?}");
    assert!(
        acks[1]["error"].as_str().unwrap_or("").contains("gw-mqtt"),
        "{acks:?}"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await?
        .text()
        .await?;
    for line in [
        "jieneng_mqtt_batches_total 7\n",
        "jieneng_rejects_total{reason=\"malformed\"} 1\n",
        "jieneng_rejects_total{reason=\"wrong_gateway\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    let second = server.stop().await?;
    assert_eq!(second.rows, 4 * ROWS);

    // DuckDB reads every reading exactly once: 8 batches of 25, 5 meters.
    let stored = run_json("read_rows.py", &[&data.display().to_string()])?;
    let per_meter: Vec<u64> = stored["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["rows"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(per_meter, vec![40; 5], "{stored}");
    Ok(())
}

/// Acks on `gw-raw`'s topic after publishing `payload` there once subscribed.
async fn publish_and_ack(
    client: &AsyncClient,
    events: &mut rumqttc::EventLoop,
    payload: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    client
        .subscribe("jieneng/v1/gw-raw/acks", QoS::AtLeastOnce)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut payload = Some(payload);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "no ack");
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await?? {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(p) = payload.take() {
                    client
                        .publish("jieneng/v1/gw-raw/batches", QoS::AtLeastOnce, false, p)
                        .await?;
                }
            }
            Event::Incoming(Packet::Publish(p)) => return Ok(serde_json::from_slice(&p.payload)?),
            _ => {}
        }
    }
}

/// A reload that moves a gateway to a new token closes the connection made with the old one
/// and refuses the old one at login; only the batch sent with the new token is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_login_and_on_a_connection_made_before() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = serve_config(&data, "127.0.0.1:0".parse()?)?;
    let server = Server::start(&config).await?;
    let port = server
        .mqtt_addr
        .ok_or_else(|| anyhow::anyhow!("no broker"))?
        .port();
    let (client, mut events, first) = raw_client(port, "gw-raw", "gw-raw", RAW_TOKEN).await;
    assert!(
        matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "{first:?}"
    );

    // The reload: gw-raw moves to a new token, the old one is gone.
    const NEW: &str = "mqtt-test-raw-client-token-2";
    let rotated = serve_config(&data, "127.0.0.1:0".parse()?)?;
    let mut gateways: Vec<_> = rotated
        .gateway
        .into_iter()
        .filter(|g| g.id.as_str() != "gw-raw")
        .collect();
    gateways.push(ingest::config::GatewayAuth {
        id: GatewayId::parse("gw-raw")?,
        token_sha256: http_contract::token_hash(NEW),
        expires: None,
    });
    let change = server.reload_gateways(&gateways);
    assert_eq!((change.added, change.removed, change.now), (1, 1, 2));

    // The connection made with the old token is closed by the reload, and cannot log in again.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the old token's connection stayed open");
    drop(client);
    let (_, _, first) = raw_client(port, "gw-raw", "gw-raw", RAW_TOKEN).await;
    assert!(
        !matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "the revoked token logged in: {first:?}"
    );

    let (client, mut events, first) = raw_client(port, "gw-raw", "gw-raw", NEW).await;
    assert!(
        matches!(first, Ok(Event::Incoming(Packet::ConnAck(_)))),
        "{first:?}"
    );
    let ack = publish_and_ack(
        &client,
        &mut events,
        serde_json::to_vec(&batch("gw-raw", 2)?)?,
    )
    .await?;
    assert_eq!(ack["stored"], ROWS, "{ack}");
    let flushed = server.stop().await?;
    assert_eq!(
        flushed.rows, ROWS,
        "only the batch sent with the new token is stored"
    );
    Ok(())
}
