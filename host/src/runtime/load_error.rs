//! Why a component could not be loaded: each refusal says what to change.

use std::time::Duration;

use thiserror::Error;

/// Why a component could not be loaded. Nothing changes when loading fails.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not WebAssembly: the upload does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error("this is a core WebAssembly module, not a component")]
    CoreModule,
    #[error("not a valid WebAssembly component: {0:#}")]
    Invalid(wasmtime::Error),
    #[error("the component does not fit the switchboard:signal handler world: {0:#}")]
    WrongWorld(wasmtime::Error),
    #[error("the handler's `describe` failed: {0}")]
    Describe(String),
    #[error("compilation was interrupted: {0}")]
    Interrupted(String),
    #[error(
        "the component imports `{import}`, which Switchboard does not provide: {advice}{}",
        also_imports(others)
    )]
    UnsupportedImport {
        import: String,
        advice: String,
        others: Vec<String>,
    },
    #[error(
        "the component was built against switchboard:signal@{found}, but this host speaks \
         switchboard:signal@{speaks}: rebuild it with switchboard-sdk {speaks} (Rust), or \
         generate its bindings from the wit/ directory of this Switchboard version (other \
         languages)"
    )]
    WrongContract { found: String, speaks: String },
    #[error(
        "the component does not fit the switchboard:signal handler world: it does not export \
         {} (every handler exports the functions describe, handle-message, handle-event, \
         handle-data-change and handle-reply of wit/signal.wit)",
        quoted(missing)
    )]
    MissingExports { missing: Vec<String> },
    #[error("compiling the component took longer than the host's limit of {limit:?}")]
    CompileTimeout { limit: Duration },
    #[error("{queued} uploads are already waiting to be compiled")]
    CompilerBusy { queued: usize },
    #[error("the compiler failed: {0}")]
    CompilerFailed(String),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn also_imports(others: &[String]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        format!(
            " (it also imports {}, which Switchboard does not provide either)",
            quoted(others)
        )
    }
}
