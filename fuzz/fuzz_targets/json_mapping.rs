//! Any bytes through a JSON mapping with nested pointers, a string-or-number field and a
//! timestamp: values or an error, never a panic.
#![no_main]

use std::sync::OnceLock;

use firmware_bridge::JsonMapping;
use libfuzzer_sys::fuzz_target;

fn mapping() -> &'static JsonMapping {
    static M: OnceLock<JsonMapping> = OnceLock::new();
    M.get_or_init(|| {
        serde_json::from_str(
            r#"{"fields":[
                {"pointer":"/data/energy_wh","quantity":"energy_import","unit":"Wh"},
                {"pointer":"/data/p","channel":"l1","quantity":"power_active","unit":"W","scale":0.1},
                {"pointer":"/a~1b/0","quantity":"voltage","unit":"V","optional":true}],
              "timestamp":{"pointer":"/ts","format":"epoch_ms","optional":true}}"#,
        )
        .expect("the fuzz target's mapping is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = mapping().decode("site/meter", data) {
        assert!(values.iter().all(|v| v.value.is_finite()));
    }
});
