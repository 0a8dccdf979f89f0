//! Any bytes on a Tasmota SENSOR or STATUS10 topic: decoding returns values or an error, never
//! panics, and every value is finite.
#![no_main]

use chrono::FixedOffset;
use firmware_bridge::tasmota;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let topic = if sel & 1 == 0 {
        "tele/plug/SENSOR"
    } else {
        "stat/plug/STATUS10"
    };
    let offset = FixedOffset::east_opt(i32::from(sel >> 1) * 900 - 50_400)
        .unwrap_or(FixedOffset::east_opt(0).unwrap());
    let mut out = Vec::new();
    match tasmota::decode_into(topic, payload, offset, &mut out) {
        Ok(n) => assert_eq!(n, out.len()),
        Err(_) => assert!(out.is_empty(), "out is left as it was on error"),
    }
    assert!(out.iter().all(|v| v.value.is_finite()));
});
