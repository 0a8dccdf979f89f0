use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::strategies::json_value;

const ENERGY_CONFIG: &str = "homeassistant/sensor/house/total_energy/config";

fn energy_discovery() -> Vec<u8> {
    json!({
        "unit_of_meas": "kWh", "dev_cla": "energy", "stat_cla": "total_increasing",
        "name": "Total Energy", "stat_t": "house/sensor/total_energy/state",
        "avty_t": "house/status", "uniq_id": "ESPsensortotal_energy",
        "dev": {"ids": "a4cf12b3c4d5", "name": "house", "sw": "esphome v2024.6.0", "mdl": "esp32dev"}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn topics() {
    assert_eq!(
        parse_state_topic("house/sensor/total_energy/state"),
        Some(("house", "total_energy"))
    );
    assert_eq!(parse_state_topic("a/b/sensor/x/state"), Some(("a/b", "x")));
    assert_eq!(parse_state_topic("house/switch/relay/state"), None);
    assert_eq!(state_topic("house", "power"), "house/sensor/power/state");
    assert_eq!(
        parse_discovery_topic(ENERGY_CONFIG),
        Some(("sensor", "total_energy"))
    );
    assert_eq!(
        parse_discovery_topic("homeassistant/sensor/power/config"),
        Some(("sensor", "power"))
    );
    assert_eq!(
        parse_discovery_topic("homeassistant/switch/house/relay/config"),
        Some(("switch", "relay"))
    );
    assert_eq!(parse_discovery_topic("homeassistant/config"), None);
}

#[test]
fn discovery_supplies_the_unit() {
    let mut reg = EsphomeRegistry::new();
    let d = reg.learn(ENERGY_CONFIG, &energy_discovery()).unwrap();
    let Discovery::Sensor { state_topic, spec } = d else {
        panic!("{d:?}")
    };
    assert_eq!(state_topic, "house/sensor/total_energy/state");
    assert_eq!(spec.quantity, Quantity::EnergyImport);
    assert_eq!(spec.basis, Basis::Total);
    assert_eq!(spec.channel, "total_energy");

    let v = reg.decode(&state_topic, b"1234.56").unwrap().unwrap();
    assert_eq!(v.value, 1234.56);
    assert_eq!(v.unit, Unit::KilowattHour);
    assert_eq!(v.ts_ms, None);
    assert_eq!(reg.decode(&state_topic, b"nan").unwrap(), None);
    assert_eq!(reg.decode(&state_topic, b"").unwrap(), None);
    assert!(matches!(
        reg.decode(&state_topic, b"12,5"),
        Err(DecodeError::Bytes { .. })
    ));
    assert!(matches!(
        reg.decode(&state_topic, b"inf"),
        Err(DecodeError::Bytes { .. })
    ));
}

#[test]
fn long_keys_base_topics_and_units_are_understood() {
    let mut reg = EsphomeRegistry::new();
    let cfg = json!({"~": "plug", "state_topic": "~/sensor/power/state",
                     "unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"});
    reg.learn(
        "homeassistant/sensor/plug/power/config",
        cfg.to_string().as_bytes(),
    )
    .unwrap();
    let v = reg
        .decode("plug/sensor/power/state", b" 1500.0\n")
        .unwrap()
        .unwrap();
    assert_eq!(v.quantity, Quantity::PowerActive);
    assert_eq!(v.value, 1.5);

    let pf =
        json!({"stat_t": "plug/sensor/pf/state", "unit_of_meas": "%", "dev_cla": "power_factor"});
    reg.learn(
        "homeassistant/sensor/plug/pf/config",
        pf.to_string().as_bytes(),
    )
    .unwrap();
    let v = reg.decode("plug/sensor/pf/state", b"93").unwrap().unwrap();
    assert!((v.value - 0.93).abs() < 1e-12);

    // No device class: the unit's dimension decides.
    let wh = json!({"stat_t": "plug/sensor/e/state", "unit_of_meas": "Wh"});
    reg.learn(
        "homeassistant/sensor/plug/e/config",
        wh.to_string().as_bytes(),
    )
    .unwrap();
    let v = reg.decode("plug/sensor/e/state", b"2500").unwrap().unwrap();
    assert_eq!((v.quantity, v.value), (Quantity::EnergyImport, 2.5));
}

#[test]
fn unrelated_sensors_are_ignored_and_unknown_topics_are_errors() {
    let mut reg = EsphomeRegistry::new();
    let rssi = json!({"stat_t": "house/sensor/wifi/state", "unit_of_meas": "dBm", "dev_cla": "signal_strength"});
    let d = reg
        .learn(
            "homeassistant/sensor/house/wifi/config",
            rssi.to_string().as_bytes(),
        )
        .unwrap();
    assert!(matches!(d, Discovery::Ignored { .. }), "{d:?}");
    assert_eq!(reg.decode("house/sensor/wifi/state", b"-60").unwrap(), None);
    let tpl = json!({"stat_t": "x/sensor/y/state", "unit_of_meas": "kWh", "val_tpl": "{{ value_json.e }}"});
    let d = reg
        .learn(
            "homeassistant/sensor/x/y/config",
            tpl.to_string().as_bytes(),
        )
        .unwrap();
    assert!(matches!(d, Discovery::Ignored { .. }), "{d:?}");
    let d = reg
        .learn("homeassistant/switch/house/relay/config", b"{}")
        .unwrap();
    assert_eq!(d, Discovery::NotASensor);

    let e = reg.decode("house/sensor/other/state", b"1").unwrap_err();
    assert!(matches!(e, DecodeError::Unmapped { .. }), "{e}");
    let e = reg
        .learn("homeassistant/sensor/house/bad/config", br#"{"stat_t": 5}"#)
        .unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/stat_t"),
        "{e}"
    );
}

#[test]
fn config_wins_over_discovery_and_removal_forgets() {
    let mut reg = EsphomeRegistry::new();
    let cfg: SensorConfig = serde_json::from_value(json!({
        "state_topic": "house/sensor/total_energy/state",
        "quantity": "energy_export", "unit": "kWh"
    }))
    .unwrap();
    assert_eq!(cfg.spec().channel, "total_energy");
    reg.configure(cfg);
    let d = reg.learn(ENERGY_CONFIG, &energy_discovery()).unwrap();
    assert!(matches!(d, Discovery::Configured { .. }), "{d:?}");
    let v = reg
        .decode("house/sensor/total_energy/state", b"3")
        .unwrap()
        .unwrap();
    assert_eq!(v.quantity, Quantity::EnergyExport);
    // Removing the discovery leaves the configured sensor alone.
    reg.learn(ENERGY_CONFIG, b"").unwrap();
    assert!(reg.spec("house/sensor/total_energy/state").is_some());

    let mut reg = EsphomeRegistry::new();
    reg.learn(ENERGY_CONFIG, &energy_discovery()).unwrap();
    let d = reg.learn(ENERGY_CONFIG, b"").unwrap();
    assert_eq!(
        d,
        Discovery::Removed {
            state_topic: Some("house/sensor/total_energy/state".into())
        }
    );
    assert!(reg.is_empty());

    let bad = serde_json::from_value::<SensorConfig>(json!({
        "state_topic": "a/sensor/b/state", "quantity": "power_active", "unit": "kWh"
    }));
    assert!(bad.is_err());
}

#[test]
fn capacity_is_bounded() {
    let mut reg = EsphomeRegistry::with_max_sensors(1);
    reg.learn(ENERGY_CONFIG, &energy_discovery()).unwrap();
    let other = json!({"stat_t": "b/sensor/p/state", "unit_of_meas": "W"});
    let e = reg
        .learn(
            "homeassistant/sensor/b/p/config",
            other.to_string().as_bytes(),
        )
        .unwrap_err();
    assert!(matches!(e, DecodeError::Capacity { .. }), "{e}");
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        v in json_value(&["stat_t", "state_topic", "unit_of_meas", "dev_cla", "~", "val_tpl"]),
        unit in "[ -~]{0,6}",
        class in "[a-z_]{0,16}",
    ) {
        let mut reg = EsphomeRegistry::new();
        let _ = reg.learn(ENERGY_CONFIG, &bytes);
        let _ = reg.learn(ENERGY_CONFIG, v.to_string().as_bytes());
        let cfg = json!({"stat_t": "h/sensor/x/state", "unit_of_meas": unit, "dev_cla": class});
        let _ = reg.learn("homeassistant/sensor/h/x/config", cfg.to_string().as_bytes());
        let _ = reg.decode("h/sensor/x/state", &bytes);
        reg.learn(ENERGY_CONFIG, &energy_discovery()).unwrap();
        let _ = reg.decode("house/sensor/total_energy/state", &bytes);
    }

    /// A number printed the way ESPHome prints it comes back converted.
    #[test]
    fn states_round_trip(x in -1e12f64..1e12, decimals in 0usize..6) {
        let mut reg = EsphomeRegistry::new();
        let cfg = json!({"stat_t": "h/sensor/p/state", "unit_of_meas": "W", "dev_cla": "power"});
        reg.learn("homeassistant/sensor/h/p/config", cfg.to_string().as_bytes()).unwrap();
        let text = format!("{x:.decimals$}");
        let v = reg.decode("h/sensor/p/state", text.as_bytes()).unwrap().unwrap();
        let expected: f64 = text.parse::<f64>().unwrap() / 1000.0;
        prop_assert!((v.value - expected).abs() <= 1e-12 * expected.abs().max(1.0));
    }
}
