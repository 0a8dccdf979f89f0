//! `jieneng serve` as a child process for the tests that need the real binary (signals, kills,
//! a full disk): started, its log collected, killed when dropped.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server process, killed when dropped so that a failing test leaves none behind; its
/// stdout lines are collected for the assertions on what it logged.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            anyhow::ensure!(started.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `jieneng serve` (the binary at `bin`) and waits for the address it logs.
    pub fn start(bin: &str, config: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        let started = Instant::now();
        loop {
            let addr = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter(|l| l.contains("ingest listening"))
                .find_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(str::to_owned)
                });
            if let Some(addr) = addr {
                return Ok(Self { child, addr, log });
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not say where it listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the signal `name` (TERM, HUP, KILL) with kill(1).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{name} failed");
        Ok(())
    }

    /// How many logged lines contain `what`.
    pub fn logged(&self, what: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }
}
