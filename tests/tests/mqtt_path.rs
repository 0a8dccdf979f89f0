//! MQTT devices on the whole path, with real peers: a mosquitto broker (password auth) and
//! `mosquitto_pub` publishing firmware payloads (Tasmota, Shelly Gen2, Zigbee2MQTT, a generic
//! JSON meter) → gateway (MQTT source, counters, spool, HTTP) → ingest (WAL, Parquet) → DuckDB.
//!
//! Bad payloads are mixed into the stream; they must land in the dead-letter file and nothing
//! else may be lost: the stored deltas of each meter add up exactly to what its counter
//! advanced. Halfway through the gateway is stopped and messages are published while it is away;
//! its persistent session must deliver them when it comes back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayHandle};

use ingest::{IngestConfig, Server};
use jieneng_tests::mqtt::{Mosquitto, publish};
use jieneng_tests::run_json;
use reading_model::GatewayId;
use serde_json::json;

const TOKEN: &str = "mqtt-path-test-token-0001";

/// One MQTT meter of the test: where it publishes and what it is.
struct Meter {
    meter: &'static str,
    account: &'static str,
    item: &'static str,
    topic: &'static str,
    /// The `[[mqtt_device]]` lines after `topic`.
    config: &'static str,
    /// The payload of message `k` (0-based) with counter value `kwh`; a timestamp per message.
    payload: fn(k: u32, kwh: f64) -> Vec<u8>,
    start_kwh: f64,
    step_kwh: f64,
}

/// 2026-11-27T00:00:00Z in seconds; message `k` is stamped `k` seconds later.
const T0: i64 = 1_795_737_600;

fn tasmota(k: u32, kwh: f64) -> Vec<u8> {
    // Device local time (UTC+8, no zone) as Tasmota sends it.
    let local = chrono::DateTime::from_timestamp(T0 + i64::from(k) + 8 * 3600, 0)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S");
    format!(
        r#"{{"Time":"{local}","ENERGY":{{"TotalStartTime":"2022-03-20T15:20:48","Total":{kwh},"Yesterday":1.495,"Today":0.537,"Period":3,"Power":56,"ApparentPower":92,"ReactivePower":73,"Factor":0.61,"Voltage":234,"Current":0.392}}}}"#
    )
    .into_bytes()
}

fn shelly(k: u32, kwh: f64) -> Vec<u8> {
    let ts = (T0 + i64::from(k)) as f64;
    let method = if k == 0 {
        "NotifyFullStatus"
    } else {
        "NotifyStatus"
    };
    // After the full status only the changed fields arrive, as Shelly sends them.
    let switch = if k == 0 {
        json!({"id": 0, "output": true, "apower": 120.5, "voltage": 230.1, "current": 0.52,
               "freq": 50.0, "aenergy": {"total": kwh * 1000.0, "by_minute": [0, 0, 0],
               "minute_ts": T0}})
    } else {
        json!({"aenergy": {"total": kwh * 1000.0}})
    };
    json!({"src": "shellyplus1pm-a8032ab12345", "dst": "shellyplus1pm-a8032ab12345/events",
           "method": method, "params": {"ts": ts, "switch:0": switch}})
    .to_string()
    .into_bytes()
}

fn zigbee(k: u32, kwh: f64) -> Vec<u8> {
    let seen = chrono::DateTime::from_timestamp(T0 + i64::from(k), 0)
        .unwrap_or_default()
        .to_rfc3339();
    json!({"state": "ON", "power": 12.3, "energy": kwh, "voltage": 230, "current": 0.05,
           "linkquality": 120, "last_seen": seen})
    .to_string()
    .into_bytes()
}

fn generic(k: u32, kwh: f64) -> Vec<u8> {
    json!({"ts": (T0 + i64::from(k)) * 1000, "data": {"energy_wh": kwh * 1000.0, "p": 1234}})
        .to_string()
        .into_bytes()
}

const METERS: &[Meter] = &[
    Meter {
        meter: "plug-1",
        account: "110108A001",
        item: "01A10",
        topic: "tele/plug1/SENSOR",
        config: "firmware = { type = \"tasmota\", utc_offset = \"+08:00\" }\n",
        payload: tasmota,
        start_kwh: 514.125,
        step_kwh: 0.125,
    },
    Meter {
        meter: "ahu-1",
        account: "110108A001",
        item: "01B00",
        topic: "shellyplus1pm-a8032ab12345/events/rpc",
        config: "firmware = { type = \"shelly\" }\nchannel = \"switch:0\"\n",
        payload: shelly,
        start_kwh: 1.0,
        step_kwh: 0.25,
    },
    Meter {
        meter: "fridge",
        account: "110108D002",
        item: "01A10",
        topic: "zigbee2mqtt/fridge",
        config: "firmware = { type = \"zigbee2mqtt\" }\n",
        payload: zigbee,
        start_kwh: 5.5,
        step_kwh: 0.0625,
    },
    Meter {
        meter: "pump",
        account: "110108D002",
        item: "01000",
        topic: "site/pump/data",
        config: "[mqtt_device.firmware]\ntype = \"json-mapping\"\n\
                 fields = [{ pointer = \"/data/energy_wh\", quantity = \"energy_import\", unit = \"Wh\" },\n\
                 { pointer = \"/data/p\", quantity = \"power_active\", unit = \"W\" }]\n\
                 timestamp = { pointer = \"/ts\", format = \"epoch_ms\" }\n",
        payload: generic,
        start_kwh: 100.0,
        step_kwh: 0.5,
    },
];

/// Messages per meter before the gateway restarts, and in all.
const FIRST: u32 = 6;
const ALL: u32 = 10;

/// (topic, payload) of the bad messages, each rejected by its device's decoder.
fn bad_messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tele/plug1/SENSOR", b"{\"ENERGY\":{\"Total\":".to_vec()),
        ("tele/plug1/SENSOR", vec![0xff, 0x00, 0xfe, 0x7b]),
        (
            "shellyplus1pm-a8032ab12345/events/rpc",
            b"{\"method\":\"NotifyStatus\",\"params\":[]}".to_vec(),
        ),
        ("zigbee2mqtt/fridge", b"[1,2,3]".to_vec()),
        ("site/pump/data", b"{\"ts\":1,\"data\":{}}".to_vec()),
    ]
}

fn site(dir: &std::path::Path, broker: &Mosquitto, ingest: std::net::SocketAddr) -> String {
    let mut site = format!(
        "[gateway]\nid = \"gw-mqtt\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://{ingest}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [[mqtt_source]]\nname = \"building\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"jieneng-test-gw\"\nusername = \"{}\"\npassword = \"{}\"\n\n",
        dir.join("spool").display(),
        broker.port,
        broker.user,
        broker.password,
    );
    for m in METERS {
        site.push_str(&format!(
            "[[mqtt_device]]\nmeter = \"{}\"\naccount = \"{}\"\ncategory = \"01\"\nitem = \"{}\"\n\
             topic = \"{}\"\ninterval = 1\n{}\n",
            m.meter, m.account, m.item, m.topic, m.config
        ));
    }
    site
}

async fn start_gateway(site: &str) -> anyhow::Result<GatewayHandle> {
    let gw = Gateway::build(GatewayConfig::parse("mqtt test site", site, None)?)?
        .start(Duration::from_secs(10))?;
    // Messages published before the first subscription would not be kept for the gateway.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.mqtt[0]
        .stats
        .subscribed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not subscribe in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(gw)
}

/// Waits until every device has seen `n` messages in this gateway run.
async fn wait_for_messages(gw: &GatewayHandle, n: &[u64]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: Vec<u64> = gw.mqtt[0]
            .devices
            .iter()
            .map(|(_, s)| s.messages.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        if seen.iter().zip(n).all(|(s, n)| s >= n) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "messages seen per device {seen:?}, expected {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn publish_range(broker: &Mosquitto, from: u32, to: u32) -> anyhow::Result<()> {
    for k in from..to {
        for m in METERS {
            let kwh = m.start_kwh + m.step_kwh * f64::from(k);
            publish(
                broker.port,
                &broker.user,
                &broker.password,
                m.topic,
                &(m.payload)(k, kwh),
            )?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_firmwares_to_parquet_with_bad_payloads_quarantined() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "gateway", "mqtt-test-secret")?;
    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-mqtt")?, TOKEN);
    let server = Server::start(&serve).await?;
    let site = site(dir.path(), &broker, server.addr);

    // A wrong password is refused by the broker.
    assert!(
        publish(
            broker.port,
            "gateway",
            "wrong-password",
            "tele/x/SENSOR",
            b"{}"
        )
        .is_err()
    );

    let gw = start_gateway(&site).await?;
    let bad = bad_messages();
    let (bad_now, bad_later) = bad.split_at(3);
    publish_range(&broker, 0, FIRST / 2)?;
    for (topic, payload) in bad_now {
        publish(broker.port, &broker.user, &broker.password, topic, payload)?;
    }
    publish_range(&broker, FIRST / 2, FIRST)?;
    let per_device = |good: u32, bad: &[(&str, Vec<u8>)]| -> Vec<u64> {
        METERS
            .iter()
            .map(|m| u64::from(good) + bad.iter().filter(|(t, _)| *t == m.topic).count() as u64)
            .collect()
    };
    wait_for_messages(&gw, &per_device(FIRST, bad_now)).await?;
    let errors: u64 = gw.mqtt[0]
        .devices
        .iter()
        .map(|(_, s)| s.decode_errors.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(errors, bad_now.len() as u64);
    gw.stop().await;

    // While the gateway is away the broker keeps its messages (persistent session, QoS 1).
    publish_range(&broker, FIRST, ALL)?;
    for (topic, payload) in bad_later {
        publish(broker.port, &broker.user, &broker.password, topic, payload)?;
    }
    let gw = start_gateway(&site).await?;
    wait_for_messages(&gw, &per_device(ALL - FIRST, bad_later)).await?;
    let dead = gw.mqtt[0].dead_letters.clone();
    // Let the last batch leave the normalizer and the forwarder drain it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.stop().await;
    server.stop().await?;

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    assert_eq!(out["duplicates"], 0, "{out}");
    let energy = out["energy"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    assert_eq!(energy.len(), METERS.len(), "{out}");
    for m in METERS {
        let row = energy
            .iter()
            .find(|r| r["meter"] == m.meter)
            .ok_or_else(|| anyhow::anyhow!("no rows for meter {}: {out}", m.meter))?;
        assert_eq!(row["account"], m.account, "{row}");
        assert_eq!(row["item"], m.item, "{row}");
        // Every message is a reading and every reading after the first a delta: none lost,
        // none doubled across the restart. Steps are dyadic, so the sum is exact.
        assert_eq!(row["rows"], u64::from(ALL), "meter {}: {row}", m.meter);
        assert_eq!(
            row["deltas"],
            u64::from(ALL - 1),
            "meter {}: {row}",
            m.meter
        );
        assert_eq!(
            row["sum"].as_f64(),
            Some(m.step_kwh * f64::from(ALL - 1)),
            "meter {}: {row}",
            m.meter
        );
    }

    // Every bad payload is in the dead-letter file with its topic and bytes.
    let text = std::fs::read_to_string(dead.path())?;
    let letters: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), bad.len(), "{text}");
    for (letter, (topic, payload)) in letters.iter().zip(&bad) {
        assert_eq!(letter["topic"], *topic, "{letter}");
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(letter["payload_hex"], hex, "{letter}");
        assert_eq!(letter["source"], "building");
        assert!(letter["device"].as_str().is_some(), "{letter}");
        assert!(!letter["reason"].as_str().unwrap_or("").is_empty());
    }
    Ok(())
}

/// A Zigbee2MQTT plug whose `energy` total is `-5` once and a garbage total far below the
/// counter once, between good messages, and a string once (dead-lettered): the two numeric
/// ones are stored flagged `glitch` without a delta, and the stored deltas add up exactly to
/// what the counter advanced. (Taken as resets, each made the next good message count the
/// whole register again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_garbage_totals_invent_no_energy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "gateway", "mqtt-test-secret")?;
    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-mqtt")?, TOKEN);
    let server = Server::start(&serve).await?;
    let site = format!(
        "[gateway]\nid = \"gw-mqtt\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [[mqtt_source]]\nname = \"building\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"jieneng-glitch-gw\"\nusername = \"{}\"\npassword = \"{}\"\n\n\
         [[mqtt_device]]\nmeter = \"fridge\"\naccount = \"110108D002\"\ncategory = \"01\"\n\
         item = \"01A10\"\ntopic = \"zigbee2mqtt/fridge\"\ninterval = 1\n\
         firmware = {{ type = \"zigbee2mqtt\" }}\n",
        dir.path().join("spool").display(),
        server.addr,
        broker.port,
        broker.user,
        broker.password,
    );
    let gw = start_gateway(&site).await?;
    let (start, step) = (1234.5, 0.0625);
    // Message k is stamped k seconds after T0; the bad ones half a second after a good one.
    let at = |ms: i64| json!((T0 * 1000 + ms));
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for k in 0..8 {
        messages.push(
            json!({"energy": start + step * f64::from(k), "power": 12.3,
                   "last_seen": at(i64::from(k) * 1000)})
            .to_string()
            .into_bytes(),
        );
        let bad = match k {
            2 => json!({"energy": -5, "last_seen": at(2500)}),
            3 => json!({"energy": "garbage", "last_seen": at(3500)}),
            5 => json!({"energy": 0.5, "last_seen": at(5500)}),
            _ => continue,
        };
        messages.push(bad.to_string().into_bytes());
    }
    for m in &messages {
        publish(
            broker.port,
            &broker.user,
            &broker.password,
            "zigbee2mqtt/fridge",
            m,
        )?;
    }
    wait_for_messages(&gw, &[messages.len() as u64]).await?;
    // Let the last batch leave the normalizer and the forwarder drain it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let decode_errors = gw.mqtt[0].devices[0]
        .1
        .decode_errors
        .load(Ordering::Relaxed);
    let normalizer = gw.normalizer.clone();
    gw.stop().await;
    server.stop().await?;
    assert_eq!(decode_errors, 1, "the string total is dead-lettered");
    assert_eq!(normalizer.glitches.load(Ordering::Relaxed), 2);
    assert_eq!(normalizer.resets.load(Ordering::Relaxed), 0);

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    let row = out["energy"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["meter"] == "fridge"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    // Eight good totals and the two numeric bad ones are stored; only good ones have deltas.
    assert_eq!(row["rows"], 10, "{row}");
    assert_eq!(row["deltas"], 7, "{row}");
    assert_eq!(row["sum"].as_f64(), Some(step * 7.0), "{row}");
    let rows = run_json("read_rows.py", &[&serve.data_dir.display().to_string()])?;
    let qualities = rows["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["meter"] == "fridge" && r["quantity"] == "energy_import")
        })
        .map(|r| r["qualities"].clone());
    assert_eq!(qualities, Some(json!(["glitch", "good"])), "{rows}");
    Ok(())
}

/// A 2 MB message on a subscribed topic, between good ones, with a truncated and a binary
/// payload: each is dead-lettered with its reason, and the source goes on, so every good
/// message is stored. (With the client's 1 MiB packet limit the big message failed the
/// connection before it could be acknowledged, the persistent session delivered it again at
/// every reconnect, and every later message on the broker was lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_truncated_and_binary_payloads_are_dead_lettered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "gateway", "mqtt-test-secret")?;
    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-mqtt")?, TOKEN);
    let server = Server::start(&serve).await?;
    let site = format!(
        "[gateway]\nid = \"gw-mqtt\"\nspool_dir = \"{}\"\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n\
         [[mqtt_source]]\nname = \"building\"\nhost = \"127.0.0.1\"\nport = {}\n\
         client_id = \"jieneng-big-gw\"\nusername = \"{}\"\npassword = \"{}\"\n\n\
         [[mqtt_device]]\nmeter = \"fridge\"\naccount = \"110108D002\"\ncategory = \"01\"\n\
         item = \"01A10\"\ntopic = \"zigbee2mqtt/fridge\"\ninterval = 1\n\
         firmware = {{ type = \"zigbee2mqtt\" }}\n",
        dir.path().join("spool").display(),
        server.addr,
        broker.port,
        broker.user,
        broker.password,
    );
    let gw = start_gateway(&site).await?;
    let (start, step) = (77.0, 0.125);
    let good = |k: u32| {
        json!({"energy": start + step * f64::from(k),
               "last_seen": json!(T0 * 1000 + i64::from(k) * 1000)})
        .to_string()
        .into_bytes()
    };
    // 2 MB of JSON that would decode: only its size refuses it.
    let mut big = br#"{"energy": 1.0, "pad": ""#.to_vec();
    big.resize(2_000_000 - 2, b'x');
    big.extend(b"\"}");
    let bad: [&[u8]; 3] = [&big, b"{\"energy\": 78.", &[0x00, 0xff, 0x13, 0x37]];
    let mut sent = 0u64;
    for k in 0..6 {
        publish(
            broker.port,
            &broker.user,
            &broker.password,
            "zigbee2mqtt/fridge",
            &good(k),
        )?;
        sent += 1;
        if let Some(b) = bad.get(k as usize) {
            publish(
                broker.port,
                &broker.user,
                &broker.password,
                "zigbee2mqtt/fridge",
                b,
            )?;
            sent += 1;
        }
    }
    wait_for_messages(&gw, &[sent]).await?;
    // Let the last batch leave the normalizer and the forwarder drain it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = gw.mqtt[0].stats.clone();
    let dead = gw.mqtt[0].dead_letters.clone();
    gw.stop().await;
    server.stop().await?;
    assert_eq!(
        stats.connections.load(Ordering::Relaxed),
        1,
        "one connection, never failed"
    );
    assert_eq!(stats.connection_errors.load(Ordering::Relaxed), 0);

    let out = run_json("read_parquet.py", &[&serve.data_dir.display().to_string()])?;
    let row = out["energy"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["meter"] == "fridge"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no energy rows: {out}"))?;
    assert_eq!(row["rows"], 6, "every good message stored: {row}");
    assert_eq!(row["sum"].as_f64(), Some(step * 5.0), "{row}");

    let text = std::fs::read_to_string(dead.path())?;
    let letters: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 3, "{text}");
    assert_eq!(letters[0]["payload_len"], 2_000_000);
    assert_eq!(letters[0]["truncated"], true);
    let reason = |i: usize| letters[i]["reason"].as_str().unwrap_or("").to_owned();
    assert!(
        reason(0).contains("2000000 bytes") && reason(0).contains("max_payload_bytes"),
        "{}",
        reason(0)
    );
    for (i, b) in bad.iter().enumerate().skip(1) {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(letters[i]["payload_hex"], hex, "{}", letters[i]);
        assert!(!reason(i).is_empty());
    }
    Ok(())
}
