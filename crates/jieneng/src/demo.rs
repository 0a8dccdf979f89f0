//! `jieneng demo`: the whole path on one machine. Simulated meters serve real Modbus TCP on
//! loopback, a gateway polls them, the server writes Parquet under the data directory, and a
//! consumption report is printed now and then and at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use device_profiles::Library;
use gateway::{Gateway, GatewayConfig};
use ingest::{ServeConfig, Server};

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
        start: 182_340.0,
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
        start: 41_220.0,
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
        start: 66_015.0,
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
        start: 9_870.0,
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
        start: 35_600.0,
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
        start: 73_410.0,
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
        start: 8_123.5,
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
        start: 250_110.0,
    },
];

const TOKEN: &str = "demo-gateway-token-not-for-production";
/// The demo's admin API key, for trying the read API (`/api/v1/consumption`, `/carbon`).
const ADMIN_KEY: &str = "demo-admin-key-not-for-production";

/// The demo's accounts, as a server config would list them. Floor areas and headcounts are
/// made up for the demo.
const ACCOUNTS: &str = r#"
[[account]]
code = "110108A001"
name_zh = "海淀区机关办公楼"
name_en = "Haidian district government office"
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

fn demo_accounts() -> anyhow::Result<Vec<query::Account>> {
    #[derive(serde::Deserialize)]
    struct File {
        account: Vec<query::Account>,
    }
    let f: File = toml::from_str(ACCOUNTS).context("the demo's accounts")?;
    Ok(f.account)
}

/// Days of hourly history the demo writes before its first start, so that the savings analysis
/// has a baseline year and a reporting year to work on.
const HISTORY_DAYS: i64 = 730;

/// Writes `HISTORY_DAYS` of hourly readings before the local day of `start_ms`, drawn from the
/// same load models the simulated meters run on: the counters end where the meters start
/// (`DemoMeter::start`), the weather sensor reports outdoor temperature. Date partitions that
/// already exist are left alone, so a data directory with its own history is never touched.
/// Returns the rows written.
fn seed_history(data_dir: &std::path::Path, start_ms: i64) -> anyhow::Result<usize> {
    use query::storage::{
        StoredReading, file_name, partition_date, partition_dir, sort_and_dedupe, write_parquet,
    };
    use reading_model::{
        AccountCode, Category, EnergyCode, FactorSelection, FactorTables, GatewayId, MeterId,
        Quality, Quantity, Reading, Unit,
    };
    const HOUR_MS: i64 = 3_600_000;
    let today = chrono::DateTime::from_timestamp_millis(start_ms + 8 * HOUR_MS)
        .context("demo start time")?
        .date_naive();
    let end = query::report::period::local_midnight_ms(today);
    let first = end - HISTORY_DAYS * 24 * HOUR_MS;
    let tables = FactorTables::builtin()?;
    let sel = FactorSelection::default();
    let gateway = GatewayId::parse("gw-demo")?;
    let mut by_date: BTreeMap<String, Vec<StoredReading>> = BTreeMap::new();
    for m in METERS {
        let account = AccountCode::parse(m.account)?;
        let meter = MeterId::parse(m.meter)?;
        let item = EnergyCode::parse(m.item)?;
        let category = Category::parse(m.category)?;
        let weather = matches!(m.load, Load::Weather);
        let (quantity, unit) = match (weather, category) {
            (true, _) => (Quantity::OutdoorTemperature, Unit::Celsius),
            (false, Category::Water) => (Quantity::Volume, Unit::CubicMetre),
            _ => (Quantity::EnergyImport, Unit::KilowattHour),
        };
        // Each hour's use at its middle's rate; the counter runs backwards from `start`.
        let hours: Vec<(i64, f64)> = (1..=HISTORY_DAYS * 24)
            .map(|h| {
                let ts = first + h * HOUR_MS;
                (ts, m.load.rate(ts - HOUR_MS / 2))
            })
            .collect();
        let mut total = m.start - hours.iter().map(|(_, v)| v).sum::<f64>();
        let year = |ts: i64| {
            use chrono::Datelike;
            chrono::DateTime::from_timestamp_millis(ts - 1 + 8 * HOUR_MS).map_or(2026, |t| t.year())
        };
        let mut push = |ts: i64, value: f64, delta: Option<f64>| {
            let coal = tables.coal(category, year(ts), &sel);
            let carbon = tables.carbon(&account, category, year(ts), &sel);
            by_date
                .entry(partition_date(ts))
                .or_default()
                .push(StoredReading {
                    gateway: gateway.clone(),
                    reading: Reading {
                        ts,
                        account: account.clone(),
                        meter: meter.clone(),
                        category,
                        item,
                        quantity,
                        unit,
                        value,
                        delta,
                        kgce: delta.zip(coal.as_ref()).map(|(d, f)| d * f.per_unit),
                        kgco2e: delta.zip(carbon.as_ref()).map(|(d, f)| d * f.per_unit),
                        factor: delta.and(carbon.as_ref()).map(|f| f.id.to_owned()),
                        quality: Quality::Good,
                    },
                });
        };
        if weather {
            for (ts, celsius) in hours {
                push(ts, celsius, None);
            }
        } else {
            push(first, total, None);
            for (ts, used) in hours {
                total += used;
                push(ts, total, Some(used));
            }
        }
    }
    let mut written = 0;
    for (date, mut rows) in by_date {
        let dir = partition_dir(data_dir, &date);
        if dir.exists() {
            continue;
        }
        sort_and_dedupe(&mut rows);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(file_name(1, 1));
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        write_parquet(f, &rows, 1).with_context(|| format!("writing {}", path.display()))?;
        written += rows.len();
    }
    Ok(written)
}

pub async fn run(
    data_dir: PathBuf,
    report_every: u64,
    duration: Option<u64>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
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
    let sim = Simulation::start(meters, &data_dir.join("simulated-meters.json")).await?;

    let serve = ServeConfig {
        tls: None,
        mqtt: ingest::config::MqttSettings {
            enabled: true,
            listen: "127.0.0.1:0".parse()?,
        },
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.clone(),
        flush_interval: 10.0,
        flush_rows: 500_000,
        max_body_bytes: 16 * 1024 * 1024,
        gateway: vec![ingest::config::GatewayAuth {
            id: reading_model::GatewayId::parse("gw-demo")?,
            token_sha256: ingest::config::token_hash(TOKEN),
        }],
        account: demo_accounts()?,
        api_key: vec![ingest::api::access::ApiKeyConfig {
            name: "demo-admin".into(),
            key_sha256: ingest::config::token_hash(ADMIN_KEY),
            role: ingest::api::access::Role::Admin,
            accounts: vec![],
            region: None,
        }],
        storage: Default::default(),
        savings: Default::default(),
    };
    // History before the first run, from the simulated meters' own load models, so that the
    // savings analysis has years to compare; and the accounts as a config for `jieneng report`.
    let seeded = seed_history(&data_dir, chrono::Utc::now().timestamp_millis())?;
    let accounts_config = data_dir.join("demo-server.toml");
    std::fs::write(
        &accounts_config,
        format!("# The demo's accounts, for `jieneng report --config`.\ndata_dir = \".\"\n\n[mqtt]\nenabled = false\n{ACCOUNTS}"),
    )
    .with_context(|| format!("writing {}", accounts_config.display()))?;
    let server = Server::start(&serve).await?;

    // The gateway's config goes through the same parser and validation as a real site's.
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
    let config = GatewayConfig::parse("demo site", &site, None)?;
    let gateway = Gateway::build(config)?.start(Duration::from_secs(10))?;

    let started = chrono::Utc::now();
    let start_ms = started.timestamp_millis();
    println!();
    println!("jieneng 节能 demo — the whole path on this machine");
    println!(
        "  meters    {} simulated Modbus TCP meters on 127.0.0.1 (ports {}–{}), 3 accounts:",
        METERS.len(),
        sim.addrs.iter().map(|a| a.port()).min().unwrap_or(0),
        sim.addrs.iter().map(|a| a.port()).max().unwrap_or(0)
    );
    for (code, name) in &names {
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
    if seeded > 0 {
        println!(
            "  history   {seeded} hourly readings of the {HISTORY_DAYS} days before today written from the same load models (for the savings analysis)"
        );
    }
    println!(
        "  report    every {report_every} s below; Ctrl-C stops cleanly and prints the last one"
    );
    println!();

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
                let rows = query::Query::new(&data_dir).consumption(start_ms, now.timestamp_millis()).await?;
                println!("── consumption since {} (UTC), as stored in Parquet ──", started.format("%H:%M:%S"));
                print!("{}", report::table(&rows, &names));
                println!();
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut stop_after => break,
        }
    }

    println!(
        "stopping: gateway spools and forwards what it holds, the server flushes to Parquet …"
    );
    gateway.stop().await;
    let flushed = server.stop().await?;
    sim.save()?;
    let left = gateway_spooled(&data_dir);
    let rows = query::Query::new(&data_dir)
        .consumption(start_ms, chrono::Utc::now().timestamp_millis())
        .await?;
    println!();
    println!(
        "── final: consumption since {} (UTC) ──",
        started.format("%H:%M:%S")
    );
    print!("{}", report::table(&rows, &names));
    println!();
    println!(
        "stopped cleanly: last flush wrote {} rows in {} files; {} batches still spooled (sent at next start).",
        flushed.rows, flushed.files, left
    );
    // The savings analysis over the history: the last 365 days against the 365 before.
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let reports = query::Reports::new(
        query::Query::new(&data_dir),
        demo_accounts()?,
        reading_model::FactorTables::builtin()?,
    );
    let from = today - chrono::Duration::days(365);
    let savings = reports
        .savings(&query::report::savings::SavingsRequest {
            baseline_from: from - chrono::Duration::days(365),
            baseline_to: from,
            from,
            to: today,
            filters: vec![],
            temperature: query::report::savings::TemperatureSource::Auto,
        })
        .await?;
    println!("── savings potential 节能潜力: {from} .. {today} against the year before ──");
    print!("{}", report::savings_table(&savings));
    println!();
    println!("next:");
    println!(
        "  jieneng report savings --config {} --data-dir {}",
        accounts_config.display(),
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
    Ok(())
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
