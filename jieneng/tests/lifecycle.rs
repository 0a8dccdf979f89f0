//! The server as systemd runs it: the real binary stopped with SIGTERM (the default stop signal)
//! must stop in order, flushing what it acknowledged to Parquet and exiting 0, and SIGHUP must
//! put the server file's edited gateway tokens and API keys in force without a restart, refusing
//! a file that does not validate.
//!
//! Here rather than in `tests/` because only the binary's own package can be sure cargo built the
//! binary (`CARGO_BIN_EXE_jieneng`).

mod serve_process;

use std::path::Path;
use std::time::{Duration, Instant};

use http_contract::token_hash;
use jieneng_tests::run_json;
use serde_json::json;
use serve_process::Serve;

fn server_file(
    data: &Path,
    gateway_tokens: &[&str],
    keys: &[(&str, &str, Option<&str>)],
) -> String {
    // No flush before the stop: whatever Parquet holds afterwards, the stop wrote.
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nflush_interval = 3600\nflush_rows = 1000000\n\n\
         [mqtt]\nenabled = false\n\n",
        data.display().to_string()
    );
    for t in gateway_tokens {
        toml.push_str(&format!(
            "[[gateway]]\nid = \"gw-1\"\ntoken_sha256 = \"{}\"\n\n",
            token_hash(t)
        ));
    }
    for (name, key, expires) in keys {
        toml.push_str(&format!(
            "[[api_key]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nrole = \"admin\"\n{}\n",
            token_hash(key),
            expires.map_or(String::new(), |e| format!("expires = {e}\n"))
        ));
    }
    toml
}

fn batch(seq: u64, meters: usize) -> serde_json::Value {
    let readings: Vec<_> = (0..meters)
        .map(|m| {
            json!({
                "ts": 1_767_225_600_000_i64 + seq as i64 * 900_000,
                "account": "110108A001",
                "meter": format!("m{m:03}"),
                "category": "01",
                "item": "01000",
                "quantity": "energy_import",
                "unit": "kWh",
                "value": 100.0 + seq as f64,
                "delta": 1.0,
            })
        })
        .collect();
    json!({"version": 1, "gateway": "gw-1", "seq": seq, "readings": readings})
}

async fn post(base: &str, token: &str, seq: u64) -> anyhow::Result<reqwest::StatusCode> {
    Ok(reqwest::Client::new()
        .post(format!("{base}/api/v1/batches"))
        .bearer_auth(token)
        .json(&batch(seq, 50))
        .send()
        .await?
        .status())
}

/// (status, refusal reason) of an API read with `key`.
async fn read(base: &str, key: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/accounts"))
        .bearer_auth(key)
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    Ok((status, body["reason"].as_str().unwrap_or("").to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_what_was_acknowledged_and_exits_cleanly() -> anyhow::Result<()> {
    // reqwest is built without a TLS provider of its own (ring-only workspace).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, server_file(&data, &["tok-1"], &[]))?;
    let mut serve = Serve::start(env!("CARGO_BIN_EXE_jieneng"), &config)?;
    let base = format!("http://{}", serve.addr);
    for seq in 1..=4 {
        assert_eq!(post(&base, "tok-1", seq).await?, 200);
    }
    serve.signal("TERM")?;
    let status = serve.wait_exit(Duration::from_secs(60))?;
    // Killed by the signal's default action, the process would report no exit code and leave
    // the rows in the WAL only.
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    assert_eq!(serve.logged("stopped"), 1, "no orderly stop logged");
    let stored = run_json("count_keys.py", &[&data.display().to_string()])?;
    assert_eq!(stored["rows"], 200, "Parquet after the stop: {stored}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_edited_tokens_and_keys_in_force_and_refuses_a_broken_file()
-> anyhow::Result<()> {
    // reqwest is built without a TLS provider of its own (ring-only workspace).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        server_file(&data, &["tok-old"], &[("alice", "key-alice", None)]),
    )?;
    let serve = Serve::start(env!("CARGO_BIN_EXE_jieneng"), &config)?;
    let base = format!("http://{}", serve.addr);
    assert_eq!(read(&base, "key-alice").await?.0, 200);
    assert_eq!(
        read(&base, "key-bob").await?,
        (401, "unauthenticated".into())
    );
    assert_eq!(post(&base, "tok-old", 1).await?, 200);

    // Rotate the gateway's token, revoke alice, add bob, and carol already expired.
    std::fs::write(
        &config,
        server_file(
            &data,
            &["tok-new"],
            &[
                ("bob", "key-bob", Some("2099-01-01T00:00:00+08:00")),
                ("carol", "key-carol", Some("2026-01-01T00:00:00+08:00")),
            ],
        ),
    )?;
    serve.signal("HUP")?;
    let started = Instant::now();
    while read(&base, "key-bob").await?.0 != 200 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "SIGHUP did not put bob's key in force"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        read(&base, "key-alice").await?,
        (401, "unauthenticated".into())
    );
    assert_eq!(read(&base, "key-carol").await?, (401, "expired".into()));
    assert_eq!(post(&base, "tok-old", 2).await?, 401);
    assert_eq!(post(&base, "tok-new", 2).await?, 200);
    assert_eq!(serve.logged("reloaded"), 1);

    // A file that does not validate changes nothing.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n\n[[api_key]]\nname = \"x\"\nkey_sha256 = \"abc\"\nrole = \"admin\"\n",
    )?;
    serve.signal("HUP")?;
    let started = Instant::now();
    while serve.logged("reload refused") == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "a broken file's reload was not refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&base, "key-bob").await?.0, 200);
    assert_eq!(post(&base, "tok-new", 3).await?, 200);
    Ok(())
}
