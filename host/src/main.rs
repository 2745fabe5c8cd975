//! The `switchboard` binary: flags and logging, then the library does the work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::{Host, HostConfig, cli};
use tokio::io::BufReader;
use tokio::sync::Mutex;

/// Routes signals between sandboxed WebAssembly handlers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a host on the embedded in-process transport with every handler in a directory,
    /// driven by JSON signals on stdin (one per line); replies and client deliveries go to
    /// stdout.
    Run {
        /// Directory of handler components (*.wasm); each is deployed under its file name.
        #[arg(
            long,
            env = "SWITCHBOARD_HANDLERS",
            default_value = "target/wasm32-wasip2/release"
        )]
        handlers: PathBuf,
        /// Connect a client at this address (e.g. user:u1) and print what it receives.
        #[arg(long = "client", value_name = "ADDRESS")]
        clients: Vec<String>,
        /// How long to wait for each reply.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// How long to keep running after input ends, for broadcasts still in flight.
        #[arg(long, default_value = "200ms", value_parser = parse_duration)]
        linger: Duration,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms or 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("unknown unit in `{text}`: use ms, s or m")),
    }
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
        Command::Run {
            handlers,
            clients,
            timeout,
            linger,
        } => {
            let host = Host::new(HostConfig::default()).context("starting the host")?;
            let deployed = cli::deploy_dir(&host, &handlers).await?;
            let names: Vec<_> = deployed.iter().map(|d| d.name.as_str()).collect();
            tracing::info!(handlers = ?names, "ready: reading signals from stdin");
            let out = Arc::new(Mutex::new(tokio::io::stdout()));
            cli::watch_clients(&host, &clients, out.clone());
            cli::drive(&host, BufReader::new(tokio::io::stdin()), out, timeout).await?;
            tokio::time::sleep(linger).await;
            Ok(())
        }
    }
}
