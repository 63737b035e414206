//! The `cuecast-relay` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cuecast_relay::catalog::{self, Catalog};
use cuecast_relay::config::Config;
use cuecast_relay::delivery::Sender;
use cuecast_relay::signing::Secret;
use cuecast_relay::storage::admin::DeliveryFilter;
use cuecast_relay::storage::{self, Replay, Status, Storage};
use cuecast_relay::{Error, Result};

#[derive(Parser)]
#[command(
    name = "cuecast-relay",
    version,
    about = "Accepts cuecast event batches durably and delivers them to webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (default) or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (CUECAST_LISTEN, CUECAST_STORAGE and CUECAST_ADMIN_TOKEN override the file).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Apply schema migrations before serving (the default for the embedded SQLite file).
        #[arg(long)]
        migrate: bool,
    },
    /// Check a configuration file; lists every problem with its line and exits non-zero if any.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create or upgrade the database schema (serve does this too).
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a new signing secret (`whsec_` + base64 of 24 random bytes).
    GenSecret,
    /// Render a sample event for one webhook, deliver it and print the answer.
    SendTest {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        webhook: String,
        /// An event JSON file to send instead of the built-in sample.
        #[arg(long)]
        event: Option<PathBuf>,
    },
    /// List dead letters, or replay one (--id) or all of a webhook's in a time range.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Replay this delivery id.
        #[arg(long, conflicts_with_all = ["webhook", "list"])]
        id: Option<i64>,
        /// Replay (or list) the dead letters of this webhook.
        #[arg(long)]
        webhook: Option<String>,
        /// Only dead letters dead-lettered at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only dead letters dead-lettered at or before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// List instead of replaying.
        #[arg(long)]
        list: bool,
    },
    /// Re-enable a webhook that was disabled by a 410 Gone answer.
    Enable {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        webhook: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Spans (the request and its id) are kept on each line.
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the configured storage for a one-off command (migrating it when
/// the server would, so the CLI works on a fresh embedded file).
async fn open(config: &Config) -> Result<Storage> {
    let options = storage::Options {
        migrate: config.migrate_on_start,
        lease: config.limits.lease,
        wait: config.limits.storage_wait,
    };
    Storage::open(&config.storage, options).await
}

/// `check-config`'s comparison of the file with the stored webhooks.
async fn stored_differences(config: &Config) -> Result<Vec<String>> {
    if let cuecast_relay::config::Storage::Sqlite(path) = &config.storage {
        if !path.exists() {
            return Ok(vec![]);
        }
    }
    let storage = Storage::open(&config.storage, storage::Options { migrate: false, ..Default::default() }).await?;
    let (_, stored, _) = storage.load_catalog().await?;
    let (file, _) = catalog::from_file(config, 0);
    Ok(catalog::differences(&file, &stored))
}

fn parse_time(s: &Option<String>, default: i64) -> Result<i64> {
    match s {
        None => Ok(default),
        Some(t) => cuecast::time::parse_millis(t).ok_or_else(|| Error::Usage(format!("{t:?} is not an RFC 3339 time"))),
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve { config, migrate } => {
            let mut config = Config::load(&config)?;
            config.migrate_on_start |= migrate;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
            cuecast_relay::run(config, listener, cuecast_relay::shutdown_signal()).await?;
        }
        Command::CheckConfig { config: path } => match Config::load(&path) {
            Ok(config) => {
                println!(
                    "{}: ok ({} source(s), {} webhook(s), storage {})",
                    path.display(),
                    config.sources.len(),
                    config.webhooks.len(),
                    storage::describe(&config.storage)
                );
                // What the admin API changed relative to this file, when storage can be read.
                match stored_differences(&config).await {
                    Ok(lines) => {
                        for line in lines {
                            println!("{}: {line}", path.display());
                        }
                    }
                    Err(e) => println!("{}: stored webhooks not compared: {e}", path.display()),
                }
            }
            Err(Error::Config { path, errors }) => {
                for e in &errors {
                    println!("{path}:{}", e);
                }
                println!("{} problem(s)", errors.len());
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e),
        },
        Command::Migrate { config } => {
            let config = Config::load(&config)?;
            let (from, to) = storage::migrate(&config.storage, None).await?;
            println!("{}: schema version {from} -> {to}", storage::describe(&config.storage));
        }
        Command::GenSecret => {
            println!("{}", Secret::generate_text(rand::random()));
        }
        Command::SendTest { config, webhook, event } => {
            let config = std::sync::Arc::new(Config::load(&config)?);
            let catalog = Catalog::of_file(&config);
            let (hook, _) = catalog
                .webhook(&webhook)
                .ok_or_else(|| Error::Usage(format!("no webhook {webhook:?} in the config")))?;
            let event = match event {
                Some(path) => serde_json::from_slice(&std::fs::read(&path)?)
                    .map_err(|e| Error::Usage(format!("{}: not JSON: {e}", path.display())))?,
                None => cuecast_relay::samples::for_webhook(&catalog, hook),
            };
            let request = catalog.rules.render(hook, &event);
            match &request {
                Ok(r) => {
                    println!("{} {}", if r.body.is_some() { "POST" } else { "GET" }, r.url);
                    if let Some(body) = &r.body {
                        println!("{}", String::from_utf8_lossy(body));
                    }
                }
                Err(e) => println!("render failed: {e}"),
            }
            let msg_id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
            let result = Sender::new(config.clone())?.send(&catalog, hook, &msg_id, &event).await;
            println!("---");
            match result.http_status {
                Some(s) => println!("HTTP {s} in {} ms", result.duration.as_millis()),
                None => println!("no answer after {} ms", result.duration.as_millis()),
            }
            if let Some(body) = &result.response {
                println!("{body}");
            }
            if let Some(e) = &result.error {
                println!("error: {e}");
            }
            if !matches!(result.http_status, Some(200..=299)) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Replay { config, id, webhook, since, until, list } => {
            let config = Config::load(&config)?;
            let storage = open(&config).await?;
            let (since, until) = (parse_time(&since, 0)?, parse_time(&until, i64::MAX)?);
            if list || (id.is_none() && webhook.is_none()) {
                let filter = DeliveryFilter {
                    webhook,
                    status: Some(Status::Dead),
                    updated: Some((since, until)),
                    ..DeliveryFilter::default()
                };
                // The admin API's list (newest first), printed oldest first.
                let rows = storage.list_deliveries(filter, None, 10_000).await?;
                for r in rows.iter().rev() {
                    println!(
                        "{}\t{}\t{}\t{}\t{} attempt(s)\t{}\t{}",
                        r.id,
                        r.webhook_id,
                        r.event,
                        r.event_id,
                        r.attempts,
                        cuecast::time::format_millis(r.updated_at),
                        r.last_error.as_deref().unwrap_or("")
                    );
                }
                println!("{} dead letter(s)", rows.len());
                return Ok(ExitCode::SUCCESS);
            }
            let which = match (id, webhook) {
                (Some(id), _) => Replay::One(id),
                (None, Some(webhook_id)) => Replay::Webhook { webhook_id, since, until },
                (None, None) => unreachable!("handled above"),
            };
            let n = storage.replay(which).await?;
            println!("{n} dead letter(s) queued again; a running relay picks them up within seconds");
        }
        Command::Enable { config, webhook } => {
            let config = Config::load(&config)?;
            let storage = open(&config).await?;
            if storage.enable_webhook(webhook.clone()).await? {
                println!("{webhook} enabled; replay its dead letters with `cuecast-relay replay --webhook {webhook}`");
            } else {
                println!("{webhook} was not disabled");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
