//! Helpers for the whole-path tests in `tests/`: finding the Python peers and running them as
//! child processes that are killed when the test ends, however it ends.

pub mod certs;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with the test peers' packages: `$JIENENG_PYTHON`, else the venv the test command
/// creates (`scripts/test`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("JIENENG_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test (it creates the venv with pymodbus, duckdb and pyarrow)",
        p.display()
    );
    p
}

pub fn peer(script: &str) -> PathBuf {
    root().join("tests/peers").join(script)
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    pub fn spawn(script: &str, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(python())
            .arg(peer(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The next stdout line as JSON, waiting at most `timeout`.
    pub fn next_json(&self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|e| anyhow::anyhow!("peer said nothing within {timeout:?}: {e}"))?;
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a peer script to completion and parses its stdout as JSON.
pub fn run_json(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python())
        .arg(peer(script))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub mod mqtt;
