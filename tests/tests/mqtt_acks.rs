//! MQTT messages are acknowledged to the broker only once their readings are in the spool.
//!
//! A real mosquitto broker and `mosquitto_pub` (QoS 1). In the gateway's first life the spool
//! cannot be written (the path of its first segment is taken by a directory), so the readings of
//! three messages never reach the disk; the gateway then dies without a word to the broker (its
//! runtime is dropped, as in a crash). In the second life the spool works: the broker must
//! deliver the three messages again from the gateway's persistent session, and their energy
//! must be spooled. A gateway that acknowledged on arrival would have lost them. In a third
//! life nothing comes back: what was spooled was acknowledged.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayHandle};
use jieneng_tests::mqtt::{Mosquitto, free_port, publish};
use reading_model::Quantity;

const TOPIC: &str = "tele/plug1/SENSOR";

fn tasmota(k: u32, kwh: f64) -> Vec<u8> {
    format!(
        r#"{{"Time":"2026-11-27T08:00:{k:02}","ENERGY":{{"Total":{kwh},"Power":56,"Voltage":234,"Current":0.392}}}}"#
    )
    .into_bytes()
}

fn site(spool: &std::path::Path, broker: &Mosquitto, ingest_port: u16) -> String {
    // Nothing listens at the forward URL: batches stay in the spool for the test to read.
    format!(
        "[gateway]\nid = \"gw-acks\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://127.0.0.1:{ingest_port}/api/v1/batches\"\ntoken = \"mqtt-acks-test-token-0001\"\n\n\
         [[mqtt_source]]\nname = \"building\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"jieneng-acks-gw\"\nusername = \"{}\"\npassword = \"{}\"\n\n\
         [[mqtt_device]]\nmeter = \"plug-1\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01A10\"\n\
         topic = \"{TOPIC}\"\ninterval = 1\nfirmware = {{ type = \"tasmota\", utc_offset = \"+08:00\" }}\n",
        spool.display(),
        broker.port,
        broker.user,
        broker.password,
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn start(rt: &tokio::runtime::Runtime, gw: Gateway) -> anyhow::Result<GatewayHandle> {
    let handle = rt.block_on(async { gw.start(Duration::from_millis(200)) })?;
    wait("the subscription", || {
        handle.mqtt[0].stats.subscribed.load(Ordering::Relaxed)
    })?;
    Ok(handle)
}

fn messages(gw: &GatewayHandle) -> u64 {
    gw.mqtt[0].devices[0].1.messages.load(Ordering::Relaxed)
}

/// (value, delta) of the spooled energy readings, oldest first.
fn spooled_energy(gw: &GatewayHandle) -> anyhow::Result<Vec<(f64, Option<f64>)>> {
    let mut out = vec![];
    for seq in gw.spool.pending()? {
        for r in gw.spool.read(seq)?.readings {
            if r.quantity == Quantity::EnergyImport {
                out.push((r.value, r.delta));
            }
        }
    }
    Ok(out)
}

#[test]
fn messages_whose_readings_were_not_spooled_are_delivered_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "gateway", "mqtt-acks-secret")?;
    let spool = dir.path().join("spool");
    let site = site(&spool, &broker, free_port()?);
    let config = || GatewayConfig::parse("mqtt acks site", &site, None);
    let send = |k: u32, kwh: f64| {
        publish(
            broker.port,
            &broker.user,
            &broker.password,
            TOPIC,
            &tasmota(k, kwh),
        )
    };

    // First life: the spool cannot create its first segment.
    let rt = runtime()?;
    let gw = rt.block_on(async { Gateway::build(config()?).map_err(anyhow::Error::from) })?;
    let blocker = spool.join(format!("{:020}.seg", 0));
    std::fs::create_dir(&blocker)?;
    let gw = start(&rt, gw)?;
    for (k, kwh) in [(0, 10.0), (1, 10.5), (2, 11.0)] {
        send(k, kwh)?;
    }
    wait("the messages", || messages(&gw) >= 3)?;
    wait("a failed spool attempt", || {
        gw.normalizer.spool_errors.load(Ordering::Relaxed) > 0
    })?;
    assert_eq!(gw.normalizer.batches_spooled.load(Ordering::Relaxed), 0);
    // The crash: no DISCONNECT, no PUBACK; the broker keeps the messages in the session.
    drop(gw);
    rt.shutdown_background();
    std::fs::remove_dir(&blocker)?;

    // Second life: the broker delivers the three messages again and they are spooled.
    let rt = runtime()?;
    let gw = rt.block_on(async { Gateway::build(config()?).map_err(anyhow::Error::from) })?;
    let gw = start(&rt, gw)?;
    wait("the messages again", || messages(&gw) >= 3)?;
    wait("their readings in the spool", || {
        spooled_energy(&gw).is_ok_and(|e| e.len() >= 3)
    })?;
    assert_eq!(
        spooled_energy(&gw)?,
        vec![(10.0, None), (10.5, Some(0.5)), (11.0, Some(0.5))]
    );
    assert_eq!(gw.normalizer.spool_errors.load(Ordering::Relaxed), 0);
    rt.block_on(gw.stop());
    drop(rt);

    // Third life: they were acknowledged once spooled, so only a new message arrives, and it
    // continues the counter.
    let rt = runtime()?;
    let gw = rt.block_on(async { Gateway::build(config()?).map_err(anyhow::Error::from) })?;
    let gw = start(&rt, gw)?;
    send(3, 11.25)?;
    wait("the new message's reading", || {
        spooled_energy(&gw).is_ok_and(|e| e.len() >= 4)
    })?;
    assert_eq!(messages(&gw), 1, "acknowledged messages came back");
    assert_eq!(spooled_energy(&gw)?[3], (11.25, Some(0.25)));
    rt.block_on(gw.stop());
    Ok(())
}
