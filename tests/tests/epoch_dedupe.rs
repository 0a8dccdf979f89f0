//! Ingest's dedupe by (gateway, epoch, seq), over HTTP and MQTT and across a restart of the
//! server: a retry of a stored batch is a duplicate, a batch that goes back within its epoch
//! and is not a retry is refused with 409 `seq_regressed` (an MQTT ack with that reason), a new
//! epoch starts over, and batches without an epoch keep the per-gateway high-water rule.

use std::path::Path;
use std::time::{Duration, Instant};

use ingest::config::MqttSettings;
use ingest::{IngestConfig, Server};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const TOKEN: &str = "epoch-dedupe-gateway-token-1";
const RAW_TOKEN: &str = "epoch-dedupe-mqtt-token-0001";
const ROWS: usize = 5;

/// Batch `seq` of `epoch` whose readings start at minute `from` (so two batches of one seq
/// can differ).
fn batch(gateway: &str, epoch: Option<u64>, seq: u64, from: i64) -> anyhow::Result<Batch> {
    let readings = (0..ROWS)
        .map(|i| {
            Ok(Reading {
                ts: 1_764_547_200_000 + (from + i as i64) * 60_000,
                account: AccountCode::parse("110108A001")?,
                meter: MeterId::parse("m1")?,
                category: Category::Electricity,
                item: EnergyCode::parse("01000")?,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 100.0 + (from + i as i64) as f64,
                delta: Some(1.0),
                kgce: None,
                kgco2e: None,
                factor: None,
                quality: Quality::Good,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Batch::new(GatewayId::parse(gateway)?, seq, readings).with_epoch(epoch))
}

fn config(data: &Path) -> anyhow::Result<IngestConfig> {
    Ok(IngestConfig {
        mqtt: MqttSettings {
            enabled: true,
            listen: "127.0.0.1:0".parse()?,
        },
        flush_interval: 3600.0,
        flush_rows: 1_000_000,
        ..IngestConfig::loopback(data.to_path_buf())
    }
    .with_gateway(GatewayId::parse("gw-http")?, TOKEN)
    .with_gateway(GatewayId::parse("gw-raw")?, RAW_TOKEN))
}

/// POSTs a batch as JSON (`arrow` false) or an Arrow stream; the status and the JSON answer.
async fn post(addr: std::net::SocketAddr, b: &Batch, arrow: bool) -> anyhow::Result<(u16, Value)> {
    let req = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/batches"))
        .bearer_auth(TOKEN);
    let req = if arrow {
        req.header("content-type", ingest::decode::ARROW_STREAM)
            .body(ingest::decode::ipc::encode(b, true)?)
    } else {
        req.json(b)
    };
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await?))
}

async fn metric(addr: std::net::SocketAddr, line_start: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_by_epoch_over_http_and_mqtt_and_across_a_restart() -> anyhow::Result<()> {
    gateway::forward::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Server::start(&config(&data)?).await?;
    let addr = server.addr;
    let e = Some(77);

    // Stored, then its retry (the other encoding: the digest is of the decoded batch).
    let (status, body) = post(addr, &batch("gw-http", e, 5, 0)?, false).await?;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &Value::Bool(false)),
        "{body}"
    );
    let (status, body) = post(addr, &batch("gw-http", e, 5, 0)?, true).await?;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    // Backwards in the epoch with other readings, or the same seq with other readings: 409.
    for (seq, arrow) in [(3, false), (5, true)] {
        let (status, body) = post(addr, &batch("gw-http", e, seq, 100)?, arrow).await?;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["reason"], "seq_regressed", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("seq {seq} of epoch 77")) && error.contains("new epoch"),
            "{error}"
        );
    }
    // A new epoch starts over at 0.
    let (status, body) = post(addr, &batch("gw-http", Some(78), 0, 200)?, false).await?;
    assert_eq!(
        (status, &body["stored"]),
        (200, &Value::from(ROWS)),
        "{body}"
    );
    // Without an epoch, today's rule: at or below the gateway's mark is a duplicate.
    let (status, body) = post(addr, &batch("gw-http", None, 5, 300)?, true).await?;
    assert_eq!(
        (status, &body["stored"]),
        (200, &Value::from(ROWS)),
        "{body}"
    );
    let (status, body) = post(addr, &batch("gw-http", None, 3, 400)?, false).await?;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &Value::Bool(true)),
        "{body}"
    );

    let acks = mqtt_answers(server.mqtt_addr.map(|a| a.port())).await?;
    assert_eq!(
        (&acks[0]["seq"], &acks[0]["epoch"], &acks[0]["duplicate"]),
        (&Value::from(9), &Value::from(5), &Value::Bool(false)),
        "{acks:?}"
    );
    assert_eq!(
        (&acks[1]["seq"], &acks[1]["epoch"], &acks[1]["reason"]),
        (
            &Value::from(2),
            &Value::from(5),
            &Value::from("seq_regressed")
        ),
        "{acks:?}"
    );
    let reason = "jieneng_rejects_total{reason=\"seq_regressed\"} ";
    assert_eq!(metric(addr, reason).await?, 3);
    assert_eq!(metric(addr, "jieneng_batches_regressed_total ").await?, 3);
    server.stop().await?;

    // After a restart the marks and digests are still known (state file and WAL).
    let server = Server::start(&config(&data)?).await?;
    let (status, body) = post(server.addr, &batch("gw-http", e, 5, 0)?, false).await?;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    let (status, body) = post(server.addr, &batch("gw-http", e, 4, 500)?, false).await?;
    assert_eq!(
        (status, &body["reason"]),
        (409, &Value::from("seq_regressed")),
        "{body}"
    );
    let (status, _) = post(server.addr, &batch("gw-http", e, 6, 600)?, false).await?;
    assert_eq!(status, 200);
    server.stop().await?;

    // Stored: gw-http's 5@77, 0@78, 5 (no epoch), 6@77 and gw-raw's 9@5, nothing else.
    let stored = jieneng_tests::run_json("read_rows.py", &[&data.display().to_string()])?;
    let rows: u64 = stored["rows"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["rows"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(rows, 5 * ROWS as u64, "{stored}");
    Ok(())
}

/// Publishes gw-raw's batch 9 of epoch 5, then a batch 2 of epoch 5 with other readings, and
/// returns ingest's two answers in that order.
async fn mqtt_answers(port: Option<u16>) -> anyhow::Result<Vec<Value>> {
    let port = port.ok_or_else(|| anyhow::anyhow!("no MQTT listener"))?;
    let mut o = MqttOptions::new("gw-raw", "127.0.0.1", port);
    o.set_credentials("gw-raw", RAW_TOKEN)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 16);
    let topic = "jieneng/v1/gw-raw/batches";
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.len() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "acks: only {acks:?}");
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await?? {
            Event::Incoming(Packet::ConnAck(_)) => {
                client
                    .subscribe("jieneng/v1/gw-raw/acks", QoS::AtLeastOnce)
                    .await?;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                let stored = serde_json::to_vec(&batch("gw-raw", Some(5), 9, 700)?)?;
                client
                    .publish(topic, QoS::AtLeastOnce, false, stored)
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) => {
                acks.push(serde_json::from_slice::<Value>(&p.payload)?);
                if acks.len() == 1 {
                    // One at a time, so the order of the answers is the order sent.
                    let back =
                        ingest::decode::ipc::encode(&batch("gw-raw", Some(5), 2, 50)?, true)?;
                    client.publish(topic, QoS::AtLeastOnce, false, back).await?;
                }
            }
            _ => {}
        }
    }
    Ok(acks)
}

/// The gateway's forwarder over MQTT: its spool's epoch is one ingest has already seen with a
/// higher seq (as after restoring a spool from a backup). The first answer is `seq_regressed`;
/// the forwarder starts a new epoch, keeps the batches, and every one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_forwarder_starts_a_new_epoch_on_seq_regressed() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use gateway::forward::mqtt::MqttLink;
    use gateway::forward::{ForwardStats, Forwarder};
    use gateway::spool::{Spool, SpoolLimits};
    use tokio::sync::{Notify, watch};

    gateway::forward::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let server = Server::start(&config(&dir.path().join("data"))?).await?;
    let mqtt_addr = server
        .mqtt_addr
        .ok_or_else(|| anyhow::anyhow!("no MQTT listener"))?;
    let (spool, _) = Spool::open(&dir.path().join("spool"), SpoolLimits::default(), |_, _| {})?;
    let spool = Arc::new(spool);
    let old = spool.epoch();
    // What the spool's earlier life stored: seq 10 of this epoch.
    let (status, body) = post(server.addr, &batch("gw-http", Some(old), 10, 0)?, false).await?;
    assert_eq!(status, 200, "{body}");
    for seq in 1..=3 {
        spool.append(&batch("gw-http", Some(old), seq, 100 * seq as i64)?)?;
    }
    let stats = Arc::new(ForwardStats::default());
    let url = format!("mqtt://{mqtt_addr}");
    let forwarder = Forwarder {
        client: reqwest::Client::new(),
        url: url.clone(),
        token: TOKEN.to_owned(),
        spool: spool.clone(),
        stats: stats.clone(),
        mqtt: Some(MqttLink::connect(
            &url,
            &GatewayId::parse("gw-http")?,
            TOKEN,
            None,
        )?),
        timeout: Duration::from_secs(3),
    };
    let (stop, stopped) = watch::channel(false);
    let task =
        tokio::spawn(forwarder.run(Arc::new(Notify::new()), stopped, Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool.pending()?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not sent: {:?}",
            spool.pending()?
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    task.await?;
    assert_eq!(stats.new_epochs.load(Ordering::Relaxed), 1);
    assert_eq!(stats.sent_batches.load(Ordering::Relaxed), 3);
    assert_eq!(stats.quarantined.load(Ordering::Relaxed), 0);
    assert_ne!(spool.epoch(), old);
    assert_eq!(server.store.metrics.regressed.load(Ordering::Relaxed), 1);
    // Seq 10 and the three batches, each stored once.
    assert_eq!(
        server.store.metrics.rows.load(Ordering::Relaxed),
        4 * ROWS as u64
    );
    server.stop().await?;
    Ok(())
}
