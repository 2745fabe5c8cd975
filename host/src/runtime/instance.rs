//! One warm handler instance: a store plus the instantiated component, reused across signals
//! until it traps.
//!
//! Each call restarts the CPU meter and the per-signal budget (see [`super::budget`]) with
//! the incoming signal's causal depth, and arms the epoch deadline; the meter charges only
//! the polls of the call future, while the guest runs, and the deadline callback yields to
//! tokio every tick and traps with [`LimitHit::CpuTime`] once the signal's CPU budget is
//! spent. A trap or limit hit poisons the instance: the caller must drop it.

use std::sync::Weak;

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Delivery, Handler, Lent, wit};
use super::cpu::metered;
use super::outbound::Outbound;
use super::pool::InstanceSlot;
use super::state::{HostState, Identity, LimitHit};
use super::{Description, Runtime, Version};
use crate::signal::{Failure, Json, Signal, code};

/// Hostcall data a guest may pass in one import call, beyond the message size itself.
const HOSTCALL_SLACK_BYTES: usize = 64 << 10;
/// What wasmtime's error says when a guest passed more than the store's hostcall fuel (its
/// error type is private, so its words are what identifies it).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// What came of handing a signal to an instance.
#[derive(Debug)]
pub struct Outcome {
    /// For a message, the reply payload or the failure; for other kinds, `Ok(None)` or the
    /// handler's failure.
    pub result: Result<Option<Json>, Failure>,
    /// The instance trapped or broke a limit and must not be used again.
    pub poisoned: bool,
    /// A message the handler said it answers later, with the host's `reply`.
    pub later: bool,
}

/// A warm instance of one handler version.
pub struct Instance {
    store: Store<HostState>,
    bindings: Handler,
    version: u64,
    /// Declared after the store, so the engine's slot is free before the pool's is.
    slot: InstanceSlot,
}

impl Instance {
    /// Instantiates `version` in a fresh store wired with the version's limits, in the pool
    /// slot `slot`, which it holds until it is dropped.
    pub async fn new(
        runtime: &Runtime,
        version: &Version,
        identity: Identity,
        outbound: Weak<dyn Outbound>,
        slot: InstanceSlot,
    ) -> wasmtime::Result<Self> {
        let max_message_bytes = runtime.config.max_message_bytes;
        let state = HostState::new(identity, outbound, &version.limits, runtime);
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| state);
        store.set_hostcall_fuel(max_message_bytes.saturating_mul(2) + HOSTCALL_SLACK_BYTES);
        store.epoch_deadline_callback(|ctx| {
            ctx.data().cpu.check()?;
            // tokio's own yield lets timers and I/O run before this guest resumes.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let cpu = store.data().cpu.clone();
        cpu.restart();
        store.set_epoch_deadline(1);
        let bindings = match metered(&cpu, version.pre.instantiate_async(&mut store)).await {
            Ok(bindings) => bindings,
            Err(error) => {
                // What a start function sent never leaves; what it reserved is given back.
                let state = store.data_mut();
                let left = std::mem::take(&mut state.turn).into_parts();
                if let Some(out) = state.outbound.upgrade() {
                    out.discard(left.outputs);
                }
                return Err(error);
            }
        };
        Ok(Self {
            store,
            bindings,
            version: version.id,
            slot,
        })
    }

    /// The version this instance runs.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The pool slot this instance holds.
    pub fn slot(&self) -> &InstanceSlot {
        &self.slot
    }

    /// Readies the store for one call: who speaks, the incoming signal's causal depth, and a
    /// fresh CPU meter and per-signal budget.
    fn arm(&mut self, address: String, depth: u32, answering: Option<&str>) {
        let state = self.store.data_mut();
        let scope = state.store.is_some().then(|| state.scope_at(&address));
        let turn = super::turn::Turn::new(scope, &state.held);
        let left = std::mem::replace(&mut state.turn, turn);
        if !left.is_empty() {
            // Only an instance's start can leave a turn behind: it never commits.
            let parts = left.into_parts();
            if let Some(out) = state.outbound.upgrade() {
                out.discard(parts.outputs);
            }
        }
        state.identity.address = address;
        state.budget.arm(depth, answering);
        state.cpu.restart();
        self.store.set_epoch_deadline(1);
    }

    /// Takes the turn of the signal just handled, to commit or discard.
    pub fn take_turn(&mut self) -> super::turn::Turn {
        std::mem::take(&mut self.store.data_mut().turn)
    }

    /// Calls `describe`.
    pub async fn describe(&mut self) -> Result<Description, Failure> {
        let address = self.store.data().identity.address.clone();
        self.arm(address, 0, None);
        let cpu = self.store.data().cpu.clone();
        metered(&cpu, self.bindings.call_describe(&mut self.store))
            .await
            .map(Description::from)
            .map_err(classify)
    }

    /// Hands one signal to the export for its kind. `address` is where signals the handler
    /// sends meanwhile come from.
    pub async fn handle(&mut self, signal: &Signal, address: String) -> Outcome {
        let answering = match &signal.body {
            crate::signal::Body::Message(_) => Some(signal.envelope.id.as_str()),
            _ => None,
        };
        self.arm(address, signal.envelope.depth, answering);
        self.store.data_mut().budget.pace(signal.envelope.paced);
        let max = self.store.data().max_message_bytes;
        let cpu = self.store.data().cpu.clone();
        let lent = Lent::of(signal);
        let delivery = Delivery::of(signal, &lent);
        let is_message = matches!(delivery, Delivery::Message(_));
        let store = &mut self.store;
        let call = async {
            match delivery {
                Delivery::Message(msg) => self
                    .bindings
                    .call_handle_message(&mut *store, msg)
                    .await
                    .map(|answer| match answer {
                        wit::Answer::Reply(payload) => Ok(Some(payload)),
                        wit::Answer::Error(failure) => Err(failure),
                        wit::Answer::Later => Ok(None),
                    }),
                Delivery::Event(evt) => self
                    .bindings
                    .call_handle_event(&mut *store, evt)
                    .await
                    .map(|r| r.map(|()| None)),
                Delivery::DataChange(change) => self
                    .bindings
                    .call_handle_data_change(&mut *store, change)
                    .await
                    .map(|r| r.map(|()| None)),
                Delivery::Reply(reply) => self
                    .bindings
                    .call_handle_reply(&mut *store, reply)
                    .await
                    .map(|r| r.map(|()| None)),
            }
        };
        let called = metered(&cpu, call).await;
        self.store.data_mut().note_dropped_log_lines();
        match called {
            Ok(Ok(Some(payload))) if payload.len() > max => Outcome {
                result: Err(Failure::new(
                    code::TOO_LARGE,
                    format!(
                        "the handler's reply is {} bytes, over the maximum message size of {max} bytes",
                        payload.len()
                    ),
                )),
                poisoned: false,
                later: false,
            },
            Ok(Ok(Some(payload))) => Outcome {
                result: Json::parse(payload).map(Some).map_err(|e| {
                    Failure::new(
                        code::TRAPPED,
                        format!("the handler replied with invalid JSON: {e}"),
                    )
                }),
                poisoned: false,
                later: false,
            },
            Ok(Ok(None)) => Outcome {
                result: Ok(None),
                poisoned: false,
                later: is_message,
            },
            Ok(Err(failure)) => Outcome {
                result: Err(failure.into()),
                poisoned: false,
                later: false,
            },
            Err(error) => Outcome {
                result: Err(classify(error)),
                poisoned: true,
                later: false,
            },
        }
    }
}

/// Turns a trap into the ErrorReply a sender can act on: 507 for a broken limit, 500 for
/// anything else the guest did wrong.
fn classify(error: wasmtime::Error) -> Failure {
    if let Some(hit) = error.downcast_ref::<LimitHit>() {
        let help = match hit {
            LimitHit::CpuTime { .. } => {
                "look for an endless loop, or deploy with a larger CPU limit"
            }
            LimitHit::Memory { .. } | LimitHit::Table { .. } => {
                "free memory between signals, or deploy with a larger memory limit"
            }
        };
        return Failure::new(code::LIMIT, hit.to_string()).with_help(help);
    }
    if error
        .chain()
        .any(|cause| cause.to_string().contains(HOSTCALL_FUEL_EXHAUSTED))
    {
        return Failure::new(
            code::TOO_LARGE,
            "the handler passed more data to the host in one call than it takes (a reply, \
             message, state value or set of headers over the host's size limits; at most \
             twice the maximum message size in all)",
        )
        .with_help("send a reference to the data instead of the data itself");
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let help = match trap {
            Trap::StackOverflow => "the handler recursed too deeply",
            Trap::UnreachableCodeReached => {
                "the handler panicked (Rust), raised an uncaught exception (Python, JavaScript) or hit `unreachable`"
            }
            _ => "a bug in the handler",
        };
        return Failure::new(code::TRAPPED, format!("the handler trapped: {trap}")).with_help(help);
    }
    Failure::new(code::TRAPPED, format!("the handler failed: {error:#}"))
}
