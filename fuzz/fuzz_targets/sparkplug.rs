//! Protobuf payloads (split at a 4-byte marker) on Sparkplug topics through one host: no panic,
//! finite values, bounded node table; and the wire reader alone on the whole input.
#![no_main]

use firmware_bridge::sparkplug::{MetricMapping, Payload, SparkplugConfig};
use firmware_bridge::SparkplugHost;
use libfuzzer_sys::fuzz_target;
use reading_model::{Quantity, Unit};

const TOPICS: [&str; 6] = [
    "spBv1.0/g/NBIRTH/e",
    "spBv1.0/g/NDATA/e",
    "spBv1.0/g/DBIRTH/e/d",
    "spBv1.0/g/DDATA/e/d",
    "spBv1.0/g/NDEATH/e",
    "spBv1.0/g/DDEATH/e/d",
];

fuzz_target!(|data: &[u8]| {
    let _ = Payload::decode(data);
    let config = SparkplugConfig::new(vec![MetricMapping {
        name: "Energy".into(),
        quantity: Quantity::EnergyImport,
        unit: Unit::KilowattHour,
        scale: 1.0,
        channel: None,
        basis: None,
    }])
    .expect("the fuzz target's config is valid");
    let mut host = SparkplugHost::with_max_nodes(config, 2);
    let mut rest = data;
    while let Some((&sel, tail)) = rest.split_first() {
        let end = tail
            .windows(4)
            .position(|w| w == b"\xffNX\xff")
            .unwrap_or(tail.len());
        let (payload, next) = tail.split_at(end);
        rest = next.get(4..).unwrap_or(&[]);
        if let Ok(o) = host.handle(TOPICS[usize::from(sel) % TOPICS.len()], payload) {
            assert!(o.values.iter().all(|v| v.value.is_finite()));
        }
        assert!(host.node_count() <= 2);
    }
});
