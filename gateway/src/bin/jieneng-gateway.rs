//! `jieneng-gateway`: run a site, check its config, list profiles, scan one meter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use device_profiles::{Library, PlanLimits, Profile, ReadRequest, decode_register, plan_reads};
use gateway::config::{Parity, SourceConfig};
use gateway::source::connection::Connection;
use gateway::source::modbus::device_plan;
use gateway::{Gateway, GatewayConfig};

#[derive(Parser, Debug)]
#[command(
    name = "jieneng-gateway",
    version,
    about = "jieneng edge gateway: poll meters, spool, forward"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Poll the site's devices and forward readings until Ctrl-C.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a site config and print its poll plan.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the built-in meter profiles.
    Profiles,
    /// Read one Modbus meter once and print every decoded value with its registers: over TCP
    /// (`--host`) or on a serial line (`--serial /dev/ttyUSB0 --baud 9600 --parity even`).
    Scan(ScanArgs),
}

// The meter `scan` reads, and how to reach it.
#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// A Modbus TCP meter or converter.
    #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
    host: Option<String>,
    #[arg(long, default_value_t = 502)]
    port: u16,
    /// A serial port with the meter on its RS-485 line (Modbus RTU).
    #[arg(long)]
    serial: Option<PathBuf>,
    #[arg(long, default_value_t = 9600, requires = "serial")]
    baud: u32,
    #[arg(long, value_enum, default_value_t = ScanParity::Even, requires = "serial")]
    parity: ScanParity,
    #[arg(long, default_value_t = 8, requires = "serial")]
    data_bits: u8,
    #[arg(long, default_value_t = 1, requires = "serial")]
    stop_bits: u8,
    #[arg(long, default_value_t = 1)]
    unit: u8,
    #[arg(long)]
    profile: String,
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ScanParity {
    None,
    Even,
    Odd,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // rumqttd logs every connection at INFO.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=warn".into()),
        )
        .init();
    let command = Cli::parse().command;
    // `run` sizes the runtime from the site config; the other commands need one thread.
    let (config, workers) = match &command {
        Command::Run { config } => {
            let c = GatewayConfig::load(config)?;
            let workers = c.gateway.worker_threads;
            (Some(c), workers)
        }
        _ => (None, 1),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(command, config))
}

async fn run(command: Command, loaded: Option<GatewayConfig>) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run_site(&config, loaded).await,
        Command::Check { config } => check_site(&config),
        Command::Profiles => list_profiles(),
        Command::Scan(args) => scan_meter(args).await,
    }
}

/// `run`: the site's gateway (and its embedded broker) until Ctrl-C or SIGTERM.
async fn run_site(config: &Path, loaded: Option<GatewayConfig>) -> anyhow::Result<()> {
    let config = match loaded {
        Some(c) => c,
        None => GatewayConfig::load(config)?,
    };
    // The embedded broker lives as long as the process (rumqttd cannot be stopped).
    if let Some(b) = &config.mqtt.broker {
        gateway::broker::start(b)?;
        tracing::info!(listen = %b.listen, users = b.users.len(), "embedded MQTT broker started");
    }
    let gw = Gateway::build(config)?;
    let handle = gw.start(Duration::from_secs(10))?;
    // SIGTERM (systemd's default stop, `docker stop`, `kill`) stops in order like Ctrl-C, so the
    // open batch is spooled rather than lost with the process.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: spooling and forwarding what is pending");
    handle.stop().await;
    Ok(())
}

/// `check`: the site config validated, and its poll plan.
fn check_site(config: &Path) -> anyhow::Result<()> {
    let c = GatewayConfig::load(config)?;
    println!(
        "{}: gateway {} with {} devices, forwarding to {}",
        config.display(),
        c.gateway.id,
        c.devices.len(),
        c.forward.url
    );
    for d in &c.devices {
        let plan = device_plan(d, c.gateway.max_gap);
        println!(
            "  {:<28} {:<18} {:>3} registers in {} requests per poll every {:?}",
            d.name(),
            d.profile.id,
            d.registers.len(),
            plan.requests.len(),
            d.poll_interval
        );
        for q in &plan.requests {
            println!("      {} {:#06x} +{}", q.function, q.start, q.count);
        }
    }
    for d in &c.mqtt.devices {
        let Some(source) = c.mqtt.sources.get(d.source) else {
            continue;
        };
        println!(
            "  {:<28} {:<18} {} on {}:{} ({})",
            d.name(),
            d.firmware.name(),
            d.topic,
            source.host,
            source.port,
            source.name
        );
    }
    if let Some(b) = &c.mqtt.broker {
        println!(
            "  embedded MQTT broker on {} with {} users",
            b.listen,
            b.users.len()
        );
    }
    Ok(())
}

/// `profiles`: the built-in meter profiles.
fn list_profiles() -> anyhow::Result<()> {
    let lib = Library::builtin()?;
    for p in lib.iter() {
        let unverified = p.registers.iter().filter(|r| !r.verified).count();
        println!(
            "{:<22} {:<10} {:<12} {:>3} registers{}",
            p.id,
            p.vendor,
            p.model,
            p.registers.len(),
            if unverified > 0 {
                format!(" ({unverified} unverified)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `scan`: every register of the profile read once from one meter, printed raw and decoded.
async fn scan_meter(args: ScanArgs) -> anyhow::Result<()> {
    let lib = Library::builtin()?;
    let p = lib.get(&args.profile)?;
    let all: Vec<usize> = (0..p.registers.len()).collect();
    let plan = plan_reads(
        p,
        &all,
        PlanLimits {
            max_registers: p.max_registers,
            max_gap: 16,
        },
    );
    let timeout = args.timeout;
    let (source, name) = scan_source(args)?;
    let mut conn = Connection::open(&name, &source, Duration::from_secs_f64(timeout)).await?;
    println!("{name} as {} ({} requests)", p.id, plan.requests.len());
    for q in &plan.requests {
        match conn.read(q.function, q.start, q.count).await {
            Err(e) => println!("  {} {:#06x}+{}: {e}", q.function, q.start, q.count),
            Ok(words) => print_registers(p, q, &words),
        }
    }
    Ok(())
}

/// The source `scan` reads (TCP or a serial line) and its name for the output.
fn scan_source(args: ScanArgs) -> anyhow::Result<(SourceConfig, String)> {
    let ScanArgs {
        host,
        port,
        serial,
        baud,
        parity,
        data_bits,
        stop_bits,
        unit,
        ..
    } = args;
    match (host, serial) {
        (_, Some(path)) => {
            anyhow::ensure!(data_bits == 8, "Modbus RTU frames need 8 data bits");
            anyhow::ensure!(matches!(stop_bits, 1 | 2), "--stop-bits is 1 or 2");
            let name = format!("{}/{unit}", path.display());
            let source = SourceConfig::ModbusRtu {
                port: path,
                baud,
                parity: match parity {
                    ScanParity::None => Parity::None,
                    ScanParity::Even => Parity::Even,
                    ScanParity::Odd => Parity::Odd,
                },
                data_bits,
                stop_bits,
                unit,
                retries: 0,
            };
            Ok((source, name))
        }
        (Some(host), None) => {
            let name = format!("{host}:{port}/{unit}");
            let source = SourceConfig::ModbusTcp {
                host,
                port,
                unit,
                retries: 0,
            };
            Ok((source, name))
        }
        (None, None) => anyhow::bail!("give --host or --serial"),
    }
}

/// The registers one request answered: raw words and decoded value each.
fn print_registers(p: &Profile, q: &ReadRequest, words: &[u16]) {
    for &i in &q.registers {
        let r = &p.registers[i];
        let off = usize::from(r.address - q.start);
        let Some(w) = words.get(off..off + usize::from(r.data_type.words())) else {
            continue;
        };
        let raw: Vec<String> = w.iter().map(|x| format!("{x:04X}")).collect();
        match decode_register(r, p.word_order_of(r), w, Default::default()) {
            Ok(v) => println!(
                "  {:<16} {} {:#06x} [{}] = {} {}{}",
                r.name,
                q.function,
                r.address,
                raw.join(" "),
                v.value,
                v.unit,
                if r.verified { "" } else { "  (unverified)" }
            ),
            Err(e) => println!(
                "  {:<16} {} {:#06x} [{}] : {e}",
                r.name,
                q.function,
                r.address,
                raw.join(" ")
            ),
        }
    }
}
