//! Runs handlers: one engine for the process, a compiled [`Version`] per upload, warm
//! [`Instance`]s reused across signals.
//!
//! The engine uses the pooling allocator and epoch interruption; one ticker thread advances
//! the epoch, and each store checks its own CPU budget when the epoch moves
//! (see `cpu::CpuMeter`, which charges only the time a guest runs). Compilation is CPU-heavy and outside wasmtime's DoS scope:
//! an upload's imports and exports are [`check`]ed first, then it is compiled in a bounded
//! pool (see [`compile`]) under a size and time budget, and its compiled [`Code`] is shared
//! by every version running the same module.

mod bindings;
mod budget;
pub mod check;
mod code;
pub mod compile;
mod cpu;
mod guest_output;
pub mod held;
mod host_api;
mod instance;
mod keyed_api;
mod load_error;
mod outbound;
pub mod pool;
mod state;
pub mod turn;
mod users_api;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use wasmtime::component::Component;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::Delivery;
pub use budget::{Caps, Refusal, Spend};
pub use code::Code;
pub use instance::{Instance, Outcome};
pub use keyed_api::TIMER_HEADER;
pub use load_error::LoadError;
pub use outbound::{Answer, DenyAll, Outbound, Output};
pub use pool::{InstancePool, InstanceSlot, PoolFull, Reservation};
pub use state::{Identity, LimitHit};
pub use users_api::KEPT_HEADER;

use crate::config::{EPOCH_TICK, HostConfig, Limits};
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;

/// Longest a handler's `describe` may take at deploy time (its CPU limit applies too).
const DESCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use bindings::{HandlerPre, wit};

/// What a handler says about itself at deploy time (the WIT `description`). Kept with the
/// version in the registry, so a restart need not run `describe` again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Description {
    /// The name the handler suggests for itself.
    pub name: String,
    /// Whether it serves its own address or every `agent:<id>`.
    pub kind: HandlerKind,
    /// Message types it accepts.
    pub accepts: Accepts,
    /// Which message types clients (`user:<id>`) may send it; others get 403 unless the
    /// operator opened the handler to clients.
    pub clients: Accepts,
    /// Event types it subscribes to.
    pub events: Vec<String>,
    /// Object types whose data changes it subscribes to.
    pub data_changes: Vec<String>,
}

/// Which message types a handler takes; others get 404.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accepts {
    /// Every type.
    Any,
    /// No messages at all: a handler that only listens to broadcasts.
    None,
    /// These types (sorted, without repeats).
    Only(Vec<String>),
}

impl Accepts {
    /// Whether a message of type `message_type` is taken.
    pub fn takes(&self, message_type: &str) -> bool {
        match self {
            Self::Any => true,
            Self::None => false,
            Self::Only(types) => types.iter().any(|t| t == message_type),
        }
    }

    /// `any`, `none` or `only`, for operators.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::None => "none",
            Self::Only(_) => "only",
        }
    }

    /// The types named (empty for `any` and `none`).
    pub fn types(&self) -> &[String] {
        match self {
            Self::Only(types) => types,
            Self::Any | Self::None => &[],
        }
    }
}

/// Service (its own address) or agent (the shared `agents` address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
            accepts: d.accepts.into(),
            clients: d.clients.into(),
            events: sorted_unique(d.events),
            data_changes: sorted_unique(d.data_changes),
        }
    }
}

impl From<wit::Accepts> for Accepts {
    fn from(accepts: wit::Accepts) -> Self {
        match accepts {
            wit::Accepts::Any => Self::Any,
            wit::Accepts::None => Self::None,
            wit::Accepts::Only(types) => Self::Only(sorted_unique(types)),
        }
    }
}

/// A list without repeats, so a type listed twice is still delivered once.
fn sorted_unique(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list.dedup();
    list
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
    /// Keeps the shared compiled code live while this version is.
    code: Arc<Code>,
}

impl Version {
    /// The same version under another number (the registry numbers a version when it
    /// commits it, after preparing it without holding its lock).
    pub fn renumbered(&self, id: u64) -> Arc<Version> {
        Arc::new(Version {
            id,
            description: self.description.clone(),
            limits: self.limits,
            pre: self.pre.clone(),
            code: self.code.clone(),
        })
    }

    /// The hash of the module this version runs.
    pub fn module(&self) -> &str {
        self.code.hash()
    }
}

/// The process's engine, linker and settings, and the metrics and log limiter that running
/// guests' host calls report to.
pub struct Runtime {
    engine: Engine,
    linker: Linker<state::HostState>,
    config: HostConfig,
    metrics: Arc<Metrics>,
    log_limit: Arc<LogLimiter>,
    pool: Arc<InstancePool>,
    next_version: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    code: code::CodeCache,
    compiler: compile::CompilePool,
    /// The keyed-state store instances read and write, once the host attaches it.
    state: std::sync::OnceLock<Arc<crate::keyed::StateStore>>,
    /// What all turns in flight may hold at once.
    held: Arc<held::HeldBudget>,
    /// `describe` probes run since start.
    describes: AtomicU64,
}

/// What a handler may import: WASI 0.2 (deny-by-default) and the `switchboard:signal`
/// host interface. [`check`] mirrors it, to refuse an upload before compiling it.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<state::HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The engine settings of a host; `pooling` off for a process that only compiles. Public so
/// that the raw-wasmtime floor of `tests/examples/signals.rs` measures the host's own engine.
pub fn engine_config(config: &HostConfig, pooling: bool) -> Config {
    let mut engine_config = Config::new();
    if pooling {
        // The slots [`InstancePool`] hands out, plus those of deploys' `describe` probes.
        let slots = config.max_instances.max(1) + pool::PROBE_SLOTS;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .table_elements(crate::config::DEFAULT_TABLE_ELEMENTS)
            .max_memory_size(config.default_limits.memory_bytes.max(4 << 30) as usize)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20);
        engine_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    engine_config
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .concurrency_support(false)
        .wasm_backtrace_max_frames(None);
    engine_config
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker thread.
    pub fn new(config: HostConfig) -> wasmtime::Result<Self> {
        let engine = Engine::new(&engine_config(&config, true))?;
        let linker = linker(&engine)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), ticker_stop.clone());
        let metrics = Arc::new(Metrics::default());
        let log_limit = Arc::new(LogLimiter::new(
            config.log_lines_per_second,
            config.log_burst,
            &metrics,
        ));
        Ok(Self {
            engine,
            linker,
            pool: InstancePool::new(config.max_instances),
            metrics,
            log_limit,
            next_version: AtomicU64::new(1),
            ticker_stop,
            code: code::CodeCache::default(),
            compiler: compile::CompilePool::new(config.max_compilations),
            state: std::sync::OnceLock::new(),
            held: held::HeldBudget::new(config.turn_write_budget),
            describes: AtomicU64::new(0),
            config,
        })
    }

    /// The host settings this runtime was built with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The host's metrics, shared with the router.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What all turns in flight may hold at once, shared by every instance.
    pub fn held(&self) -> &Arc<held::HeldBudget> {
        &self.held
    }

    /// The per-handler rate limit of log lines, shared with the router.
    pub fn log_limit(&self) -> &Arc<LogLimiter> {
        &self.log_limit
    }

    /// Gives instances started from now on the host's keyed-state store (once).
    pub fn attach_state(&self, store: Arc<crate::keyed::StateStore>) {
        let _ = self.state.set(store);
    }

    /// The keyed-state store, if attached.
    pub fn state_store(&self) -> Option<Arc<crate::keyed::StateStore>> {
        self.state.get().cloned()
    }

    /// The slots instances of deployed handlers run in.
    pub fn pool(&self) -> &Arc<InstancePool> {
        &self.pool
    }

    /// Refuses, before any compiling, a component over the size cap, one that is not a
    /// component, or one whose imports and exports do not fit the handler world.
    pub fn check(&self, bytes: &[u8]) -> Result<(), LoadError> {
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
        check::check(bytes)
    }

    /// Compiles a checked component into an artifact (see [`Runtime::from_artifact`]) in
    /// the bounded compile pool. Dropping the future stops the compile where the compiler
    /// allows it (a child process is killed).
    pub async fn precompile(&self, bytes: Vec<u8>) -> Result<Vec<u8>, LoadError> {
        self.check(&bytes)?;
        self.compiler
            .precompile(&self.engine, &self.config, bytes)
            .await
    }

    /// Checks and compiles a component, or shares the live code of the same module.
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Arc<Code>, LoadError> {
        self.check(&bytes)?;
        let hash = crate::store::DataDir::hash(&bytes);
        if let Some(code) = self.code.get(&hash) {
            return Ok(code);
        }
        let artifact = self.precompile(bytes).await?;
        let component = self.from_artifact(&artifact)?;
        Ok(self.share(&hash, component))
    }

    /// The live compiled code of module `hash`, if a version still runs it.
    pub fn shared(&self, hash: &str) -> Option<Arc<Code>> {
        self.code.get(hash)
    }

    /// Shares `component` as the code of module `hash` (or the copy already live).
    pub fn share(&self, hash: &str, component: Component) -> Arc<Code> {
        self.code.insert(hash, component)
    }

    /// How many holders (versions, deploys in progress) the live code of `hash` has.
    pub fn code_holders(&self, hash: &str) -> usize {
        self.code.holders(hash)
    }

    /// Components handed to the compiler since start (shared or cached code not counted).
    pub fn compilations(&self) -> u64 {
        self.compiler.started()
    }

    /// `describe` probes run since start (a restored version reuses what it said).
    pub fn describes(&self) -> u64 {
        self.describes.load(Ordering::Relaxed)
    }

    /// Compilations running now, and uploads waiting for a compile slot.
    pub fn compiling(&self) -> (usize, usize) {
        (self.compiler.in_progress(), self.compiler.queued())
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

    /// Loads an artifact made by [`Runtime::precompile`].
    pub fn from_artifact(&self, artifact: &[u8]) -> Result<Component, LoadError> {
        // SAFETY: artifacts come from this host's own compiler (in this process or its
        // child) or its own data directory, written atomically; wasmtime checks the engine
        // compatibility header.
        unsafe { Component::deserialize(&self.engine, artifact) }.map_err(LoadError::Invalid)
    }

    /// Loads an artifact file from this host's own cache. It is read, not mapped: a file
    /// changed in place under a mapping (by hand, or a full disk) would crash the process.
    pub fn from_artifact_file(&self, path: &Path) -> Result<Component, LoadError> {
        let artifact = std::fs::read(path).map_err(|e| {
            LoadError::Invalid(
                wasmtime::Error::new(e).context(format!("reading {}", path.display())),
            )
        })?;
        self.from_artifact(&artifact)
    }

    /// Checks a compiled component against the handler world, runs its `describe` (unless
    /// the spec carries what it said before), and makes it a version ready to install.
    pub async fn prepare(
        &self,
        code: &Arc<Code>,
        spec: VersionSpec,
    ) -> Result<Arc<Version>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(code.component())
            .and_then(HandlerPre::new)
            .map_err(LoadError::WrongWorld)?;
        let id = spec
            .number
            .unwrap_or_else(|| self.next_version.fetch_add(1, Ordering::Relaxed));
        if let Some(mut description) = spec.description {
            if let Some(kind) = spec.kind {
                description.kind = kind;
            }
            let agent = description.kind == HandlerKind::Agent;
            let limits = spec.limits.for_kind(agent, self.config.max_instances);
            return Ok(Arc::new(Version {
                id,
                description,
                limits,
                pre,
                code: code.clone(),
            }));
        }
        self.describes.fetch_add(1, Ordering::Relaxed);
        let mut version = Version {
            id,
            description: Description {
                name: String::new(),
                kind: HandlerKind::Service,
                accepts: Accepts::Any,
                clients: Accepts::None,
                events: Vec::new(),
                data_changes: Vec::new(),
            },
            limits: spec.limits,
            pre,
            code: code.clone(),
        };
        let identity = state::Identity {
            handler: Arc::from("(deploying)"),
            version: version.id,
            address: crate::signal::HOST_ADDRESS.to_owned(),
        };
        // The probe reaches nobody: a guest's host calls during `describe` (or its start
        // function) fail at once rather than acting as the host or waiting on anyone.
        let deny: Arc<dyn Outbound> = Arc::new(DenyAll);
        // Waiting for another deploy's probe to finish is not the guest's time.
        let slot = self.pool.probe().await;
        let probe = async {
            let mut probe = Instance::new(self, &version, identity, Arc::downgrade(&deny), slot)
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
        let agent = version.description.kind == HandlerKind::Agent;
        version.limits = version.limits.for_kind(agent, self.config.max_instances);
        Ok(Arc::new(version))
    }

    /// Compiles and prepares in one step.
    pub async fn load(&self, bytes: Vec<u8>, spec: VersionSpec) -> Result<Arc<Version>, LoadError> {
        let code = self.compile(bytes).await?;
        self.prepare(&code, spec).await
    }
}

/// What the deployer decides about a version, beside its code.
#[derive(Clone, Debug, Default)]
pub struct VersionSpec {
    /// Its number; the runtime numbers it if not given.
    pub number: Option<u64>,
    /// Its limits.
    pub limits: Limits,
    /// Overrides the kind the handler describes itself as.
    pub kind: Option<HandlerKind>,
    /// What the version's `describe` said when it was deployed, kept in the registry: it is
    /// not run again.
    pub description: Option<Description>,
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
