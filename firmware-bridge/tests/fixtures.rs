//! Every fixture under `fixtures/` decodes to the values its source documents. Where the fixtures
//! come from is in `fixtures/README.md`.
//!
//! The Sparkplug `.bin` files are written by this file's encoder; run with
//! `FIRMWARE_BRIDGE_BLESS=1` to rewrite them after a deliberate change, and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use chrono::FixedOffset;
use firmware_bridge::esphome::{Discovery, EsphomeRegistry};
use firmware_bridge::mapping::JsonMapping;
use firmware_bridge::shelly::ShellyState;
use firmware_bridge::sparkplug::{
    Metric, MetricValue, Payload, SparkplugConfig, SparkplugHost, datatype,
};
use firmware_bridge::{Basis, FirmwareValue, tasmota, zigbee2mqtt};
use reading_model::{Quantity, Unit};

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Asserts one value: channel, quantity, basis, canonical value (to 1e-9 relative), timestamp.
#[track_caller]
fn expect(
    vals: &[FirmwareValue],
    channel: &str,
    q: Quantity,
    b: Basis,
    value: f64,
    ts_ms: Option<i64>,
) {
    let v = vals
        .iter()
        .find(|v| v.channel == channel && v.quantity == q && v.basis == b)
        .unwrap_or_else(|| panic!("no {channel} {q} {b:?} in {vals:#?}"));
    assert!(
        (v.value - value).abs() <= 1e-9 * value.abs().max(1.0),
        "{channel} {q}: {} != {value}",
        v.value
    );
    assert_eq!(v.unit, q.canonical_unit());
    assert_eq!(v.ts_ms, ts_ms, "{channel} {q}");
}

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn tasmota_pow_from_domain_md() {
    let v = tasmota::decode(
        "tele/pow/SENSOR",
        &fixture("tasmota/sensor_pow.json"),
        cst(),
    )
    .unwrap();
    // 2023-05-19T20:52:56 at UTC+8.
    let ts = Some(1_684_500_776_000);
    use Basis::*;
    use Quantity::*;
    expect(&v, "0", EnergyImport, Total, 514.153, ts);
    expect(&v, "0", EnergyImport, Yesterday, 1.495, ts);
    expect(&v, "0", EnergyImport, Today, 0.537, ts);
    expect(&v, "0", EnergyImport, Period, 0.0, ts);
    expect(&v, "0", PowerActive, Instant, 0.056, ts);
    expect(&v, "0", PowerApparent, Instant, 0.092, ts);
    expect(&v, "0", PowerReactive, Instant, 0.073, ts);
    expect(&v, "0", PowerFactor, Instant, 0.61, ts);
    expect(&v, "0", Voltage, Instant, 234.0, ts);
    expect(&v, "0", Current, Instant, 0.392, ts);
    assert_eq!(v.len(), 10);
}

#[test]
fn tasmota_dual_channel_arrays() {
    let v = tasmota::decode(
        "tele/dual/SENSOR",
        &fixture("tasmota/sensor_dual_channel.json"),
        cst(),
    )
    .unwrap();
    let ts = Some(1_709_252_100_000);
    use Basis::*;
    use Quantity::*;
    expect(&v, "1", EnergyImport, Total, 2.813, ts);
    expect(&v, "2", EnergyImport, Total, 0.254, ts);
    expect(&v, "1", PowerActive, Instant, 0.052, ts);
    expect(&v, "2", PowerActive, Instant, 0.005, ts);
    expect(&v, "1", EnergyImport, Period, 0.004, ts);
    expect(&v, "2", Current, Instant, 0.039, ts);
    // The one supply voltage belongs to the device, not to channel 1 or 2.
    expect(&v, "0", Voltage, Instant, 230.0, ts);
    assert!(!v.iter().any(|x| x.channel != "0" && x.quantity == Voltage));
    assert_eq!(v.len(), 2 * 9 + 1);
}

#[test]
fn tasmota_status10() {
    let v = tasmota::decode(
        "stat/meter/STATUS10",
        &fixture("tasmota/status10.json"),
        cst(),
    )
    .unwrap();
    let ts = Some(1_709_252_400_000);
    expect(&v, "0", Quantity::EnergyImport, Basis::Total, 1234.567, ts);
    expect(&v, "0", Quantity::PowerActive, Basis::Instant, 1.83, ts);
    expect(&v, "0", Quantity::Frequency, Basis::Instant, 50.0, ts);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn shelly_switch_status() {
    let mut st = ShellyState::new();
    let up = st
        .apply(
            "shellyplus1pm-a8032ab12345/status/switch:0",
            &fixture("shelly/status_switch_0.json"),
        )
        .unwrap();
    let v = &up.values;
    use Basis::*;
    use Quantity::*;
    expect(v, "switch:0", PowerActive, Instant, 0.1205, None);
    expect(v, "switch:0", Voltage, Instant, 229.8, None);
    expect(v, "switch:0", Current, Instant, 0.551, None);
    expect(v, "switch:0", Frequency, Instant, 50.0, None);
    expect(v, "switch:0", PowerFactor, Instant, 0.95, None);
    // aenergy counts both directions: import = 12345.678 − 345.678 Wh.
    expect(v, "switch:0", EnergyImport, Total, 12.0, None);
    expect(v, "switch:0", EnergyExport, Total, 0.345678, None);
    assert_eq!(v.len(), 7);
}

#[test]
fn shelly_pro3em_full_status_then_delta() {
    let mut st = ShellyState::new();
    let topic = "shellypro3em-c8f09e8a1b2c/events/rpc";
    let up = st
        .apply(topic, &fixture("shelly/notify_full_status_pro3em.json"))
        .unwrap();
    assert!(!up.needs_full_status);
    let v = &up.values;
    let ts = Some(1_709_280_000_120);
    use Basis::*;
    use Quantity::*;
    expect(v, "em:0/a", Voltage, Instant, 236.1, ts);
    expect(v, "em:0/b", PowerActive, Instant, -0.9511, ts);
    expect(v, "em:0/c", PowerApparent, Instant, 0.7153, ts);
    expect(v, "em:0", Current, Instant, 11.086, ts);
    expect(v, "em:0", PowerActive, Instant, 0.7151, ts);
    expect(v, "em:0", EnergyImport, Total, 9.43292, ts);
    expect(v, "em:0", EnergyExport, Total, 4.20025, ts);
    expect(v, "em:0/b", EnergyExport, Total, 4.20025, ts);
    expect(v, "em:0/a", EnergyImport, Total, 5.31242, ts);
    assert!(
        !v.iter().any(|x| x.channel == "em:0/n"),
        "n_current is null"
    );

    let up = st
        .apply(topic, &fixture("shelly/notify_status_delta.json"))
        .unwrap();
    assert!(!up.needs_full_status);
    let v = &up.values;
    let ts = Some(1_709_280_060_050);
    expect(v, "em:0/a", PowerActive, Instant, 1.0024, ts);
    expect(v, "em:0", PowerActive, Instant, 0.7663, ts);
    // Unchanged fields are completed from the full status, stamped with the delta's time.
    expect(v, "em:0/a", Voltage, Instant, 236.1, ts);
    expect(v, "em:0/b", PowerActive, Instant, -0.9511, ts);
    // Only em:0 was in the delta; emdata:0 is not re-emitted.
    assert!(!v.iter().any(|x| x.quantity == EnergyImport));
}

#[test]
fn shelly_get_status_answer() {
    let mut st = ShellyState::new();
    let up = st
        .apply_response(
            "shellyproem50-08f9e0e67204",
            "jieneng-gw/rpc",
            &fixture("shelly/getstatus_response_pro_em50.json"),
        )
        .unwrap();
    let v = &up.values;
    use Basis::*;
    use Quantity::*;
    expect(v, "em1:1", PowerActive, Instant, 5.0803, None);
    expect(v, "em1:1", PowerApparent, Instant, 5.1424, None);
    expect(v, "em1:1", PowerFactor, Instant, 0.99, None);
    expect(v, "em1:1", EnergyImport, Total, 6.6449, None);
    expect(v, "em1:1", EnergyExport, Total, 2.59526, None);
    expect(v, "em1:0", Current, Instant, 0.08, None);
    // switch:0 of this device has no metering fields.
    assert!(!v.iter().any(|x| x.channel == "switch:0"));
}

// ---------------------------------------------------------------------------------------------

#[test]
fn esphome_discovery_and_states() {
    let mut reg = EsphomeRegistry::new();
    for (topic, file) in [
        (
            "homeassistant/sensor/house/total_energy/config",
            "esphome/discovery_total_energy.json",
        ),
        (
            "homeassistant/sensor/house/power/config",
            "esphome/discovery_power.json",
        ),
    ] {
        let d = reg.learn(topic, &fixture(file)).unwrap();
        assert!(matches!(d, Discovery::Sensor { .. }), "{d:?}");
    }
    let e = reg
        .decode(
            "house/sensor/total_energy/state",
            &fixture("esphome/state_total_energy.txt"),
        )
        .unwrap()
        .unwrap();
    expect(
        &[e],
        "total_energy",
        Quantity::EnergyImport,
        Basis::Total,
        1234.56,
        None,
    );
    let p = reg
        .decode(
            "house/sensor/power/state",
            &fixture("esphome/state_power.txt"),
        )
        .unwrap()
        .unwrap();
    expect(
        &[p],
        "power",
        Quantity::PowerActive,
        Basis::Instant,
        1.8304,
        None,
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn zigbee2mqtt_plug_from_domain_md() {
    let v = zigbee2mqtt::decode(
        "zigbee2mqtt/plug_kitchen",
        &fixture("zigbee2mqtt/plug.json"),
        zigbee2mqtt::DEFAULT_BASE_TOPIC,
    )
    .unwrap();
    use Basis::*;
    use Quantity::*;
    expect(&v, "0", PowerActive, Instant, 0.0123, None);
    expect(&v, "0", EnergyImport, Total, 1.23, None);
    expect(&v, "0", Voltage, Instant, 230.0, None);
    expect(&v, "0", Current, Instant, 0.05, None);
    assert_eq!(v.len(), 4);

    let v = zigbee2mqtt::decode(
        "zigbee2mqtt/plug_kitchen",
        &fixture("zigbee2mqtt/plug_not_yet_reported.json"),
        zigbee2mqtt::DEFAULT_BASE_TOPIC,
    )
    .unwrap();
    assert!(v.is_empty(), "nulls are skipped: {v:?}");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn generic_mapping() {
    let m: JsonMapping = serde_json::from_slice(&fixture("mapping/meter.mapping.json")).unwrap();
    let v = m
        .decode("site/hall-3f", &fixture("mapping/meter.json"))
        .unwrap();
    let ts = Some(1_709_252_100_000);
    use Basis::*;
    use Quantity::*;
    expect(&v, "0", EnergyImport, Total, 8812.34, ts);
    expect(&v, "0", EnergyExport, Total, 1.2, ts);
    expect(&v, "0", PowerActive, Instant, 4.5215, ts);
    expect(&v, "b", Voltage, Instant, 230.4, ts);
    assert_eq!(v.len(), 6, "pf is optional and absent");
}

// ---------------------------------------------------------------------------------------------

fn named(name: &str, alias: u64, dt: u32, value: MetricValue) -> Metric {
    Metric {
        name: Some(name.to_owned()),
        alias: Some(alias),
        datatype: Some(dt),
        value,
        ..Metric::default()
    }
}

fn aliased(alias: u64, value: MetricValue) -> Metric {
    Metric {
        alias: Some(alias),
        value,
        ..Metric::default()
    }
}

/// The Sparkplug fixtures: an edge node `gw1` in group `plant` with one device `pm-1`.
fn sparkplug_fixtures() -> Vec<(&'static str, &'static str, Payload)> {
    use MetricValue::*;
    vec![
        (
            "sparkplug/nbirth.bin",
            "spBv1.0/plant/NBIRTH/gw1",
            Payload {
                timestamp: Some(1_709_280_000_000),
                seq: Some(0),
                metrics: vec![
                    Metric {
                        name: Some("bdSeq".into()),
                        datatype: Some(datatype::INT64),
                        value: Long(0),
                        ..Metric::default()
                    },
                    named("Node Control/Rebirth", 1, datatype::BOOLEAN, Boolean(false)),
                    named(
                        "Meter/Energy Import",
                        2,
                        datatype::DOUBLE,
                        Double(123_456.7),
                    ),
                    named("Meter/Power", 3, datatype::FLOAT, Float(1520.5)),
                    named("Meter/Voltage L1", 4, datatype::FLOAT, Float(229.75)),
                ],
                ..Payload::default()
            },
        ),
        (
            "sparkplug/ndata.bin",
            "spBv1.0/plant/NDATA/gw1",
            Payload {
                timestamp: Some(1_709_280_060_000),
                seq: Some(1),
                metrics: vec![aliased(2, Double(123_458.25)), aliased(3, Float(1610.0))],
                ..Payload::default()
            },
        ),
        (
            "sparkplug/dbirth.bin",
            "spBv1.0/plant/DBIRTH/gw1/pm-1",
            Payload {
                timestamp: Some(1_709_280_001_000),
                seq: Some(2),
                metrics: vec![
                    named("Energy/Total", 10, datatype::UINT64, Long(98_765)),
                    named("Power/Total", 11, datatype::INT32, Int((-1200i32) as u32)),
                ],
                ..Payload::default()
            },
        ),
        (
            "sparkplug/ddata.bin",
            "spBv1.0/plant/DDATA/gw1/pm-1",
            Payload {
                timestamp: Some(1_709_280_061_000),
                seq: Some(3),
                metrics: vec![
                    aliased(11, Int((-800i32) as u32)),
                    Metric {
                        timestamp: Some(1_709_280_059_500),
                        ..aliased(10, Long(98_770))
                    },
                ],
                ..Payload::default()
            },
        ),
    ]
}

#[test]
fn sparkplug_fixture_files_match_the_encoder() {
    let bless = std::env::var_os("FIRMWARE_BRIDGE_BLESS").is_some();
    for (file, _, payload) in sparkplug_fixtures() {
        let bytes = payload.encode();
        if bless {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(file);
            std::fs::write(&p, &bytes).unwrap();
        }
        assert_eq!(
            fixture(file),
            bytes,
            "{file} is stale; rerun with FIRMWARE_BRIDGE_BLESS=1"
        );
        assert_eq!(Payload::decode(&fixture(file)).unwrap(), payload, "{file}");
    }
}

#[test]
fn sparkplug_node_and_device() {
    let config: SparkplugConfig = serde_json::from_value(serde_json::json!({"metrics": [
        {"name": "Meter/Energy Import", "quantity": "energy_import", "unit": "Wh"},
        {"name": "Meter/Power", "quantity": "power_active", "unit": "W"},
        {"name": "Meter/Voltage L1", "quantity": "voltage", "unit": "V", "channel": "a"},
        {"name": "Energy/Total", "quantity": "energy_import", "unit": "Wh", "channel": "pm-1"},
        {"name": "Power/Total", "quantity": "power_active", "unit": "W", "channel": "pm-1"}
    ]}))
    .unwrap();
    let mut host = SparkplugHost::new(config);
    let mut outcomes = Vec::new();
    for (file, topic, _) in sparkplug_fixtures() {
        let out = host.handle(topic, &fixture(file)).unwrap();
        assert_eq!(out.rebirth, None, "{file}");
        assert!(out.problems.is_empty(), "{file}: {:?}", out.problems);
        outcomes.push(out);
    }
    use Basis::*;
    use Quantity::*;
    let birth = &outcomes[0].values;
    let ts = Some(1_709_280_000_000);
    expect(
        birth,
        "Meter/Energy Import",
        EnergyImport,
        Total,
        123.4567,
        ts,
    );
    expect(birth, "Meter/Power", PowerActive, Instant, 1.5205, ts);
    expect(birth, "a", Voltage, Instant, 229.75, ts);
    assert_eq!(outcomes[0].unmapped, 2, "bdSeq and Node Control/Rebirth");

    let data = &outcomes[1].values;
    let ts = Some(1_709_280_060_000);
    expect(
        data,
        "Meter/Energy Import",
        EnergyImport,
        Total,
        123.45825,
        ts,
    );
    expect(data, "Meter/Power", PowerActive, Instant, 1.61, ts);

    let dbirth = &outcomes[2];
    assert_eq!(dbirth.device.as_deref(), Some("pm-1"));
    let ts = Some(1_709_280_001_000);
    expect(&dbirth.values, "pm-1", EnergyImport, Total, 98.765, ts);
    expect(&dbirth.values, "pm-1", PowerActive, Instant, -1.2, ts);

    let ddata = &outcomes[3].values;
    expect(
        ddata,
        "pm-1",
        PowerActive,
        Instant,
        -0.8,
        Some(1_709_280_061_000),
    );
    expect(
        ddata,
        "pm-1",
        EnergyImport,
        Total,
        98.77,
        Some(1_709_280_059_500),
    );
    assert_eq!(Unit::KilowattHour, EnergyImport.canonical_unit());
}
