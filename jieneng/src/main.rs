//! `jieneng`: the server (`serve`), the all-in-one demo (`demo`), and reports (`report`).

mod demo;
mod history;
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
    /// or written to CSV files and an XLSX workbook. `jieneng report savings` analyses savings.
    #[command(args_conflicts_with_subcommands = true)]
    Report {
        #[command(subcommand)]
        what: Option<ReportKind>,
        #[command(flatten)]
        consumption: Box<ReportArgs>,
    },
    /// Print the sha256 of a gateway token, for the server config.
    TokenHash { token: String },
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// The server config whose [[account]] entries name accounts, give floor area and
    /// headcount, and relate main meters to sub-meters.
    #[arg(long)]
    config: Option<PathBuf>,
    /// First day (Beijing time), YYYY-MM-DD (required).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Day after the last (Beijing time), YYYY-MM-DD (required).
    #[arg(long)]
    to: Option<NaiveDate>,
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
}

#[derive(Subcommand, Debug)]
enum ReportKind {
    /// Savings potential per account, ranked: usage above the baseline (weather-normalised
    /// when temperature is known, by day type otherwise), off-hours load, benchmark gaps and
    /// the gap to the peer median, in kWh, kgce and kgCO2e a year, with the baseline's fit
    /// against ASHRAE Guideline 14.
    Savings(Box<SavingsArgs>),
}

#[derive(clap::Args, Debug)]
struct SavingsArgs {
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// The server config: its [[account]] entries (floor area, institution type for peers and
    /// benchmarks), its [savings] temperature_csv and its [reference] files.
    #[arg(long)]
    config: Option<PathBuf>,
    /// First day of the reporting period (Beijing time); default: --to minus 365 days.
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Day after the reporting period's last; default: today (Beijing time).
    #[arg(long)]
    to: Option<NaiveDate>,
    /// First day of the baseline; default: --baseline-to minus 365 days.
    #[arg(long)]
    baseline_from: Option<NaiveDate>,
    /// Day after the baseline's last; default: --from.
    #[arg(long)]
    baseline_to: Option<NaiveDate>,
    /// Account codes, comma-separated.
    #[arg(long)]
    account: Option<String>,
    /// Division prefix: 2 digits a province, 4 a city, 6 a county.
    #[arg(long)]
    region: Option<String>,
    /// Outdoor temperature: auto (readings, else the CSV), readings, csv or none.
    #[arg(long, default_value = "auto")]
    temperature: String,
    /// A `date,temperature_c` CSV of daily means (overrides the config's).
    #[arg(long)]
    temperature_csv: Option<PathBuf>,
    /// Print the opportunities as CSV instead of tables.
    #[arg(long)]
    csv: bool,
    /// Write savings.csv (opportunities) and savings-accounts.csv into this directory.
    #[arg(long)]
    csv_dir: Option<PathBuf>,
    /// Write an XLSX workbook (opportunities, accounts).
    #[arg(long)]
    xlsx: Option<PathBuf>,
}

fn filters(
    account: Option<&str>,
    region: Option<&str>,
) -> anyhow::Result<Vec<query::report::scope::Filter>> {
    use query::report::scope::{Filter, Region};
    let mut filters = Vec::new();
    if let Some(list) = account {
        filters.push(Filter::Accounts(
            list.split(',')
                .map(|c| reading_model::AccountCode::parse(c.trim()))
                .collect::<Result<_, _>>()?,
        ));
    }
    if let Some(r) = region {
        filters.push(Filter::Region(Region::parse(r)?));
    }
    Ok(filters)
}

async fn savings_command(a: SavingsArgs) -> anyhow::Result<()> {
    use query::report::savings::{SavingsRequest, TemperatureSource};

    let (accounts, mut csv_path, reference, factor_files) = match &a.config {
        Some(p) => {
            let c = jieneng::config::ServeConfig::load(p)?;
            (
                c.account,
                c.savings.temperature_csv,
                c.reference,
                c.factor_files,
            )
        }
        None => (
            vec![],
            None,
            query::savings::ReferenceFiles::default(),
            vec![],
        ),
    };
    if a.temperature_csv.is_some() {
        csv_path.clone_from(&a.temperature_csv);
    }
    let mut reports = query::Reports::new(
        query::Query::new(&a.data_dir),
        accounts,
        query::accounts::load_factor_tables(&factor_files)?,
    )
    // The server's [reference] files, so the report equals GET /api/v1/savings.
    .with_reference(query::savings::ReferenceData::load(&reference)?);
    if let Some(p) = &csv_path {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        reports = reports
            .with_temperature_csv(&text)
            .with_context(|| format!("{}", p.display()))?;
    }
    let temperature = TemperatureSource::parse(&a.temperature).with_context(|| {
        format!(
            "--temperature {}: expected auto, readings, csv or none",
            a.temperature
        )
    })?;
    if temperature == TemperatureSource::Csv && csv_path.is_none() {
        anyhow::bail!("--temperature csv: give --temperature-csv or [savings] temperature_csv");
    }
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let to = a.to.unwrap_or(today);
    let from = a.from.unwrap_or(to - chrono::Duration::days(365));
    let baseline_to = a.baseline_to.unwrap_or(from);
    let baseline_from = a
        .baseline_from
        .unwrap_or(baseline_to - chrono::Duration::days(365));
    if baseline_to > from {
        anyhow::bail!(
            "--baseline-to {baseline_to} is after --from {from}: the baseline must end before the reporting period"
        );
    }
    let report = reports
        .savings(&SavingsRequest {
            baseline_from,
            baseline_to,
            from,
            to,
            filters: filters(a.account.as_deref(), a.region.as_deref())?,
            temperature,
        })
        .await?;
    if let Some(dir) = &a.csv_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in [
            (
                "savings.csv",
                query::report::csv::savings(&report.opportunities),
            ),
            (
                "savings-accounts.csv",
                query::report::csv::savings_accounts(&report.accounts),
            ),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    if let Some(p) = &a.xlsx {
        report::write_savings_xlsx(p, &report)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if a.csv {
        print!("{}", query::report::csv::savings(&report.opportunities));
    } else {
        println!(
            "Savings potential 节能潜力: reporting {} .. {}, baseline {} .. {} (Beijing time) from {}",
            report.from,
            report.to,
            report.baseline_from,
            report.baseline_to,
            a.data_dir.display()
        );
        print!("{}", report::savings_table(&report));
    }
    Ok(())
}

async fn report_command(a: ReportArgs) -> anyhow::Result<()> {
    use query::report::carbon::CarbonRequest;
    use query::report::consumption::ConsumptionRequest;
    use reading_model::time::Granularity;
    // Optional only so that `jieneng report savings` needs neither.
    let (Some(from), Some(to)) = (a.from, a.to) else {
        anyhow::bail!("jieneng report: --from and --to are required (YYYY-MM-DD)");
    };

    let (accounts, factor_files) = match &a.config {
        Some(p) => {
            let c = jieneng::config::ServeConfig::load(p)?;
            (c.account, c.factor_files)
        }
        None => (vec![], vec![]),
    };
    let names = accounts
        .iter()
        .map(|x| (x.code.to_string(), x.name_zh.clone()))
        .collect();
    let reports = query::Reports::new(
        query::Query::new(&a.data_dir),
        accounts,
        query::accounts::load_factor_tables(&factor_files)?,
    );
    let granularity = Granularity::parse(&a.granularity).with_context(|| {
        format!(
            "--granularity {}: expected day, month or year",
            a.granularity
        )
    })?;
    let filters = filters(a.account.as_deref(), a.region.as_deref())?;
    let filters_for_forms = filters.clone();
    let report = reports
        .consumption_report(&ConsumptionRequest {
            from,
            to,
            granularity,
            filters: filters.clone(),
            category: None,
        })
        .await?;
    let carbon = reports
        .carbon(&CarbonRequest {
            from,
            to,
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
                .statistics_forms(edition, from.year(), &filters_for_forms)
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
            from,
            to,
            granularity.name(),
            a.data_dir.display()
        );
        print!("{}", report::tree_table(&report, &names));
    }
    Ok(())
}

/// `serve`: until Ctrl-C or SIGTERM (systemd's stop), each of which flushes every acknowledged
/// row to Parquet before the process exits; SIGHUP reloads the gateway tokens and API keys from
/// the same file, once it validates (otherwise the running ones stay and the error is logged).
async fn serve_command(path: &std::path::Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = jieneng::config::ServeConfig::load(path)?;
    let serving = jieneng::serve::start_serving(&config).await?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; break; }
            _ = terminate.recv() => break,
            _ = hangup.recv() => match jieneng::config::ServeConfig::load(path) {
                Ok(new) => {
                    let r = serving.reload(&new);
                    tracing::info!(
                        gateway_tokens = r.gateway_tokens.now,
                        tokens_added = r.gateway_tokens.added,
                        tokens_removed = r.gateway_tokens.removed,
                        tokens_changed = r.gateway_tokens.changed,
                        api_keys = r.api_keys.now,
                        keys_added = r.api_keys.added,
                        keys_removed = r.api_keys.removed,
                        keys_changed = r.api_keys.changed,
                        "reloaded {}: gateway tokens and API keys in force (other settings \
                         take effect at the next start)",
                        path.display()
                    );
                }
                Err(e) => {
                    tracing::error!(
                        "reload refused, the running gateway tokens and API keys stay in force: {e:#}"
                    );
                    let mut m = serde_json::Map::new();
                    m.insert("file".into(), serde_json::json!(path.display().to_string()));
                    m.insert("error".into(), serde_json::json!(format!("{e:#}")));
                    serving.admin("reload_refused", m);
                }
            },
        }
    }
    tracing::info!("stopping: flushing acknowledged rows to Parquet");
    let r = serving.stop().await?;
    tracing::info!(rows = r.rows, files = r.files, "stopped");
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
        Command::Serve { config } => serve_command(&config).await?,
        Command::Demo {
            data_dir,
            report_every,
            duration,
        } => demo::run(data_dir, report_every, duration).await?,
        Command::Report {
            what: Some(ReportKind::Savings(a)),
            ..
        } => savings_command(*a).await?,
        Command::Report {
            what: None,
            consumption,
        } => report_command(*consumption).await?,
        Command::TokenHash { token } => println!("{}", http_contract::token_hash(&token)),
    }
    Ok(())
}
