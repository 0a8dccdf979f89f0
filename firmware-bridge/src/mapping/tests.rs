use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::strategies::json_value;

fn mapping(json_text: &str) -> JsonMapping {
    serde_json::from_str(json_text).unwrap()
}

/// The module documentation's TOML example, in the JSON the same serde model reads.
const EXAMPLE: &str = r#"{
  "fields": [
    {"pointer": "/data/energy_wh", "quantity": "energy_import", "unit": "Wh"},
    {"pointer": "/data/p", "channel": "l1", "quantity": "power_active", "unit": "W", "scale": 0.1},
    {"pointer": "/data/pf", "quantity": "power_factor", "unit": "1", "optional": true}
  ],
  "timestamp": {"pointer": "/ts", "format": "epoch_ms"}
}"#;

#[test]
fn the_documented_example_decodes() {
    let m = mapping(EXAMPLE);
    let p = br#"{"ts":1700000000123,"data":{"energy_wh":"12345","p":4567}}"#;
    let v = m.decode("site/meter7", p).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].channel, "0");
    assert_eq!(v[0].quantity, Quantity::EnergyImport);
    assert_eq!(v[0].basis, Basis::Total);
    assert!((v[0].value - 12.345).abs() < 1e-12);
    assert_eq!(v[1].channel, "l1");
    assert!((v[1].value - 0.4567).abs() < 1e-12);
    assert!(v.iter().all(|x| x.ts_ms == Some(1_700_000_000_123)));
}

#[test]
fn timestamps_in_each_format() {
    let s = json!(1_700_000_000.5);
    assert_eq!(timestamp(&s, TimeFormat::EpochS), Ok(1_700_000_000_500));
    assert_eq!(
        timestamp(&json!("1700000000123"), TimeFormat::EpochMs),
        Ok(1_700_000_000_123)
    );
    assert_eq!(
        timestamp(&json!("2023-11-15T06:13:20+08:00"), TimeFormat::Rfc3339),
        Ok(1_700_000_000_000)
    );
    assert!(timestamp(&json!("2023-11-15T06:13:20"), TimeFormat::Rfc3339).is_err());
    assert!(timestamp(&json!(1e300), TimeFormat::EpochS).is_err());
}

#[test]
fn errors_name_the_pointer() {
    let m = mapping(EXAMPLE);
    let e = m.decode("t", br#"{"ts":1,"data":{"p":1}}"#).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Field { pointer, .. } if pointer == "/data/energy_wh"),
        "{e}"
    );
    let e = m
        .decode("t", br#"{"ts":1,"data":{"energy_wh":1,"p":"x"}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("/data/p"), "{e}");
    let e = m
        .decode("t", br#"{"data":{"energy_wh":1,"p":1}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("/ts"), "{e}");
    // null is no reading, not an error.
    let v = m
        .decode("t", br#"{"ts":1,"data":{"energy_wh":null,"p":1}}"#)
        .unwrap();
    assert_eq!(v.len(), 1);
}

#[test]
fn invalid_mappings_are_refused() {
    let field = |pointer: &str, q: Quantity, unit: Unit, scale: f64| FieldMapping {
        pointer: pointer.to_owned(),
        channel: "0".into(),
        quantity: q,
        unit,
        scale,
        basis: None,
        optional: false,
    };
    assert_eq!(JsonMapping::new(vec![], None), Err(MappingError::Empty));
    assert!(matches!(
        JsonMapping::new(vec![field("a/b", Quantity::Voltage, Unit::Volt, 1.0)], None),
        Err(MappingError::Pointer { index: 0, .. })
    ));
    assert!(matches!(
        JsonMapping::new(
            vec![field("/a~2", Quantity::Voltage, Unit::Volt, 1.0)],
            None
        ),
        Err(MappingError::Pointer { .. })
    ));
    assert!(matches!(
        JsonMapping::new(
            vec![field("/a", Quantity::Voltage, Unit::Volt, f64::NAN)],
            None
        ),
        Err(MappingError::Scale { .. })
    ));
    assert!(matches!(
        JsonMapping::new(
            vec![field("/a", Quantity::PowerActive, Unit::KilowattHour, 1.0)],
            None
        ),
        Err(MappingError::Unit { .. })
    ));
    let e = serde_json::from_value::<JsonMapping>(json!({"fields": [], "extra": 1}));
    assert!(e.is_err());
    let m = mapping(EXAMPLE);
    let back: JsonMapping = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        v in json_value(&["ts", "data", "energy_wh", "p", "pf"]),
    ) {
        let m = mapping(EXAMPLE);
        let _ = m.decode("t", &bytes);
        let _ = m.decode("t", v.to_string().as_bytes());
        let _ = m.decode("t", json!({"ts": v, "data": {"p": v, "energy_wh": 1}}).to_string().as_bytes());
    }

    /// A number placed at any depth comes back through its pointer, scaled and converted.
    #[test]
    fn values_round_trip(
        path in prop::collection::vec("[a-z~/]{1,5}", 1..4),
        x in -1e9f64..1e9,
        scale in prop_oneof![Just(1.0), Just(0.1), Just(0.001), 1e-3f64..1e3],
        as_string in any::<bool>(),
        ts in 0i64..4_000_000_000_000,
    ) {
        let mut doc = if as_string { json!(x.to_string()) } else { json!(x) };
        for key in path.iter().rev() {
            doc = json!({ key.as_str(): doc });
        }
        let doc = json!({"v": doc, "t": ts});
        let tokens: Vec<&str> = std::iter::once("v").chain(path.iter().map(String::as_str)).collect();
        let f = FieldMapping {
            pointer: crate::error::pointer(&tokens),
            channel: "c".into(),
            quantity: Quantity::PowerActive,
            unit: Unit::Watt,
            scale,
            basis: None,
            optional: false,
        };
        let ts_map = TimestampMapping { pointer: "/t".into(), format: TimeFormat::EpochMs, optional: false };
        let m = JsonMapping::new(vec![f], Some(ts_map)).unwrap();
        let out = m.decode("t", doc.to_string().as_bytes()).unwrap();
        prop_assert_eq!(out.len(), 1);
        let expected = Unit::Watt.convert(x * scale, Unit::Kilowatt).unwrap();
        prop_assert!((out[0].value - expected).abs() <= 1e-9 * expected.abs().max(1.0));
        prop_assert_eq!(out[0].ts_ms, Some(ts));
    }
}
