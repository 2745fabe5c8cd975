//! Compiling uploads, bounded: at most [`HostConfig::max_compilations`] at once, a queue of
//! at most [`HostConfig::max_queued_compilations`] waiting, each stopped past
//! [`HostConfig::compile_timeout`]. With [`Compiler::Subprocess`] a compile runs in a child
//! process that is killed as soon as nobody waits for it (the uploading client hung up) and
//! hands all its memory back to the system when it exits; the parent only maps the finished
//! artifact.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Engine;

use super::LoadError;
use crate::config::{Compiler, HostConfig};

/// Exit code of `compile-artifact` when the component itself is invalid (not a host fault):
/// `EX_DATAERR`, distinct from the 2 a command-line parser exits with on unknown flags.
pub const EXIT_INVALID: u8 = 65;
/// The environment variable a daemon names itself in (its pid) for its compile children,
/// which exit at once if their parent is not it any more (it died before they started).
pub const PARENT_ENV: &str = "SWITCHBOARD_COMPILE_PARENT";
/// Most bytes of a failed child's stderr kept in the error.
const STDERR_KEPT: usize = 2048;

/// The compile slots and their gauges.
pub(super) struct CompilePool {
    slots: Arc<Semaphore>,
    in_progress: Arc<AtomicUsize>,
    queued: AtomicUsize,
    started: AtomicU64,
}

/// A compile slot held: counted in progress until dropped.
struct Running {
    _permit: OwnedSemaphorePermit,
    in_progress: Arc<AtomicUsize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a waiter in the queue until dropped (also when its upload is abandoned).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CompilePool {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            in_progress: Arc::default(),
            queued: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// Compilations running now.
    pub(super) fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// Uploads waiting for a compile slot now.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Components handed to the compiler since start.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Waits for a slot, or refuses at once when `max_queued` uploads already wait.
    async fn admit(&self, max_queued: usize) -> Result<Running, LoadError> {
        let waiting = self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        if waiting >= max_queued && self.slots.available_permits() == 0 {
            return Err(LoadError::CompilerBusy { queued: waiting });
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LoadError::CompilerFailed(e.to_string()))?;
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(Running {
            _permit: permit,
            in_progress: self.in_progress.clone(),
        })
    }

    /// Compiles `bytes` into a serialized artifact for `engine`, within the pool's bounds.
    /// Dropping the future gives the slot back at once and, with a child process, kills it.
    pub(super) async fn precompile(
        &self,
        engine: &Engine,
        config: &HostConfig,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, LoadError> {
        let running = self.admit(config.max_queued_compilations).await?;
        let limit = config.compile_timeout;
        let work = async {
            match &config.compiler {
                Compiler::InProcess => {
                    let engine = engine.clone();
                    // The slot goes with the thread: a compile that outlives its caller (it
                    // cannot be stopped) still counts until it really ends.
                    tokio::task::spawn_blocking(move || {
                        let _running = running;
                        engine.precompile_component(&bytes)
                    })
                    .await
                    .map_err(|e| LoadError::CompilerFailed(e.to_string()))?
                    .map_err(LoadError::Invalid)
                }
                Compiler::Subprocess(program) => {
                    let _running = running;
                    in_child(program, config, bytes).await
                }
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| LoadError::CompileTimeout { limit })?
    }
}

/// The flags that make a child's engine match this host's (see [`compile_in_this_process`]).
fn engine_args(config: &HostConfig) -> [String; 6] {
    [
        "--max-instances".into(),
        config.max_instances.to_string(),
        "--memory-bytes".into(),
        config.default_limits.memory_bytes.to_string(),
        "--max-wasm-stack".into(),
        config.max_wasm_stack.to_string(),
    ]
}

/// Runs `program compile-artifact`, the component on its stdin, the artifact on its stdout.
async fn in_child(
    program: &Path,
    config: &HostConfig,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, LoadError> {
    // CPU time of all its compiler threads together, for as long as the compile may take.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let cpu_seconds = config
        .compile_timeout
        .as_secs()
        .max(1)
        .saturating_mul(threads);
    let mut child = tokio::process::Command::new(program)
        .arg("compile-artifact")
        .args(engine_args(config))
        .args(["--cpu-seconds".to_owned(), cpu_seconds.to_string()])
        .env("RUST_LOG", "error")
        .env(PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            LoadError::CompilerFailed(format!("could not start {}: {e}", program.display()))
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed = async move {
        // A child that stops reading (it failed early) is reported through its exit status.
        let _ = stdin.write_all(&bytes).await;
        drop(stdin);
    };
    let (_, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.map_err(|e| LoadError::CompilerFailed(e.to_string()))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let stderr: String = stderr.chars().take(STDERR_KEPT).collect();
    if output.status.code() == Some(EXIT_INVALID.into()) {
        return Err(LoadError::Invalid(wasmtime::Error::msg(stderr)));
    }
    Err(LoadError::CompilerFailed(format!(
        "the compiler process ended with {}{}{stderr}",
        output.status,
        if stderr.is_empty() { "" } else { ": " }
    )))
}

/// The settings a `compile-artifact` child needs to build an engine like its parent's.
#[derive(Clone, Copy, Debug)]
pub struct EngineArgs {
    /// [`HostConfig::max_instances`].
    pub max_instances: u32,
    /// The default memory limit, [`crate::config::Limits::memory_bytes`].
    pub memory_bytes: u64,
    /// [`HostConfig::max_wasm_stack`].
    pub max_wasm_stack: usize,
}

/// The body of `switchboard compile-artifact`: compiles `bytes` with an engine configured
/// like the parent's. `Err((true, _))` means the component is invalid.
pub fn compile_in_this_process(args: EngineArgs, bytes: &[u8]) -> Result<Vec<u8>, (bool, String)> {
    let mut config = HostConfig {
        max_instances: args.max_instances,
        max_wasm_stack: args.max_wasm_stack,
        ..HostConfig::default()
    };
    config.default_limits.memory_bytes = args.memory_bytes;
    let engine = Engine::new(&super::engine_config(&config, false))
        .map_err(|e| (false, format!("could not set up the engine: {e:#}")))?;
    engine
        .precompile_component(bytes)
        .map_err(|e| (true, format!("{e:#}")))
}
