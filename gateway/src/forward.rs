//! Sends spooled batches to ingest, oldest first, and deletes each only after a 2xx answer.
//!
//! Transport errors and 5xx/408/429 answers are retried with exponential backoff and jitter;
//! a batch ingest refuses as invalid (400, 413, 415, 422) would be refused forever, so it is
//! quarantined with ingest's message rather than blocking everything behind it.
//!
//! A 409 (`seq_regressed`: the batch's seq goes back within the spool's epoch and it is not a
//! retry of what ingest stored, as after restoring a spool from a backup) is neither: the batch
//! is kept, the spool starts a new epoch, and the batch and everything pending behind it are
//! sent again under it, which ingest takes as new. Each new epoch is counted and logged; a
//! second 409 in a row (which a sound ingest never sends for a fresh epoch) waits like a retry,
//! so the loop is bounded in rate and never drops the batch.
//!
//! Batches go over HTTP(S) by default, or over MQTT ([`mqtt`]) with the same rule: deleted only
//! once ingest says it has fsynced them. TLS verifies the server against the system roots
//! (rustls-platform-verifier, which reads the OS trust store) or, with `ca_file`, against that
//! CA only; a server that fails verification never sees a request, so never the token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::ForwardSection;
use crate::spool::{EncodedBatch, Spool};
/// Re-exported where it has always been found: the forwarder's clients need it installed.
pub use crate::tls::install_crypto_provider;

pub mod mqtt;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward.ca_file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("forward: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("forward: TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("forward: MQTT: {0}")]
    Mqtt(String),
}

/// Reads the CA certificates of `ca_file` (PEM).
fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ForwardError> {
    let bad = |message: String| ForwardError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in this PEM file".into()));
    }
    Ok(certs)
}

/// The HTTP client for `forward`: verifies the server against `ca_file` only when it is set,
/// otherwise against the system's roots.
pub fn http_client(forward: &ForwardSection) -> Result<reqwest::Client, ForwardError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs_f64(forward.timeout));
    if let Some(path) = &forward.ca_file {
        let certs = ca_certificates(path)?
            .into_iter()
            .map(|c| reqwest::Certificate::from_der(&c))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.tls_certs_only(certs);
    }
    Ok(builder.build()?)
}

/// rustls client config for `mqtts://`: `ca_file` only when set, otherwise the system's roots.
pub fn tls_client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ForwardError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in ca_certificates(path)? {
                roots.add(c).map_err(|e| ForwardError::CaFile {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            // "dangerous" is rustls' name for any custom verifier; this one is the OS's.
            .with_custom_certificate_verifier(Arc::new(rustls_platform_verifier::Verifier::new(
                provider,
            )?))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug, Default)]
pub struct ForwardStats {
    pub sent_batches: AtomicU64,
    pub sent_readings: AtomicU64,
    pub retries: AtomicU64,
    pub quarantined: AtomicU64,
    /// New epochs started because ingest refused a batch as going back within its epoch.
    pub new_epochs: AtomicU64,
}

/// What one attempt to send a batch came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acknowledged,
    Retry(String),
    Refused(String),
    /// Ingest's 409 `seq_regressed`: start a new epoch and send again.
    Regressed(String),
}

#[derive(Debug)]
pub struct Forwarder {
    pub client: reqwest::Client,
    pub url: String,
    pub token: String,
    pub spool: Arc<Spool>,
    pub stats: Arc<ForwardStats>,
    /// Set in MQTT mode: batches are published there instead of POSTed to `url`.
    pub mqtt: Option<mqtt::MqttLink>,
    /// How long to wait for ingest's answer over MQTT.
    pub timeout: Duration,
}

/// Exponential backoff from 250 ms to 60 s with ±25 % jitter, so many gateways coming back
/// after an outage do not hit ingest in lockstep.
pub(crate) const RETRY: Backoff =
    Backoff::new(Duration::from_millis(250), Duration::from_secs(60), 0.25);

impl Forwarder {
    /// Sends the spooled payload as it is: the spool stored the request body.
    async fn send(&self, batch: EncodedBatch) -> Outcome {
        if let Some(link) = &self.mqtt {
            // MQTT has no content type: ingest tells JSON from Arrow by the first byte.
            return link
                .send(batch.seq, batch.epoch, batch.payload, self.timeout)
                .await;
        }
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, batch.encoding.content_type())
            .body(batch.payload)
            .send()
            .await;
        match res {
            Err(e) => Outcome::Retry(format!("{}: {e}", self.url)),
            Ok(r) => {
                let status = r.status();
                if status.is_success() {
                    return Outcome::Acknowledged;
                }
                let text = r.text().await.unwrap_or_default();
                let msg = format!("{status}: {}", text.chars().take(500).collect::<String>());
                match status.as_u16() {
                    // 401/403 stay retryable: a fixed token or config lets the spool drain.
                    400 | 413 | 415 | 422 => Outcome::Refused(msg),
                    409 => Outcome::Regressed(msg),
                    _ => Outcome::Retry(msg),
                }
            }
        }
    }

    /// Runs until `shutdown` and then drains the spool for at most `drain` before returning.
    pub async fn run(
        self,
        notify: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let mut attempt = 0u32;
        // 409s in a row: the first starts a new epoch at once, later ones wait like retries.
        let mut regressed = 0u32;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && *shutdown.borrow() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                let left = self.spool.pending_count();
                if left > 0 {
                    warn!(
                        batches = left,
                        "ingest not reachable before shutdown; batches stay spooled for the next start"
                    );
                }
                return;
            }
            let Some(seq) = self.spool.first_pending() else {
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = shutdown.changed() => {}
                    // Also look again now and then, in case a notification was missed.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            };
            let spool = self.spool.clone();
            let read = tokio::task::spawn_blocking(move || spool.read_encoded(seq)).await;
            let batch = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    error!(seq, error = %e, "spooled batch is corrupt; quarantined");
                    self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    let _ = self.spool.quarantine(seq, &e.to_string());
                    continue;
                }
                Err(_) => continue,
            };
            let (n, epoch) = (u64::from(batch.readings), batch.epoch);
            let outcome = self.send(batch).await;
            if !matches!(outcome, Outcome::Regressed(_)) {
                regressed = 0;
            }
            match outcome {
                Outcome::Acknowledged => {
                    if attempt > 0 {
                        info!(seq, attempts = attempt + 1, "ingest reachable again");
                    }
                    attempt = 0;
                    self.stats.sent_batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.sent_readings.fetch_add(n, Ordering::Relaxed);
                    if let Err(e) = self.spool.remove(seq) {
                        error!(seq, error = %e, "cannot delete acknowledged batch (ingest will dedupe the resend)");
                    }
                }
                Outcome::Refused(msg) => {
                    error!(seq, error = %msg, "ingest refused the batch; quarantined");
                    self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.spool.quarantine(seq, &msg) {
                        error!(seq, error = %e, "cannot quarantine batch");
                    }
                }
                Outcome::Regressed(msg) => {
                    regressed = regressed.saturating_add(1);
                    self.start_new_epoch(seq, epoch, &msg);
                    if regressed > 1 {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        attempt = self.wait(attempt, deadline, &mut shutdown).await;
                    }
                }
                Outcome::Retry(msg) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if attempt.is_power_of_two() || attempt == 0 {
                        warn!(seq, attempt, retry_in = ?RETRY.ceiling(attempt), error = %msg, "forwarding failed");
                    }
                    attempt = self.wait(attempt, deadline, &mut shutdown).await;
                }
            }
        }
    }

    /// Ingest refused batch `seq` of `epoch` as going back within it: the spool starts a new
    /// epoch, under which the batch and those behind it are sent again. The batch stays
    /// spooled whatever happens here.
    fn start_new_epoch(&self, seq: u64, epoch: Option<u64>, msg: &str) {
        match self.spool.new_epoch() {
            Ok(new) => {
                let n = self.stats.new_epochs.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(
                    seq,
                    old_epoch = ?epoch,
                    new_epoch = new,
                    new_epochs = n,
                    error = %msg,
                    "ingest refused the batch as going back within the spool's epoch (a spool restored from a backup?); sending the pending batches again under a new epoch"
                );
            }
            Err(e) => {
                error!(seq, error = %e, "cannot start a new spool epoch; the batch stays spooled and is sent again");
            }
        }
    }

    /// Waits before the next attempt (backoff `attempt`, bounded by the drain `deadline`);
    /// returns the next attempt number.
    async fn wait(
        &self,
        attempt: u32,
        deadline: Option<tokio::time::Instant>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> u32 {
        let wait = RETRY.delay(attempt);
        let sleep = match deadline {
            Some(d) => wait.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed(), if deadline.is_none() => {}
        }
        attempt.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(RETRY.delay(0) <= Duration::from_millis(313));
        assert!(RETRY.delay(3) >= Duration::from_millis(1500));
        assert!(RETRY.delay(30) <= Duration::from_millis(75_000));
        assert!(RETRY.delay(30) >= Duration::from_millis(45_000));
    }
}
