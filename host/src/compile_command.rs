//! `switchboard compile-artifact` (hidden): the child process a daemon compiles an upload in.
//! It reads the component on stdin, compiles it with an engine configured like its parent's,
//! and writes the serialized artifact to stdout. Running apart, it can be killed when nobody
//! waits for the upload any more, and every byte it allocated goes back when it exits.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::runtime::compile::{EXIT_INVALID, EngineArgs, compile_in_this_process};

/// Flags of `switchboard compile-artifact`, set by the parent from its own settings.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The parent's most component instances.
    #[arg(long)]
    pub max_instances: u32,
    /// The parent's default memory limit in bytes.
    #[arg(long)]
    pub memory_bytes: u64,
    /// The parent's wasm stack size in bytes.
    #[arg(long)]
    pub max_wasm_stack: usize,
}

/// Compiles stdin to stdout; exits with [`EXIT_INVALID`] when the component is invalid, 1
/// when something else failed, with the reason on stderr.
pub fn run(args: CompileArgs) -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(error) = std::io::stdin().lock().read_to_end(&mut bytes) {
        tracing::error!(%error, "reading the component from stdin");
        return ExitCode::FAILURE;
    }
    let engine = EngineArgs {
        max_instances: args.max_instances,
        memory_bytes: args.memory_bytes,
        max_wasm_stack: args.max_wasm_stack,
    };
    match compile_in_this_process(engine, &bytes) {
        Ok(artifact) => {
            drop(bytes);
            let mut out = std::io::stdout().lock();
            match out.write_all(&artifact).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // The parent stopped listening (it gave up on this upload).
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err((invalid, reason)) => {
            // The parent reads stderr as the reason; this is its only line.
            let _ = writeln!(std::io::stderr(), "{reason}");
            if invalid {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
