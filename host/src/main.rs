//! The `switchboard` binary: flags and logging, then the library does the work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::{cli, operator, serve};

/// Routes signals between sandboxed WebAssembly handlers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: the admin API over HTTP, handlers restored from the data directory.
    Serve(serve::ServeArgs),
    /// Run a host on the embedded in-process transport with every handler in a directory,
    /// driven by JSON signals on stdin (one per line); replies and client deliveries go to
    /// stdout.
    Run(cli::RunArgs),
    #[command(flatten)]
    Operator(operator::OperatorCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        Command::Serve(args) => serve::serve(args.settings()?, serve::shutdown_signal()).await,
        Command::Run(args) => cli::run(args).await,
        Command::Operator(command) => {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            if operator::run(command, &mut out, &mut err).await? != ExitCode::SUCCESS {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
