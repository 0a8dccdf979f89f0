use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::strategies::{json_number, json_value};

fn get(vals: &[FirmwareValue], channel: &str, q: Quantity) -> f64 {
    vals.iter()
        .find(|v| v.channel == channel && v.quantity == q)
        .unwrap_or_else(|| panic!("no {channel} {q} in {vals:?}"))
        .value
}

#[test]
fn topics() {
    assert_eq!(
        device_name("zigbee2mqtt/plug_kitchen", "zigbee2mqtt"),
        Some("plug_kitchen")
    );
    assert_eq!(
        device_name("zigbee2mqtt/floor1/plug", "zigbee2mqtt"),
        Some("floor1/plug")
    );
    assert_eq!(
        device_name("zigbee2mqtt/plug/availability", "zigbee2mqtt"),
        None
    );
    assert_eq!(device_name("zigbee2mqtt/bridge/state", "zigbee2mqtt"), None);
    assert_eq!(device_name("zigbee2mqttx/plug", "zigbee2mqtt"), None);
    assert_eq!(device_name("z2m/plug", "z2m"), Some("plug"));
}

#[test]
fn keys_and_channels() {
    assert_eq!(classify("power").map(|c| c.0), Some(Cow::Borrowed("0")));
    assert_eq!(classify("voltage_b").map(|c| c.0), Some(Cow::Borrowed("b")));
    assert_eq!(
        classify("energy_l12").map(|c| c.0),
        Some(Cow::Borrowed("l12"))
    );
    assert!(classify("power_factor").is_none());
    assert!(classify("energy_today").is_none());
    assert!(classify("power_l").is_none());
    assert!(classify("linkquality").is_none());
}

#[test]
fn nulls_are_skipped_and_bad_types_named() {
    let p = br#"{"state":"ON","power":null,"energy":0.5,"current":null}"#;
    let v = decode("zigbee2mqtt/p", p, DEFAULT_BASE_TOPIC).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].quantity, Quantity::EnergyImport);
    let e = decode("zigbee2mqtt/p", br#"{"power":"12"}"#, DEFAULT_BASE_TOPIC).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/power"),
        "{e}"
    );
    let e = decode("zigbee2mqtt/p", b"[1]", DEFAULT_BASE_TOPIC).unwrap_err();
    assert!(matches!(e, DecodeError::Field { .. }), "{e}");
    let e = decode("zigbee2mqtt/bridge/state", b"{}", DEFAULT_BASE_TOPIC).unwrap_err();
    assert!(matches!(e, DecodeError::Topic { .. }), "{e}");
}

#[test]
fn last_seen_is_the_timestamp() {
    let p = br#"{"power":5,"last_seen":"2023-11-15T06:13:20+08:00"}"#;
    let v = decode("zigbee2mqtt/p", p, DEFAULT_BASE_TOPIC).unwrap();
    assert_eq!(v[0].ts_ms, Some(1_700_000_000_000));
    let p = br#"{"power":5,"last_seen":1700000000123}"#;
    let v = decode("zigbee2mqtt/p", p, DEFAULT_BASE_TOPIC).unwrap();
    assert_eq!(v[0].ts_ms, Some(1_700_000_000_123));
    let p = br#"{"power":5,"last_seen":"a while ago"}"#;
    assert!(decode("zigbee2mqtt/p", p, DEFAULT_BASE_TOPIC).is_err());
}

#[test]
fn three_phase_suffixes() {
    let p = br#"{"voltage_a":230.1,"voltage_b":229.4,"power_a":100,"energy":42.5}"#;
    let v = decode("zigbee2mqtt/meter", p, DEFAULT_BASE_TOPIC).unwrap();
    assert_eq!(get(&v, "b", Quantity::Voltage), 229.4);
    assert_eq!(get(&v, "a", Quantity::PowerActive), 0.1);
    assert_eq!(get(&v, "0", Quantity::EnergyImport), 42.5);
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        v in json_value(&["power", "energy", "voltage", "current", "last_seen", "power_l1"]),
        n in json_number(),
    ) {
        let _ = decode("zigbee2mqtt/p", &bytes, DEFAULT_BASE_TOPIC);
        let _ = decode("zigbee2mqtt/p", v.to_string().as_bytes(), DEFAULT_BASE_TOPIC);
        let p = json!({"power": n, "energy": v, "last_seen": n});
        let _ = decode("zigbee2mqtt/p", p.to_string().as_bytes(), DEFAULT_BASE_TOPIC);
    }

    #[test]
    fn values_round_trip(
        power in -1e7f64..1e7,
        energy in 0f64..1e9,
        voltage in proptest::option::of(0f64..500.0),
    ) {
        let p = json!({"state": "ON", "power": power, "energy": energy, "voltage": voltage, "linkquality": 120});
        let v = decode("zigbee2mqtt/plug", p.to_string().as_bytes(), DEFAULT_BASE_TOPIC).unwrap();
        prop_assert_eq!(v.len(), 2 + usize::from(voltage.is_some()));
        let expected = Unit::Watt.convert(power, Unit::Kilowatt).unwrap();
        prop_assert_eq!(get(&v, "0", Quantity::PowerActive), expected);
        prop_assert_eq!(get(&v, "0", Quantity::EnergyImport), energy);
    }
}
