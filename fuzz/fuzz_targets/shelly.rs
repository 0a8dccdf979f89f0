//! A sequence of messages (split at 0x00) on Shelly topics through one `ShellyState`: no panic,
//! finite values, bounded state.
#![no_main]

use firmware_bridge::ShellyState;
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 5] = [
    "shelly1/events/rpc",
    "shelly1/status/switch:0",
    "shelly1/status/em:0",
    "shelly1/online",
    "shelly2/status/emdata:0",
];

fuzz_target!(|data: &[u8]| {
    let mut state = ShellyState::with_max_devices(2);
    for chunk in data.split(|b| *b == 0) {
        let Some((&sel, payload)) = chunk.split_first() else {
            continue;
        };
        let topic = TOPICS[usize::from(sel) % TOPICS.len()];
        let result = if sel >= 0xf0 {
            state.apply_response("shelly1", "client/rpc", payload)
        } else {
            state.apply(topic, payload)
        };
        if let Ok(u) = result {
            assert!(u.values.iter().all(|v| v.value.is_finite()));
        }
        assert!(state.device_count() <= 2);
    }
});
