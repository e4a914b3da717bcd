//! The `flowgate` command-line tool: inspect, replay and purge dead
//! letters, show durable consumers (and whether their settings on the
//! server are the code's), print an app's AsyncAPI document.
//!
//! ```text
//! flowgate dlq list orders.placed
//! flowgate dlq show orders.placed 7
//! flowgate dlq replay orders.placed --error "card declined" --dry-run
//! flowgate dlq replay orders.placed --seq 7
//! flowgate dlq purge orders.placed --range 1..6
//! flowgate consumers
//! flowgate asyncapi --yaml        # from an app's own binary, below
//! ```
//!
//! Installed on its own (`cargo install flowgate-cli`), it knows only what
//! the server holds. Run from an app's own binary it also knows the app's
//! subscribers: `flowgate consumers` then compares each durable with the
//! code, and `flowgate asyncapi` prints the app's document:
//!
//! ```no_run
//! // src/bin/flowgate.rs of your app
//! fn main() -> std::process::ExitCode {
//!     flowgate_cli::main_for(flowgate::App::new().discover())
//! }
//! ```
//!
//! The same operations are a library API in [`flowgate::dlq`] and on
//! [`flowgate::JetStream`] (`consumer_report`, `consumer_reports`).

mod args;
mod consumers;
mod dlq;
mod table;

use std::process::ExitCode;

use clap::Parser;
use flowgate::App;

pub use args::Cli;
use args::Command;

/// Why a command did not do all it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line names something impossible.
    #[error("{0}")]
    Usage(String),
    /// flowgate, or the connection, failed.
    #[error(transparent)]
    Flowgate(#[from] flowgate::Error),
    /// A dead-letter operation failed.
    #[error(transparent)]
    DeadLetters(#[from] flowgate::dlq::DeadLetterError),
    /// It ran, and part of what it was asked was refused or differs: the
    /// output says which.
    #[error("{0}")]
    Incomplete(String),
}

/// Runs the tool on the process's arguments, knowing no app.
pub fn main() -> ExitCode {
    run_main(None)
}

/// Runs the tool on the process's arguments for `app`: `consumers`
/// compares its durables with the code, `asyncapi` prints its document.
pub fn main_for(app: App) -> ExitCode {
    run_main(Some(app))
}

fn run_main(app: Option<App>) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("flowgate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    let result = runtime.block_on(run(&cli, app.as_ref(), &mut out));
    print!("{out}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("flowgate: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line, writing what it prints to `out` (also
/// when it fails part-way: what it did is there).
pub async fn run(cli: &Cli, app: Option<&App>, out: &mut String) -> Result<(), CliError> {
    if let Command::Asyncapi(args) = &cli.command {
        let app = app.ok_or_else(|| {
            CliError::Usage(
                "`flowgate asyncapi` needs an app: run it from your app's own binary (`flowgate_cli::main_for(App::new().discover())`)".into(),
            )
        })?;
        let mut document = app.asyncapi();
        if let Some(title) = &args.title {
            document = document.title(title);
        }
        if let Some(version) = &args.doc_version {
            document = document.version(version);
        }
        let text = match args.yaml {
            true => document.to_yaml(),
            false => document.to_json(),
        };
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
        return Ok(());
    }
    let nats = connect(cli).await?;
    match &cli.command {
        Command::Dlq(command) => dlq::run(&nats, command, out).await,
        Command::Consumers(args) => {
            let reports = consumers::reports(&nats, app).await?;
            consumers::write(&reports, app.is_some(), args.json, out)
        }
        Command::Asyncapi(_) => Ok(()),
    }
}

async fn connect(cli: &Cli) -> Result<flowgate::JetStream, CliError> {
    let mut options = async_nats::ConnectOptions::new().name("flowgate-cli");
    if let Some(creds) = &cli.creds {
        options = options.credentials_file(creds).await.map_err(|err| {
            CliError::Usage(format!(
                "cannot read the credentials file {}: {err}",
                creds.display()
            ))
        })?;
    }
    Ok(flowgate::JetStream::connect_with_options(&cli.server, options).await?)
}
