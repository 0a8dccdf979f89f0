//! `jieneng-gateway`: run a site, check its config, list profiles, scan one meter.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use device_profiles::{Library, PlanLimits, decode_register, plan_reads};
use gateway::config::SourceConfig;
use gateway::source::modbus::{Connection, device_plan};
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
    /// Read one Modbus TCP meter once and print every decoded value with its registers.
    Scan {
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 502)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        #[arg(long)]
        profile: String,
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Run { config } => {
            let config = GatewayConfig::load(&config)?;
            let gw = Gateway::build(config)?;
            let handle = gw.start(Duration::from_secs(10))?;
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            tracing::info!("stopping: spooling and forwarding what is pending");
            handle.stop().await;
        }
        Command::Check { config } => {
            let c = GatewayConfig::load(&config)?;
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
        }
        Command::Profiles => {
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
        }
        Command::Scan {
            host,
            port,
            unit,
            profile,
            timeout,
        } => {
            let lib = Library::builtin()?;
            let p = lib.get(&profile)?;
            let all: Vec<usize> = (0..p.registers.len()).collect();
            let plan = plan_reads(
                p,
                &all,
                PlanLimits {
                    max_registers: p.max_registers,
                    max_gap: 16,
                },
            );
            let source = SourceConfig::ModbusTcp {
                host: host.clone(),
                port,
                unit,
            };
            let name = format!("{host}:{port}/{unit}");
            let mut conn =
                Connection::open(&name, &source, Duration::from_secs_f64(timeout)).await?;
            println!("{name} as {} ({} requests)", p.id, plan.requests.len());
            for q in &plan.requests {
                match conn.read(q.function, q.start, q.count).await {
                    Err(e) => println!("  {} {:#06x}+{}: {e}", q.function, q.start, q.count),
                    Ok(words) => {
                        for &i in &q.registers {
                            let r = &p.registers[i];
                            let off = usize::from(r.address - q.start);
                            let Some(w) = words.get(off..off + usize::from(r.data_type.words()))
                            else {
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
                }
            }
        }
    }
    Ok(())
}
