//! The router: which handler or client a signal goes to, and where a reply finds its waiter.
//!
//! Outgoing signals go through [`Router::route`]: a reply is first offered to the waiter of
//! the message it answers (`pending`), everything else is handed to the transport, which
//! brings it back to `Router::deliver_local` on the host that serves its route.
//!
//! Nothing is dropped silently. Every accepted signal ends handled; answered with an
//! ErrorReply (a message that cannot be delivered gets 404 or 503 at once); kept in the
//! [`DeadLetters`] store (an event, data change or reply a mailbox or client refused); or,
//! for replies only, dropped as late, unexpected or forged. Each outcome has its counter.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

mod answers;
mod callbacks;
mod gateway;
mod mailbox;
mod outbound;
mod pending;
mod queue_bytes;
mod turns;
mod undelivered;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;

pub use answers::{Answers, Open};
pub use callbacks::{CALLBACK_CAP, Callbacks};
pub use mailbox::{Counters, Entry, Refused, Slot};
pub use pending::Pending;
use queue_bytes::QueueBudget;

use crate::address::{Address, Kind};
use crate::clock::Clock;
use crate::dead_letters::{DeadLetter, DeadLetters, DeadReason};
pub use crate::gateway::{CLIENT_QUEUE, ClientLink};
use crate::metrics::{Metrics, RefusedLabels};
use crate::runtime::{HandlerKind, PoolFull, Reservation, Runtime, Version};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, HOST_ADDRESS, Json, Signal, code};
pub use crate::transport::{Accepted, Reason, Undelivered};
use crate::transport::{Inbound, Publish, Route, Transport};

/// How long after its deadline this host keeps a message whose caller waits on another host
/// (by that host's clock): the caller answers 504 at the deadline by its own clock, so
/// clocks up to this far apart never cut a message early.
pub const REMOTE_GRACE_MS: u64 = 1_000;

/// Messages one handler may leave open for a later answer; past it, the next one it
/// answers `later` is answered 503 by the host.
pub const MAX_LATER_PER_HANDLER: usize = 10_000;

/// Why a handler could not be installed.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error("the address `{address}` is already served by handler `{holder}`")]
    AddressTaken { address: String, holder: String },
    /// A new handler could not be guaranteed an instance slot.
    #[error(transparent)]
    PoolFull(#[from] PoolFull),
}

/// A map on the signal path: foldhash, seeded at random per process (SipHash, std's default,
/// cost more per lookup than the rest of a table access).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Tables keyed by message id (open answers, pending waiters) are spread over this many
/// locks, so that a caller and a worker touching different messages seldom wait for one.
pub(crate) const ID_SHARDS: usize = 16;

/// The one of `shards` that holds message `id` (ids end in random digits: their last bytes
/// spread them).
pub(crate) fn shard_of<'a, T>(shards: &'a [T], id: &str) -> &'a T {
    let spread = id.bytes().rev().take(4).fold(0usize, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(byte as usize)
    });
    &shards[spread % shards.len()]
}

#[derive(Default)]
struct Table {
    /// Handlers by the address they serve.
    handlers: FastMap<String, Entry>,
    /// The addresses of the agent handlers (`agent:<name>/*`), for the short `agent:<id>`.
    agents: Vec<String>,
    /// Subscribers by event type (shared, so a broadcast takes the list without copying).
    events: FastMap<String, Arc<[String]>>,
    /// Subscribers by object type.
    changes: FastMap<String, Arc<[String]>>,
    /// Connected clients (`user:<id>`): every connection of each.
    clients: FastMap<String, Vec<ClientConnection>>,
    /// The number of the last client connection.
    next_client: u64,
    /// The instance slot each deployed handler is guaranteed, by handler name: taken when
    /// it is first installed, kept across swaps and moves, given back when it is removed.
    reservations: FastMap<String, Reservation>,
}

/// A route the handlers of a table serve, owned and ordered, to tell the transport what
/// changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Served {
    Address(String),
    Event(String),
    DataChange(String),
}

impl Served {
    fn route(&self) -> Route<'_> {
        match self {
            Self::Address(address) => Route::Address(address),
            Self::Event(event_type) => Route::Event(event_type),
            Self::DataChange(object_type) => Route::DataChange(object_type),
        }
    }
}

impl Table {
    /// The routes its handlers serve: their addresses and subscriptions (clients are told
    /// apart, as they connect).
    fn served(&self) -> BTreeSet<Served> {
        let addresses = self.handlers.keys().cloned().map(Served::Address);
        let events = self.events.keys().cloned().map(Served::Event);
        let changes = self.changes.keys().cloned().map(Served::DataChange);
        addresses.chain(events).chain(changes).collect()
    }

    /// Rebuilds the subscription indexes from the handlers' current descriptions.
    fn reindex(&mut self) {
        let mut events: FastMap<String, Vec<String>> = FastMap::default();
        let mut changes: FastMap<String, Vec<String>> = FastMap::default();
        for (address, entry) in &self.handlers {
            let version = entry.slot.current();
            for event in &version.description.events {
                events
                    .entry(event.clone())
                    .or_default()
                    .push(address.clone());
            }
            for object in &version.description.data_changes {
                changes
                    .entry(object.clone())
                    .or_default()
                    .push(address.clone());
            }
        }
        let shared = |index: FastMap<String, Vec<String>>| {
            index.into_iter().map(|(k, v)| (k, Arc::from(v))).collect()
        };
        self.events = shared(events);
        self.changes = shared(changes);
        self.agents = self
            .handlers
            .keys()
            .filter(|address| Address::kind_of(address) == Kind::Agent)
            .cloned()
            .collect();
    }

    /// The address of the agent handler serving agent address `to`, and `to` in full,
    /// `agent:<handler>/<id>`. The short `agent:<id>` resolves only while exactly one agent
    /// handler is deployed.
    fn resolve_agent(&self, to: &str) -> Option<(String, String)> {
        let Ok(Address::Agent { handler, id }) = Address::parse(to) else {
            return None;
        };
        match handler {
            Some(handler) => {
                let home = Address::agent_handler(handler).to_string();
                self.handlers
                    .contains_key(&home)
                    .then(|| (home, to.to_owned()))
            }
            None => match self.agents.as_slice() {
                [only] => {
                    let Ok(Address::Agent {
                        handler: Some(handler),
                        ..
                    }) = Address::parse(only)
                    else {
                        return None;
                    };
                    let full = Address::Agent {
                        handler: Some(handler),
                        id,
                    };
                    Some((only.clone(), full.to_string()))
                }
                _ => None,
            },
        }
    }
}

/// What became of a reply a caller on this host awaited.
enum Claimed {
    /// Its caller has it.
    Delivered,
    /// Forged or late: dropped and counted.
    Dropped,
}

impl Inbound for Router {
    /// A reply from another host goes to the caller here awaiting it first (a guest's
    /// `request` or an HTTP `?wait`), as one produced here would.
    fn deliver(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        match self.claim_reply(signal) {
            Ok(signal) => self.deliver_local(signal),
            Err(Claimed::Delivered) => Ok(Accepted::ONE),
            Err(Claimed::Dropped) => Ok(Accepted::default()),
        }
    }
}

/// One connection of a client, as the router holds it.
struct ClientConnection {
    /// Its number.
    id: u64,
    /// Its bounded queue of signals to send.
    queue: mpsc::Sender<Signal>,
    /// Bytes of signals in the queue, and the most it may hold.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Routes signals between handlers, clients and the transport.
pub struct Router {
    table: RwLock<Table>,
    pending: Pending,
    /// Messages delivered to handlers and not yet answered.
    answers: Answers,
    callbacks: Callbacks,
    /// The host's budget of queued bytes, shared by every mailbox.
    budget: Arc<QueueBudget>,
    dead_letters: DeadLetters,
    transport: Arc<dyn Transport>,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    me: Weak<Router>,
}

impl Router {
    /// A router sending through `transport`, which it attaches itself to, keeping what
    /// cannot be delivered in `dead_letters`.
    pub fn new(
        runtime: Arc<Runtime>,
        transport: Arc<dyn Transport>,
        dead_letters: DeadLetters,
    ) -> Arc<Self> {
        let router = Arc::new_cyclic(|me| Self {
            table: RwLock::default(),
            pending: Pending::default(),
            answers: Answers::default(),
            callbacks: Callbacks::default(),
            budget: QueueBudget::new(runtime.config().queue_budget_bytes),
            dead_letters,
            transport,
            metrics: runtime.metrics().clone(),
            runtime,
            me: me.clone(),
        });
        router
            .transport
            .attach(router.me.clone() as Weak<dyn Inbound>);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expire_open_messages(router.me.clone()));
        }
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

    /// The open callback sends of every handler.
    pub fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.runtime.config().clock
    }

    /// Sends a signal on its way. Never fails: what cannot be delivered is answered (a
    /// message), dead-lettered, or dropped and counted (a reply).
    pub fn route(&self, mut signal: Signal) {
        let kind = signal.kind();
        self.stamp_deadline(&mut signal);
        match self.claim_reply(signal) {
            Ok(signal) => self.publish(signal, kind, Self::settle),
            Err(Claimed::Delivered) => self.count_accepted(kind, 1),
            Err(Claimed::Dropped) => {}
        }
    }

    /// Hands a reply to the caller on this host awaiting it, if one does; gives back
    /// anything else. A reply that is forged (not from the message's addressee) or late is
    /// dropped and counted here.
    fn claim_reply(&self, signal: Signal) -> Result<Signal, Claimed> {
        let kind = signal.kind();
        let reply_to = match &signal.body {
            Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } => reply_to.clone(),
            _ => return Ok(signal),
        };
        match self.pending.claim(&reply_to, signal) {
            pending::Claim::Unclaimed(signal) => Ok(signal),
            pending::Claim::Delivered => Err(Claimed::Delivered),
            pending::Claim::Forged { from, addressee } => {
                if self.runtime.log_limit().admit(&from) {
                    tracing::warn!(%reply_to, from, addressee, "refused a reply from someone the message was not sent to");
                }
                self.drop_reply(kind, "forged");
                Err(Claimed::Dropped)
            }
            pending::Claim::Late => {
                self.metrics.late_replies.inc();
                tracing::debug!(%reply_to, "dropped a reply that came after its deadline");
                self.drop_reply(kind, "late");
                Err(Claimed::Dropped)
            }
        }
    }

    /// Gives a message its deadline, if it has none: the host's default for a message sent
    /// without waiting. A one-way push to a client has none.
    fn stamp_deadline(&self, signal: &mut Signal) {
        if let Body::Message(m) = &signal.body
            && signal.envelope.deadline.is_none()
            && Address::kind_of(&m.to) != Kind::User
        {
            let after = self.runtime.config().message_deadline;
            signal.envelope.deadline = Some(self.clock().after(after));
        }
    }

    /// Answers message `id`, delivered to and still open at `answerer`, with `outcome`: the
    /// one answer it takes. The host (`host`) may answer any open message. A refused answer
    /// reaches nobody and is counted.
    pub fn answer(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<String, Failure> {
        let open = self.claim_answer(id, answerer)?;
        Ok(self.release_answer(open, outcome))
    }

    /// Closes message `id` for `answerer`'s answer. The host (`host`) may answer any open
    /// message. A refusal is counted and logged (rate-limited).
    fn claim_answer(&self, id: &str, answerer: &str) -> Result<Open, Failure> {
        let claimed = if answerer == HOST_ADDRESS {
            self.answers.claim_any(id)
        } else {
            self.answers.claim(id, answerer)
        };
        claimed.map_err(|refused| {
            // Labelled by handler, never by agent: clients choose agent ids.
            let handler = Address::handler_of(answerer).to_owned();
            self.metrics
                .answers_refused
                .get_or_create(&crate::metrics::DeadLetterLabels {
                    handler: handler.clone(),
                    reason: refused.as_str().to_owned(),
                })
                .inc();
            if self.runtime.log_limit().admit(&handler) {
                tracing::debug!(id, answerer, reason = refused.as_str(), "refused an answer");
            }
            refused.failure(id)
        })
    }

    /// Sends the answer to a claimed message; returns the answer's id.
    fn release_answer(&self, open: Open, outcome: Result<Json, Failure>) -> String {
        let answer = open.into_answer(None, outcome, self.clock());
        let id = answer.envelope.id.clone();
        self.route_answer(answer);
        id
    }

    /// Routes an answer, unless it answers a timer's message: that goes nowhere.
    pub(crate) fn route_answer(&self, answer: Signal) {
        let nowhere = matches!(&answer.body, Body::Reply { to, .. } | Body::ErrorReply { to, .. } if to.is_empty());
        if !nowhere {
            self.route(answer);
        }
    }

    /// Publishes through the transport and hands the outcome to `then`, at once or, when the
    /// transport learns it later, from a task.
    fn publish(
        &self,
        signal: Signal,
        kind: &'static str,
        then: fn(&Self, &'static str, Result<Accepted, Undelivered>),
    ) {
        match self.transport.publish(signal) {
            Publish::Now(outcome) => then(self, kind, outcome),
            later => self.when_known(later, kind, then),
        }
    }

    /// Hands a publish's outcome to `then` from a task, once the transport knows it.
    fn when_known(
        &self,
        later: Publish,
        kind: &'static str,
        then: fn(&Self, &'static str, Result<Accepted, Undelivered>),
    ) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = later.outcome().await;
            if let Some(router) = me.upgrade() {
                then(&router, kind, outcome);
            }
        });
    }

    /// Counts a routed signal, or settles one that could not be delivered.
    fn settle(&self, kind: &'static str, outcome: Result<Accepted, Undelivered>) {
        match outcome {
            Ok(accepted) => self.count_accepted(kind, accepted.total()),
            Err(undelivered) => self.undeliverable(undelivered),
        }
    }

    /// Hands a new signal to the transport and says whether it was delivered, for a caller
    /// outside the host (an HTTP client) who is not waiting for an ErrorReply. A refused
    /// signal was never accepted; it is counted as refused.
    pub async fn offer(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        let kind = signal.kind();
        let outcome = self.transport.publish(signal).outcome().await;
        self.count_offered(kind, &outcome);
        outcome
    }

    /// Like [`Router::offer`] for a caller that cannot wait (a guest's `emit`): refused at
    /// once when the transport knows at once; otherwise taken, and settled when the outcome
    /// arrives.
    pub fn offer_now(&self, signal: Signal) -> Result<(), Undelivered> {
        let kind = signal.kind();
        match self.transport.publish(signal) {
            Publish::Now(outcome) => {
                self.count_offered(kind, &outcome);
                outcome.map(drop)
            }
            later => {
                self.when_known(later, kind, |router, kind, outcome| {
                    router.count_offered(kind, &outcome)
                });
                Ok(())
            }
        }
    }

    /// How many handlers of this host subscribe to a broadcast.
    fn subscribers(&self, signal: &Signal) -> u32 {
        let table = self.read();
        let list = match Route::of(signal) {
            Route::Event(event_type) => table.events.get(event_type),
            Route::DataChange(object_type) => table.changes.get(object_type),
            Route::Address(_) => None,
        };
        list.map_or(0, |l| l.len() as u32)
    }

    fn count_offered(&self, kind: &str, outcome: &Result<Accepted, Undelivered>) {
        match outcome {
            Ok(accepted) => self.count_accepted(kind, accepted.total()),
            Err(undelivered) => {
                self.metrics
                    .refused
                    .get_or_create(&RefusedLabels {
                        kind: kind.to_owned(),
                        reason: undelivered.reason.as_str().to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// Reserves a place for the reply to a message handler `owner` sends without waiting,
    /// if the reply will come back to it (429 when it has none left).
    pub(super) fn reserve_send(&self, signal: &Signal, owner: &Arc<str>) -> Result<(), Failure> {
        if let Body::Message(m) = &signal.body {
            let comes_back = Address::kind_of(&m.to) != Kind::User
                && m.return_address
                    .as_deref()
                    .is_none_or(|a| a == signal.envelope.from);
            if comes_back && let Err(open) = self.callbacks.open(signal.id(), owner) {
                self.metrics
                    .callbacks_refused
                    .get_or_create(&Metrics::handler(owner))
                    .inc();
                return Err(Failure::new(
                    code::TOO_MANY,
                    format!("handler `{owner}` already has {open} sent messages awaiting replies, the most it may have"),
                )
                .with_help("wait for replies in `handle_reply` before sending more, or use `request`"));
            }
        }
        Ok(())
    }

    fn count_accepted(&self, kind: &str, copies: usize) {
        if copies > 0 {
            self.metrics.accepted_of(kind).inc_by(copies as u64);
        }
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
        let mut signal = signal;
        signal.envelope.deadline = Some(self.clock().after(timeout));
        // Where the answer finds this waiter when another host produces it.
        if let (Some(inbox), Body::Message(m)) = (self.transport.inbox(), &mut signal.body)
            && m.return_address.is_none()
        {
            m.return_address = Some(inbox.to_owned());
        }
        let waiter = self.pending.register(id.clone(), to.clone());
        // If the caller stops waiting (a client hangs up), the entry goes too.
        let mut forget = pending::Forget::new(&self.pending, &id);
        self.route(signal);
        let waited = tokio::time::timeout(timeout, waiter).await;
        // A reply means its claim removed the waiter; an expiry below removes it too.
        forget.settled();
        match waited {
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

    /// Offers a signal to every subscriber in `subscribers`, then lets go of the table. A
    /// subscriber whose mailbox refuses it gets its copy kept as a dead letter, if its share
    /// of the store has room; otherwise that copy alone is refused at the source and counted,
    /// so one stuck subscriber never costs the others (or the sender) anything. Refused
    /// copies are kept after the table lock is released, so a slow store write never holds
    /// up routing.
    fn broadcast(
        &self,
        table: std::sync::RwLockReadGuard<'_, Table>,
        subscribers: &[String],
        signal: Signal,
    ) -> Result<Accepted, Undelivered> {
        let mut accepted = Accepted::default();
        let mut refusals = Vec::new();
        for address in subscribers {
            let Some(entry) = table.handlers.get(address) else {
                continue;
            };
            let (reason, copy) = match entry.offer(signal.clone(), false) {
                Ok(()) => {
                    accepted.delivered += 1;
                    continue;
                }
                Err(Refused::Full(copy) | Refused::OverBytes(copy, _)) => {
                    (DeadReason::MailboxFull, copy)
                }
                Err(Refused::Closed(copy)) => (DeadReason::HandlerStopped, copy),
            };
            match self.dead_letters.reserve(&entry.slot.name) {
                Some(room) => refusals.push((room, reason, copy)),
                None => {
                    accepted.refused += 1;
                    self.refused_copy(&entry.slot.name, &copy);
                }
            }
        }
        drop(table);
        for (mut room, reason, copy) in refusals {
            self.keep(&mut room, reason, copy);
            accepted.dead_lettered += 1;
        }
        Ok(accepted)
    }

    /// Offers a dead letter again to the one handler (or client) it was meant for, never to
    /// every subscriber. On success the caller removes it from the store.
    pub fn redeliver(&self, letter: &DeadLetter) -> Result<(), Undelivered> {
        let signal = letter.signal.clone();
        let table = self.read();
        if Address::kind_of(&letter.handler) == Kind::User {
            return self.to_client(&table, &letter.handler, signal);
        }
        let Some(entry) = table
            .handlers
            .values()
            .find(|entry| *entry.slot.name == *letter.handler)
        else {
            return Err(Undelivered {
                signal,
                reason: Reason::NoRoute,
            });
        };
        self.offer_to(entry, signal, false)
            .map_err(|refused| match refused {
                Refused::Full(signal) => Undelivered {
                    signal,
                    reason: Reason::Overloaded,
                },
                Refused::OverBytes(signal, over) => Undelivered {
                    signal,
                    reason: Reason::OverBytes(Box::new(over)),
                },
                Refused::Closed(signal) => Undelivered {
                    signal,
                    reason: Reason::ShuttingDown,
                },
            })
    }

    /// Hands a signal to every connection of the client at `address`: taken if at least one
    /// took it; refused as overloaded if every open one is full, as gone if none is open. A
    /// full queue is the client's to drain (it is closed only if it stops reading): the
    /// signal is not sent to that connection, and counted as undelivered.
    fn to_client(&self, table: &Table, address: &str, signal: Signal) -> Result<(), Undelivered> {
        let fail = |signal, reason| Err(Undelivered { signal, reason });
        let Some(connections) = table.clients.get(address) else {
            return fail(signal, Reason::NoRoute);
        };
        let (mut taken, mut full) = (false, false);
        let size = signal.size();
        let undelivered = &self.metrics.gateway.undelivered;
        for connection in connections {
            // Counted before it is queued, so the taker never subtracts what is not added.
            let queued = connection.queued.fetch_add(size, Ordering::Relaxed);
            // An empty queue takes any signal, however large.
            if queued > 0 && queued.saturating_add(size) > connection.max_bytes {
                connection.queued.fetch_sub(size, Ordering::Relaxed);
                full = true;
                undelivered.inc();
                continue;
            }
            match connection.queue.try_send(signal.clone()) {
                Ok(()) => taken = true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    connection.queued.fetch_sub(size, Ordering::Relaxed);
                    full = true;
                    undelivered.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    connection.queued.fetch_sub(size, Ordering::Relaxed);
                }
            }
        }
        match (taken, full) {
            (true, _) => Ok(()),
            (false, true) => fail(signal, Reason::Overloaded),
            (false, false) => fail(signal, Reason::ClientGone),
        }
    }

    /// Delivers a signal to the handlers or clients of this host that serve its route.
    fn deliver_local(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        let table = self.read();
        let fail = |signal, reason| Err(Undelivered { signal, reason });
        match Route::of(&signal) {
            Route::Event(event_type) => match table.events.get(event_type).cloned() {
                Some(subscribers) => self.broadcast(table, &subscribers, signal),
                None => Ok(Accepted::default()),
            },
            Route::DataChange(object_type) => match table.changes.get(object_type).cloned() {
                Some(subscribers) => self.broadcast(table, &subscribers, signal),
                None => Ok(Accepted::default()),
            },
            Route::Address(address) if Address::kind_of(address) == Kind::User => {
                let address = address.to_owned();
                self.to_client(&table, &address, signal)
                    .map(|()| Accepted::ONE)
            }
            Route::Address(AGENTS_ADDRESS) => {
                let to = match &signal.body {
                    Body::Message(m) => m.to.as_str(),
                    Body::Reply { to, .. } | Body::ErrorReply { to, .. } => to.as_str(),
                    _ => "",
                };
                let Some((home, full)) = table.resolve_agent(to) else {
                    return fail(signal, Reason::NoRoute);
                };
                let mut signal = signal;
                set_to(&mut signal, full);
                self.deliver_to_handler(&table, &home, signal)
            }
            Route::Address(address) => {
                let address = address.to_owned();
                self.deliver_to_handler(&table, &address, signal)
            }
        }
    }

    /// Offers a message or reply to the handler serving `address`: a message it does not
    /// accept is refused, a reply to its own send takes the room kept for it, and a message
    /// is opened for its one answer before it can be handled.
    fn deliver_to_handler(
        &self,
        table: &Table,
        address: &str,
        signal: Signal,
    ) -> Result<Accepted, Undelivered> {
        let fail = |signal, reason| Err(Undelivered { signal, reason });
        let Some(entry) = table.handlers.get(address) else {
            return fail(signal, Reason::NoRoute);
        };
        if let Body::Message(m) = &signal.body
            && !entry
                .slot
                .current()
                .description
                .accepts
                .takes(&m.message_type)
        {
            return fail(signal, Reason::NotAccepted);
        }
        // A reply to a message this handler sent has room kept for it.
        let promised = match &signal.body {
            Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } => {
                self.callbacks.claim_room(reply_to, &entry.slot.name)
            }
            _ => false,
        };
        match self.offer_to(entry, signal, promised) {
            Ok(()) => Ok(Accepted::ONE),
            Err(Refused::Full(s)) => fail(s, Reason::Overloaded),
            Err(Refused::OverBytes(s, over)) => fail(s, Reason::OverBytes(Box::new(over))),
            Err(Refused::Closed(s)) => fail(s, Reason::ShuttingDown),
        }
    }

    /// Offers a signal to a handler's mailbox. A message is opened for its one answer first
    /// (the answer may come as soon as it is queued), and closed again if the mailbox
    /// refuses it.
    fn offer_to(&self, entry: &Entry, signal: Signal, promised: bool) -> Result<(), Refused> {
        let mut open = Open::of(&signal, &entry.addressee(&signal), self.default_deadline());
        if let Some(open) = &mut open
            && self.awaited_elsewhere(open)
        {
            open.deadline = open.deadline.saturating_add(REMOTE_GRACE_MS);
        }
        let id = open.map(|open| {
            let id = open.id.clone();
            self.answers.open(open);
            id
        });
        let offered = entry.offer(signal, promised);
        if let (Err(_), Some(id)) = (&offered, &id) {
            let _ = self.answers.claim_any(id);
        }
        offered
    }

    /// Whether the caller awaiting `open`'s answer is on another host: it goes to an inbox
    /// not this host's. Its deadline was set by that host's clock.
    fn awaited_elsewhere(&self, open: &Open) -> bool {
        let Some(answer_to) = open.answer_to.as_deref() else {
            return false;
        };
        Address::kind_of(answer_to) == Kind::Inbox && self.transport.inbox() != Some(answer_to)
    }

    /// Whether message `id` still waits for its answer: not answered, not past its deadline.
    pub(crate) fn is_open(&self, id: &str) -> bool {
        self.answers.is_open(id)
    }

    /// Called by a worker when its handler is done with a signal: a message's outcome is its
    /// answer (from `from`), unless the handler answers `later`; a message answered already
    /// (with `reply`) refuses it and counts it. The worker logs other kinds' failures.
    pub(crate) fn finish(
        &self,
        signal: &Signal,
        result: Result<Option<Json>, Failure>,
        from: &str,
        later: bool,
    ) {
        if !matches!(signal.body, Body::Message(_)) {
            return;
        }
        let outcome = if later {
            let handler = Address::handler_of(from);
            if self
                .answers
                .defer(signal.id(), handler, MAX_LATER_PER_HANDLER)
            {
                return;
            }
            Err(Failure::new(
                code::OVERLOADED,
                format!("handler `{handler}` already has {MAX_LATER_PER_HANDLER} messages waiting for a later answer, the most it may have"),
            )
            .with_help("retry later, once it has answered some"))
        } else {
            result.map(|payload| payload.unwrap_or_else(Json::null))
        };
        // Refused and counted if it was answered already: one answer per message.
        let _ = self.answer(signal.id(), from, outcome);
    }

    /// The deadline of a message that reached a handler without one (only a message from
    /// another host could): the default from now.
    fn default_deadline(&self) -> u64 {
        self.clock().after(self.runtime.config().message_deadline)
    }

    /// Answers 504 every open message past its deadline.
    fn expire(&self) {
        for open in self.answers.expire(self.clock().now_millis()) {
            self.metrics.answers_expired.inc();
            let failure = Failure::new(
                code::TIMEOUT,
                format!(
                    "`{}` did not answer message {} before its deadline",
                    open.addressee, open.id
                ),
            )
            .with_help(
                "the handler said it would answer later and did not; it may be slow or stuck",
            );
            let from = Some(HOST_ADDRESS.to_owned());
            let answer = open.into_answer(from, Err(failure), self.clock());
            self.route_answer(answer);
        }
    }

    /// Whether a warning about `handler` may be logged now (a per-handler rate limit).
    pub(crate) fn may_warn(&self, handler: &str) -> bool {
        self.runtime.log_limit().admit(handler)
    }

    /// Makes `version` the current version of handler `name`, starting it if it is new.
    /// Returns whether it replaced a running version.
    pub fn install(&self, name: &str, version: Arc<Version>) -> Result<bool, InstallError> {
        let address = match version.description.kind {
            HandlerKind::Service => name.to_owned(),
            HandlerKind::Agent => Address::agent_handler(name).to_string(),
        };
        let mut table = self.write();
        let served = table.served();
        if let Some(entry) = table.handlers.get(&address)
            && &*entry.slot.name != name
        {
            return Err(InstallError::AddressTaken {
                address,
                holder: entry.slot.name.to_string(),
            });
        }
        if !table.reservations.contains_key(name) {
            let reservation = self.runtime.pool().reserve(name)?;
            table.reservations.insert(name.to_owned(), reservation);
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
                    &self.budget,
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
        self.reindex(&mut table, &served);
        Ok(swapped)
    }

    /// Rebuilds the table's indexes after its handlers changed, and tells the transport which
    /// routes this host started and stopped serving since it served `before`.
    fn reindex(&self, table: &mut Table, before: &BTreeSet<Served>) {
        table.reindex();
        let after = table.served();
        for gone in before.difference(&after) {
            self.transport.unserve(gone.route());
        }
        for new in after.difference(before) {
            self.transport.serve(new.route());
        }
    }

    /// Stops a handler: calls in progress are abandoned (their senders get 503) and their
    /// instances dropped; the mailbox closes, and signals already queued are still handled.
    pub fn remove(&self, address: &str) -> bool {
        let mut table = self.write();
        let served = table.served();
        let removed = table.handlers.remove(address);
        if let Some(entry) = &removed {
            table.reservations.remove(&*entry.slot.name);
        }
        self.reindex(&mut table, &served);
        drop(table);
        removed.inspect(Entry::stop).is_some()
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
        self.runtime
            .pool()
            .usage()
            .record(&self.metrics.instance_slots);
        self.metrics
            .pending_requests
            .set(self.pending.waiting() as i64);
        self.metrics.open_messages.set(self.answers.len() as i64);
        self.metrics.queued_bytes.set(self.budget.queued() as i64);
        self.metrics
            .dead_letters_stored
            .set(self.dead_letters.held() as i64);
        self.metrics.encode()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Connects a client at `address` (e.g. `user:alice`); signals addressed to it arrive on
    /// the returned receiver, and on every other connection it has open.
    pub fn connect(&self, address: &str) -> mpsc::Receiver<Signal> {
        self.connect_client(address, CLIENT_QUEUE, usize::MAX, || {})
            .inbox
    }

    /// Like [`Router::connect`], with a queue of `queue` signals and at most `max_bytes`
    /// (an empty queue takes any signal): a signal that finds it full is not queued, and
    /// counted as undelivered. `first` runs if this is the client's only connection now, while the router
    /// still holds the change, so that what it records (presence) is in the order
    /// connections really opened and closed.
    pub fn connect_client(
        &self,
        address: &str,
        queue: usize,
        max_bytes: usize,
        first: impl FnOnce(),
    ) -> ClientLink {
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, inbox) = mpsc::channel(queue.max(1));
        let mut table = self.write();
        table.next_client += 1;
        let id = table.next_client;
        if !table.clients.contains_key(address) {
            self.transport.serve(Route::Address(address));
        }
        let connections = table.clients.entry(address.to_owned()).or_default();
        connections.retain(|c| !c.queue.is_closed());
        connections.push(ClientConnection {
            id,
            queue: tx,
            queued: queued.clone(),
            max_bytes,
        });
        let open = connections.len();
        if open == 1 {
            first();
        }
        ClientLink {
            id,
            open,
            inbox,
            queued,
        }
    }

    /// The largest signal the host takes, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.runtime.config().max_message_bytes
    }

    /// The host's keyed-state store (which also keeps pushes for users), if it has one.
    pub fn state_store(&self) -> Option<Arc<crate::keyed::StateStore>> {
        self.runtime.state_store()
    }

    /// Whether a client is connected at `address` (on any connection).
    pub fn is_online(&self, address: &str) -> bool {
        self.read()
            .clients
            .get(address)
            .is_some_and(|connections| connections.iter().any(|c| !c.queue.is_closed()))
    }

    /// Disconnects every connection of the client at `address` (an embedded client, such as
    /// the fuzzing harness's, ends this way).
    pub fn disconnect(&self, address: &str) {
        let mut table = self.write();
        if table.clients.remove(address).is_some() {
            self.transport.unserve(Route::Address(address));
        }
    }

    /// Disconnects connection `id` of the client at `address`; the others stay. How many
    /// it has left. `last` runs if this was its last connection, while the router still
    /// holds the change (see [`Router::connect_client`]).
    pub fn disconnect_client(&self, address: &str, id: u64, last: impl FnOnce()) -> usize {
        let mut table = self.write();
        let Some(connections) = table.clients.get_mut(address) else {
            return 0;
        };
        let before = connections.len();
        connections.retain(|c| c.id != id);
        let removed = connections.len() < before;
        let left = connections.len();
        if left == 0 {
            table.clients.remove(address);
            self.transport.unserve(Route::Address(address));
            if removed {
                last();
            }
        }
        left
    }
}

/// How often open messages are checked against their deadlines.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Answers 504 the open messages past their deadline, every [`EXPIRY_TICK`], while the
/// router lives.
async fn expire_open_messages(router: Weak<Router>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            break;
        };
        router.expire();
    }
}

/// Sets the address a message or reply is for.
fn set_to(signal: &mut Signal, address: String) {
    match &mut signal.body {
        Body::Message(m) => m.to = address,
        Body::Reply { to, .. } | Body::ErrorReply { to, .. } => *to = address,
        _ => {}
    }
}
