//! The gateway's embedded broker (rumqttd) as the building's only broker: a Tasmota plug
//! publishes to it with `mosquitto_pub`, the gateway's own MQTT source subscribes to it, and the
//! energy reaches Parquet. Authentication is on: a wrong password is refused.
//!
//! rumqttd cannot be shut down, so this file holds exactly one test (one broker per process).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig};

use ingest::{IngestConfig, Server};
use jieneng_tests::mqtt::{free_port, publish, wait_for_port};
use jieneng_tests::run_json;
use reading_model::GatewayId;

const TOKEN: &str = "mqtt-embedded-test-token-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugs_publish_to_the_embedded_broker_and_reach_parquet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-embedded")?, TOKEN);
    let server = Server::start(&serve).await?;
    let port = free_port()?;
    let site = format!(
        "[gateway]\nid = \"gw-embedded\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [mqtt_broker]\nlisten = \"127.0.0.1:{port}\"\n\
         users = {{ gateway = \"gateway-secret\", plugs = \"plugs-secret\" }}\n\n\
         [[mqtt_source]]\nhost = \"127.0.0.1\"\nport = {port}\n\
         username = \"gateway\"\npassword = \"gateway-secret\"\n\n\
         [[mqtt_device]]\nmeter = \"plug-7\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
         item = \"01A10\"\ntopic = \"tele/plug7/SENSOR\"\ninterval = 1\n\
         firmware = {{ type = \"tasmota\" }}\n",
        dir.path().join("spool").display(),
        server.addr
    );
    let config = GatewayConfig::parse("embedded broker site", &site, None)?;
    let broker = config
        .mqtt
        .broker
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [mqtt_broker] parsed"))?;
    gateway::broker::start(&broker)?;
    wait_for_port(port, Duration::from_secs(10))?;

    assert!(
        publish(
            port,
            "plugs",
            "not-the-password",
            "tele/plug7/SENSOR",
            b"{}"
        )
        .is_err(),
        "the embedded broker must refuse a wrong password"
    );

    let gw = Gateway::build(config)?.start(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.mqtt[0].stats.subscribed.load(Ordering::Relaxed) {
        anyhow::ensure!(Instant::now() < deadline, "the gateway did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let steps = 8u32;
    for k in 0..steps {
        // Device local time, UTC+8; one message per second of device time.
        let local = format!("2026-11-27T08:00:{:02}", k);
        let total = 42.0 + 0.25 * f64::from(k);
        let payload = format!(
            r#"{{"Time":"{local}","ENERGY":{{"Total":{total},"Power":250,"Voltage":230}}}}"#
        );
        publish(
            port,
            "plugs",
            "plugs-secret",
            "tele/plug7/SENSOR",
            payload.as_bytes(),
        )?;
        if k == 3 {
            publish(
                port,
                "plugs",
                "plugs-secret",
                "tele/plug7/SENSOR",
                b"{\"ENERGY\":",
            )?;
        }
    }
    let stats = gw.mqtt[0].devices[0].1.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.messages.load(Ordering::Relaxed) < u64::from(steps) + 1 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway saw {} messages",
            stats.messages.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = gw.mqtt[0].dead_letters.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.stop().await;
    server.stop().await?;

    assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 1);
    let letters = std::fs::read_to_string(dead.path())?;
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains("7b22454e45524759223a"), "{letters}");

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    let energy = out["energy"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    let [row] = &energy[..] else {
        anyhow::bail!("one meter expected: {out}");
    };
    assert_eq!(row["account"], "110108A001");
    assert_eq!(row["meter"], "plug-7");
    assert_eq!(row["item"], "01A10");
    assert_eq!(row["rows"], u64::from(steps));
    assert_eq!(
        row["sum"].as_f64(),
        Some(0.25 * f64::from(steps - 1)),
        "{row}"
    );
    Ok(())
}
