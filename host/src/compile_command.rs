//! `switchboard compile-artifact` (hidden): the child process a daemon compiles an upload in.
//! It reads the component on stdin, compiles it with an engine configured like its parent's,
//! and writes the serialized artifact to stdout. Running apart, it can be killed when nobody
//! waits for the upload any more, and every byte it allocated goes back when it exits.
//!
//! It also limits itself, so the compile limit holds even if its daemon is killed: it dies
//! with the daemon (`PR_SET_PDEATHSIG`, and it exits at once if the daemon is already
//! gone), its CPU time is capped (`RLIMIT_CPU`, from the daemon's compile timeout) and so is
//! its address space (`RLIMIT_AS`, [`ADDRESS_SPACE`]).

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::runtime::compile::{EXIT_INVALID, EngineArgs, PARENT_ENV, compile_in_this_process};

/// Exit status of a compile child whose daemon was gone when it started.
pub const EXIT_ORPHANED: u8 = 66;
/// Most address space a compile child may map: far above what compiling a 64 MiB component
/// takes, far below what would hurt the host.
pub const ADDRESS_SPACE: u64 = 4 << 30;

/// Flags of `switchboard compile-artifact`, set by the parent from its own settings.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Seconds of CPU time the compile may use, all threads together; past it the process
    /// is stopped (`RLIMIT_CPU`).
    #[arg(long)]
    pub cpu_seconds: Option<u64>,
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
    if !limit_self(args.cpu_seconds) {
        let _ = writeln!(
            std::io::stderr(),
            "the daemon that started this compile is gone"
        );
        return ExitCode::from(EXIT_ORPHANED);
    }
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

/// Dies with the daemon and caps its own CPU time and address space; false if the daemon
/// that started it (named in [`PARENT_ENV`]) is already gone.
fn limit_self(cpu_seconds: Option<u64>) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl, getppid and setrlimit only change or read this process's own settings.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The daemon may have died before the line above: then nothing would kill us.
        if let Some(parent) = std::env::var(PARENT_ENV)
            .ok()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
            && parent != libc::getppid()
        {
            return false;
        }
        let set = |resource, soft: u64, hard: u64| {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(resource, &limit) != 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "a compile child could not limit itself"
                );
            }
        };
        if let Some(seconds) = cpu_seconds {
            // SIGXCPU at the soft limit, SIGKILL at the hard one.
            set(libc::RLIMIT_CPU, seconds, seconds.saturating_add(5));
        }
        set(libc::RLIMIT_AS, ADDRESS_SPACE, ADDRESS_SPACE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu_seconds;
    true
}
