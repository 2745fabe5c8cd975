//! The embeddable host: a runtime and a router behind one handle, with the operations the
//! daemon, the CLI and tests use: deploy a handler, send, request, emit, connect a client.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{HostConfig, Limits};
use crate::db::{Db, DbError};
use crate::dead_letters::DeadLetters;
use crate::keyed::{StateLimits, StateStore, StoredTimer, spawn_timer_loop};
use crate::router::{Accepted, Answers, InstallError, OpenMessages, Reason, Router, Undelivered};
use crate::runtime::{Description, LoadError, PoolFull, Runtime, Version, VersionSpec};
use crate::signal::{
    AGENTS_ADDRESS, Body, ChangeType, Envelope, Failure, HOST_ADDRESS, Headers, Json, Message,
    Signal,
};
use crate::transport::{InProcess, Transport};

/// Longest handler name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why a handler could not be deployed. Nothing changes when a deploy fails.
#[derive(Debug, Error)]
pub enum DeployError {
    #[error("invalid handler name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Install(InstallError),
    /// A new handler cannot be guaranteed an instance slot: every slot is reserved.
    #[error(transparent)]
    PoolFull(PoolFull),
}

impl From<InstallError> for DeployError {
    fn from(error: InstallError) -> Self {
        match error {
            InstallError::PoolFull(full) => Self::PoolFull(full),
            other => Self::Install(other),
        }
    }
}

impl From<PoolFull> for DeployError {
    fn from(full: PoolFull) -> Self {
        Self::PoolFull(full)
    }
}

/// A handler version that went live.
#[derive(Clone, Debug)]
pub struct Deployed {
    /// The name it serves under.
    pub name: String,
    /// Its version number in this host.
    pub version: u64,
    /// What it said about itself.
    pub description: Description,
    /// Whether it replaced a running version (a hot swap).
    pub swapped: bool,
}

/// Why a host could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("could not set up the WebAssembly engine")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("could not open the host's store (dead letters, state, timers)")]
    Store(#[from] DbError),
}

/// How long a due timer waits for something to serve its address before it becomes a
/// dead letter: 10 minutes.
const TIMER_PATIENCE_MS: u64 = 10 * 60 * 1000;

/// Sends a due timer's message, from the address that scheduled it, as a fresh causal
/// chain: depth 0, marked paced, so whatever descends from it and schedules a timer gets
/// one no sooner than the host's `timer_min_interval` (a reminder that schedules itself
/// again is paced by that, not the depth limit). Resolves, once the transport knows, to
/// whether a mailbox took it: if nothing serves its address yet (a handler being restored or
/// redeployed), the mailbox is full, or the transport lost track of it, the timer stays
/// stored and is offered again. A timer that cannot be read is logged and dropped.
async fn fire(router: std::sync::Weak<Router>, timer: StoredTimer) -> bool {
    let Some(router) = router.upgrade() else {
        return false;
    };
    match serde_json::from_slice::<Signal>(&timer.signal) {
        Ok(mut signal) => {
            signal.envelope.depth = 0;
            signal.envelope.deadline = None;
            signal.envelope.paced = true;
            match router.offer(signal).await {
                Ok(_) => true,
                // Nothing has served its address for a long while (the handler was deleted
                // without purging, say): an operator can replay it from the dead letters.
                Err(undelivered)
                    if matches!(undelivered.reason, Reason::NoRoute | Reason::NotAccepted)
                        && router.clock().now_millis().saturating_sub(timer.due_ms)
                            > TIMER_PATIENCE_MS =>
                {
                    router.keep_unserved(&timer.handler, undelivered.signal)
                }
                Err(undelivered) => {
                    tracing::debug!(handler = %timer.handler, id = %timer.id, reason = undelivered.reason.as_str(), "a due timer was not taken; it is offered again");
                    false
                }
            }
        }
        Err(error) => {
            tracing::error!(handler = %timer.handler, id = %timer.id, %error, "dropped a timer whose message could not be read");
            true
        }
    }
}

/// A deployed handler as listed.
#[derive(Clone, Debug)]
pub struct HandlerInfo {
    pub name: String,
    pub address: String,
    pub version: u64,
    pub description: Description,
    pub limits: Limits,
    /// Signals waiting in its mailbox.
    pub queued: usize,
    /// Signals handed to it so far.
    pub handled: u64,
    /// Signals it answered with an error (its own or a trap).
    pub failed: u64,
    /// Instances discarded after a trap or limit hit.
    pub traps: u64,
}

/// What a host sends signals through and keeps its records in. On its own, a host has
/// the in-process transport and keeps every record itself; in a cluster, the hosts share a
/// transport and some of these.
pub struct Backends {
    /// Carries signals to whichever host serves them.
    pub transport: Arc<dyn Transport>,
    /// Dead letters, keyed state and timers.
    pub db: Arc<Db>,
    /// Messages delivered to this host's handlers and not yet answered.
    pub open_messages: Arc<dyn OpenMessages>,
}

impl Backends {
    /// `transport` and `db`, with open messages kept in this process.
    pub fn new(transport: Arc<dyn Transport>, db: Arc<Db>) -> Self {
        Self {
            transport,
            db,
            open_messages: Arc::new(Answers::default()),
        }
    }
}

/// A Switchboard host: deploy handlers, route signals between them and to clients.
#[derive(Clone)]
pub struct Host {
    runtime: Arc<Runtime>,
    router: Arc<Router>,
}

impl Host {
    /// A host on the embedded in-process transport, its store in memory.
    pub fn new(config: HostConfig) -> Result<Self, StartError> {
        let backends = Backends::new(Arc::new(InProcess::default()), Db::in_memory()?);
        Self::open(config, backends)
    }

    /// A host on the given backends. Timers start firing at once (those due while the host
    /// was down fire late, never lost), so call it inside a tokio runtime.
    pub fn open(config: HostConfig, backends: Backends) -> Result<Self, StartError> {
        let Backends {
            transport,
            db,
            open_messages,
        } = backends;
        let dead_letters = DeadLetters::open(
            db.clone(),
            config.dead_letter_capacity,
            config.dead_letter_handler_capacity,
            config.clock.clone(),
        )?;
        let limits = StateLimits::of(&config);
        let runtime = Runtime::new(config).map_err(|e| StartError::Engine(e.into()))?;
        let runtime = Arc::new(runtime);
        let max_group = runtime.config().state_max_group;
        let state = StateStore::open_grouping(db, limits, runtime.metrics().clone(), max_group)?;
        runtime.attach_state(state.clone());
        let router = Router::new(runtime.clone(), transport, dead_letters, open_messages);
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&router);
            spawn_timer_loop(
                Arc::downgrade(&state),
                Arc::new(move |timer| Box::pin(fire(weak.clone(), timer))),
            );
            crate::keyed::spawn_kept_sweeper(Arc::downgrade(&state));
        }
        Ok(Self { runtime, router })
    }

    /// The router, for edges that need more than this handle offers.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Compiles, checks and starts a handler version under `name`, or swaps it in for the
    /// running version. `limits` defaults to the host's default limits.
    pub async fn deploy(
        &self,
        name: &str,
        component: Vec<u8>,
        limits: Option<Limits>,
    ) -> Result<Deployed, DeployError> {
        self.check_room(name)?;
        let spec = VersionSpec {
            limits: limits.unwrap_or(self.runtime.config().default_limits),
            ..VersionSpec::default()
        };
        let version = self.runtime.load(component, spec).await?;
        let deployed = self.install(name, version)?;
        self.router.transport_ready().await;
        Ok(deployed)
    }

    /// Checks, before anything is compiled, that handler `name` could be deployed: its name
    /// is valid, and it is deployed already or an instance slot is free to reserve for it.
    /// Installing checks the slot again, for deploys that race.
    pub fn check_room(&self, name: &str) -> Result<(), DeployError> {
        check_name(name)?;
        Ok(self.runtime.pool().check_room(name)?)
    }

    /// The runtime, for callers that compile and cache components themselves.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Makes a prepared version live under `name`: a new handler, or a hot swap.
    pub fn install(&self, name: &str, version: Arc<Version>) -> Result<Deployed, DeployError> {
        check_name(name)?;
        let swapped = self.router.install(name, version.clone())?;
        tracing::info!(
            handler = name,
            version = version.id,
            swapped,
            "handler deployed"
        );
        Ok(Deployed {
            name: name.to_owned(),
            version: version.id,
            description: version.description.clone(),
            swapped,
        })
    }

    /// Waits until no signal is queued or being handled and no request awaits its reply,
    /// up to `timeout`; returns whether everything finished. New signals are still accepted
    /// meanwhile (the admin API refuses them while shutting down).
    pub async fn drain(&self, timeout: Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // In flight counts a signal from the moment its mailbox takes it until a worker is
            // done with it, including the moment a worker has taken it but not yet started.
            let busy = self
                .router
                .slots()
                .iter()
                .any(|(slot, _)| slot.counters.in_flight.load(Relaxed) > 0);
            if !busy {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the handler deployed as `name`; signals already queued are still handled.
    /// Returns whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        let slot = self
            .router
            .slots()
            .into_iter()
            .find(|(slot, _)| &*slot.name == name);
        slot.is_some_and(|(slot, _)| self.router.remove(&slot.address))
    }

    /// The deployed handlers, sorted by name.
    pub fn handlers(&self) -> Vec<HandlerInfo> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut list: Vec<_> = self
            .router
            .slots()
            .into_iter()
            .map(|(slot, queued)| {
                let version = slot.current();
                HandlerInfo {
                    name: slot.name.to_string(),
                    address: slot.address.clone(),
                    version: version.id,
                    description: version.description.clone(),
                    limits: version.limits,
                    queued,
                    handled: slot.counters.handled.load(Relaxed),
                    failed: slot.counters.failed.load(Relaxed),
                    traps: slot.counters.traps.load(Relaxed),
                }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Builds a message from `from` (the caller is trusted to name itself), stamped by this
    /// host's clock.
    pub fn message(&self, from: &str, to: &str, message_type: &str, payload: Json) -> Signal {
        Signal {
            envelope: Envelope::new(from, Headers::new(), self.router.clock()),
            body: Body::Message(Message {
                message_type: message_type.to_owned(),
                to: to.to_owned(),
                return_address: None,
                payload,
            }),
        }
    }

    /// Sends a signal without waiting; returns its id.
    pub fn send(&self, signal: Signal) -> String {
        let id = signal.envelope.id.clone();
        self.router.route(signal);
        id
    }

    /// Sends a message from the host and waits for the Reply or ErrorReply signal; 504 after
    /// `timeout`.
    pub async fn request(
        &self,
        to: &str,
        message_type: &str,
        payload: Json,
        timeout: Duration,
    ) -> Result<Signal, Failure> {
        let signal = self.message(HOST_ADDRESS, to, message_type, payload);
        self.router.request(signal, timeout).await
    }

    /// Like [`Host::request`], reduced to the reply payload or the failure.
    pub async fn call(
        &self,
        to: &str,
        message_type: &str,
        payload: Json,
        timeout: Duration,
    ) -> Result<Json, Failure> {
        self.request(to, message_type, payload, timeout)
            .await?
            .into_outcome()
    }

    /// Broadcasts an event from the host: how many subscribers took it and how many refused
    /// it (dead-lettered), or why it was refused at the source.
    pub async fn emit(&self, event_type: &str, payload: Json) -> Result<Accepted, Undelivered> {
        self.router
            .offer(Signal {
                envelope: Envelope::new(HOST_ADDRESS, Headers::new(), self.router.clock()),
                body: Body::Event {
                    event_type: event_type.to_owned(),
                    payload,
                },
            })
            .await
    }

    /// Broadcasts a data change from the host; see [`Host::emit`].
    pub async fn emit_data_change(
        &self,
        change_type: ChangeType,
        object_type: &str,
        object: Json,
    ) -> Result<Accepted, Undelivered> {
        self.router
            .offer(Signal {
                envelope: Envelope::new(HOST_ADDRESS, Headers::new(), self.router.clock()),
                body: Body::DataChange {
                    change_type,
                    object_type: object_type.to_owned(),
                    object,
                },
            })
            .await
    }

    /// Connects a client at `address` (e.g. `user:alice`) and returns what arrives for it.
    pub fn connect(&self, address: &str) -> mpsc::Receiver<Signal> {
        self.router.connect(address)
    }
}

/// Handler names are addresses: short, lowercase, and not one the host reserves.
pub fn check_name(name: &str) -> Result<(), DeployError> {
    let invalid = |reason| {
        Err(DeployError::InvalidName {
            name: name.chars().take(MAX_NAME_LEN + 8).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return invalid("a name has 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return invalid("use lowercase letters, digits, `-` and `_` only");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return invalid("a name starts with a letter");
    }
    if name == HOST_ADDRESS || name == AGENTS_ADDRESS {
        return invalid("that address is reserved by the host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        for good in ["echo", "orders-v2", "a_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Echo",
            "1abc",
            "a b",
            "user:x",
            "agents",
            "host",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
