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

/// The batch schema's enums are the codes the decoder accepts, so a client generated from the
/// document sends nothing the server refuses for a name and misses no name it accepts.
#[test]
fn the_batch_schema_lists_every_quantity_unit_and_quality() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let reading = &doc["components"]["schemas"]["Reading"]["properties"];
    let listed = |field: &str| -> Vec<String> {
        reading[field]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("Reading.{field} has no enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let quantities: Vec<String> = reading_model::Quantity::all()
        .map(|q| q.name().to_owned())
        .collect();
    let units: Vec<String> = reading_model::Unit::all()
        .map(|u| u.symbol().to_owned())
        .collect();
    let qualities: Vec<String> = reading_model::Quality::all()
        .map(|q| q.name().to_owned())
        .collect();
    assert_eq!(listed("quantity"), quantities);
    assert_eq!(listed("unit"), units);
    assert_eq!(listed("quality"), qualities);
    let categories: Vec<String> = (1..=13).map(|c| format!("{c:02}")).collect();
    assert_eq!(listed("category"), categories);
    for c in &categories {
        assert!(reading_model::Category::parse(c).is_ok(), "category {c}");
    }
}
