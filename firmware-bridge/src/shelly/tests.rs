use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::strategies::{json_number, json_value};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn get(vals: &[FirmwareValue], channel: &str, q: Quantity) -> f64 {
    vals.iter()
        .find(|v| v.channel == channel && v.quantity == q)
        .unwrap_or_else(|| panic!("no {channel} {q} in {vals:?}"))
        .value
}

fn has(vals: &[FirmwareValue], channel: &str, q: Quantity) -> bool {
    vals.iter().any(|v| v.channel == channel && v.quantity == q)
}

fn notify(method: &str, params: Value) -> Vec<u8> {
    json!({"src": "shellypro3em-abc", "dst": "x/events", "method": method, "params": params})
        .to_string()
        .into_bytes()
}

const EVENTS: &str = "shellyplus1pm-a8032ab12345/events/rpc";

#[test]
fn topics() {
    assert_eq!(
        parse_topic("dev/events/rpc"),
        Some(Topic::Events { device: "dev" })
    );
    assert_eq!(
        parse_topic("site/a/dev/status/switch:0"),
        Some(Topic::Status {
            device: "site/a/dev",
            component: "switch:0"
        })
    );
    assert_eq!(
        parse_topic("dev/online"),
        Some(Topic::Online { device: "dev" })
    );
    assert_eq!(parse_topic("/events/rpc"), None);
    assert_eq!(parse_topic("dev/status/"), None);
    assert_eq!(parse_topic("dev/rpc"), None);
}

#[test]
fn switch_status_topic() {
    let p = br#"{"id":0,"source":"init","output":true,"apower":120.5,"voltage":229.8,"current":0.55,"freq":50.0,
        "aenergy":{"total":12345.678,"by_minute":[2005.0,2010.1,1998.7],"minute_ts":1700000040},
        "temperature":{"tC":41.2,"tF":106.2}}"#;
    let mut st = ShellyState::new();
    let up = st.apply("dev/status/switch:0", p).unwrap();
    assert!(!up.needs_full_status);
    let v = &up.values;
    assert!(close(get(v, "switch:0", Quantity::PowerActive), 0.1205));
    assert!(close(get(v, "switch:0", Quantity::EnergyImport), 12.345678));
    assert!(close(get(v, "switch:0", Quantity::Voltage), 229.8));
    assert!(!has(v, "switch:0", Quantity::EnergyExport));
    assert!(v.iter().all(|x| x.ts_ms.is_none()));
}

#[test]
fn returned_energy_is_taken_out_of_aenergy() {
    let mut out = Vec::new();
    let s = json!({"apower": -350, "aenergy": {"total": 10000}, "ret_aenergy": {"total": 4000}});
    decode_component("t", "pm1:0", &s, Some(1), &mut out).unwrap();
    assert!(close(get(&out, "pm1:0", Quantity::EnergyImport), 6.0));
    assert!(close(get(&out, "pm1:0", Quantity::EnergyExport), 4.0));
    assert!(close(get(&out, "pm1:0", Quantity::PowerActive), -0.35));
}

#[test]
fn three_phase_meter_full_status() {
    let params = json!({
        "ts": 1_700_000_000.25,
        "em:0": {"id":0,"a_current":1.2,"a_voltage":230.1,"a_act_power":250.0,"a_aprt_power":270.0,"a_pf":0.93,
                 "b_current":0.5,"b_voltage":229.9,"b_act_power":100.0,
                 "c_current":null,"c_voltage":231.0,"c_act_power":-20.0,
                 "n_current":null,"total_current":1.7,"total_act_power":330.0,"total_aprt_power":400.0},
        "emdata:0": {"id":0,"a_total_act_energy":1000.0,"a_total_act_ret_energy":0.0,
                     "b_total_act_energy":2000.0,"b_total_act_ret_energy":10.0,
                     "c_total_act_energy":3000.0,"c_total_act_ret_energy":500.0,
                     "total_act":6000.0,"total_act_ret":510.0},
        "wifi": {"rssi": -60}
    });
    let mut st = ShellyState::new();
    let up = st
        .apply(EVENTS, &notify("NotifyFullStatus", params))
        .unwrap();
    let v = &up.values;
    assert!(v.iter().all(|x| x.ts_ms == Some(1_700_000_000_250)));
    assert!(close(get(v, "em:0", Quantity::EnergyImport), 6.0));
    assert!(close(get(v, "em:0", Quantity::EnergyExport), 0.51));
    assert!(close(get(v, "em:0/c", Quantity::EnergyExport), 0.5));
    assert!(close(get(v, "em:0", Quantity::PowerActive), 0.33));
    assert!(close(get(v, "em:0/a", Quantity::PowerFactor), 0.93));
    assert!(close(get(v, "em:0/b", Quantity::Voltage), 229.9));
    assert!(close(get(v, "em:0/c", Quantity::PowerActive), -0.02));
    assert!(!has(v, "em:0/c", Quantity::Current), "null is no reading");
    assert!(!has(v, "em:0/n", Quantity::Current));
    assert!(!up.needs_full_status);
}

#[test]
fn deltas_overlay_the_known_status() {
    let mut st = ShellyState::new();
    let full = json!({"ts": 100.0, "switch:0": {"apower": 10.0, "voltage": 230.0, "aenergy": {"total": 500.0}}});
    st.apply(EVENTS, &notify("NotifyFullStatus", full)).unwrap();

    let delta = json!({"ts": 160.0, "switch:0": {"apower": 20.0}});
    let up = st.apply(EVENTS, &notify("NotifyStatus", delta)).unwrap();
    assert!(!up.needs_full_status);
    assert_eq!(up.values.len(), 3);
    assert!(close(
        get(&up.values, "switch:0", Quantity::PowerActive),
        0.02
    ));
    assert!(close(get(&up.values, "switch:0", Quantity::Voltage), 230.0));
    assert!(up.values.iter().all(|v| v.ts_ms == Some(160_000)));

    // A partial `aenergy` object merges into the known one.
    let delta =
        json!({"ts": 220.0, "switch:0": {"aenergy": {"by_minute": [1, 2, 3], "total": 510.0}}});
    let up = st.apply(EVENTS, &notify("NotifyStatus", delta)).unwrap();
    assert!(close(
        get(&up.values, "switch:0", Quantity::EnergyImport),
        0.51
    ));
    assert!(close(
        get(&up.values, "switch:0", Quantity::PowerActive),
        0.02
    ));
}

#[test]
fn a_delta_without_a_known_status_asks_for_one() {
    let mut st = ShellyState::new();
    let delta = json!({"ts": 1.0, "em1:0": {"act_power": 501.8}, "em1data:0": {"total_act_energy": 6644.9}});
    let up = st.apply(EVENTS, &notify("NotifyStatus", delta)).unwrap();
    assert!(up.needs_full_status);
    assert!(close(
        get(&up.values, "em1:0", Quantity::PowerActive),
        0.5018
    ));
    assert!(close(
        get(&up.values, "em1:0", Quantity::EnergyImport),
        6.6449
    ));

    let (topic, payload) = get_status_request("shellyproem50-1", "jieneng-gw", 7);
    assert_eq!(topic, "shellyproem50-1/rpc");
    let req: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(req["method"], "Shelly.GetStatus");
    assert_eq!(req["src"], "jieneng-gw");

    let answer = json!({"id": 7, "src": "shellyproem50-1", "dst": "jieneng-gw",
        "result": {"em1:0": {"id": 0, "current": 2.598, "voltage": 234.9, "act_power": 501.8},
                   "em1data:0": {"id": 0, "total_act_energy": 6644.9, "total_act_ret_energy": 2595.26},
                   "sys": {"unixtime": 1707930973}}});
    let up = st
        .apply_response(
            "shellyplus1pm-a8032ab12345",
            "jieneng-gw/rpc",
            answer.to_string().as_bytes(),
        )
        .unwrap();
    assert!(!up.needs_full_status);
    assert!(close(
        get(&up.values, "em1:0", Quantity::EnergyExport),
        2.59526
    ));
    let delta = json!({"ts": 2.0, "em1:0": {"act_power": 400.0}});
    let up = st.apply(EVENTS, &notify("NotifyStatus", delta)).unwrap();
    assert!(!up.needs_full_status);
    assert!(close(get(&up.values, "em1:0", Quantity::Voltage), 234.9));
}

#[test]
fn bad_fields_are_named_and_never_stored() {
    let mut st = ShellyState::new();
    let full = json!({"switch:0": {"apower": 10.0}});
    st.apply(EVENTS, &notify("NotifyFullStatus", full)).unwrap();
    let bad = json!({"switch:0": {"apower": "lots"}});
    let e = st.apply(EVENTS, &notify("NotifyStatus", bad)).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/params/switch:0/apower"),
        "{e}"
    );
    let ok = json!({"switch:0": {"voltage": 230.0}});
    let up = st.apply(EVENTS, &notify("NotifyStatus", ok)).unwrap();
    assert!(close(
        get(&up.values, "switch:0", Quantity::PowerActive),
        0.01
    ));

    let e = st
        .apply("d/status/em:0", br#"{"a_voltage":true}"#)
        .unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/a_voltage"),
        "{e}"
    );
    let e = st
        .apply(EVENTS, &notify("NotifyStatus", json!({"ts": "now"})))
        .unwrap_err();
    assert!(e.to_string().contains("/params/ts"), "{e}");
    assert!(matches!(
        st.apply("x/y", b"{}"),
        Err(DecodeError::Topic { .. })
    ));
}

#[test]
fn a_message_is_applied_whole_or_not_at_all() {
    let mut st = ShellyState::new();
    let full = json!({"switch:0": {"apower": 10.0}});
    st.apply(EVENTS, &notify("NotifyFullStatus", full)).unwrap();
    let mixed = json!({"switch:0": {"apower": 20.0}, "switch:1": {"apower": "x"}});
    let e = st
        .apply(EVENTS, &notify("NotifyStatus", mixed))
        .unwrap_err();
    assert!(e.to_string().contains("/params/switch:1/apower"), "{e}");
    let up = st
        .apply(
            EVENTS,
            &notify("NotifyStatus", json!({"switch:0": {"voltage": 230.0}})),
        )
        .unwrap();
    assert!(close(
        get(&up.values, "switch:0", Quantity::PowerActive),
        0.01
    ));
}

#[test]
fn non_metering_messages_yield_nothing() {
    let mut st = ShellyState::new();
    let ev = json!({"src":"d","method":"NotifyEvent","params":{"ts":1.0,"events":[{"component":"input:0","event":"single_push"}]}});
    let up = st.apply(EVENTS, ev.to_string().as_bytes()).unwrap();
    assert_eq!(up, ShellyUpdate::default());
    let up = st.apply("d/status/sys", br#"{"uptime":5}"#).unwrap();
    assert_eq!(up, ShellyUpdate::default());
    assert_eq!(st.device_count(), 0);
}

#[test]
fn going_offline_forgets_the_device_and_capacity_is_bounded() {
    let mut st = ShellyState::with_max_devices(1);
    st.apply("a/status/switch:0", br#"{"apower":1}"#).unwrap();
    assert_eq!(st.device_count(), 1);
    let e = st
        .apply("b/status/switch:0", br#"{"apower":1}"#)
        .unwrap_err();
    assert!(matches!(e, DecodeError::Capacity { limit: 1, .. }), "{e}");
    st.apply("a/online", b"false").unwrap();
    assert_eq!(st.device_count(), 0);
    st.apply("b/status/switch:0", br#"{"apower":1}"#).unwrap();
}

const KEYS: &[&str] = &[
    "method",
    "NotifyStatus",
    "NotifyFullStatus",
    "params",
    "ts",
    "switch:0",
    "em:0",
    "emdata:1",
    "apower",
    "aenergy",
    "total",
    "ret_aenergy",
    "a_voltage",
    "total_act",
];

/// The fields of a switch, each present or not, as a NotifyStatus delta would carry them.
fn switch_delta() -> impl Strategy<Value = Map<String, Value>> {
    let num = || (-1e5f64..1e5).prop_map(Value::from);
    (
        proptest::option::of(num()),
        proptest::option::of(num()),
        proptest::option::of(num()),
        proptest::option::of(num()),
    )
        .prop_map(|(apower, voltage, aenergy, ret)| {
            let mut m = Map::new();
            if let Some(v) = apower {
                m.insert("apower".into(), v);
            }
            if let Some(v) = voltage {
                m.insert("voltage".into(), v);
            }
            if let Some(v) = aenergy {
                m.insert("aenergy".into(), json!({"total": v}));
            }
            if let Some(v) = ret {
                m.insert("ret_aenergy".into(), json!({"total": v}));
            }
            m
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut st = ShellyState::new();
        let _ = st.apply(EVENTS, &bytes);
        let _ = st.apply("d/status/em:0", &bytes);
        let _ = st.apply_response("d", "c/rpc", &bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value(KEYS), n in json_number(), key in proptest::sample::select(KEYS)) {
        let mut st = ShellyState::new();
        let _ = st.apply(EVENTS, v.to_string().as_bytes());
        let _ = st.apply(EVENTS, &notify("NotifyStatus", json!({"ts": n, key: v})));
        let _ = st.apply(EVENTS, &notify("NotifyStatus", json!({"switch:0": {key: v}})));
        let _ = st.apply(EVENTS, &notify("NotifyFullStatus", json!({"emdata:0": {key: n}})));
        let _ = st.apply("d/status/switch:1", v.to_string().as_bytes());
        let mut out = Vec::new();
        let _ = decode_component("t", key, &v, None, &mut out);
    }

    /// Model: the state after a full status and any deltas decodes like the model's merged object.
    #[test]
    fn deltas_equal_a_fresh_full_status(first in switch_delta(), deltas in prop::collection::vec(switch_delta(), 0..8)) {
        let mut st = ShellyState::new();
        let mut model = first.clone();
        let up = st.apply(EVENTS, &notify("NotifyFullStatus", json!({"ts": 1.0, "switch:3": first}))).unwrap();
        prop_assert!(!up.needs_full_status);
        let mut last = up.values;
        for (i, d) in deltas.iter().enumerate() {
            let ts = 2.0 + i as f64;
            merge(&mut model, d);
            last = st.apply(EVENTS, &notify("NotifyStatus", json!({"ts": ts, "switch:3": d}))).unwrap().values;
            prop_assert!(last.iter().all(|v| v.ts_ms == Some((ts * 1000.0) as i64)));
        }
        let mut expected = Vec::new();
        decode_component("t", "switch:3", &Value::Object(model), None, &mut expected).unwrap();
        let strip = |vs: &[FirmwareValue]| vs.iter().map(|v| (v.channel.to_string(), v.quantity, v.value)).collect::<Vec<_>>();
        prop_assert_eq!(strip(&last), strip(&expected));
    }
}
