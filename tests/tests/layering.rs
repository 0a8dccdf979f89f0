//! The layering of docs/ARCHITECTURE.md, checked: which crate may depend on which (over
//! `cargo metadata`), and no module of a crate depends on another that depends back on it
//! (over the sources). A change that breaks a rule fails here, naming the path that does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The service crates: none may depend on another (normal or build dependencies; a dev
/// dependency for tests that read back what a service wrote is allowed). The read API sits on
/// `query` (its one service dependency) and must not reach the write path or the edge.
const SERVICES: [&str; 3] = ["gateway", "ingest", "query"];
const READ_API: &str = "api";

/// The workspace's crates, by layer: a crate may depend on crates of lower layers only.
const LAYERS: [&[&str]; 5] = [
    &["reading-model"],
    &[
        "device-profiles",
        "firmware-bridge",
        "wire",
        "storage",
        "http-contract",
        "test-support",
    ],
    &["gateway", "ingest", "query"],
    &["api"],
    &["jieneng", "jieneng-benches", "jieneng-tests"],
];

/// Packages the edge gateway must never link: it runs on small boxes.
const NOT_ON_THE_EDGE: [&str; 4] = ["datafusion", "parquet", "arrow", "datafusion-common"];

/// A dependency edge: the package id depended on, and the kinds (None = normal, "dev", "build").
type Edge = (String, Vec<Option<String>>);

struct Graph {
    /// package id → name.
    names: BTreeMap<String, String>,
    /// package id → (dependency id, kinds: None = normal, "dev", "build").
    deps: BTreeMap<String, Vec<Edge>>,
    workspace: BTreeSet<String>,
}

fn metadata() -> Graph {
    let root = jieneng_tests::root();
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let workspace = v["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let deps = v["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let kinds = d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k["kind"].as_str().map(str::to_owned))
                        .collect();
                    (d["pkg"].as_str().unwrap().to_owned(), kinds)
                })
                .collect();
            (n["id"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    Graph {
        names,
        deps,
        workspace,
    }
}

impl Graph {
    fn id(&self, name: &str) -> &str {
        self.workspace
            .iter()
            .find(|id| self.names[*id] == name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"))
    }

    /// Direct dependencies of `id` that are not only dev-dependencies.
    fn linked(&self, id: &str) -> Vec<&str> {
        self.deps[id]
            .iter()
            .filter(|(_, kinds)| kinds.iter().any(|k| k.as_deref() != Some("dev")))
            .map(|(d, _)| d.as_str())
            .collect()
    }

    /// Every package `name` links, with the chain that pulls each in.
    fn linked_closure(&self, name: &str) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let start = self.id(name).to_owned();
        let mut stack = vec![(start, vec![name.to_owned()])];
        while let Some((id, chain)) = stack.pop() {
            for d in self.linked(&id) {
                let n = self.names[d].clone();
                if seen.contains_key(&n) {
                    continue;
                }
                let mut c = chain.clone();
                c.push(n.clone());
                seen.insert(n, c.clone());
                stack.push((d.to_owned(), c));
            }
        }
        seen
    }
}

#[test]
fn the_gateway_links_no_datafusion_parquet_or_full_arrow() {
    let g = metadata();
    let linked = g.linked_closure("gateway");
    for banned in NOT_ON_THE_EDGE {
        if let Some(chain) = linked.get(banned) {
            panic!("the gateway links {banned}: {}", chain.join(" → "));
        }
    }
    // The Arrow IPC codec it does use is there, so the check above looks at real names.
    assert!(linked.contains_key("arrow-ipc"), "{:?}", linked.keys());
}

#[test]
fn service_crates_do_not_depend_on_each_other() {
    let g = metadata();
    for s in SERVICES {
        let linked = g.linked_closure(s);
        for other in SERVICES.iter().chain([&READ_API]).filter(|o| **o != s) {
            if let Some(chain) = linked.get(*other) {
                panic!("{s} depends on {other}: {}", chain.join(" → "));
            }
        }
    }
    let api = g.linked_closure(READ_API);
    for other in ["gateway", "ingest"] {
        if let Some(chain) = api.get(other) {
            panic!("{READ_API} depends on {other}: {}", chain.join(" → "));
        }
    }
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let g = metadata();
    let layer = |name: &str| LAYERS.iter().position(|l| l.contains(&name));
    for id in &g.workspace {
        let name = &g.names[id];
        let Some(mine) = layer(name) else {
            panic!("{name} is in no layer of this test: add it where docs/ARCHITECTURE.md puts it");
        };
        for d in g.linked(id) {
            let dep = &g.names[d];
            if let Some(theirs) = layer(dep) {
                assert!(
                    theirs < mine,
                    "{name} (layer {mine}) depends on {dep} (layer {theirs})"
                );
            }
        }
    }
}

#[test]
fn the_shared_model_does_no_io_and_query_knows_no_http() {
    let g = metadata();
    let model = g.linked_closure("reading-model");
    for io in ["tokio", "mio", "reqwest", "axum"] {
        assert!(!model.contains_key(io), "reading-model links {io}");
    }
    let query = g.linked_closure("query");
    for http in ["axum", "hyper", "reqwest"] {
        if let Some(chain) = query.get(http) {
            panic!("query links {http}: {}", chain.join(" → "));
        }
    }
    for pure in ["device-profiles", "firmware-bridge", "wire"] {
        let linked = g.linked_closure(pure);
        assert!(!linked.contains_key("tokio"), "{pure} links tokio");
    }
}

/// The module of a source file: `src/source/bus.rs` → `source::bus`, `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => Some(String::new()),
        [first, ..] if first == "bin" => None,
        _ => {
            let mut parts = parts;
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            Some(parts.join("::"))
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its `#[cfg(test)]` module, comments and string literals' contents
/// mattering little: test modules may reach anywhere.
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .or_else(|| text.find("#[cfg(test)]\npub(crate) mod tests"))
        .map_or(text, |at| &text[..at])
}

/// Edges between the modules of one crate: `a` uses a path into `b`, neither inside the other.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("tests.rs"))
        .filter_map(|f| module_of(src, f).map(|m| (m, f.clone())))
        .collect();
    let known: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let resolve = |path: &str| -> Option<String> {
        // The longest known module that is a prefix of `path`.
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len())
            .rev()
            .map(|n| segs[..n].join("::"))
            .find(|m| known.contains(m.as_str()))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let code: String = non_test_code(&text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets = BTreeSet::new();
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            for (at, _) in code.match_indices(prefix) {
                // `self::crate::` and `xcrate::` are not paths from the root.
                let before = code[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for path in use_paths(&code[at + prefix.len()..]) {
                    let full = if base.is_empty() {
                        path
                    } else {
                        format!("{base}::{path}")
                    };
                    if let Some(t) = resolve(&full) {
                        targets.insert(t);
                    }
                }
            }
        }
        let inside = |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}::"));
        for t in targets {
            if !inside(module, &t) && !inside(&t, module) {
                edges.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    edges
}

/// The paths a `use` tree (or a plain path) starting at `text` names: `a::b::C` → `a::b::C`;
/// `{a::B, c::{d, e}}` → `a::B`, `c::d`, `c::e`.
fn use_paths(text: &str) -> Vec<String> {
    fn tree(chars: &[char], i: &mut usize, prefix: &str, out: &mut Vec<String>) {
        let mut path = prefix.to_owned();
        loop {
            if chars.get(*i) == Some(&'{') {
                *i += 1;
                loop {
                    while chars
                        .get(*i)
                        .is_some_and(|c| c.is_whitespace() || *c == ',')
                    {
                        *i += 1;
                    }
                    if chars.get(*i).is_none_or(|c| *c == '}') {
                        *i += 1;
                        return;
                    }
                    let before = *i;
                    tree(chars, i, &path, out);
                    // Skip `as name` up to the next item.
                    while chars.get(*i).is_some_and(|c| *c != ',' && *c != '}') {
                        *i += 1;
                    }
                    if *i == before {
                        *i += 1;
                    }
                }
            }
            let start = *i;
            while chars
                .get(*i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                *i += 1;
            }
            let seg: String = chars[start..*i].iter().collect();
            if !seg.is_empty() {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(&seg);
            }
            if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            if !path.is_empty() {
                out.push(path);
            }
            return;
        }
    }
    let chars: Vec<char> = text.chars().take(4_000).collect();
    let mut out = Vec::new();
    tree(&chars, &mut 0, "", &mut out);
    out
}

#[test]
fn use_trees_name_their_paths() {
    assert_eq!(use_paths("config::Device;"), ["config::Device"]);
    assert_eq!(
        use_paths("{a::B, c::{d, e as f}};"),
        ["a::B", "c::d", "c::e"]
    );
    assert_eq!(
        use_paths("report::period::local_ts_sql(x)"),
        ["report::period::local_ts_sql"]
    );
}

/// A cycle in `edges`, as the modules along it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(c) = visit(m, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_passes_a_tree() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            e.entry((*a).into()).or_default().insert((*b).into());
        }
        e
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&edges(&[
            ("config", "normalize"),
            ("normalize", "forward"),
            ("forward", "config")
        ])),
        Some(vec![
            "config".into(),
            "normalize".into(),
            "forward".into(),
            "config".into()
        ])
    );
}

#[test]
fn no_crate_has_a_module_cycle() {
    let root = jieneng_tests::root();
    let g = metadata();
    let mut checked = 0;
    for id in &g.workspace {
        let name = &g.names[id];
        let dir = match name.as_str() {
            "jieneng-tests" => root.join("tests"),
            "jieneng-benches" => root.join("benches"),
            n => root.join(n),
        };
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let edges = module_edges(&src);
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{name}: module cycle {}", cycle.join(" → "));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} crates checked");
}
