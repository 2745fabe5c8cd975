//! The `switchboard` binary: flags and logging, then the library does the work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::{compile_command, operator, run_command, serve};

/// mimalloc instead of glibc's malloc: a signal's buffers are often allocated on one thread
/// and freed on another, which glibc serialises on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Serve(Box<serve::ServeArgs>),
    /// Run a host on the embedded in-process transport with every handler in a directory,
    /// driven by JSON signals on stdin (one per line); replies and client deliveries go to
    /// stdout.
    Run(run_command::RunArgs),
    #[command(flatten)]
    Operator(operator::OperatorCommand),
    /// Internal: compile a component from stdin to an artifact on stdout (the daemon runs
    /// this as a child process for each upload).
    #[command(hide = true)]
    CompileArtifact(compile_command::CompileArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = match Args::parse().command {
        Command::CompileArtifact(args) => return compile_command::run(args),
        Command::Serve(args) => match args.settings() {
            Ok(settings) => serve::serve(settings, serve::shutdown_signal())
                .await
                .map(|()| ExitCode::SUCCESS),
            Err(error) => Err(error),
        },
        Command::Run(args) => run_command::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Operator(command) => {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            operator::run(command, &mut out, &mut err).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // The chain of causes, without a backtrace: this is for the person at the terminal.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
