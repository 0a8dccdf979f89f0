//! `jieneng`: the server (`serve`), the all-in-one demo (`demo`), and reports (`report`).

mod demo;
mod report;
mod simulator;

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{NaiveDate, TimeZone, Utc};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "jieneng",
    version,
    about = "jieneng 节能: energy metering for public institutions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the ingest server (batch API, WAL, Parquet) until Ctrl-C.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run everything on loopback: simulated meters, a gateway, the server, reports.
    Demo {
        /// Where Parquet, the WAL and the gateway spool go.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Seconds between printed reports.
        #[arg(long, default_value_t = 30)]
        report_every: u64,
        /// Stop by itself after this many seconds (for scripts); Ctrl-C otherwise.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Print consumption per account, category and item for a period.
    Report {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// First day (UTC), YYYY-MM-DD.
        #[arg(long)]
        from: NaiveDate,
        /// Day after the last (UTC), YYYY-MM-DD.
        #[arg(long)]
        to: NaiveDate,
        #[arg(long)]
        csv: bool,
    },
    /// Print the sha256 of a gateway token, for the server config.
    TokenHash { token: String },
}

fn day_ms(d: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
        .timestamp_millis()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn,jieneng=info",
        // rumqttd logs every MQTT connection at INFO.
        _ => "info,rumqttd=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .init();
    match cli.command {
        Command::Serve { config } => {
            let config = ingest::ServeConfig::load(&config)?;
            let server = ingest::Server::start(&config).await?;
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            tracing::info!("stopping: flushing acknowledged rows to Parquet");
            let r = server.stop().await?;
            tracing::info!(rows = r.rows, files = r.files, "stopped");
        }
        Command::Demo {
            data_dir,
            report_every,
            duration,
        } => demo::run(data_dir, report_every, duration).await?,
        Command::Report {
            data_dir,
            from,
            to,
            csv,
        } => {
            let rows = query::Query::new(&data_dir)
                .consumption(day_ms(from), day_ms(to))
                .await?;
            if csv {
                print!("{}", report::csv(&rows));
            } else {
                println!(
                    "Consumption {from} .. {to} (UTC) from {}",
                    data_dir.display()
                );
                print!("{}", report::table(&rows, &Default::default()));
            }
        }
        Command::TokenHash { token } => println!("{}", ingest::config::token_hash(&token)),
    }
    Ok(())
}
