//! `jieneng demo`: the whole path on one machine. Simulated meters serve real Modbus TCP on
//! loopback, a gateway polls them, the server writes Parquet under the data directory, and a
//! consumption report is printed now and then and at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use device_profiles::Library;
use gateway::{Gateway, GatewayConfig};
use ingest::ServerHandle;
use jieneng::config::ServeConfig;

use crate::history;
use crate::report;
use crate::simulator::{Load, SimMeter, Simulation};

/// One simulated meter of the demo site.
struct DemoMeter {
    account: &'static str,
    /// The institution's name, for reports.
    name: &'static str,
    meter: &'static str,
    category: &'static str,
    item: &'static str,
    profile: &'static str,
    load: Load,
    /// The counter's value the first time the demo runs (kWh or m³).
    start: f64,
}

const METERS: &[DemoMeter] = &[
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "main",
        category: "01",
        item: "01000",
        profile: "chint/dtsu666",
        load: Load::Occupancy {
            base: 35.0,
            peak: 160.0,
        },
        start: 2_182_340.0,
    },
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "lighting",
        category: "01",
        item: "01A10",
        profile: "eastron/sdm630",
        load: Load::Occupancy {
            base: 2.0,
            peak: 38.0,
        },
        start: 341_220.0,
    },
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "chiller-1",
        category: "01",
        item: "01B10",
        profile: "eastron/sdm630",
        load: Load::Hvac {
            base: 4.0,
            per_degree: 5.5,
        },
        start: 566_015.0,
    },
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "elevators",
        category: "01",
        item: "01C10",
        profile: "acrel/adw300",
        load: Load::Occupancy {
            base: 0.8,
            peak: 11.0,
        },
        start: 109_870.0,
    },
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "it-room",
        category: "01",
        item: "01D10",
        profile: "eastron/sdm630",
        load: Load::Occupancy {
            base: 14.0,
            peak: 3.0,
        },
        start: 335_600.0,
    },
    DemoMeter {
        account: "110108A001",
        name: "海淀区机关办公楼",
        meter: "weather",
        category: "06",
        item: "06000",
        profile: "sensor/xy-md02",
        load: Load::Weather,
        start: 0.0,
    },
    DemoMeter {
        account: "110108D002",
        name: "中关村第一小学",
        meter: "main",
        category: "01",
        item: "01000",
        profile: "eastron/sdm630",
        load: Load::Occupancy {
            base: 6.0,
            peak: 55.0,
        },
        start: 573_410.0,
    },
    DemoMeter {
        account: "110108D002",
        name: "中关村第一小学",
        meter: "water",
        category: "02",
        item: "02000",
        profile: "arad/octave",
        load: Load::Water {
            base: 0.04,
            peak: 1.6,
        },
        start: 18_123.5,
    },
    DemoMeter {
        account: "110102E003",
        name: "西城区社区医院",
        meter: "main",
        category: "01",
        item: "01000",
        profile: "chint/dtsu666",
        load: Load::Occupancy {
            base: 60.0,
            peak: 90.0,
        },
        start: 2_250_110.0,
    },
];

const TOKEN: &str = "demo-gateway-token-not-for-production";
/// The demo's admin API key, for the dashboard and the read API (`/api/v1/consumption`, …).
const ADMIN_KEY: &str = "demo-admin-key-not-for-production";
/// An officer key scoped to the Haidian district (110108): two of the three accounts, to show
/// that an officer sees only their own.
const OFFICER_KEY: &str = "demo-officer-key-not-for-production";
const OFFICER_REGION: &str = "110108";

/// The demo's accounts, as a server config would list them. Floor areas and headcounts are
/// made up for the demo.
const ACCOUNTS: &str = r#"
[[account]]
code = "110108A001"
name_zh = "海淀区机关办公楼"
name_en = "Haidian district government office"
institution = "海淀区人民政府"
institution_type = "state_organ"
floor_area_m2 = 12000.0
headcount = 480
climate_zone = "cold"
office_class = "A"
[[account.main_meter]]
meter = "main"
category = "01"
sub_meters = ["lighting", "chiller-1", "elevators", "it-room"]

[[account]]
code = "110108D002"
name_zh = "中关村第一小学"
name_en = "Zhongguancun No. 1 Primary School"
institution_type = "public_institution"
floor_area_m2 = 8000.0
headcount = 1250
climate_zone = "cold"

[[account]]
code = "110102E003"
name_zh = "西城区社区医院"
name_en = "Xicheng community hospital"
institution_type = "public_institution"
floor_area_m2 = 5000.0
headcount = 210
climate_zone = "cold"
"#;

/// The demo's server config: its gateways, accounts and API keys (hashes only, as a real config
/// holds them). The demo runs with it on loopback ports of the OS's choosing; it also writes it
/// as `demo-server.toml` (port 8080, no MQTT) so `jieneng serve` can show the same data after.
fn server_toml(data_dir: &std::path::Path, listen: &str, mqtt: bool) -> String {
    use http_contract::token_hash;
    format!(
        r#"# Written by `jieneng demo`: serves the demo's data and dashboard with `jieneng serve --config <this file>`.
# The dashboard is at http://{listen}/ ; API keys: {ADMIN_KEY} (admin), {OFFICER_KEY} (officer, region {OFFICER_REGION}).
listen = "{listen}"
data_dir = {data_dir:?}
flush_interval = 10.0

[mqtt]
enabled = {mqtt}
listen = "127.0.0.1:0"

[[gateway]]
id = "gw-demo"
token_sha256 = "{gw}"

[[gateway]]
id = "{hist}"
token_sha256 = "{hist_token}"

[[api_key]]
name = "demo-admin"
key_sha256 = "{admin}"
role = "admin"

[[api_key]]
name = "demo-officer-haidian"
key_sha256 = "{officer}"
role = "officer"
region = "{OFFICER_REGION}"
{ACCOUNTS}"#,
        data_dir = data_dir.display().to_string(),
        gw = token_hash(TOKEN),
        hist = history::GATEWAY,
        hist_token = token_hash(history::TOKEN),
        admin = token_hash(ADMIN_KEY),
        officer = token_hash(OFFICER_KEY),
    )
}

/// Runs the demo until Ctrl-C or `duration` seconds: meters, server, history, gateway, a
/// consumption report every `report_every` seconds, then an orderly stop.
pub async fn run(
    data_dir: PathBuf,
    report_every: u64,
    duration: Option<u64>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let sim = start_meters(&data_dir).await?;
    let (server, for_serve) = start_server(&data_dir).await?;
    let posted = post_history(&data_dir, &server, &sim).await?;
    let (site, names) = site_config(&data_dir, &server, &sim);
    let config = GatewayConfig::parse("demo site", &site, None)?;
    let gateway = Gateway::build(config)?.start(Duration::from_secs(10))?;

    let started = chrono::Utc::now();
    print_banner(
        &data_dir,
        &server,
        &sim,
        &names,
        posted,
        started,
        report_every,
    );
    report_until_stopped(&data_dir, &sim, &names, started, report_every, duration).await?;

    println!(
        "stopping: gateway spools and forwards what it holds, the server flushes to Parquet …"
    );
    gateway.stop().await;
    let flushed = server.stop().await?;
    sim.save()?;
    print_final(&data_dir, &names, started, &flushed).await?;
    print_next(&data_dir, &for_serve, started);
    Ok(())
}

/// The simulated meters, carrying on from the totals a previous run saved.
async fn start_meters(data_dir: &Path) -> anyhow::Result<Simulation> {
    let library = Library::builtin()?;
    let meters = METERS
        .iter()
        .map(|m| {
            Ok(SimMeter {
                name: format!("{}/{}", m.account, m.meter),
                profile: library.get(m.profile)?.clone(),
                load: m.load,
                total: m.start,
                level: 0.0,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Simulation::start(meters, &data_dir.join("simulated-meters.json")).await
}

/// The server on loopback ports of the OS's choosing, and the config file written for
/// `jieneng serve` after the demo (port 8080, no MQTT).
async fn start_server(data_dir: &Path) -> anyhow::Result<(ServerHandle, PathBuf)> {
    let serve = ServeConfig::parse(
        "the demo's server config",
        &server_toml(data_dir, "127.0.0.1:0", true),
    )?;
    let for_serve = data_dir.join("demo-server.toml");
    std::fs::write(&for_serve, server_toml(data_dir, "127.0.0.1:8080", false))
        .with_context(|| format!("writing {}", for_serve.display()))?;
    Ok((jieneng::serve::start(&serve).await?, for_serve))
}

/// The demo meters as the history sees them on a first run: counters ending at their start.
#[cfg(test)]
pub(crate) fn past_meters_at_start() -> Vec<history::PastMeter> {
    METERS
        .iter()
        .map(|m| history::PastMeter {
            account: m.account,
            meter: m.meter,
            item: m.item,
            load: m.load,
            end_total: m.start,
        })
        .collect()
}

/// The past, once: 25 months of hourly history that the live counters carry on from; how many
/// readings were posted (0 when a previous run already did).
async fn post_history(
    data_dir: &Path,
    server: &ServerHandle,
    sim: &Simulation,
) -> anyhow::Result<usize> {
    let past: Vec<history::PastMeter> = METERS
        .iter()
        .zip(&sim.meters)
        .map(|(m, live)| history::PastMeter {
            account: m.account,
            meter: m.meter,
            item: m.item,
            load: m.load,
            end_total: live.lock().map_or(m.start, |l| l.total),
        })
        .collect();
    history::backfill(data_dir, server.addr, &past).await
}

/// The gateway's site config (it goes through the same parser and validation as a real site's)
/// and the accounts' names.
fn site_config(
    data_dir: &Path,
    server: &ServerHandle,
    sim: &Simulation,
) -> (String, BTreeMap<String, String>) {
    let mut site = format!(
        "[gateway]\nid = \"gw-demo\"\nspool_dir = {:?}\npoll_interval = 5\n\n[forward]\nurl = \"http://{}/api/v1/batches\"\ntoken = \"{TOKEN}\"\n\n",
        data_dir.join("gateway-spool").display().to_string(),
        server.addr
    );
    let mut names = BTreeMap::new();
    for (m, addr) in METERS.iter().zip(&sim.addrs) {
        let DemoMeter {
            account,
            name,
            meter,
            category,
            item,
            profile,
            ..
        } = m;
        names.insert(account.to_string(), name.to_string());
        let quantities = if matches!(m.load, Load::Weather) {
            "quantities = { temperature = \"outdoor_temperature\" }\n"
        } else {
            ""
        };
        site.push_str(&format!(
            "[[device]]\nmeter = \"{meter}\"\naccount = \"{account}\"\ncategory = \"{category}\"\nitem = \"{item}\"\nprofile = \"{profile}\"\nsource = {{ type = \"modbus-tcp\", host = \"127.0.0.1\", port = {} }}\n{quantities}\n",
            addr.port()
        ));
    }
    for (code, name) in &names {
        site.push_str(&format!(
            "[[account]]\ncode = \"{code}\"\nname = \"{name}\"\n\n"
        ));
    }
    (site, names)
}

/// What runs where, printed once everything is up.
fn print_banner(
    data_dir: &Path,
    server: &ServerHandle,
    sim: &Simulation,
    names: &BTreeMap<String, String>,
    posted: usize,
    started: chrono::DateTime<chrono::Utc>,
    report_every: u64,
) {
    println!();
    println!("jieneng 节能 demo — the whole path on this machine");
    println!(
        "  meters    {} simulated Modbus TCP meters on 127.0.0.1 (ports {}–{}), 3 accounts:",
        METERS.len(),
        sim.addrs.iter().map(|a| a.port()).min().unwrap_or(0),
        sim.addrs.iter().map(|a| a.port()).max().unwrap_or(0)
    );
    for (code, name) in names {
        println!("              {code} {name}");
    }
    println!(
        "  gateway   gw-demo polls every 5 s, spools to {}",
        data_dir.join("gateway-spool").display()
    );
    println!(
        "  server    http://{} (POST /api/v1/batches, /healthz, /metrics)",
        server.addr
    );
    println!(
        "  dashboard http://{}/  API key {ADMIN_KEY} (admin) or {OFFICER_KEY} (officer, {OFFICER_REGION} only)",
        server.addr
    );
    if posted > 0 {
        println!(
            "  history   {posted} hourly readings of the last 25 months posted as gateway {}",
            history::GATEWAY
        );
    }
    if let Some(mqtt) = server.mqtt_addr {
        println!(
            "  mqtt      mqtt://{mqtt} (gateways may publish to jieneng/v1/<gateway>/batches)"
        );
    }
    println!(
        "  read API  curl -H 'Authorization: Bearer {ADMIN_KEY}' 'http://{}/api/v1/consumption?from={}&to={}&granularity=day'",
        server.addr,
        started.format("%Y-%m-%d"),
        (started + chrono::Duration::days(1)).format("%Y-%m-%d")
    );
    println!(
        "  data      Parquet under {} (flushed every 10 s)",
        data_dir.join("readings").display()
    );
    println!(
        "  report    every {report_every} s below; Ctrl-C stops cleanly and prints the last one"
    );
    println!();
}

/// Advances the meters every second and prints consumption every `report_every` seconds, until
/// Ctrl-C or `duration` seconds.
async fn report_until_stopped(
    data_dir: &Path,
    sim: &Simulation,
    names: &BTreeMap<String, String>,
    started: chrono::DateTime<chrono::Utc>,
    report_every: u64,
    duration: Option<u64>,
) -> anyhow::Result<()> {
    let start_ms = started.timestamp_millis();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut reports = tokio::time::interval(Duration::from_secs(report_every.max(5)));
    reports.tick().await;
    let stop_after = async {
        match duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_after);
    let mut last = std::time::Instant::now();
    let mut saves = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = std::time::Instant::now();
                sim.tick(now.duration_since(last).as_secs_f64());
                last = now;
                saves += 1;
                if saves.is_multiple_of(5) {
                    let _ = sim.save();
                }
            }
            _ = reports.tick() => {
                let now = chrono::Utc::now();
                let rows = query::Query::new(data_dir).consumption(start_ms, now.timestamp_millis()).await?;
                println!("── consumption since {} (UTC), as stored in Parquet ──", started.format("%H:%M:%S"));
                print!("{}", report::table(&rows, names));
                println!();
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut stop_after => break,
        }
    }

    Ok(())
}

/// The consumption since the demo started, as stored, and what stopping left behind.
async fn print_final(
    data_dir: &Path,
    names: &BTreeMap<String, String>,
    started: chrono::DateTime<chrono::Utc>,
    flushed: &ingest::store::FlushReport,
) -> anyhow::Result<()> {
    let left = gateway_spooled(data_dir);
    let rows = query::Query::new(data_dir)
        .consumption(
            started.timestamp_millis(),
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    println!();
    println!(
        "── final: consumption since {} (UTC) ──",
        started.format("%H:%M:%S")
    );
    print!("{}", report::table(&rows, names));
    println!();
    println!(
        "stopped cleanly: last flush wrote {} rows in {} files; {} batches still spooled (sent at next start).",
        flushed.rows, flushed.files, left
    );
    Ok(())
}

/// The commands to try next, the savings report first.
fn print_next(data_dir: &Path, for_serve: &Path, started: chrono::DateTime<chrono::Utc>) {
    // The savings analysis reads two years of history (tens of seconds on a small machine):
    // it is the next command to run, not part of stopping.
    println!("next:");
    println!(
        "  jieneng serve --config {}  (the dashboard over the same data, http://127.0.0.1:8080/)",
        for_serve.display()
    );
    println!(
        "  jieneng report savings --config {} --data-dir {}  (savings potential 节能潜力: the last 365 days against the year before)",
        for_serve.display(),
        data_dir.display()
    );
    println!(
        "  jieneng report --data-dir {} --from {} --to {}",
        data_dir.display(),
        started.format("%Y-%m-%d"),
        (started + chrono::Duration::days(1)).format("%Y-%m-%d")
    );
    println!(
        "  curl -H 'Authorization: Bearer {ADMIN_KEY}' 'http://<server>/api/v1/carbon?from={}&to={}&granularity=day'  (while the demo runs)",
        started.format("%Y-%m-%d"),
        (started + chrono::Duration::days(1)).format("%Y-%m-%d")
    );
    println!(
        "  duckdb -c \"SELECT account, item, sum(delta) FROM read_parquet('{}/readings/*/*.parquet', hive_partitioning=true) WHERE quantity='energy_import' GROUP BY ALL ORDER BY ALL\"",
        data_dir.display()
    );
}

fn gateway_spooled(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join("gateway-spool"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
                .count()
        })
        .unwrap_or(0)
}
