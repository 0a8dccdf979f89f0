//! The API held to its document: schemathesis (PyPI, in the test venv) generates requests from
//! `GET /api/v1/openapi.json` — valid ones and, in its coverage phase, ones just outside the
//! schema — against the server `jieneng serve` composes, over a month of the sample data, and
//! checks every answer: no 5xx, a status the document lists for the operation, the documented
//! content type, and a body valid against the documented schema. Batches are posted with a
//! gateway token, reads with an admin key (scopes are the access matrix's job).
//!
//! The seed is fixed so a failure reproduces; `JIENENG_SCHEMATHESIS_SEED` and
//! `JIENENG_SCHEMATHESIS_EXAMPLES` explore further.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use http_contract::token_hash;
use jieneng::config::ServeConfig;
use query::sample;

const GATEWAY_TOKEN: &str = "contract-test-gateway-token";
const ADMIN_KEY: &str = "contract-test-admin-key-0001";

fn config_text(data_dir: &std::path::Path) -> String {
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[mqtt]\nenabled = false\n\n\
         [[gateway]]\nid = \"gw-1\"\ntoken_sha256 = \"{}\"\n\n\
         [[api_key]]\nname = \"contract\"\nkey_sha256 = \"{}\"\nrole = \"admin\"\n\n",
        data_dir.display().to_string(),
        token_hash(GATEWAY_TOKEN),
        token_hash(ADMIN_KEY)
    );
    for a in sample::accounts() {
        t.push_str(&format!(
            "[[account]]\ncode = \"{}\"\nname_zh = \"{}\"\ninstitution_type = \"{}\"\n\n",
            a.code,
            a.name_zh,
            a.institution_type.name()
        ));
    }
    t
}

/// Runs schemathesis over the operations `selection` picks, with `secret` as the bearer.
fn schemathesis(
    base: &str,
    selection: &[&str],
    secret: &str,
    cwd: &std::path::Path,
) -> (bool, String) {
    let bin = jieneng_tests::python().with_file_name("schemathesis");
    let seed = std::env::var("JIENENG_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261208".into());
    let examples = std::env::var("JIENENG_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());
    let out = Command::new(&bin)
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(selection)
        .args(["--header", &format!("Authorization: Bearer {secret}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "2",
            "--no-color",
        ])
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run ./scripts/test to install it)", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_valid_against_the_openapi_document() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let from = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let to = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
    sample::write_days(dir.path(), from, to).unwrap();
    let config = ServeConfig::parse("contract.toml", &config_text(dir.path())).unwrap();
    let server = jieneng::serve::start(&config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let cwd = tempfile::tempdir().unwrap();
    let runs = [
        (vec!["--include-path", "/api/v1/batches"], GATEWAY_TOKEN),
        (vec!["--exclude-path", "/api/v1/batches"], ADMIN_KEY),
    ];
    let mut failed = Vec::new();
    for (selection, secret) in runs {
        let (base, cwd) = (base.clone(), cwd.path().to_path_buf());
        let (ok, text) =
            tokio::task::spawn_blocking(move || schemathesis(&base, &selection, secret, &cwd))
                .await
                .unwrap();
        eprintln!("{text}");
        if !ok {
            failed.push(text);
        }
    }
    server.stop().await.unwrap();
    assert!(
        failed.is_empty(),
        "schemathesis found answers outside the document:\n{}",
        failed.join("\n")
    );
}
