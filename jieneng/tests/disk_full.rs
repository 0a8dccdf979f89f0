//! A full disk under the server: `jieneng serve` (the real binary) with its data directory on a
//! small tmpfs that the test mounts (it needs root, as CI runs), batches posted until the WAL
//! cannot take more, then the disk grown, the server killed with SIGKILL and started again.
//! While full, every refusal is a 503 or 507 with the JSON error body, and nothing refused is
//! acknowledged; once there is room the same server takes batches again without a restart; and
//! after the kill and replay every acknowledged reading is stored exactly once.
//!
//! Set `JIENENG_SKIP_ROOT_TESTS=1` to skip it where mounting is impossible (it then says so).

mod serve_process;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http_contract::token_hash;
use jieneng_tests::run_json;
use serde_json::json;
use serve_process::Serve;

const TOKEN: &str = "disk-full-test-token";
const ROWS: usize = 400;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()?
            .success();
        anyhow::ensure!(ok, "mount -t tmpfs failed (needs root)");
        Ok(Self(at.to_path_buf()))
    }

    fn grow(&self, size: &str) -> anyhow::Result<()> {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()?
            .success();
        anyhow::ensure!(ok, "remount failed");
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn batch(seq: u64) -> serde_json::Value {
    let readings: Vec<_> = (0..ROWS)
        .map(|m| {
            json!({
                "ts": 1_767_225_600_000_i64 + seq as i64 * 900_000,
                "account": "110108A001",
                "meter": format!("meter-with-a-long-name-{m:04}"),
                "category": "01",
                "item": "01000",
                "quantity": "energy_import",
                "unit": "kWh",
                "value": 1000.0 + seq as f64 * 0.25,
                "delta": 0.25,
            })
        })
        .collect();
    json!({"version": 1, "gateway": "gw-1", "seq": seq, "readings": readings})
}

/// Posts `seq` until it is acknowledged or `refusals_wanted` refusals have been met; every
/// refusal must be a 503/507 with a JSON reason. Returns whether it was acknowledged.
async fn post_until(
    http: &reqwest::Client,
    base: &str,
    seq: u64,
    refusals: &mut usize,
    give_up_after: usize,
) -> anyhow::Result<bool> {
    let mut here = 0;
    loop {
        let r = http
            .post(format!("{base}/api/v1/batches"))
            .bearer_auth(TOKEN)
            .json(&batch(seq))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        match status {
            200 => {
                anyhow::ensure!(body["duplicate"] == false, "batch {seq}: {body}");
                return Ok(true);
            }
            503 | 507 => {
                anyhow::ensure!(body["reason"].is_string(), "batch {seq} {status}: {body}");
                *refusals += 1;
                here += 1;
                if here >= give_up_after {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => anyhow::bail!("batch {seq}: {status} {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_acknowledges_nothing_unstored_and_recovers() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let disk = match Tmpfs::mount(&dir.path().join("disk"), "2m") {
        Ok(d) => d,
        Err(e) if std::env::var_os("JIENENG_SKIP_ROOT_TESTS").is_some() => {
            eprintln!("SKIPPED (JIENENG_SKIP_ROOT_TESTS): {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let data = disk.0.join("data");
    let config = dir.path().join("server.toml");
    // No flush while the disk fills: the WAL is what meets the full disk.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nflush_interval = 3600\nflush_rows = 10000000\n\n\
             [mqtt]\nenabled = false\n\n[[gateway]]\nid = \"gw-1\"\ntoken_sha256 = \"{}\"\n",
            data.display().to_string(),
            token_hash(TOKEN)
        ),
    )?;
    let bin = env!("CARGO_BIN_EXE_jieneng");
    let serve = Serve::start(bin, &config)?;
    let base = format!("http://{}", serve.addr);
    let http = reqwest::Client::new();

    let mut acked = Vec::new();
    let mut refusals = 0;
    let mut seq = 1;
    let started = Instant::now();
    // Until the disk is full: a batch refused five times running.
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
        if post_until(&http, &base, seq, &mut refusals, 5).await? {
            acked.push(seq);
            seq += 1;
        } else {
            break;
        }
    }
    anyhow::ensure!(acked.len() >= 3, "full after {} batches", acked.len());

    // Room again: the same server takes the refused batch and more, without a restart.
    disk.grow("64m")?;
    for _ in 0..20 {
        anyhow::ensure!(
            post_until(&http, &base, seq, &mut refusals, 500).await?,
            "batch {seq} still refused after the disk grew"
        );
        acked.push(seq);
        seq += 1;
    }

    // A kill: what was acknowledged is in the WAL only, behind the records written around the
    // failures; the replay must find every one of them.
    serve.signal("KILL")?;
    drop(serve);
    let mut serve = Serve::start(bin, &config)?;
    serve.signal("TERM")?;
    let status = serve.wait_exit(Duration::from_secs(120))?;
    assert_eq!(status.code(), Some(0), "{status}");

    let stored = run_json("count_keys.py", &[&data.display().to_string()])?;
    assert_eq!(
        stored["rows"],
        acked.len() * ROWS,
        "{} batches acknowledged ({refusals} refusals while full); stored: rows {}, duplicates {}",
        acked.len(),
        stored["rows"],
        stored["duplicates"]
    );
    assert_eq!(stored["duplicates"], json!([]));
    Ok(())
}
