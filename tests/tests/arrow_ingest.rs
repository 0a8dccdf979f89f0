//! The Arrow IPC batch API with a real third-party client: a pyarrow peer builds wire-v1
//! streams (dictionary strings, ZSTD buffer compression, gzip content coding) and POSTs them
//! with urllib to an in-process ingest server; pyarrow then reads the Parquet back and every
//! acknowledged row is there exactly as sent. The peer also sends what must be refused —
//! malformed, cut short, unauthenticated, another gateway's, unsupported, oversize and zip
//! bombs — and each gets its status and a JSON error naming the problem, with nothing stored.

use ingest::{IngestConfig, Server};
use jieneng_tests::run_json;
use reading_model::GatewayId;
use serde_json::Value;

const TOKEN: &str = "arrow-ingest-test-token-01";
const MAX_BODY: usize = 256 * 1024;

fn error_of(case: &Value) -> String {
    case["body"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_client_batches_round_trip_and_bad_bodies_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let serve = IngestConfig {
        flush_interval: 3600.0,
        flush_rows: 1_000_000,
        max_body_bytes: MAX_BODY,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-py")?, TOKEN);
    let server = Server::start(&serve).await?;
    let base = format!("http://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        run_json("post_arrow.py", &[&base, TOKEN, &MAX_BODY.to_string()])
    })
    .await??;
    server.stop().await?;
    let cases = &out["cases"];

    assert_eq!(cases["stored"]["status"], 200, "{}", cases["stored"]);
    assert_eq!(cases["stored"]["body"]["stored"], 40);
    assert_eq!(cases["stored"]["body"]["duplicate"], false);
    assert_eq!(cases["retry"]["status"], 200, "{}", cases["retry"]);
    assert_eq!(cases["retry"]["body"]["duplicate"], true);
    assert_eq!(cases["retry"]["body"]["stored"], 0);
    assert_eq!(cases["gzip"]["status"], 200, "{}", cases["gzip"]);
    assert_eq!(cases["gzip"]["body"]["stored"], 24);

    // (case, status, reason, words the message must contain)
    let refused: &[(&str, u64, &str, &[&str])] = &[
        (
            "invalid",
            422,
            "invalid",
            &["readings[17].account", "11010A001"],
        ),
        ("malformed", 400, "malformed", &["Arrow IPC stream"]),
        ("truncated", 400, "malformed", &["end-of-stream"]),
        (
            "wrong_token",
            401,
            "unauthenticated",
            &["unknown gateway token"],
        ),
        ("no_token", 401, "unauthenticated", &["Authorization"]),
        (
            "wrong_gateway",
            403,
            "wrong_gateway",
            &["gw-py", "gw-other"],
        ),
        (
            "unsupported_type",
            415,
            "unsupported_media_type",
            &["text/csv"],
        ),
        ("oversize", 413, "too_large", &["max_body_bytes", "262144"]),
        ("gzip_bomb", 413, "too_large", &["decompressed", "2097152"]),
        ("zstd_bomb", 413, "too_large", &["decompressed", "2097152"]),
    ];
    for (case, status, reason, words) in refused {
        let c = &cases[*case];
        assert_eq!(c["status"], *status, "{case}: {c}");
        assert_eq!(c["body"]["reason"], *reason, "{case}: {c}");
        let e = error_of(c);
        for w in *words {
            assert!(e.contains(w), "{case}: {w:?} not in {e:?}");
        }
    }
    assert_eq!(cases["invalid"]["body"]["row"], 17);
    assert_eq!(cases["invalid"]["body"]["field"], "account");
    assert!(
        cases["zstd_bomb_size"].as_u64().unwrap_or(u64::MAX) < MAX_BODY as u64 / 16,
        "the bomb is small on the wire: {}",
        cases["zstd_bomb_size"]
    );

    // Every reject counted by its reason.
    let metrics = out["metrics"].as_str().unwrap_or_default();
    for (reason, n) in [
        ("invalid", 1),
        ("malformed", 2),
        ("unauthenticated", 2),
        ("wrong_gateway", 1),
        ("unsupported_media_type", 1),
        ("too_large", 3),
    ] {
        let line = format!("jieneng_rejects_total{{reason=\"{reason}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line:?} not in\n{metrics}");
    }

    // pyarrow reads back exactly the acknowledged rows, as sent.
    let stored = run_json("dump_parquet.py", &[&serve.data_dir.display().to_string()])?;
    let mut sent: Vec<Value> = out["sent"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut r| {
            if r["quality"].is_null() {
                r["quality"] = "good".into();
            }
            r["gateway"] = "gw-py".into();
            r
        })
        .collect();
    sent.sort_by_key(|r| {
        (
            r["account"].to_string(),
            r["meter"].to_string(),
            r["ts"].as_i64(),
        )
    });
    let rows = stored["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 64, "40 + 24 rows, nothing from refused bodies");
    assert_eq!(rows, sent);
    Ok(())
}
