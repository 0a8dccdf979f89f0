//! TLS between the gateway's forwarder and ingest: batches flow when the forwarder trusts the
//! server's CA; with a wrong CA, or the system roots (which do not hold a CA made in the test),
//! the handshake fails before any request, so ingest never sees the token, and the batch stays
//! spooled.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway::config::{ForwardMode, ForwardSection};
use gateway::forward::{ForwardStats, Forwarder, http_client};
use gateway::spool::Spool;
use ingest::config::MqttSettings;
use ingest::tls::TlsFiles;
use ingest::{IngestConfig, Server};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use tokio::sync::{Notify, watch};

const TOKEN: &str = "tls-test-gateway-token-01";

fn batch(seq: u64, rows: usize) -> anyhow::Result<Batch> {
    let readings = (0..rows)
        .map(|i| {
            Ok(Reading {
                ts: 1_764_547_200_000 + (seq as i64 * rows as i64 + i as i64) * 900_000,
                account: AccountCode::parse("110108A001")?,
                meter: MeterId::parse("main")?,
                category: Category::Electricity,
                item: EnergyCode::parse("01000")?,
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 100.0 + (seq as usize * rows + i) as f64,
                delta: Some(1.0),
                kgce: None,
                kgco2e: None,
                factor: None,
                quality: Quality::Good,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Batch::new(GatewayId::parse("gw-tls")?, seq, readings))
}

fn forward(url: &str, ca_file: Option<&Path>) -> ForwardSection {
    ForwardSection {
        url: url.to_owned(),
        token: Some(TOKEN.to_owned()),
        token_file: None,
        max_batch_readings: 5000,
        timeout: 2.0,
        mode: ForwardMode::Http,
        ca_file: ca_file.map(Path::to_path_buf),
    }
}

/// A running forwarder: its spool, its counters, its stop signal and its task.
type Running = (
    Arc<Spool>,
    Arc<ForwardStats>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

/// A forwarder over a fresh spool holding `batches`, running until the returned sender fires.
fn spawn_forwarder(
    dir: &Path,
    section: &ForwardSection,
    batches: &[Batch],
) -> anyhow::Result<Running> {
    let (spool, _) = Spool::open(dir, gateway::spool::SpoolLimits::default(), |_, _| {})?;
    for b in batches {
        spool.append(b)?;
    }
    let spool = Arc::new(spool);
    let stats = Arc::new(ForwardStats::default());
    let forwarder = Forwarder {
        client: http_client(section)?,
        url: section.url.clone(),
        token: TOKEN.to_owned(),
        spool: spool.clone(),
        stats: stats.clone(),
        mqtt: None,
        timeout: Duration::from_secs(2),
    };
    let (stop, stopped) = watch::channel(false);
    let task =
        tokio::spawn(forwarder.run(Arc::new(Notify::new()), stopped, Duration::from_millis(100)));
    Ok((spool, stats, stop, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_verifies_the_server_and_a_wrong_ca_never_gets_the_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = jieneng_tests::certs::make(&dir.path().join("pki"), "ingest")?;
    let other = jieneng_tests::certs::make(&dir.path().join("other"), "someone else")?;
    let serve = IngestConfig {
        tls: Some(TlsFiles {
            cert_file: pki.cert.clone(),
            key_file: pki.key.clone(),
        }),
        flush_interval: 3600.0,
        flush_rows: 1_000_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-tls")?, TOKEN);
    let server = Server::start(&serve).await?;
    let url = format!("https://localhost:{}/api/v1/batches", server.addr.port());
    let metrics_url = format!("https://127.0.0.1:{}/metrics", server.addr.port());

    // Trusting the server's CA: three batches over TLS, by host name, all stored.
    let batches = (1..=3)
        .map(|s| batch(s, 50))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (spool, stats, stop, task) = spawn_forwarder(
        &dir.path().join("spool-ok"),
        &forward(&url, Some(&pki.ca)),
        &batches,
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spool.pending()?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "spool not drained over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    task.await?;
    assert_eq!(stats.sent_batches.load(Ordering::Relaxed), 3);
    assert_eq!(server.store.metrics.rows.load(Ordering::Relaxed), 150);

    // A wrong CA, and the system roots: every attempt fails in the handshake.
    for (name, ca) in [
        ("wrong-ca", Some(other.ca.as_path())),
        ("system-roots", None),
    ] {
        let (spool, stats, stop, task) =
            spawn_forwarder(&dir.path().join(name), &forward(&url, ca), &[batch(4, 50)?])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.retries.load(Ordering::Relaxed) < 2 {
            anyhow::ensure!(Instant::now() < deadline, "{name}: no retries");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await?;
        assert_eq!(spool.pending()?, vec![4], "{name}: the batch stays spooled");
        assert_eq!(stats.sent_batches.load(Ordering::Relaxed), 0, "{name}");
    }
    // Plain HTTP on the TLS port is not served either.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP answered on the TLS port: {plain:?}"
    );

    // The server saw handshakes fail and no request at all from those clients: no 401, no
    // further batch.
    let client = http_client(&forward(&url, Some(&pki.ca)))?;
    let metrics = client.get(&metrics_url).send().await?.text().await?;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jieneng_tls_handshake_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 5, "handshake failures {failures} in\n{metrics}");
    assert!(!metrics.contains("jieneng_rejects_total{"), "{metrics}");
    assert!(metrics.contains("jieneng_batches_total 3\n"), "{metrics}");
    server.stop().await?;
    Ok(())
}

/// MQTT over TLS: the relay in front of the broker ends TLS with the server's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_with_the_servers_ca_only() -> anyhow::Result<()> {
    use gateway::forward::mqtt::MqttLink;
    use gateway::forward::tls_client_config;

    gateway::forward::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let pki = jieneng_tests::certs::make(&dir.path().join("pki"), "ingest")?;
    let other = jieneng_tests::certs::make(&dir.path().join("other"), "someone else")?;
    let serve = IngestConfig {
        tls: Some(TlsFiles {
            cert_file: pki.cert.clone(),
            key_file: pki.key.clone(),
        }),
        mqtt: MqttSettings {
            enabled: true,
            listen: "127.0.0.1:0".parse()?,
        },
        flush_interval: 3600.0,
        flush_rows: 1_000_000,
        max_body_bytes: 1 << 20,
        ..IngestConfig::loopback(dir.path().join("data"))
    }
    .with_gateway(GatewayId::parse("gw-tls")?, TOKEN);
    let server = Server::start(&serve).await?;
    let port = server.mqtt_addr.map(|a| a.port()).unwrap_or(0);
    let url = format!("mqtts://localhost:{port}");
    let gw = GatewayId::parse("gw-tls")?;

    let mut outcomes = Vec::new();
    for (name, ca, seq) in [("right-ca", &pki.ca, 1), ("wrong-ca", &other.ca, 2)] {
        let (spool, _) = Spool::open(
            &dir.path().join(name),
            gateway::spool::SpoolLimits::default(),
            |_, _| {},
        )?;
        spool.append(&batch(seq, 40)?)?;
        let spool = Arc::new(spool);
        let stats = Arc::new(ForwardStats::default());
        let section = forward(&url, Some(ca));
        let forwarder = Forwarder {
            client: http_client(&section)?,
            url: url.clone(),
            token: TOKEN.to_owned(),
            spool: spool.clone(),
            stats: stats.clone(),
            mqtt: Some(MqttLink::connect(
                &url,
                &gw,
                TOKEN,
                Some(tls_client_config(Some(ca))?),
            )?),
            timeout: Duration::from_secs(2),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(forwarder.run(
            Arc::new(Notify::new()),
            stopped,
            Duration::from_millis(100),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !spool.pending()?.is_empty() && stats.retries.load(Ordering::Relaxed) < 3 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name}: neither sent nor retried"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await?;
        outcomes.push((
            name,
            spool.pending()?,
            stats.sent_batches.load(Ordering::Relaxed),
        ));
    }
    assert_eq!(outcomes[0], ("right-ca", vec![], 1));
    assert_eq!(outcomes[1], ("wrong-ca", vec![2], 0));
    assert_eq!(server.store.metrics.rows.load(Ordering::Relaxed), 40);
    assert_eq!(server.store.metrics.batches.load(Ordering::Relaxed), 1);
    server.stop().await?;
    Ok(())
}
