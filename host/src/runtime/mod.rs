//! Runs handlers: one engine for the process, a compiled [`Version`] per upload, warm
//! [`Instance`]s reused across signals.
//!
//! The engine uses the pooling allocator and epoch interruption; one ticker thread advances
//! the epoch, and each store checks its own CPU budget when the epoch moves
//! (see [`state::CpuMeter`]). Compilation is CPU-heavy and outside wasmtime's DoS scope, so
//! [`Runtime::load`] runs it on a blocking thread and refuses components over a size cap.

mod bindings;
mod host_api;
mod instance;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::Delivery;
pub use instance::{Instance, Outcome};
pub use state::{Identity, LimitHit};

use crate::config::{EPOCH_TICK, HostConfig, Limits};
use crate::router::Router;
use bindings::{HandlerPre, wit};

/// What a handler says about itself at deploy time (the WIT `description`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The name the handler suggests for itself.
    pub name: String,
    /// Whether it serves its own address or every `agent:<id>`.
    pub kind: HandlerKind,
    /// Message types it accepts; empty means any.
    pub message_types: Vec<String>,
    /// Event types it subscribes to.
    pub events: Vec<String>,
    /// Object types whose data changes it subscribes to.
    pub data_changes: Vec<String>,
}

/// Service (its own address) or agent (the shared `agents` address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerKind {
    Service,
    Agent,
}

impl From<wit::Description> for Description {
    fn from(d: wit::Description) -> Self {
        Self {
            name: d.name,
            kind: match d.kind {
                wit::HandlerKind::Service => HandlerKind::Service,
                wit::HandlerKind::Agent => HandlerKind::Agent,
            },
            message_types: d.message_types,
            events: d.events,
            data_changes: d.data_changes,
        }
    }
}

/// Why a component could not be loaded. Nothing changes when loading fails.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly component: {0:#}")]
    Invalid(wasmtime::Error),
    #[error("the component does not fit the switchboard:signal handler world: {0:#}")]
    WrongWorld(wasmtime::Error),
    #[error("the handler's `describe` failed: {0}")]
    Describe(String),
    #[error("compilation was interrupted: {0}")]
    Interrupted(String),
}

/// A compiled, checked handler version, ready to instantiate cheaply.
pub struct Version {
    /// Sequence number of this version within the host process.
    pub id: u64,
    /// What the handler said about itself.
    pub description: Description,
    /// Limits every instance of this version runs under.
    pub limits: Limits,
    pre: HandlerPre<state::HostState>,
}

/// The process's engine, linker and settings.
pub struct Runtime {
    engine: Engine,
    linker: Linker<state::HostState>,
    config: HostConfig,
    next_version: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker thread.
    pub fn new(config: HostConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .table_elements(crate::config::DEFAULT_TABLE_ELEMENTS)
            .max_memory_size(config.default_limits.memory_bytes.max(4 << 30) as usize)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20);
        let mut engine_config = Config::new();
        engine_config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .concurrency_support(false)
            .wasm_backtrace_max_frames(None);
        let engine = Engine::new(&engine_config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), ticker_stop.clone());
        Ok(Self {
            engine,
            linker,
            config,
            next_version: AtomicU64::new(1),
            ticker_stop,
        })
    }

    /// The host settings this runtime was built with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Compiles and checks a component: it must be a component of the handler world whose
    /// `describe` succeeds. Runs compilation off the async runtime.
    pub async fn load(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        limits: Limits,
        router: Weak<Router>,
    ) -> Result<Arc<Version>, LoadError> {
        let limit = self.config.max_component_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Interrupted(e.to_string()))?
            .map_err(LoadError::Invalid)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(HandlerPre::new)
            .map_err(LoadError::WrongWorld)?;
        let mut version = Version {
            id: self.next_version.fetch_add(1, Ordering::Relaxed),
            description: Description {
                name: String::new(),
                kind: HandlerKind::Service,
                message_types: Vec::new(),
                events: Vec::new(),
                data_changes: Vec::new(),
            },
            limits,
            pre,
        };
        let identity = state::Identity {
            handler: Arc::from("(deploying)"),
            version: version.id,
            address: crate::signal::HOST_ADDRESS.to_owned(),
        };
        let mut probe = Instance::new(self, &version, identity, router)
            .await
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        version.description = probe
            .describe()
            .await
            .map_err(|e| LoadError::Describe(e.description))?;
        Ok(Arc::new(version))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the runtime is dropped.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("switchboard-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
