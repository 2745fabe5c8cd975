//! Runs handlers: one engine for the process, a compiled [`Version`] per upload, warm
//! [`Instance`]s reused across signals.
//!
//! The engine uses the pooling allocator and epoch interruption; one ticker thread advances
//! the epoch, and each store checks its own CPU budget when the epoch moves
//! (see [`cpu::CpuMeter`], which charges only the time a guest runs). Compilation is CPU-heavy and outside wasmtime's DoS scope, so
//! [`Runtime::load`] runs it on a blocking thread and refuses components over a size cap.

mod bindings;
mod cpu;
mod host_api;
mod instance;
mod outbound;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use thiserror::Error;
pub use wasmtime::component::Component;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::Delivery;
pub use instance::{Instance, Outcome};
pub use outbound::{Answer, DenyAll, Outbound};
pub use state::{Identity, LimitHit};

use crate::config::{EPOCH_TICK, HostConfig, Limits};

/// Longest a handler's `describe` may take at deploy time (its CPU limit applies too).
const DESCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
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
            message_types: sorted_unique(d.message_types),
            events: sorted_unique(d.events),
            data_changes: sorted_unique(d.data_changes),
        }
    }
}

/// A list without repeats, so a type listed twice is still delivered once.
fn sorted_unique(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list.dedup();
    list
}

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

    /// Compiles a component on a blocking thread, refusing one over the size cap.
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Component, LoadError> {
        let limit = self.config.max_component_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Interrupted(e.to_string()))?
            .map_err(LoadError::Invalid)
    }

    /// Names the engine build and settings compiled artifacts are valid for.
    pub fn engine_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// A compiled component's artifact, for the on-disk cache.
    pub fn artifact(component: &Component) -> Result<Vec<u8>, LoadError> {
        component.serialize().map_err(LoadError::Invalid)
    }

    /// Loads an artifact written by [`Runtime::artifact`] from this host's own cache.
    pub fn from_artifact(&self, artifact: &[u8]) -> Result<Component, LoadError> {
        // SAFETY: artifacts are only ever read from the host's own data directory, written
        // atomically by `artifact` above; wasmtime checks the engine compatibility header.
        unsafe { Component::deserialize(&self.engine, artifact) }.map_err(LoadError::Invalid)
    }

    /// Checks a compiled component against the handler world, runs its `describe`, and
    /// makes it a version ready to install.
    pub async fn prepare(
        &self,
        component: &Component,
        spec: VersionSpec,
    ) -> Result<Arc<Version>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .and_then(HandlerPre::new)
            .map_err(LoadError::WrongWorld)?;
        let id = spec
            .number
            .unwrap_or_else(|| self.next_version.fetch_add(1, Ordering::Relaxed));
        let mut version = Version {
            id,
            description: Description {
                name: String::new(),
                kind: HandlerKind::Service,
                message_types: Vec::new(),
                events: Vec::new(),
                data_changes: Vec::new(),
            },
            limits: spec.limits,
            pre,
        };
        let identity = state::Identity {
            handler: Arc::from("(deploying)"),
            version: version.id,
            address: crate::signal::HOST_ADDRESS.to_owned(),
        };
        // The probe reaches nobody: a guest's host calls during `describe` (or its start
        // function) fail at once rather than acting as the host or waiting on anyone.
        let deny: Arc<dyn Outbound> = Arc::new(DenyAll);
        let probe = async {
            let mut probe = Instance::new(self, &version, identity, Arc::downgrade(&deny))
                .await
                .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
            probe
                .describe()
                .await
                .map_err(|e| LoadError::Describe(e.to_string()))
        };
        version.description = tokio::time::timeout(DESCRIBE_TIMEOUT, probe)
            .await
            .map_err(|_| {
                LoadError::Describe(format!("it did not return within {DESCRIBE_TIMEOUT:?}"))
            })??;
        if let Some(kind) = spec.kind {
            version.description.kind = kind;
        }
        Ok(Arc::new(version))
    }

    /// Compiles and prepares in one step.
    pub async fn load(&self, bytes: Vec<u8>, spec: VersionSpec) -> Result<Arc<Version>, LoadError> {
        let component = self.compile(bytes).await?;
        self.prepare(&component, spec).await
    }
}

/// What the deployer decides about a version, beside its code.
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionSpec {
    /// Its number; the runtime numbers it if not given.
    pub number: Option<u64>,
    /// Its limits.
    pub limits: Limits,
    /// Overrides the kind the handler describes itself as.
    pub kind: Option<HandlerKind>,
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
