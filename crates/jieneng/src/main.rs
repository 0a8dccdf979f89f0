//! `jieneng`: the server (`serve`), the all-in-one demo (`demo`), and reports (`report`).

mod demo;
mod report;
mod simulator;

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::NaiveDate;
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
    /// Consumption per account, period, category and item (with the unmetered remainder,
    /// 同比/环比 and indicators) and carbon with the factors used: printed as tables, or as CSV,
    /// or written to CSV files and an XLSX workbook.
    Report {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// The server config whose [[account]] entries name accounts, give floor area and
        /// headcount, and relate main meters to sub-meters.
        #[arg(long)]
        config: Option<PathBuf>,
        /// First day (Beijing time), YYYY-MM-DD.
        #[arg(long)]
        from: NaiveDate,
        /// Day after the last (Beijing time), YYYY-MM-DD.
        #[arg(long)]
        to: NaiveDate,
        /// day, month or year.
        #[arg(long, default_value = "month")]
        granularity: String,
        /// Account codes, comma-separated.
        #[arg(long)]
        account: Option<String>,
        /// Division prefix: 2 digits a province, 4 a city, 6 a county.
        #[arg(long)]
        region: Option<String>,
        /// Print the item rows as CSV instead of tables.
        #[arg(long)]
        csv: bool,
        /// Write items.csv, indicators.csv and carbon.csv into this directory.
        #[arg(long)]
        csv_dir: Option<PathBuf>,
        /// Write an XLSX workbook (items, indicators, carbon).
        #[arg(long)]
        xlsx: Option<PathBuf>,
        /// With --csv-dir: also write forms-<edition>.csv, the statistics forms (基本信息表,
        /// 能源资源消费状况表) of this edition (2013, 2015, 2022, 2025) for the year of --from.
        /// No field is verified against the printed forms yet.
        #[arg(long)]
        forms: Option<u16>,
    },
    /// Print the sha256 of a gateway token, for the server config.
    TokenHash { token: String },
}

struct ReportArgs {
    data_dir: PathBuf,
    config: Option<PathBuf>,
    from: NaiveDate,
    to: NaiveDate,
    granularity: String,
    account: Option<String>,
    region: Option<String>,
    csv: bool,
    csv_dir: Option<PathBuf>,
    xlsx: Option<PathBuf>,
    forms: Option<u16>,
}

async fn report_command(a: ReportArgs) -> anyhow::Result<()> {
    use query::report::carbon::CarbonRequest;
    use query::report::consumption::ConsumptionRequest;
    use query::report::period::Granularity;
    use query::report::scope::{Filter, Region};

    let accounts = match &a.config {
        Some(p) => ingest::ServeConfig::load(p)?.account,
        None => vec![],
    };
    let names = accounts
        .iter()
        .map(|x| (x.code.to_string(), x.name_zh.clone()))
        .collect();
    let reports = query::Reports::new(
        query::Query::new(&a.data_dir),
        accounts,
        reading_model::FactorTables::builtin()?,
    );
    let granularity = Granularity::parse(&a.granularity).with_context(|| {
        format!(
            "--granularity {}: expected day, month or year",
            a.granularity
        )
    })?;
    let mut filters = Vec::new();
    if let Some(list) = &a.account {
        filters.push(Filter::Accounts(
            list.split(',')
                .map(|c| reading_model::AccountCode::parse(c.trim()))
                .collect::<Result<_, _>>()?,
        ));
    }
    if let Some(r) = &a.region {
        filters.push(Filter::Region(Region::parse(r)?));
    }
    let filters_for_forms = filters.clone();
    let report = reports
        .consumption_report(&ConsumptionRequest {
            from: a.from,
            to: a.to,
            granularity,
            filters: filters.clone(),
            category: None,
        })
        .await?;
    let carbon = reports
        .carbon(&CarbonRequest {
            from: a.from,
            to: a.to,
            granularity,
            filters,
            category: None,
            group_digits: None,
        })
        .await?;
    if let Some(dir) = &a.csv_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in [
            ("items.csv", query::report::csv::items(&report.rows)),
            (
                "indicators.csv",
                query::report::csv::indicators(&report.indicators),
            ),
            ("carbon.csv", query::report::csv::carbon(&carbon)),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(edition) = a.forms {
            use chrono::Datelike;
            let rows = reports
                .statistics_forms(edition, a.from.year(), &filters_for_forms)
                .await?;
            let p = dir.join(format!("forms-{edition}.csv"));
            std::fs::write(&p, query::report::csv::forms(&rows))
                .with_context(|| format!("writing {}", p.display()))?;
        }
    } else if a.forms.is_some() {
        anyhow::bail!("--forms writes a CSV file: give --csv-dir too");
    }
    if let Some(p) = &a.xlsx {
        report::write_xlsx(p, &report, &carbon)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if a.csv {
        print!("{}", query::report::csv::items(&report.rows));
    } else {
        println!(
            "Consumption {} .. {} (Beijing time, by {}) from {}",
            a.from,
            a.to,
            granularity.name(),
            a.data_dir.display()
        );
        print!("{}", report::tree_table(&report, &names));
    }
    Ok(())
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
            config,
            from,
            to,
            granularity,
            account,
            region,
            csv,
            csv_dir,
            xlsx,
            forms,
        } => {
            report_command(ReportArgs {
                data_dir,
                config,
                from,
                to,
                granularity,
                account,
                region,
                csv,
                csv_dir,
                xlsx,
                forms,
            })
            .await?
        }
        Command::TokenHash { token } => println!("{}", ingest::config::token_hash(&token)),
    }
    Ok(())
}
