use std::path::Path;

use reading_model::Quantity;
use serde_json::json;

use super::*;
use crate::GatewayConfig;

const SITE: &str = r#"[gateway]
id = "gw-test"
spool_dir = "spool"

[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"

[[mqtt_source]]
host = "127.0.0.1"
client_id = "gw-test-client"

[[mqtt_device]]
meter = "plug"
account = "110108A001"
category = "01"
item = "01A10"
topic = "tele/plug/#"
firmware = { type = "tasmota" }

[[mqtt_device]]
meter = "dual"
account = "110108A001"
category = "01"
item = "01A10"
topic = "tele/dual/SENSOR"
firmware = { type = "tasmota", utc_offset = "+00:00" }
channel = "2"

[[mqtt_device]]
meter = "shelly"
account = "110108A001"
category = "01"
item = "01A20"
topic = "shellyplus1pm-01/#"
firmware = { type = "shelly" }
channel = "switch:0"

[[mqtt_device]]
meter = "edge"
account = "110108A001"
category = "01"
item = "01000"
topic = "spBv1.0/plant/+/edge1/#"
[mqtt_device.firmware]
type = "sparkplug"
metrics = [{ name = "Energy", quantity = "energy_import", unit = "kWh" }]
"#;

fn router(dir: &Path) -> (GatewayConfig, Router) {
    let config = GatewayConfig::parse("site.toml", SITE, Some(dir)).unwrap();
    let dead = DeadLetters::start(&dir.join("dead"), "default", 1 << 20);
    let r = Router::new(&config.mqtt, 0, dead).unwrap();
    (config, r)
}

async fn letters(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let path = dir.join("dead/default.jsonl");
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n {
                return lines;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} has fewer than {n} letters", path.display());
}

#[tokio::test]
async fn tasmota_totals_and_gauges_become_samples_and_the_rest_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut r) = router(dir.path());
    assert_eq!(
        r.subscriptions(),
        [
            "tele/plug/#",
            "tele/dual/SENSOR",
            "shellyplus1pm-01/#",
            "spBv1.0/plant/+/edge1/#",
            "gw-test-client/rpc"
        ]
    );
    let payload = br#"{"Time":"2023-05-19T20:52:56","ENERGY":{"Total":514.153,"Yesterday":1.495,"Today":0.537,"Period":0,"Power":56,"Voltage":234,"Current":0.392}}"#;
    let h = r.handle("tele/plug/SENSOR", payload, 7);
    assert!(h.publish.is_empty());
    let [s] = &h.samples[..] else {
        panic!("{:?}", h.samples)
    };
    assert_eq!(s.device, 0);
    assert_eq!(s.received, 7);
    let total = s
        .values
        .iter()
        .find(|v| v.quantity == Quantity::EnergyImport)
        .unwrap();
    assert_eq!(total.basis, Basis::Total);
    assert_eq!(total.value, 514.153);
    // Beijing time, as the device's clock is configured by default.
    assert_eq!(
        total.ts_ms,
        Some(
            chrono::DateTime::parse_from_rfc3339("2023-05-19T12:52:56Z")
                .unwrap()
                .timestamp_millis()
        )
    );
    // Today, Yesterday and Period are views of Total, not readings.
    assert!(
        s.values
            .iter()
            .all(|v| matches!(v.basis, Basis::Total | Basis::Instant))
    );
    assert_eq!(s.values.len(), 4);

    // STATE and LWT carry no energy: ignored, not rejected.
    assert!(r.handle("tele/plug/LWT", b"Online", 8).samples.is_empty());
    let stats = &r.routes[0].stats;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 2);
    assert_eq!(stats.ignored.load(Ordering::Relaxed), 1);
    assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 0);
    assert_eq!(stats.values.load(Ordering::Relaxed), 4);

    // Only the configured channel of a multi-channel device.
    let dual = br#"{"Time":"2024-01-01T00:00:00","ENERGY":{"Total":[2.813,0.254],"Power":[52,5],"Voltage":230}}"#;
    let h = r.handle("tele/dual/SENSOR", dual, 9);
    let [s] = &h.samples[..] else {
        panic!("{:?}", h.samples)
    };
    assert_eq!(s.device, 1);
    assert_eq!(s.values.len(), 2);
    assert!(s.values.iter().all(|v| v.channel == "2"));
    assert_eq!(s.values[0].ts_ms, Some(1_704_067_200_000));

    assert!(r.handle("somewhere/else", b"x", 10).samples.is_empty());
    assert_eq!(r.stats.unrouted.load(Ordering::Relaxed), 1);
    assert_eq!(r.stats.messages.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn bad_payloads_are_counted_and_kept_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut r) = router(dir.path());
    let bad: &[&[u8]] = &[
        b"{\"ENERGY\":{\"Total\":",
        &[0xff, 0xfe, 0x00],
        b"{\"ENERGY\":{\"Total\":\"lots\"}}",
    ];
    for p in bad {
        assert!(r.handle("tele/plug/SENSOR", p, 1).samples.is_empty());
    }
    let stats = &r.routes[0].stats;
    assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 3);
    let last = stats.last_error().unwrap();
    assert!(last.contains("tele/plug/SENSOR"), "{last}");
    let lines = letters(dir.path(), 3).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["payload_hex"], "fffe00");
    assert_eq!(lines[1]["device"], "110108A001/plug");
    assert_eq!(lines[1]["topic"], "tele/plug/SENSOR");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{}",
        lines[0]
    );
    // A good message after bad ones still decodes.
    let h = r.handle("tele/plug/SENSOR", br#"{"ENERGY":{"Total":1.5}}"#, 2);
    assert_eq!(h.samples.len(), 1);
    assert_eq!(r.dead.stats.written.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_shelly_delta_before_its_full_status_asks_for_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut r) = router(dir.path());
    let delta = json!({"src": "shellyplus1pm-01", "method": "NotifyStatus",
        "params": {"ts": 1700000000.0, "switch:0": {"apower": 20.0}}});
    let h = r.handle(
        "shellyplus1pm-01/events/rpc",
        delta.to_string().as_bytes(),
        1,
    );
    let [req] = &h.publish[..] else {
        panic!("{:?}", h.publish)
    };
    assert_eq!(req.topic, "shellyplus1pm-01/rpc");
    let body: serde_json::Value = serde_json::from_slice(&req.payload).unwrap();
    assert_eq!(body["method"], "Shelly.GetStatus");
    assert_eq!(body["src"], "gw-test-client");
    // The next delta does not ask again while the request is fresh.
    let again = r.handle(
        "shellyplus1pm-01/events/rpc",
        delta.to_string().as_bytes(),
        2,
    );
    assert!(again.publish.is_empty());
    assert_eq!(r.routes[2].stats.requests.load(Ordering::Relaxed), 1);

    let answer = json!({"id": body["id"], "src": "shellyplus1pm-01", "dst": "gw-test-client",
        "result": {"switch:0": {"id": 0, "apower": 21.5, "voltage": 231.0,
            "aenergy": {"total": 1500.0}}}});
    let h = r.handle("gw-test-client/rpc", answer.to_string().as_bytes(), 3);
    let [s] = &h.samples[..] else {
        panic!("{:?}", h.samples)
    };
    assert_eq!(s.device, 2);
    let energy = s
        .values
        .iter()
        .find(|v| v.quantity == Quantity::EnergyImport)
        .unwrap();
    assert_eq!(energy.value, 1.5);
    // An answer nobody waits for is kept, not decoded.
    let h = r.handle("gw-test-client/rpc", answer.to_string().as_bytes(), 4);
    assert!(h.samples.is_empty());
    assert_eq!(r.stats.rejected.load(Ordering::Relaxed), 1);
    let lines = letters(dir.path(), 1).await;
    assert_eq!(lines[0]["device"], serde_json::Value::Null);
}

#[tokio::test]
async fn sparkplug_data_from_an_unknown_node_asks_for_a_rebirth() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut r) = router(dir.path());
    let payload = firmware_bridge::sparkplug::Payload {
        timestamp: Some(1),
        metrics: vec![],
        seq: Some(3),
        uuid: None,
        body: None,
    }
    .encode();
    let h = r.handle("spBv1.0/plant/NDATA/edge1", &payload, 5);
    assert!(h.samples.is_empty());
    let [req] = &h.publish[..] else {
        panic!("{:?}", h.publish)
    };
    assert_eq!(req.topic, "spBv1.0/plant/NCMD/edge1");
    assert_eq!(req.qos, QoS::AtMostOnce);
    assert!(
        r.handle("spBv1.0/plant/NDATA/edge1", &payload, 6)
            .publish
            .is_empty()
    );
}

#[test]
fn warnings_are_rate_limited_and_count_what_they_held_back() {
    let mut w = RateLimit::default();
    let t = Instant::now();
    assert_eq!(w.allow(t), Some(0));
    assert_eq!(w.allow(t + Duration::from_secs(1)), None);
    assert_eq!(w.allow(t + Duration::from_secs(2)), None);
    assert_eq!(w.allow(t + WARN_EVERY + Duration::from_secs(1)), Some(2));
}

#[tokio::test]
async fn oversized_payloads_are_dead_lettered_undecoded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut r) = router(dir.path());
    assert_eq!(r.source.max_payload_bytes, 1 << 20);
    // A valid Tasmota message padded past the limit: its size alone refuses it.
    let good = br#"{"Time":"2023-05-19T20:52:56","ENERGY":{"Total":514.153,"Power":56}}"#;
    let mut big = good.to_vec();
    big.truncate(good.len() - 1);
    big.extend(std::iter::repeat_n(b' ', (1 << 20) + 1 - good.len()));
    big.push(b'}');
    assert_eq!(big.len(), (1 << 20) + 1);
    assert!(r.handle("tele/plug/SENSOR", &big, 7).samples.is_empty());
    let h = r.handle("tele/plug/SENSOR", good, 8);
    assert_eq!(h.samples.len(), 1, "the source goes on");
    assert!(r.handle("nobody/listens", &big, 9).samples.is_empty());
    let stats = &r.routes[0].stats;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 2);
    assert_eq!(stats.decode_errors.load(Ordering::Relaxed), 1);
    assert!(
        stats
            .last_error()
            .is_some_and(|e| e.contains("1048577 bytes") && e.contains("max_payload_bytes")),
        "{:?}",
        stats.last_error()
    );
    assert_eq!(r.stats.rejected.load(Ordering::Relaxed), 1);
    let l = letters(dir.path(), 2).await;
    assert_eq!(l[0]["device"], "110108A001/plug");
    assert_eq!(l[0]["payload_len"], (1 << 20) + 1);
    assert_eq!(l[0]["truncated"], true);
    assert!(l[1]["device"].is_null());
}
