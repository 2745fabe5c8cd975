//! The data each handler instance's store carries: its identity, its limits, what the
//! current signal may still send, and a deny-by-default WASI context.

use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Runtime;
use super::budget::{Budget, Caps};
use super::cpu::CpuMeter;
use super::guest_output::{GuestOutput, Stream};
use super::outbound::Outbound;
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::signal::{Failure, code};

/// Raised from inside wasm when a handler breaks one of its limits; found again by downcast
/// when the call returns, to answer 507 instead of 500.
#[derive(Debug, thiserror::Error)]
pub enum LimitHit {
    #[error("the handler used more than its {limit:?} of CPU time on one signal")]
    CpuTime { limit: Duration },
    #[error(
        "the handler tried to grow its memory to {wanted} bytes, over its limit of {limit} bytes"
    )]
    Memory { wanted: usize, limit: u64 },
    #[error("the handler tried to grow a table to {wanted} elements, over the limit of {limit}")]
    Table { wanted: usize, limit: usize },
}

/// Who is running in this store, for stamping `from` and tagging logs.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The handler's deployed name.
    pub handler: Arc<str>,
    /// The version being run.
    pub version: u64,
    /// The address signals sent while handling the current signal come from: the handler's
    /// name, or `agent:<id>` while an agent handles a message to that agent.
    pub address: String,
}

/// Store data of one handler instance.
pub struct HostState {
    pub identity: Identity,
    /// Where the guest's signals go; weak, so an instance never keeps the host alive.
    pub outbound: Weak<dyn Outbound>,
    pub cpu: CpuMeter,
    /// Depth of the signal being handled, and what handling it may still send and log.
    pub budget: Budget,
    /// The current signal's pending state writes, timers and outputs.
    pub turn: super::turn::Turn,
    /// The host's keyed-state store, if it has one.
    pub store: super::turn::Store,
    /// Where refused host calls and dropped log lines are counted.
    pub metrics: Arc<Metrics>,
    /// Rate limit of the log lines about this handler.
    pub log_limit: Arc<LogLimiter>,
    pub max_message_bytes: usize,
    /// Bytes of signals and timers one turn may hold until it commits.
    pub max_held_bytes: usize,
    /// What all turns in flight may hold at once, host-wide.
    pub held: Arc<super::held::HeldBudget>,
    /// Largest push to a user: what one client connection's queue holds.
    pub max_push_bytes: usize,
    /// The host's clock, for envelopes and timers.
    pub clock: crate::clock::Clock,
    /// Whether the host joined a cluster, where keyed state, timers and kept pushes are
    /// refused until the cluster keeps them.
    pub clustered: bool,
    memory_limit: u64,
    /// Bytes of linear memory across all of this instance's memories.
    memory_used: u64,
    table_limit: usize,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// What a host that joined a cluster refuses until the cluster keeps it (409).
pub(super) fn not_in_cluster(what: &str) -> Failure {
    Failure::new(
        code::CONFLICT,
        format!("{what} not kept cluster-wide yet, and this host joined a cluster (--nats)"),
    )
    .with_help("run this handler on a host without --nats until the cluster keeps them")
}

impl HostState {
    /// State for a new instance; WASI grants nothing: no files, environment, network or
    /// stdin. What the guest prints to stdout or stderr goes to the host's log.
    pub fn new(
        identity: Identity,
        outbound: Weak<dyn Outbound>,
        limits: &crate::config::Limits,
        runtime: &Runtime,
    ) -> Self {
        // What a guest prints goes to the host's log, a line at a time and rate-limited.
        let output = |stream| {
            let (handler, version) = (identity.handler.clone(), identity.version);
            GuestOutput::new(handler, version, runtime.log_limit().clone(), stream)
        };
        let wasi = WasiCtx::builder()
            .stdout(output(Stream::Stdout))
            .stderr(output(Stream::Stderr))
            .build();
        Self {
            identity,
            outbound,
            cpu: CpuMeter::new(limits.cpu_time),
            budget: Budget::new(Caps::of(runtime.config())),
            turn: super::turn::Turn::default(),
            store: runtime.state_store(),
            metrics: runtime.metrics().clone(),
            log_limit: runtime.log_limit().clone(),
            max_message_bytes: runtime.config().max_message_bytes,
            // Like a mailbox's bytes, and never less than 16 of the largest messages.
            max_held_bytes: runtime
                .config()
                .mailbox_bytes
                .max(runtime.config().max_message_bytes.saturating_mul(16)),
            held: runtime.held().clone(),
            max_push_bytes: runtime.config().client_queue_bytes,
            clock: runtime.config().clock.clone(),
            clustered: runtime.config().clustered,
            memory_limit: limits.memory_bytes,
            memory_used: 0,
            table_limit: crate::config::DEFAULT_TABLE_ELEMENTS,
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl HostState {
    /// The scope of keyed state for signals handled at `address`: an agent's own, or the
    /// handler's.
    pub fn scope_at(&self, address: &str) -> crate::keyed::Scope {
        let handler = self.identity.handler.to_string();
        match crate::address::Address::parse(address) {
            Ok(crate::address::Address::Agent { id, .. }) => {
                crate::keyed::Scope::agent(handler, id)
            }
            _ => crate::keyed::Scope::handler(handler),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The limit is for the instance: every memory it has counts.
        let total = self.memory_used + (desired - current) as u64;
        if total > self.memory_limit {
            return Err(LimitHit::Memory {
                wanted: total as usize,
                limit: self.memory_limit,
            }
            .into());
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_limit {
            return Err(LimitHit::Table {
                wanted: desired,
                limit: self.table_limit,
            }
            .into());
        }
        Ok(true)
    }
}
