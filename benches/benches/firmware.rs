//! MQTT firmware decoding throughput: how many messages per second one core turns from payload
//! bytes into values, per firmware, on the documented fixtures (`firmware-bridge/fixtures`).
//! Stateful firmwares are measured in their steady state: a Shelly `NotifyStatus` delta merged
//! into a known status, Sparkplug NDATA with consecutive `seq` after an NBIRTH.
//!
//! `cargo bench -p jieneng-benches --bench firmware`

// A bench whose fixtures do not decode is broken; failing loudly is the point.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use chrono::FixedOffset;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firmware_bridge::sparkplug::{Payload, SparkplugConfig};
use firmware_bridge::{
    EsphomeRegistry, JsonMapping, ShellyState, SparkplugHost, tasmota, zigbee2mqtt,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware-bridge/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn firmware(c: &mut Criterion) {
    let mut g = c.benchmark_group("firmware");
    g.throughput(Throughput::Elements(1));

    let pow = fixture("tasmota/sensor_pow.json");
    let dual = fixture("tasmota/sensor_dual_channel.json");
    let china = FixedOffset::east_opt(8 * 3600).expect("offset");
    let mut out = Vec::with_capacity(32);
    g.bench_function("tasmota", |b| {
        b.iter(|| {
            out.clear();
            black_box(tasmota::decode_into(
                "tele/plug/SENSOR",
                black_box(&pow),
                china,
                &mut out,
            ))
        })
    });
    g.bench_function("tasmota dual channel", |b| {
        b.iter(|| {
            out.clear();
            black_box(tasmota::decode_into(
                "tele/plug/SENSOR",
                black_box(&dual),
                china,
                &mut out,
            ))
        })
    });

    let topic = "shellypro3em-c8f09e8a1b2c/events/rpc";
    let mut shelly = ShellyState::new();
    shelly
        .apply(topic, &fixture("shelly/notify_full_status_pro3em.json"))
        .expect("full status");
    let delta = fixture("shelly/notify_status_delta.json");
    g.bench_function("shelly NotifyStatus", |b| {
        b.iter(|| black_box(shelly.apply(topic, black_box(&delta))))
    });

    let mut esphome = EsphomeRegistry::new();
    esphome
        .learn(
            "homeassistant/sensor/house/total_energy/config",
            &fixture("esphome/discovery_total_energy.json"),
        )
        .expect("discovery");
    let state = fixture("esphome/state_total_energy.txt");
    g.bench_function("esphome state", |b| {
        b.iter(|| black_box(esphome.decode("house/sensor/total_energy/state", black_box(&state))))
    });

    let plug = fixture("zigbee2mqtt/plug.json");
    g.bench_function("zigbee2mqtt", |b| {
        b.iter(|| {
            black_box(zigbee2mqtt::decode(
                "zigbee2mqtt/plug",
                black_box(&plug),
                zigbee2mqtt::DEFAULT_BASE_TOPIC,
            ))
        })
    });

    let config: SparkplugConfig = serde_json::from_value(serde_json::json!({"metrics": [
        {"name": "Meter/Energy Import", "quantity": "energy_import", "unit": "Wh"},
        {"name": "Meter/Power", "quantity": "power_active", "unit": "W"},
        {"name": "Meter/Voltage L1", "quantity": "voltage", "unit": "V", "channel": "a"}
    ]}))
    .expect("sparkplug config");
    let mut host = SparkplugHost::new(config);
    host.handle("spBv1.0/plant/NBIRTH/gw1", &fixture("sparkplug/nbirth.bin"))
        .expect("nbirth");
    let ndata = Payload::decode(&fixture("sparkplug/ndata.bin")).expect("ndata");
    // NDATA with every seq, so that the host sees an unbroken sequence 1, 2, … 255, 0, 1, …
    let by_seq: Vec<Vec<u8>> = (0..256u64)
        .map(|s| {
            let mut p = ndata.clone();
            p.seq = Some(s);
            p.encode()
        })
        .collect();
    let mut seq = 0usize;
    g.bench_function("sparkplug NDATA", |b| {
        b.iter(|| {
            seq = (seq + 1) % 256;
            let o = host
                .handle("spBv1.0/plant/NDATA/gw1", black_box(&by_seq[seq]))
                .expect("ndata decodes");
            debug_assert!(o.rebirth.is_none());
            black_box(o)
        })
    });

    let mapping: JsonMapping =
        serde_json::from_slice(&fixture("mapping/meter.mapping.json")).expect("mapping");
    let meter = fixture("mapping/meter.json");
    g.bench_function("json-mapping", |b| {
        b.iter(|| black_box(mapping.decode("site/hall-3f", black_box(&meter))))
    });
    g.finish();
}

criterion_group!(benches, firmware);
criterion_main!(benches);
