use proptest::prelude::*;

use super::*;

fn metric(name: &str, alias: u64, dt: u32, value: MetricValue) -> Metric {
    Metric {
        name: Some(name.to_owned()),
        alias: Some(alias),
        datatype: Some(dt),
        value,
        ..Metric::default()
    }
}

fn by_alias(alias: u64, value: MetricValue) -> Metric {
    Metric {
        alias: Some(alias),
        value,
        ..Metric::default()
    }
}

fn config() -> SparkplugConfig {
    serde_json::from_value(serde_json::json!({"metrics": [
        {"name": "Meter/Energy Import", "quantity": "energy_import", "unit": "Wh", "channel": "main"},
        {"name": "Meter/Power", "quantity": "power_active", "unit": "W"},
        {"name": "Meter/Power Factor", "quantity": "power_factor", "unit": "1", "scale": 0.001}
    ]}))
    .unwrap()
}

fn nbirth(seq: u64, bd: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(1_700_000_000_000),
        seq: Some(seq),
        metrics: vec![
            metric("bdSeq", 0, datatype::INT64, MetricValue::Long(bd)),
            metric(
                "Meter/Energy Import",
                1,
                datatype::DOUBLE,
                MetricValue::Double(123_456.0),
            ),
            metric("Meter/Power", 2, datatype::INT32, MetricValue::Int(1500)),
            metric(
                "Node Info/Firmware",
                3,
                datatype::STRING,
                MetricValue::String("1.2.3".into()),
            ),
        ],
        ..Payload::default()
    }
    .encode()
}

fn ndata(seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_700_000_060_000),
        seq: Some(seq),
        metrics,
        ..Payload::default()
    }
    .encode()
}

const NBIRTH: &str = "spBv1.0/plant/NBIRTH/gw1";
const NDATA: &str = "spBv1.0/plant/NDATA/gw1";

#[test]
fn payload_bytes_match_a_hand_encoding() {
    let p = Payload {
        timestamp: Some(1),
        seq: Some(0),
        metrics: vec![metric("a", 1, datatype::DOUBLE, MetricValue::Double(1.0))],
        ..Payload::default()
    };
    // timestamp: 08 01; metric (field 2, 16 bytes): name 0a 01 61, alias 10 01,
    // datatype 20 0a, double (field 13, fixed64 → tag 0x69) 1.0 LE; seq: 18 00.
    let expected = [
        0x08, 0x01, 0x12, 0x10, 0x0a, 0x01, 0x61, 0x10, 0x01, 0x20, 0x0a, 0x69, 0, 0, 0, 0, 0, 0,
        0xf0, 0x3f, 0x18, 0x00,
    ];
    assert_eq!(p.encode(), expected);
    assert_eq!(Payload::decode(&expected).unwrap(), p);
}

#[test]
fn topics() {
    let t = parse_topic("spBv1.0/plant/DDATA/gw1/meter7").unwrap();
    assert_eq!(
        (t.group, t.kind, t.edge, t.device),
        ("plant", MessageType::DData, "gw1", Some("meter7"))
    );
    let t = parse_topic("spBv1.0/STATE/scada").unwrap();
    assert_eq!((t.kind, t.edge), (MessageType::State, "scada"));
    for bad in [
        "spBv1.0/plant/NDATA",
        "spBv1.0/plant/NDATA/gw1/dev",
        "spBv1.0/plant/DDATA/gw1",
        "spBv1.0/plant/XDATA/gw1",
        "spAv1.0/plant/NDATA/gw1",
        "spBv1.0//NDATA/gw1",
        "spBv1.0/plant/DDATA/gw1/d/x",
    ] {
        assert!(parse_topic(bad).is_err(), "{bad}");
    }
    assert_eq!(ncmd_topic("plant", "gw1"), "spBv1.0/plant/NCMD/gw1");
}

#[test]
fn birth_then_data_by_alias() {
    let mut host = SparkplugHost::new(config());
    let out = host.handle(NBIRTH, &nbirth(0, 3)).unwrap();
    assert_eq!(out.rebirth, None);
    assert_eq!(out.values.len(), 2);
    assert_eq!(out.values[0].channel, "main");
    assert_eq!(out.values[0].value, 123.456);
    assert_eq!(out.values[0].ts_ms, Some(1_700_000_000_000));
    assert_eq!(out.values[1].channel, "Meter/Power");
    assert_eq!(out.values[1].value, 1.5);
    assert_eq!(out.unmapped, 2, "bdSeq and the firmware string");

    // DATA carries aliases only; -250 W as an Int32 in two's complement.
    let data = ndata(
        1,
        vec![
            by_alias(2, MetricValue::Int((-250i32) as u32)),
            Metric {
                timestamp: Some(1_700_000_059_000),
                ..by_alias(1, MetricValue::Double(123_500.0))
            },
        ],
    );
    let out = host.handle(NDATA, &data).unwrap();
    assert_eq!(out.rebirth, None);
    assert_eq!(out.values[0].value, -0.25);
    assert_eq!(out.values[0].ts_ms, Some(1_700_000_060_000));
    assert_eq!(out.values[1].value, 123.5);
    assert_eq!(out.values[1].ts_ms, Some(1_700_000_059_000));
}

#[test]
fn data_before_birth_asks_for_a_rebirth() {
    let mut host = SparkplugHost::new(config());
    let out = host
        .handle(NDATA, &ndata(5, vec![by_alias(2, MetricValue::Int(1))]))
        .unwrap();
    assert!(out.values.is_empty());
    let r = out.rebirth.unwrap();
    assert_eq!(r.reason, RebirthReason::UnknownNode);
    assert_eq!(r.topic, "spBv1.0/plant/NCMD/gw1");

    let cmd = Payload::decode(&rebirth_payload(42)).unwrap();
    assert_eq!(cmd.timestamp, Some(42));
    assert_eq!(cmd.metrics.len(), 1);
    assert_eq!(cmd.metrics[0].name.as_deref(), Some(REBIRTH_METRIC));
    assert_eq!(cmd.metrics[0].datatype, Some(datatype::BOOLEAN));
    assert_eq!(cmd.metrics[0].value, MetricValue::Boolean(true));
}

#[test]
fn seq_gaps_wraps_and_missing_seq() {
    let mut host = SparkplugHost::new(config());
    host.handle(NBIRTH, &nbirth(0, 1)).unwrap();
    let mut seq = 0u64;
    for _ in 0..300 {
        seq = (seq + 1) % 256;
        let out = host
            .handle(NDATA, &ndata(seq, vec![by_alias(2, MetricValue::Int(1))]))
            .unwrap();
        assert_eq!(out.rebirth, None, "seq {seq}");
    }
    let out = host
        .handle(
            NDATA,
            &ndata((seq + 2) % 256, vec![by_alias(2, MetricValue::Int(7))]),
        )
        .unwrap();
    assert!(matches!(
        out.rebirth,
        Some(Rebirth {
            reason: RebirthReason::SeqGap { .. },
            ..
        })
    ));
    // The data of the message after the gap is still read: the aliases are still good.
    assert_eq!(out.values[0].value, 0.007);
    // And the count continues from there.
    let out = host
        .handle(
            NDATA,
            &ndata((seq + 3) % 256, vec![by_alias(2, MetricValue::Int(1))]),
        )
        .unwrap();
    assert_eq!(out.rebirth, None);
    let mut p = Payload::decode(&ndata(0, vec![])).unwrap();
    p.seq = None;
    let out = host.handle(NDATA, &p.encode()).unwrap();
    assert_eq!(out.rebirth.unwrap().reason, RebirthReason::MissingSeq);
}

#[test]
fn devices_aliases_and_deaths() {
    let mut host = SparkplugHost::new(config());
    host.handle(NBIRTH, &nbirth(0, 9)).unwrap();
    let dbirth = ndata(
        1,
        vec![
            metric(
                "Meter/Power",
                10,
                datatype::FLOAT,
                MetricValue::Float(2000.0),
            ),
            metric(
                "Meter/Power Factor",
                11,
                datatype::INT16,
                MetricValue::Int(0xFC18),
            ),
        ],
    );
    let out = host.handle("spBv1.0/plant/DBIRTH/gw1/m1", &dbirth).unwrap();
    assert_eq!(out.device.as_deref(), Some("m1"));
    assert_eq!(out.values[0].value, 2.0);
    // 0xFC18 as Int16 is -1000; scale 0.001.
    assert_eq!(out.values[1].value, -1.0);

    let out = host
        .handle(
            "spBv1.0/plant/DDATA/gw1/m2",
            &ndata(2, vec![by_alias(10, MetricValue::Float(1.0))]),
        )
        .unwrap();
    assert_eq!(
        out.rebirth.unwrap().reason,
        RebirthReason::UnknownDevice("m2".into())
    );

    let out = host
        .handle(
            "spBv1.0/plant/DDATA/gw1/m1",
            &ndata(
                3,
                vec![
                    by_alias(99, MetricValue::Float(1.0)),
                    Metric {
                        is_null: true,
                        ..by_alias(10, MetricValue::None)
                    },
                    by_alias(11, MetricValue::Boolean(true)),
                ],
            ),
        )
        .unwrap();
    assert_eq!(out.rebirth.unwrap().reason, RebirthReason::UnknownAlias(99));
    assert!(out.values.is_empty());
    assert_eq!(out.problems.len(), 3, "{:?}", out.problems);

    host.handle("spBv1.0/plant/DDEATH/gw1/m1", &ndata(4, vec![]))
        .unwrap();
    let out = host
        .handle(
            "spBv1.0/plant/DDATA/gw1/m1",
            &ndata(5, vec![by_alias(10, MetricValue::Float(1.0))]),
        )
        .unwrap();
    assert!(out.rebirth.is_some());

    // An NDEATH with an older bdSeq is a stale will and is ignored.
    let death = |bd| {
        Payload {
            metrics: vec![metric("bdSeq", 0, datatype::INT64, MetricValue::Long(bd))],
            ..Payload::default()
        }
        .encode()
    };
    host.handle("spBv1.0/plant/NDEATH/gw1", &death(8)).unwrap();
    assert_eq!(host.node_count(), 1);
    host.handle("spBv1.0/plant/NDEATH/gw1", &death(9)).unwrap();
    assert_eq!(host.node_count(), 0);
}

#[test]
fn malformed_payloads_name_the_offset_and_commands_are_ignored() {
    let mut host = SparkplugHost::new(config());
    let e = host.handle(NBIRTH, &[0x12, 0x05, 0x0a]).unwrap_err();
    assert!(matches!(e, DecodeError::Bytes { offset: 2, .. }), "{e}");
    // A name that is not UTF-8, inside a metric: the offset points into the payload.
    let e = host
        .handle(NBIRTH, &[0x12, 0x03, 0x0a, 0x01, 0xff])
        .unwrap_err();
    assert!(matches!(e, DecodeError::Bytes { offset: 4, .. }), "{e}");
    let out = host
        .handle("spBv1.0/plant/NCMD/gw1", b"not protobuf")
        .unwrap();
    assert!(out.values.is_empty() && out.rebirth.is_none());
    let out = host
        .handle("spBv1.0/STATE/scada", br#"{"online":true}"#)
        .unwrap();
    assert_eq!(out.kind, MessageType::State);
}

#[test]
fn capacity_and_config_validation() {
    let mut host = SparkplugHost::with_max_nodes(config(), 1);
    host.handle(NBIRTH, &nbirth(0, 1)).unwrap();
    let e = host
        .handle("spBv1.0/plant/NBIRTH/gw2", &nbirth(0, 1))
        .unwrap_err();
    assert!(matches!(e, DecodeError::Capacity { .. }), "{e}");
    host.forget_node("plant", "gw1");
    host.handle("spBv1.0/plant/NBIRTH/gw2", &nbirth(0, 1))
        .unwrap();

    let m = |name: &str, unit: Unit, scale: f64| MetricMapping {
        name: name.into(),
        quantity: Quantity::EnergyImport,
        unit,
        scale,
        channel: None,
        basis: None,
    };
    assert!(matches!(
        SparkplugConfig::new(vec![m("a", Unit::Watt, 1.0)]),
        Err(SparkplugConfigError::Unit { .. })
    ));
    assert!(matches!(
        SparkplugConfig::new(vec![m("a", Unit::WattHour, 0.0)]),
        Err(SparkplugConfigError::Scale { .. })
    ));
    assert!(matches!(
        SparkplugConfig::new(vec![
            m("a", Unit::WattHour, 1.0),
            m("a", Unit::KilowattHour, 1.0)
        ]),
        Err(SparkplugConfigError::Duplicate(_))
    ));
}

#[test]
fn signed_integers_by_declared_width() {
    let m = |v: MetricValue| Metric {
        value: v,
        ..Metric::default()
    };
    use datatype::*;
    // Width-sized and sign-extended encodings of -1 both read as -1.
    assert_eq!(m(MetricValue::Int(0xFF)).number(Some(INT8)), Ok(-1.0));
    assert_eq!(m(MetricValue::Int(u32::MAX)).number(Some(INT8)), Ok(-1.0));
    assert_eq!(m(MetricValue::Int(0xFFFF)).number(Some(INT16)), Ok(-1.0));
    assert_eq!(m(MetricValue::Int(u32::MAX)).number(Some(INT32)), Ok(-1.0));
    assert_eq!(
        m(MetricValue::Int(u32::MAX)).number(Some(UINT32)),
        Ok(4_294_967_295.0)
    );
    assert_eq!(m(MetricValue::Long(u64::MAX)).number(Some(INT64)), Ok(-1.0));
    assert_eq!(m(MetricValue::Long(u64::MAX)).number(Some(INT16)), Ok(-1.0));
    assert_eq!(m(MetricValue::Long(7)).number(Some(UINT64)), Ok(7.0));
    assert!(m(MetricValue::Float(f32::NAN)).number(Some(FLOAT)).is_err());
    assert!(m(MetricValue::None).number(None).is_err());
}

fn metric_value() -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        Just(MetricValue::None),
        any::<u32>().prop_map(MetricValue::Int),
        any::<u64>().prop_map(MetricValue::Long),
        proptest::num::f32::NORMAL.prop_map(MetricValue::Float),
        proptest::num::f64::NORMAL.prop_map(MetricValue::Double),
        any::<bool>().prop_map(MetricValue::Boolean),
        ".{0,12}".prop_map(MetricValue::String),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(MetricValue::Bytes),
    ]
}

fn any_metric() -> impl Strategy<Value = Metric> {
    (
        proptest::option::of(".{0,16}"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(0u32..30),
        any::<(bool, bool, bool)>(),
        metric_value(),
    )
        .prop_map(|(name, alias, timestamp, datatype, flags, value)| Metric {
            name,
            alias,
            timestamp,
            datatype,
            is_historical: flags.0,
            is_transient: flags.1,
            is_null: flags.2,
            value,
        })
}

fn any_payload() -> impl Strategy<Value = Payload> {
    (
        proptest::option::of(any::<u64>()),
        prop::collection::vec(any_metric(), 0..6),
        proptest::option::of(any::<u64>()),
        proptest::option::of(".{0,12}"),
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(|(timestamp, metrics, seq, uuid, body)| Payload {
            timestamp,
            metrics,
            seq,
            uuid,
            body,
        })
}

/// A message the model-based test sends: a BIRTH, or DATA with a sequence number.
#[derive(Debug, Clone)]
enum Step {
    Birth,
    Data(u64),
    NextData,
}

proptest! {
    #[test]
    fn payloads_round_trip(p in any_payload()) {
        prop_assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), kind in 0usize..6) {
        let _ = Payload::decode(&bytes);
        let mut host = SparkplugHost::new(config());
        let topic = ["spBv1.0/g/NBIRTH/e", "spBv1.0/g/NDATA/e", "spBv1.0/g/DBIRTH/e/d",
                     "spBv1.0/g/DDATA/e/d", "spBv1.0/g/NDEATH/e", "spBv1.0/g/DDEATH/e/d"][kind];
        let _ = host.handle(topic, &bytes);
        let _ = host.handle("spBv1.0/g/NBIRTH/e", &nbirth(0, 0));
        let _ = host.handle(topic, &bytes);
    }

    /// Arbitrary but well-formed payloads through every message type never panic.
    #[test]
    fn arbitrary_payloads_never_panic(ps in prop::collection::vec((any_payload(), 0usize..6), 0..8)) {
        let mut host = SparkplugHost::new(config());
        for (p, kind) in ps {
            let topic = ["spBv1.0/plant/NBIRTH/gw1", "spBv1.0/plant/NDATA/gw1", "spBv1.0/plant/DBIRTH/gw1/d",
                         "spBv1.0/plant/DDATA/gw1/d", "spBv1.0/plant/NDEATH/gw1", "spBv1.0/plant/DDEATH/gw1/d"][kind];
            let _ = host.handle(topic, &p.encode());
        }
    }

    /// Model: a rebirth is requested exactly when no birth was seen or seq is not last + 1.
    #[test]
    fn seq_checking_follows_the_model(steps in prop::collection::vec(prop_oneof![
        1 => Just(Step::Birth),
        1 => (0u64..300).prop_map(Step::Data),
        6 => Just(Step::NextData),
    ], 1..60)) {
        let mut host = SparkplugHost::new(config());
        let mut last: Option<u8> = None;
        for step in steps {
            match step {
                Step::Birth => {
                    let out = host.handle(NBIRTH, &nbirth(0, 0)).unwrap();
                    prop_assert!(out.rebirth.is_none());
                    last = Some(0);
                }
                Step::Data(_) | Step::NextData => {
                    let seq = match step {
                        Step::Data(s) => s,
                        _ => u64::from(last.unwrap_or(0).wrapping_add(1)),
                    };
                    let out = host.handle(NDATA, &ndata(seq, vec![by_alias(2, MetricValue::Int(5))])).unwrap();
                    let expect_rebirth = match last {
                        None => true,
                        Some(l) => seq != u64::from(l.wrapping_add(1)),
                    };
                    prop_assert_eq!(out.rebirth.is_some(), expect_rebirth);
                    prop_assert_eq!(out.values.len(), usize::from(last.is_some()));
                    if last.is_some()
                        && let Ok(s) = u8::try_from(seq)
                    {
                        last = Some(s);
                    }
                }
            }
        }
    }
}
