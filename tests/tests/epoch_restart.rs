//! A gateway that starts over loses nothing. A gateway process polls a pymodbus meter and
//! forwards to a real ingest server; it is SIGKILLed and comes back under the same id
//!
//! - with its spool directory deleted (a new SD card, a reinstall): its seq starts again at 0,
//!   in a new epoch, and ingest stores those batches instead of answering them `duplicate`;
//! - with its spool restored from a backup: its seq goes back within the same epoch, ingest
//!   refuses the first such batch (409 `seq_regressed`), the gateway starts a new epoch and the
//!   batches are stored.
//!
//! Either way every batch the restarted gateway had acknowledged is in the stored rows, reading
//! for reading (what it spooled is read back from its spool after the kill); after an empty
//! spool, so is every batch it had spooled, once a next life has sent what was pending. No assertion is
//! about time: deadlines only bound how long the test waits before failing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::spool::{Spool, SpoolLimits};
use gateway::{Gateway, GatewayConfig};
use ingest::{IngestConfig, Server};
use jieneng_tests::{Peer, run_json};
use reading_model::{Batch, GatewayId};
use serde_json::json;

const TOKEN: &str = "epoch-restart-test-token-01";
/// Set in the environment of the gateway process: the path of its site file.
const SITE_ENV: &str = "JIENENG_EPOCH_TEST_SITE";

/// The gateway process of the tests below: this test binary started again with this test's
/// name and [`SITE_ENV`] set. It runs the gateway until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the gateway process the other tests of this file start and SIGKILL"]
async fn gateway_process() -> anyhow::Result<()> {
    let Some(site) = std::env::var_os(SITE_ENV) else {
        return Ok(());
    };
    let config = GatewayConfig::parse("epoch site", &std::fs::read_to_string(site)?, None)?;
    let _running = Gateway::build(config)?.start(Duration::from_millis(500))?;
    std::future::pending::<()>().await;
    Ok(())
}

/// A running gateway process; SIGKILLed (`Child::kill`) on drop at the latest.
struct GatewayProcess(Child);

impl GatewayProcess {
    fn start(site: &Path) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .args(["gateway_process", "--exact", "--ignored", "--nocapture"])
            .env(SITE_ENV, site)
            .spawn()?;
        Ok(Self(child))
    }

    /// SIGKILL: no drain, no orderly stop, whatever was in memory is gone.
    fn kill(mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `cond` holds, failing with `what` after `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A meter and an ingest server, and the site file of a gateway between them.
struct Site {
    dir: tempfile::TempDir,
    _meter: Peer,
    server: ingest::ServerHandle,
    site: std::path::PathBuf,
    spool: std::path::PathBuf,
}

async fn site(gateway: &str) -> anyhow::Result<Site> {
    let dir = tempfile::tempdir()?;
    // Far more steps than the test waits for: the meter keeps counting throughout.
    let spec = json!([
        {"name": "main", "profile": "eastron/sdm630", "start": 500.0, "step": 0.25, "steps": 4000, "interval": 0.25},
    ]);
    let meter = Peer::spawn("meter_server.py", &[&spec.to_string()])?;
    let port = meter.next_json(Duration::from_secs(30))?["ports"]["main"].clone();
    let serve = IngestConfig {
        flush_rows: 100_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse(gateway)?, TOKEN);
    let server = Server::start(&serve).await?;
    let spool = dir.path().join("spool");
    let text = format!(
        "[gateway]\nid = \"{gateway}\"\nspool_dir = \"{}\"\npoll_interval = 0.25\n\n\
         [forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\ntimeout = 5\n\n\
         [[device]]\nmeter = \"main\"\naccount = \"110108A001\"\ncategory = \"01\"\nitem = \"01000\"\n\
         profile = \"eastron/sdm630\"\nregisters = [\"energy_import\", \"power_total\"]\n\
         source = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {port} }}\n",
        spool.display(),
        server.addr,
    );
    let site = dir.path().join("site.toml");
    std::fs::write(&site, text)?;
    Ok(Site {
        dir,
        _meter: meter,
        server,
        site,
        spool,
    })
}

impl Site {
    fn stored_batches(&self) -> u64 {
        self.server.store.metrics.batches.load(Ordering::Relaxed)
    }

    /// Starts a gateway process and waits until ingest has stored `batches` more batches.
    async fn run_until_stored(&self, batches: u64) -> anyhow::Result<GatewayProcess> {
        let target = self.stored_batches() + batches;
        let gw = GatewayProcess::start(&self.site)?;
        until(
            &format!("{batches} more batches stored"),
            Duration::from_secs(90),
            || self.stored_batches() >= target,
        )
        .await?;
        Ok(gw)
    }

    /// What the spool holds after a kill: every batch still on disk (pending or acknowledged,
    /// replayed at open), and which are pending. Checks that the batches run from seq `first`
    /// without a hole, so none can be missed.
    fn spooled(&self, first: u64) -> anyhow::Result<(Vec<Batch>, BTreeSet<u64>, u64)> {
        let mut batches = Vec::new();
        let (spool, _) = Spool::open(&self.spool, SpoolLimits::default(), |_, b| {
            batches.push(b.clone());
        })?;
        let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
        let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
        anyhow::ensure!(seqs == expected, "spooled seqs {seqs:?}");
        let pending = spool.pending()?.into_iter().collect();
        Ok((batches, pending, spool.epoch()))
    }

    /// Stops the server (which flushes) and reads the stored (account, meter, quantity, ts) keys
    /// with pyarrow.
    async fn stop_and_read(self) -> anyhow::Result<BTreeSet<(String, String, String, i64)>> {
        let data = self.dir.path().join("data");
        self.server.stop().await?;
        let out = run_json("dump_parquet.py", &[&data.display().to_string()])?;
        let rows = out["rows"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (
                    s("account"),
                    s("meter"),
                    s("quantity"),
                    r["ts"].as_i64().unwrap_or(-1),
                )
            })
            .collect())
    }
}

/// Every reading of every acknowledged batch is among the stored keys; returns how many.
fn all_stored(
    batches: &[Batch],
    pending: &BTreeSet<u64>,
    stored: &BTreeSet<(String, String, String, i64)>,
) -> anyhow::Result<usize> {
    let mut checked = 0;
    for b in batches.iter().filter(|b| !pending.contains(&b.seq)) {
        for r in &b.readings {
            let key = (
                r.account.to_string(),
                r.meter.to_string(),
                r.quantity.name().to_owned(),
                r.ts,
            );
            anyhow::ensure!(
                stored.contains(&key),
                "batch {} (epoch {:?}) was acknowledged but its reading {key:?} is not stored",
                b.seq,
                b.epoch
            );
            checked += 1;
        }
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_with_an_empty_spool_has_every_reading_stored() -> anyhow::Result<()> {
    let site = site("gw-epoch").await?;
    // First life: a dozen batches stored, so the server's high-water mark is well above 0.
    site.run_until_stored(12).await?.kill()?;
    std::fs::remove_dir_all(&site.spool)?;

    // Second life, same id, empty spool: seq starts again at 0.
    let before = site.stored_batches();
    let second = site.run_until_stored(6).await?;
    second.kill()?;
    let (batches, pending, _) = site.spooled(0)?;
    let acked = batches.len() - pending.len();
    anyhow::ensure!(
        acked >= 6,
        "only {acked} batches acknowledged in the second life"
    );
    assert!(site.stored_batches() - before >= acked as u64);
    // What was still pending at the kill is sent by the next life (oldest first): then every
    // batch the second life spooled, pending or not, is stored.
    if !pending.is_empty() {
        site.run_until_stored(pending.len() as u64).await?.kill()?;
    }
    let stored = site.stop_and_read().await?;
    let checked = all_stored(&batches, &BTreeSet::new(), &stored)?;
    assert!(checked >= 12, "{checked} readings checked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_restored_from_a_backup_starts_a_new_epoch_and_loses_nothing() -> anyhow::Result<()>
{
    gateway::forward::install_crypto_provider();
    let site = site("gw-backup").await?;
    site.run_until_stored(4).await?.kill()?;
    // The backup: the spool as the killed gateway left it.
    let backup = site.dir.path().join("backup");
    copy_dir(&site.spool, &backup)?;
    // Opening it as the gateway would: what it holds, and where a gateway on it resumes.
    let (backed_up, _, backup_epoch) = site.spooled(0)?;
    let resume_at = backed_up.len() as u64;

    // The gateway goes on well past the backup, then its spool is replaced by the backup.
    site.run_until_stored(10).await?.kill()?;
    copy_dir(&backup, &site.spool)?;
    let third = site.run_until_stored(6).await?;
    // Its first batch went back within the epoch: refused, then sent in a new one.
    let metrics = reqwest::get(format!("http://{}/metrics", site.server.addr))
        .await?
        .text()
        .await?;
    third.kill()?;
    let regressed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jieneng_rejects_total{reason=\"seq_regressed\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(regressed >= 1, "no seq_regressed refusal in\n{metrics}");
    // The restored gateway's open saved a snapshot at `resume_at`: its records run from there.
    let (batches, pending, epoch) = site.spooled(resume_at)?;
    assert_ne!(epoch, backup_epoch, "the gateway started a new epoch");
    let after_restore: Vec<Batch> = batches.into_iter().filter(|b| b.seq >= resume_at).collect();
    let acked = after_restore
        .iter()
        .filter(|b| !pending.contains(&b.seq))
        .count();
    anyhow::ensure!(
        acked >= 6,
        "only {acked} batches acknowledged after the restore"
    );
    let stored = site.stop_and_read().await?;
    all_stored(&after_restore, &pending, &stored)?;
    Ok(())
}

/// Replaces `to` with a copy of the flat directory `from` (and its `quarantine/`).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
