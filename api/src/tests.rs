use super::*;

/// Every `.route("…")` literal in the modules that build the server's router.
fn routed_paths() -> Vec<String> {
    let mut out = Vec::new();
    for src in [
        include_str!("../../ingest/src/http.rs"),
        include_str!("lib.rs"),
    ] {
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
