//! Any bytes on a Zigbee2MQTT device topic: values or an error, never a panic.
#![no_main]

use firmware_bridge::zigbee2mqtt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = zigbee2mqtt::decode("zigbee2mqtt/plug", data, "zigbee2mqtt") {
        assert!(values.iter().all(|v| v.value.is_finite()));
    }
});
