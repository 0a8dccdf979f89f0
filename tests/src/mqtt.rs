//! MQTT peers for the whole-path tests: a mosquitto broker with a generated config and password
//! file on a free loopback port, and `mosquitto_pub` publishing payloads the way a device would.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port. mosquitto cannot report a port the OS picked, so one is picked here and
/// released just before the broker binds it.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn tool(name: &str) -> anyhow::Result<String> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p.display().to_string());
        }
    }
    anyhow::bail!(
        "{name} is not installed: run ./scripts/test (it installs mosquitto and mosquitto-clients)"
    )
}

/// A mosquitto broker with authentication on; killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The CA of the broker's certificate, when it listens with TLS.
    pub ca: Option<std::path::PathBuf>,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port with one user, config and password file in `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, user, password, None)
    }

    /// The same, listening with TLS only: the server certificate and key from `pki`.
    pub fn start_tls(
        dir: &Path,
        user: &str,
        password: &str,
        pki: &crate::certs::TestPki,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, user, password, Some(pki))
    }

    fn start_with(
        dir: &Path,
        user: &str,
        password: &str,
        pki: Option<&crate::certs::TestPki>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let passwd = dir.join("mosquitto.passwd");
        let out = Command::new(tool("mosquitto_passwd")?)
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([user, password])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mosquitto_passwd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             persistence false\nmax_queued_messages 10000\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            passwd.display()
        );
        if let Some(p) = pki {
            text.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                p.ca.display(),
                p.cert.display(),
                p.key.display()
            ));
        }
        std::fs::write(&conf, text)?;
        let child = Command::new(tool("mosquitto")?)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let m = Self {
            child,
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            ca: pki.map(|p| p.ca.clone()),
        };
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(m)
    }

    /// Publishes one message as this broker's user (over TLS when it listens with TLS).
    pub fn publish(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut extra = Vec::new();
        if let Some(ca) = &self.ca {
            // The CA is checked; the host name is not (mosquitto_pub's check of an IP address
            // SAN varies by version, and this only tests the gateway's side).
            extra = vec![
                "--cafile".to_owned(),
                ca.display().to_string(),
                "--insecure".to_owned(),
            ];
        }
        publish_args(
            self.port,
            &self.user,
            &self.password,
            topic,
            payload,
            &extra,
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes one message with QoS 1 and waits for the broker's acknowledgement.
/// Payloads go through a file so that any bytes (not only UTF-8) can be sent.
pub fn publish(
    port: u16,
    user: &str,
    password: &str,
    topic: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    publish_args(port, user, password, topic, payload, &[])
}

fn publish_args(
    port: u16,
    user: &str,
    password: &str,
    topic: &str,
    payload: &[u8],
    extra: &[String],
) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), payload)?;
    let out = Command::new(tool("mosquitto_pub")?)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(extra)
        .args(["-u", user, "-P", password, "-t", topic, "-f"])
        .arg(file.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mosquitto_pub to {topic} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
