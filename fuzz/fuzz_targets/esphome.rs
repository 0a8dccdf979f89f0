//! Discovery configs and states (split at 0x00) through one `EsphomeRegistry`: no panic, finite
//! values, bounded registry.
#![no_main]

use firmware_bridge::EsphomeRegistry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reg = EsphomeRegistry::with_max_sensors(8);
    for chunk in data.split(|b| *b == 0) {
        let Some((&sel, payload)) = chunk.split_first() else {
            continue;
        };
        if sel & 1 == 0 {
            let topic = if sel & 2 == 0 {
                "homeassistant/sensor/house/total_energy/config"
            } else {
                "homeassistant/sensor/house/power/config"
            };
            let _ = reg.learn(topic, payload);
        } else {
            let topic = if sel & 2 == 0 {
                "house/sensor/total_energy/state"
            } else {
                "house/sensor/power/state"
            };
            if let Ok(Some(v)) = reg.decode(topic, payload) {
                assert!(v.value.is_finite());
            }
        }
        assert!(reg.len() <= 8);
    }
});
