//! Proptest strategies shared by the decoders' property tests: arbitrary JSON, and JSON numbers.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Any JSON number serde_json can hold, integers and finite floats alike.
pub fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::num::f64::NORMAL
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        (-1e6f64..1e6).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// Arbitrary JSON documents, biased towards keys the decoders look for so that the interesting
/// branches are reached, not just the "not an object" ones.
pub fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        proptest::sample::select(keys).prop_map(str::to_owned),
        "[a-zA-Z_:/~0-9]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
