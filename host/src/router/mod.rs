//! The router: which handler or client a signal goes to, and where a reply finds its waiter.
//!
//! Outgoing signals go through [`Router::route`]: a reply is first offered to the waiter of
//! the message it answers ([`pending`]), everything else is handed to the transport, which
//! brings it back to [`Router::deliver_local`] on the host that serves its route. A message
//! that cannot be delivered is answered at once with an ErrorReply (404, 503), never
//! dropped silently.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

mod mailbox;
mod pending;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;

pub use mailbox::{Counters, Entry, Refused, Slot};
pub use pending::Pending;

use crate::metrics::Metrics;
use crate::runtime::{HandlerKind, Runtime, Version};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, HOST_ADDRESS, Json, Signal, USER_PREFIX, code};
use crate::transport::{Route, Transport};

/// Signals a connected client may have waiting before it is treated as too slow.
pub const CLIENT_QUEUE: usize = 256;

/// A signal the transport could not deliver, handed back with the reason.
#[derive(Debug)]
pub struct Undelivered {
    pub signal: Signal,
    pub reason: Reason,
}

/// Why a signal could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Nothing serves the address.
    NoRoute,
    /// The handler there does not accept this message type.
    NotAccepted,
    /// The handler's mailbox or the client's queue is full.
    Overloaded,
    /// The host is shutting down.
    ShuttingDown,
}

impl Undelivered {
    /// The signal could not be delivered because the host is stopping.
    pub fn shutting_down(signal: Signal) -> Self {
        Self {
            signal,
            reason: Reason::ShuttingDown,
        }
    }
}

/// Why a handler could not be installed.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error("the address `{address}` is already served by handler `{holder}`")]
    AddressTaken { address: String, holder: String },
}

#[derive(Default)]
struct Table {
    /// Handlers by the address they serve.
    handlers: HashMap<String, Entry>,
    /// Subscribers by event type.
    events: HashMap<String, Vec<String>>,
    /// Subscribers by object type.
    changes: HashMap<String, Vec<String>>,
    /// Connected clients (`user:<id>`).
    clients: HashMap<String, mpsc::Sender<Signal>>,
}

impl Table {
    /// Rebuilds the subscription indexes from the handlers' current descriptions.
    fn reindex(&mut self) {
        self.events.clear();
        self.changes.clear();
        for (address, entry) in &self.handlers {
            let version = entry.slot.current();
            for event in &version.description.events {
                self.events
                    .entry(event.clone())
                    .or_default()
                    .push(address.clone());
            }
            for object in &version.description.data_changes {
                self.changes
                    .entry(object.clone())
                    .or_default()
                    .push(address.clone());
            }
        }
    }

    fn broadcast(&self, subscribers: Option<&Vec<String>>, signal: Signal) {
        for address in subscribers.into_iter().flatten() {
            let Some(entry) = self.handlers.get(address) else {
                continue;
            };
            if let Err(refused) = entry.offer(signal.clone()) {
                tracing::warn!(
                    id = %signal.envelope.id,
                    handler = %entry.slot.name,
                    ?refused,
                    "a subscriber's mailbox refused a broadcast"
                );
            }
        }
    }
}

/// Routes signals between handlers, clients and the transport.
pub struct Router {
    table: RwLock<Table>,
    pending: Pending,
    transport: Arc<dyn Transport>,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    me: Weak<Router>,
}

impl Router {
    /// A router sending through `transport`, which it attaches itself to.
    pub fn new(runtime: Arc<Runtime>, transport: Arc<dyn Transport>) -> Arc<Self> {
        let router = Arc::new_cyclic(|me| Self {
            table: RwLock::default(),
            pending: Pending::default(),
            transport,
            runtime,
            metrics: Arc::default(),
            me: me.clone(),
        });
        router.transport.attach(router.me.clone());
        router
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The table of messages awaiting replies.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Sends a signal on its way. Never fails: what cannot be delivered is answered (for a
    /// message) or logged (for anything else).
    pub fn route(&self, signal: Signal) {
        let signal = match &signal.body {
            Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } => {
                let reply_to = reply_to.clone();
                match self.pending.claim(&reply_to, signal) {
                    pending::Claim::Unclaimed(signal) => signal,
                    pending::Claim::Delivered | pending::Claim::Forged => return,
                    pending::Claim::Late => {
                        self.metrics.late_replies.inc();
                        tracing::debug!(%reply_to, "dropped a reply that came after its deadline");
                        return;
                    }
                }
            }
            _ => signal,
        };
        if let Err(undelivered) = self.transport.publish(signal) {
            self.undeliverable(undelivered);
        }
    }

    /// Hands a new signal to the transport and says at once if it could not be delivered,
    /// for a caller outside the host (an HTTP client) who is not waiting for an ErrorReply.
    pub fn offer(&self, signal: Signal) -> Result<(), Undelivered> {
        self.transport.publish(signal)
    }

    /// Sends a message and waits for its Reply or ErrorReply, or gives up with 504 after
    /// `timeout`.
    pub async fn request(&self, signal: Signal, timeout: Duration) -> Result<Signal, Failure> {
        let Body::Message(message) = &signal.body else {
            return Err(Failure::new(
                code::BAD_REQUEST,
                "only a message can be awaited",
            ));
        };
        let to = message.to.clone();
        let id = signal.envelope.id.clone();
        let waiter = self.pending.register(id.clone(), to.clone());
        // If the caller stops waiting (a client hangs up), the entry goes too.
        let _forget = pending::Forget(&self.pending, &id);
        self.route(signal);
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Failure::new(code::OVERLOADED, "the host is shutting down")),
            Err(_) => {
                self.pending.expire(&id);
                Err(Failure::new(
                    code::TIMEOUT,
                    format!("no reply from `{to}` within {} ms", timeout.as_millis()),
                )
                .with_help(
                    "the handler may be slow or stuck; retry later or allow a longer timeout",
                ))
            }
        }
    }

    /// Answers an undeliverable message with an ErrorReply from the host.
    fn undeliverable(&self, undelivered: Undelivered) {
        let Undelivered { signal, reason } = undelivered;
        let Body::Message(message) = &signal.body else {
            tracing::debug!(id = %signal.envelope.id, kind = signal.kind(), ?reason, "dropped an undeliverable signal");
            return;
        };
        let failure = match reason {
            Reason::NoRoute => Failure::new(
                code::NOT_FOUND,
                format!("nothing serves the address `{}`", message.to),
            )
            .with_help("check the address, or deploy a handler under that name"),
            Reason::NotAccepted => Failure::new(
                code::NOT_FOUND,
                format!(
                    "the handler at `{}` does not accept messages of type `{}`",
                    message.to, message.message_type
                ),
            ),
            Reason::Overloaded => Failure::new(
                code::OVERLOADED,
                format!("the mailbox of `{}` is full", message.to),
            )
            .with_help("retry later"),
            Reason::ShuttingDown => Failure::new(code::OVERLOADED, "the host is shutting down"),
        };
        self.route(Signal::answer(&signal, HOST_ADDRESS, Err(failure), None));
    }

    /// Delivers a signal to the handlers or clients of this host that serve its route.
    pub fn deliver_local(&self, signal: Signal) -> Result<(), Undelivered> {
        let table = self.read();
        let fail = |signal, reason| Err(Undelivered { signal, reason });
        match Route::of(&signal) {
            Route::Event(event_type) => {
                table.broadcast(table.events.get(event_type), signal.clone());
                Ok(())
            }
            Route::DataChange(object_type) => {
                table.broadcast(table.changes.get(object_type), signal.clone());
                Ok(())
            }
            Route::Address(address) if address.starts_with(USER_PREFIX) => {
                let Some(client) = table.clients.get(address) else {
                    return fail(signal, Reason::NoRoute);
                };
                match client.try_send(signal) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(s)) => fail(s, Reason::Overloaded),
                    Err(mpsc::error::TrySendError::Closed(s)) => fail(s, Reason::NoRoute),
                }
            }
            Route::Address(address) => {
                let Some(entry) = table.handlers.get(address) else {
                    return fail(signal, Reason::NoRoute);
                };
                if let Body::Message(m) = &signal.body {
                    let accepts = &entry.slot.current().description.message_types;
                    if !accepts.is_empty() && !accepts.contains(&m.message_type) {
                        return fail(signal, Reason::NotAccepted);
                    }
                }
                entry.offer(signal).or_else(|refused| match refused {
                    Refused::Full(s) => fail(s, Reason::Overloaded),
                    Refused::Closed(s) => fail(s, Reason::ShuttingDown),
                })
            }
        }
    }

    /// Called by a worker when its handler is done with a signal: a message's outcome
    /// becomes its Reply or ErrorReply; other kinds' failures are logged.
    pub(crate) fn finish(
        &self,
        signal: Signal,
        result: Result<Option<Json>, Failure>,
        from: String,
    ) {
        if let Body::Message(_) = signal.body {
            let outcome = result.map(|payload| payload.unwrap_or_else(Json::null));
            self.route(Signal::answer(&signal, from, outcome, None));
        } else if let Err(failure) = result {
            tracing::warn!(id = %signal.envelope.id, kind = signal.kind(), %failure, "handler failed on a signal");
        }
    }

    /// Makes `version` the current version of handler `name`, starting it if it is new.
    /// Returns whether it replaced a running version.
    pub fn install(&self, name: &str, version: Arc<Version>) -> Result<bool, InstallError> {
        let address = match version.description.kind {
            HandlerKind::Service => name.to_owned(),
            HandlerKind::Agent => AGENTS_ADDRESS.to_owned(),
        };
        let mut table = self.write();
        if let Some(entry) = table.handlers.get(&address)
            && &*entry.slot.name != name
        {
            return Err(InstallError::AddressTaken {
                address,
                holder: entry.slot.name.to_string(),
            });
        }
        // The handler's running entry, wherever it is (a new kind moves it to a new address).
        let running = table
            .handlers
            .iter()
            .find(|(_, entry)| &*entry.slot.name == name)
            .map(|(address, _)| address.clone());
        let old = running.and_then(|at| table.handlers.remove(&at));
        let swapped = old.is_some();
        let entry = match old {
            // Same address and mailbox shape: swap in place; queued signals go to the new version.
            Some(entry) if entry.slot.address == address && entry.fits(&version.limits) => {
                entry.swap(version);
                entry
            }
            // Otherwise a fresh mailbox behind the old one: the old queue goes to the new
            // version, and the new workers start only once the old ones have all exited.
            old => {
                if let Some(old) = &old {
                    old.swap(version.clone());
                }
                Entry::open(
                    name,
                    address.clone(),
                    version,
                    old,
                    self.runtime.clone(),
                    self.me.clone(),
                    self.metrics.clone(),
                )
            }
        };
        if swapped {
            self.metrics
                .swaps
                .get_or_create(&Metrics::handler(name))
                .inc();
        }
        table.handlers.insert(address, entry);
        table.reindex();
        Ok(swapped)
    }

    /// Stops a handler: its mailbox closes, queued signals are still handled.
    pub fn remove(&self, address: &str) -> bool {
        let mut table = self.write();
        let removed = table.handlers.remove(address).is_some();
        table.reindex();
        removed
    }

    /// The deployed handlers' slots, by address, with the signals queued for each (counting
    /// a mailbox it moved from that is still draining).
    pub fn slots(&self) -> Vec<(Arc<Slot>, usize)> {
        self.read()
            .handlers
            .values()
            .map(|entry| (entry.slot.clone(), entry.queued()))
            .collect()
    }

    /// The metrics in the Prometheus text format, with gauges read at this moment.
    pub fn render_metrics(&self) -> String {
        for (slot, queued) in self.slots() {
            let labels = Metrics::handler(&slot.name);
            self.metrics
                .queue_depth
                .get_or_create(&labels)
                .set(queued as i64);
        }
        self.metrics
            .pending_requests
            .set(self.pending.waiting() as i64);
        self.metrics.encode()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Connects a client at `address` (e.g. `user:alice`); signals addressed to it arrive on
    /// the returned receiver. A second connection at the same address replaces the first.
    pub fn connect(&self, address: &str) -> mpsc::Receiver<Signal> {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        self.write().clients.insert(address.to_owned(), tx);
        rx
    }

    /// Whether a client is connected at `address`.
    pub fn is_online(&self, address: &str) -> bool {
        self.read()
            .clients
            .get(address)
            .is_some_and(|tx| !tx.is_closed())
    }

    /// Disconnects the client at `address`.
    pub fn disconnect(&self, address: &str) {
        self.write().clients.remove(address);
    }
}
