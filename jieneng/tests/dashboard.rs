//! The dashboard in a real browser: `jieneng demo` writes its history and a few seconds of live
//! readings and stops; `jieneng serve` serves that data (so nothing moves while the page and the
//! API are compared); `tests/browser/dashboard.mjs` drives Debian's chromium through every view
//! in zh-CN and English, compares each number shown with the API's answer, checks an officer key
//! sees only its accounts, and writes a screenshot of each view to
//! `tests/artifacts/dashboard/<this test's name>/`.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules` (`./scripts/test` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN_KEY: &str = "demo-admin-key-not-for-production";
const OFFICER_KEY: &str = "demo-officer-key-not-for-production";
/// The demo officer's region 110108: the office and the school.
const OFFICER_ACCOUNTS: &str = "110108A001,110108D002";

/// `jieneng serve`, stopped with Ctrl-C (SIGINT) when dropped, as an operator would.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Status line and headers + body of a plain HTTP/1.0 GET.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn dashboard_in_chromium_shows_the_api_numbers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let browser = root.join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "{}: run ./scripts/test, which runs npm ci there",
        browser.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium}: install Debian's chromium (./scripts/test does)"
    );
    let out_dir: PathBuf =
        root.join("tests/artifacts/dashboard/dashboard_in_chromium_shows_the_api_numbers");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_jieneng");
    let demo = Command::new(bin)
        .arg("demo")
        .arg("--data-dir")
        .arg(&data)
        .args(["--duration", "20", "--report-every", "3600"])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "demo failed:\n{}\n{}",
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr)
    );
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(stdout.contains("dashboard http://"), "{stdout}");
    assert!(
        stdout.contains("history "),
        "the demo posted its history: {stdout}"
    );

    // The config the demo wrote for `jieneng serve`, on a port of the OS's choosing.
    let text = std::fs::read_to_string(data.join("demo-server.toml")).unwrap();
    let text = text.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    assert!(text.contains("listen = \"127.0.0.1:0\""), "{text}");
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info,rumqttd=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serve = Serve(child);
    let mut addr = None;
    let mut lines = lines.map_while(Result::ok);
    for line in lines.by_ref() {
        let line = strip_ansi(&line);
        if line.contains("ingest listening")
            && let Some(a) = line.split("addr=").nth(1)
        {
            addr = a
                .split_whitespace()
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            break;
        }
    }
    let addr = addr.expect("jieneng serve printed no listening address");
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    // The page and its scripts come from the binary, with a policy that forbids other hosts.
    let index = http_get(addr, "/");
    assert!(
        index.starts_with("HTTP/1.0 200") || index.starts_with("HTTP/1.1 200"),
        "{index}"
    );
    assert!(
        index
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{index}"
    );
    assert!(index.contains("/dashboard/js/app.js"), "{index}");
    let app = http_get(addr, "/dashboard/js/app.js");
    assert!(app.contains("text/javascript"), "{app}");
    assert!(http_get(addr, "/dashboard/nope.js").contains(" 404 "));

    let status = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&browser)
        .env("BASE_URL", format!("http://{addr}"))
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("OFFICER_KEY", OFFICER_KEY)
        .env("OFFICER_ACCOUNTS", OFFICER_ACCOUNTS)
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .status()
        .unwrap();
    drop(serve);
    assert!(
        status.success(),
        "the browser test failed (its output is above)"
    );
    for view in [
        "live",
        "history-day",
        "history-month",
        "tree",
        "savings",
        "alerts",
    ] {
        for lang in ["zh", "en"] {
            let shot = out_dir.join(format!("{lang}-{view}.png"));
            let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
            assert!(len > 10_000, "{}: no screenshot", shot.display());
        }
    }
}
