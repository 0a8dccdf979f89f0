//! The OpenAPI document against the routes of the server `jieneng serve` composes: ingest's batch
//! API and the read API. Here, not in either crate, because the document covers both.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use api::OPENAPI;

/// Every `.route("…")` literal in the modules that build the server's API routers. The dashboard
/// page (`api::assets`) is not part of the API and not in the document.
fn routed_paths() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for file in ["ingest/src/http.rs", "api/src/lib.rs"] {
        let src = std::fs::read_to_string(root.join(file)).unwrap();
        for part in src.split(".route(\"").skip(1) {
            if let Some(end) = part.find('"') {
                out.push(part[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_in_openapi() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let routed = routed_paths();
    assert!(routed.len() >= 7, "{routed:?}");
    for p in &routed {
        assert!(
            paths.contains_key(p),
            "route {p} is missing from openapi.json"
        );
    }
    // And nothing documented that is not routed.
    for p in paths.keys() {
        assert!(
            routed.contains(p),
            "openapi.json documents {p}, which has no route"
        );
    }
    // Every $ref resolves.
    let text = OPENAPI;
    for part in text.split("\"$ref\": \"#/").skip(1) {
        let target = &part[..part.find('"').unwrap()];
        let mut node = &doc;
        for seg in target.split('/') {
            node = &node[seg];
        }
        assert!(!node.is_null(), "$ref #/{target} does not resolve");
    }
}
