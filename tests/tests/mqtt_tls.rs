//! The gateway's MQTT source over TLS to a real mosquitto: with the broker's CA it connects and a
//! Tasmota plug's energy reaches the spool as deltas; with another CA it refuses the broker and
//! never subscribes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayHandle};
use jieneng_tests::certs;
use jieneng_tests::mqtt::Mosquitto;

const TOKEN: &str = "mqtt-tls-test-token-000001";

fn site(dir: &std::path::Path, spool: &str, port: u16, ca: &std::path::Path) -> String {
    // Ingest is not needed: readings stay in the spool, which is what is checked.
    format!(
        "[gateway]\nid = \"gw-tls\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://127.0.0.1:9/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [[mqtt_source]]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"gateway\"\n\
         password = \"tls-test-secret\"\ntls = {{ ca_file = \"{}\" }}\nkeep_alive = 5\n\n\
         [[mqtt_device]]\nmeter = \"plug-tls\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
         item = \"01A10\"\ntopic = \"tele/plugtls/SENSOR\"\ninterval = 1\n\
         firmware = {{ type = \"tasmota\" }}\n",
        dir.join(spool).display(),
        ca.display()
    )
}

async fn wait_subscribed(gw: &GatewayHandle, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if gw.mqtt[0].stats.subscribed.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_mosquitto_with_the_right_ca_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = certs::make(&dir.path().join("pki"), "broker")?;
    let other = certs::make(&dir.path().join("other"), "someone else")?;
    let broker = Mosquitto::start_tls(dir.path(), "gateway", "tls-test-secret", &pki)?;

    // Another CA: the broker's certificate is refused, so the gateway never subscribes.
    let config = GatewayConfig::parse(
        "tls site",
        &site(dir.path(), "spool-other", broker.port, &other.ca),
        None,
    )?;
    let gw = Gateway::build(config)?.start(Duration::from_millis(200))?;
    assert!(!wait_subscribed(&gw, Duration::from_secs(2)).await);
    assert!(gw.mqtt[0].stats.connection_errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(gw.mqtt[0].stats.connections.load(Ordering::Relaxed), 0);
    gw.stop().await;

    let config = GatewayConfig::parse(
        "tls site",
        &site(dir.path(), "spool", broker.port, &pki.ca),
        None,
    )?;
    let gw = Gateway::build(config)?.start(Duration::from_millis(200))?;
    anyhow::ensure!(
        wait_subscribed(&gw, Duration::from_secs(20)).await,
        "no TLS session with the broker's own CA"
    );
    for k in 0..4u32 {
        let payload = format!(
            r#"{{"Time":"2026-11-27T09:00:0{k}","ENERGY":{{"Total":{},"Power":10}}}}"#,
            7.0 + 0.5 * f64::from(k)
        );
        broker.publish("tele/plugtls/SENSOR", payload.as_bytes())?;
    }
    let stats = gw.mqtt[0].devices[0].1.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.values.load(Ordering::Relaxed) < 8 {
        anyhow::ensure!(Instant::now() < deadline, "values did not arrive over TLS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spooled = gw.normalizer.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.stop().await;
    // 4 energy readings (3 with deltas) and 4 power readings, nowhere to forward them.
    assert_eq!(spooled.readings_spooled.load(Ordering::Relaxed), 8);
    Ok(())
}
