use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::strategies::{json_number, json_value};

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn find<'a>(vals: &'a [FirmwareValue], channel: &str, q: Quantity, b: Basis) -> &'a FirmwareValue {
    vals.iter()
        .find(|v| v.channel == channel && v.quantity == q && v.basis == b)
        .unwrap_or_else(|| panic!("no {channel} {q} {b:?} in {vals:?}"))
}

#[test]
fn single_channel_sensor() {
    let p = br#"{"Time":"2023-05-19T20:52:56","ENERGY":{"Total":514.153,"Today":0.537,"Power":56,"Voltage":234,"Current":0.392,"Factor":0.61}}"#;
    let v = decode("tele/plug/SENSOR", p, cst()).unwrap();
    assert_eq!(v.len(), 6);
    let total = find(&v, "0", Quantity::EnergyImport, Basis::Total);
    assert_eq!(total.value, 514.153);
    assert_eq!(total.unit, Unit::KilowattHour);
    // 20:52:56 at UTC+8 is 12:52:56 UTC.
    assert_eq!(total.ts_ms, Some(1_684_500_776_000));
    assert!(close(
        find(&v, "0", Quantity::PowerActive, Basis::Instant).value,
        0.056
    ));
    assert!(close(
        find(&v, "0", Quantity::EnergyImport, Basis::Today).value,
        0.537
    ));
}

#[test]
fn arrays_are_numbered_channels_and_scalars_the_device() {
    let p = br#"{"ENERGY":{"Total":[2.813,0.254],"Power":[52,null],"Voltage":230}}"#;
    let v = decode("tele/dual/SENSOR", p, cst()).unwrap();
    assert_eq!(v.len(), 4);
    assert!(close(
        find(&v, "1", Quantity::EnergyImport, Basis::Total).value,
        2.813
    ));
    assert!(close(
        find(&v, "2", Quantity::EnergyImport, Basis::Total).value,
        0.254
    ));
    assert!(close(
        find(&v, "1", Quantity::PowerActive, Basis::Instant).value,
        0.052
    ));
    assert!(close(
        find(&v, "0", Quantity::Voltage, Basis::Instant).value,
        230.0
    ));
    assert!(v.iter().all(|x| x.ts_ms.is_none()));
}

#[test]
fn status10_nests_under_status_sns() {
    let p = br#"{"StatusSNS":{"Time":"2024-01-01T00:00:00","ENERGY":{"Total":1.5,"Period":250}}}"#;
    let v = decode("stat/plug/STATUS10", p, FixedOffset::east_opt(0).unwrap()).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].ts_ms, Some(1_704_067_200_000));
    assert!(close(
        find(&v, "0", Quantity::EnergyImport, Basis::Period).value,
        0.25
    ));
}

#[test]
fn time_with_an_offset_ignores_the_callers_offset() {
    let p = br#"{"Time":"2023-05-19T20:52:56+08:00","ENERGY":{"Total":1}}"#;
    let v = decode("tele/x/SENSOR", p, FixedOffset::west_opt(5 * 3600).unwrap()).unwrap();
    assert_eq!(v[0].ts_ms, Some(1_684_500_776_000));
    let p = br#"{"Time":"2023-05-19T20:52:56.250","ENERGY":{"Total":1}}"#;
    let v = decode("tele/x/SENSOR", p, cst()).unwrap();
    assert_eq!(v[0].ts_ms, Some(1_684_500_776_250));
}

#[test]
fn errors_name_the_place() {
    let e = decode("tele/x/STATE", b"{}", cst()).unwrap_err();
    assert!(matches!(e, DecodeError::Topic { .. }), "{e}");

    let p = br#"{"Time":"yesterday","ENERGY":{"Total":1}}"#;
    let e = decode("tele/x/SENSOR", p, cst()).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/Time"),
        "{e}"
    );

    let p = br#"{"ENERGY":{"Total":"many"}}"#;
    let e = decode("tele/x/SENSOR", p, cst()).unwrap_err();
    let DecodeError::Json { offset, .. } = e else {
        panic!("{e}")
    };
    // serde_json reports a type error where the offending value ends.
    assert!((19..=25).contains(&offset), "{offset}");

    let p = br#"{"ENERGY":{"Power":[1,2,3,4,5,6,7,8,9]}}"#;
    let e = decode("tele/x/SENSOR", p, cst()).unwrap_err();
    assert!(e.to_string().contains("more than 8"), "{e}");
}

#[test]
fn messages_without_energy_decode_to_nothing_and_errors_leave_out_untouched() {
    let mut out = decode("tele/x/SENSOR", br#"{"ENERGY":{"Total":1}}"#, cst()).unwrap();
    let n = decode_into(
        "tele/x/SENSOR",
        br#"{"Time":"2023-05-19T20:52:56","AM2301":{"Temperature":21.3}}"#,
        cst(),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 0);
    assert!(decode_into("tele/x/SENSOR", b"{", cst(), &mut out).is_err());
    assert_eq!(out.len(), 1);
}

#[test]
fn duplicates_nulls_and_trailing_bytes() {
    let e = decode(
        "tele/x/SENSOR",
        br#"{"ENERGY":{"Total":1,"Total":2}}"#,
        cst(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("duplicate key `Total`"), "{e}");
    let e = decode(
        "tele/x/SENSOR",
        br#"{"Time":"2024-01-01T00:00:00","Time":null}"#,
        cst(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
    let v = decode("tele/x/SENSOR", br#"{"Time":null,"ENERGY":null}"#, cst()).unwrap();
    assert!(v.is_empty());
    assert!(decode("tele/x/SENSOR", br#"{"ENERGY":{"Total":1}} x"#, cst()).is_err());
    assert!(decode("tele/x/SENSOR", b"[1]", cst()).is_err());
    // An escaped Time string is not borrowed but still read.
    let v = decode(
        "tele/x/SENSOR",
        br#"{"Time":"2023-05-19\u005420:52:56","ENERGY":{"Total":1}}"#,
        cst(),
    )
    .unwrap();
    assert_eq!(v[0].ts_ms, Some(1_684_500_776_000));
    let v = decode(
        "tele/x/SENSOR",
        br#"{"ENERGY":{"Total":1},"Time":"2023-05-19T20:52:56"}"#,
        cst(),
    )
    .unwrap();
    assert_eq!(v[0].ts_ms, Some(1_684_500_776_000), "Time after ENERGY");
}

#[test]
fn device_topics() {
    assert_eq!(device_topic("tele/plug1/SENSOR"), Some("plug1"));
    assert_eq!(device_topic("stat/a/b/STATUS10"), Some("a/b"));
    assert_eq!(device_topic("compteur/tele/SENSOR"), None);
    assert_eq!(device_topic("tele//SENSOR"), None);
    assert_eq!(
        Message::of_topic("compteur/tele/SENSOR"),
        Some(Message::Sensor)
    );
}

const KEYS: &[&str] = &[
    "Time",
    "ENERGY",
    "StatusSNS",
    "Total",
    "Today",
    "Power",
    "Voltage",
    "Factor",
];

/// A scalar or an array of up to MAX_CHANNELS numbers (with nulls), as Tasmota writes them.
fn num_or_array() -> impl Strategy<Value = Value> {
    let elem = prop_oneof![4 => (-1e6f64..1e6).prop_map(Value::from), 1 => Just(Value::Null)];
    prop_oneof![
        (-1e6f64..1e6).prop_map(Value::from),
        prop::collection::vec(elem, 0..=MAX_CHANNELS).prop_map(Value::Array),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode("tele/x/SENSOR", &bytes, cst());
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value(KEYS), n in json_number()) {
        let _ = decode("tele/x/SENSOR", v.to_string().as_bytes(), cst());
        let p = json!({"ENERGY": {"Total": v, "Power": n}}).to_string();
        let _ = decode("stat/x/STATUS10", p.as_bytes(), cst());
    }

    /// Every number in ENERGY comes back, on the right channel, converted by the unit table.
    #[test]
    fn energy_round_trips(
        fields in prop::collection::btree_map(0..FIELDS.len(), num_or_array(), 0..FIELDS.len()),
        status10 in any::<bool>(),
        secs in 0i64..4_000_000_000,
        offset_h in -12i32..=14,
    ) {
        let offset = FixedOffset::east_opt(offset_h * 3600).unwrap();
        let local = chrono::DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
        let time = local.format("%Y-%m-%dT%H:%M:%S").to_string();
        let energy: serde_json::Map<String, Value> =
            fields.iter().map(|(i, v)| (FIELDS[*i].0.to_owned(), v.clone())).collect();
        let body = json!({"Time": time, "ENERGY": energy});
        let (topic, payload) = if status10 {
            ("stat/x/STATUS10", json!({"StatusSNS": body}))
        } else {
            ("tele/x/SENSOR", body)
        };
        let out = decode(topic, payload.to_string().as_bytes(), offset).unwrap();

        let mut expected = Vec::new();
        for (i, v) in &fields {
            let (_, q, b, unit) = FIELDS[*i];
            let conv = |x: f64| unit.convert(x, q.canonical_unit()).unwrap();
            match v {
                Value::Array(xs) => {
                    for (j, x) in xs.iter().enumerate() {
                        if let Some(x) = x.as_f64() {
                            expected.push(((j + 1).to_string(), q, b, conv(x)));
                        }
                    }
                }
                x => expected.push(("0".to_owned(), q, b, conv(x.as_f64().unwrap()))),
            }
        }
        let mut got: Vec<_> = out
            .iter()
            .map(|v| (v.channel.to_string(), v.quantity, v.basis, v.value))
            .collect();
        // Values come out in the payload's key order; compare as sets.
        let key = |x: &(String, Quantity, Basis, f64)| (x.0.clone(), x.1, x.2);
        got.sort_by_key(key);
        expected.sort_by_key(key);
        prop_assert_eq!(got, expected);
        prop_assert!(out.iter().all(|v| v.ts_ms == Some(secs * 1000)));
    }
}

proptest! {
    /// The hand-written fast path agrees with chrono on every plain local time.
    #[test]
    fn fast_time_parsing_agrees_with_chrono(secs in -62_000_000_000i64..250_000_000_000, offset_min in -720i32..=840) {
        let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
        let local = chrono::DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
        let text = local.format("%Y-%m-%dT%H:%M:%S").to_string();
        let fast = plain_local_time(text.as_bytes());
        let slow = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S").ok();
        prop_assert_eq!(fast, slow);
        if fast.is_some() {
            prop_assert_eq!(parse_time(&text, offset), Ok(secs * 1000));
        }
    }

    #[test]
    fn time_parsing_never_panics(text in "[0-9T:+.Z -]{0,30}") {
        let _ = parse_time(&text, cst());
    }
}
