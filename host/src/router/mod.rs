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
//!
//! By role: this file routes and delivers; `table` holds the deployed handlers and their
//! subscriptions (install, remove, what the transport is told this host serves); `answering`
//! gives each message its one answer and its 504 at the deadline; `clients` keeps connected
//! clients' connections; `mailbox` and `worker` run handlers; `pending`, `answers` and
//! `callbacks` are the tables replies and answers are matched in.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

mod answering;
mod answers;
mod callbacks;
mod clients;
mod gateway;
mod mailbox;
mod outbound;
mod pending;
mod queue_bytes;
mod table;
mod turns;
mod undelivered;
mod worker;

use answering::expire_open_messages;
use table::Table;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use thiserror::Error;

pub use answers::{AnswerRefused, Answers, Open, OpenMessages};
pub use callbacks::{CALLBACK_CAP, Callbacks};
pub use mailbox::{Counters, Entry, Refused, Slot};
pub use pending::Pending;
use queue_bytes::QueueBudget;

use crate::address::{Address, Kind};
use crate::clock::Clock;
use crate::dead_letters::{DeadLetter, DeadLetters, DeadReason, Reservation};
pub use crate::gateway::{CLIENT_QUEUE, ClientLink};
use crate::metrics::{Metrics, ReasonLabels, RefusedLabels};
use crate::runtime::{PoolFull, Runtime};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, REPLY_VIA_HEADER, Signal, code};
pub use crate::transport::{Accepted, Reason, Undelivered};
use crate::transport::{Handled, Inbound, Publish, Route, Transport};

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
    #[error(
        "`{handler}` is an agent handler, and agents do not run on a host that joined a cluster (--nats) until the cluster places them: deploy it on a host without --nats"
    )]
    AgentInCluster { handler: String },
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
    fn deliver(&self, signal: Signal) -> Result<Accepted, Reason> {
        match self.claim_reply(signal) {
            Ok(signal) => self.deliver_local(signal).map_err(|refused| refused.reason),
            Err(Claimed::Delivered) => Ok(Accepted::ONE),
            Err(Claimed::Dropped) => Ok(Accepted::default()),
        }
    }

    fn deliver_encoded(&self, bytes: &[u8]) -> Result<Accepted, Reason> {
        self.deliver(self.decode_foreign(bytes)?)
    }

    fn deliver_copy(
        &self,
        handler: &str,
        bytes: &[u8],
        handled: Handled,
    ) -> Result<Accepted, Reason> {
        let signal = self.decode_broadcast(bytes)?;
        let table = self.read();
        let Some(entry) = table.handler_named(handler) else {
            return Err(Reason::NoRoute);
        };
        match self.offer_copy(entry, signal, Some(handled)) {
            Copy::Delivered => Ok(Accepted::ONE),
            Copy::Keep(mut room, reason, copy) => {
                drop(table);
                self.keep(&mut room, reason, copy);
                Ok(Accepted {
                    dead_lettered: 1,
                    ..Accepted::default()
                })
            }
            Copy::Refused => Ok(Accepted {
                refused: 1,
                ..Accepted::default()
            }),
        }
    }

    fn count(&self, what: &'static str) {
        (self.metrics.cluster)
            .get_or_create(&ReasonLabels {
                reason: what.to_owned(),
            })
            .inc();
    }

    fn deliver_queued(&self, bytes: &[u8], handled: Handled) -> Result<Accepted, Reason> {
        let signal = self.decode_foreign(bytes)?;
        let to = match &signal.body {
            Body::Message(m) if Address::kind_of(&m.to) == Kind::Service => m.to.clone(),
            _ => {
                let why = format!(
                    "a {} where a message to a service was expected",
                    signal.kind()
                );
                return Err(self.refuse_foreign(Reason::NotAccepted, "not_queued", &why));
            }
        };
        let table = self.read();
        match self.deliver_to_handler(&table, &to, signal, Some(handled)) {
            Ok(accepted) => Ok(accepted),
            Err(refused) if matches!(refused.reason, Reason::NoRoute | Reason::ShuttingDown) => {
                Err(refused.reason)
            }
            Err(refused) => {
                drop(table);
                self.undeliverable(refused);
                Ok(Accepted::default())
            }
        }
    }

    fn keep_copy(&self, handler: &str, bytes: &[u8]) -> Result<bool, Reason> {
        let signal = self.decode_foreign(bytes)?;
        match self.dead_letters.reserve(handler) {
            Some(mut room) => {
                self.keep(&mut room, DeadReason::Undeliverable, signal);
                Ok(true)
            }
            None => {
                self.refused_copy(handler, &signal);
                Ok(false)
            }
        }
    }

    fn deliver_here(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        self.deliver_local(signal)
    }

    fn subscribers(&self, route: Route<'_>) -> u32 {
        self.local_subscribers(&route)
    }
}

/// What became of one subscriber's copy of a broadcast.
#[allow(
    clippy::large_enum_variant,
    reason = "a refused copy is handed back by value on the rare path, as `Refused` does"
)]
enum Copy<'a> {
    /// Its mailbox took it.
    Delivered,
    /// Its mailbox refused it; it is to be kept as a dead letter, in the room reserved.
    Keep(Reservation<'a>, DeadReason, Signal),
    /// Its mailbox refused it and its share of the dead-letter store is full: refused at
    /// the source, counted.
    Refused,
}

/// Routes signals between handlers, clients and the transport.
pub struct Router {
    table: RwLock<Table>,
    pending: Pending,
    /// Messages delivered to handlers and not yet answered.
    answers: Arc<dyn OpenMessages>,
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
    /// cannot be delivered in `dead_letters` and the messages it delivers in `open` until
    /// they are answered.
    pub fn new(
        runtime: Arc<Runtime>,
        transport: Arc<dyn Transport>,
        dead_letters: DeadLetters,
        open: Arc<dyn OpenMessages>,
    ) -> Arc<Self> {
        let router = Arc::new_cyclic(|me| Self {
            table: RwLock::default(),
            pending: Pending::default(),
            answers: open,
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
        if let Some((cluster, host)) = router.transport.identity() {
            let labels = crate::metrics::HostLabels {
                cluster: cluster.to_owned(),
                host: host.to_owned(),
            };
            router.metrics.cluster_host.get_or_create(&labels).set(1);
        }
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

    /// Why the other hosts cannot be reached now, if they cannot.
    pub fn unreachable(&self) -> Option<String> {
        self.transport.unreachable()
    }

    /// Stops taking new signals for this host's services from the other hosts (see
    /// [`Transport::leave`]).
    pub async fn leave_cluster(&self) {
        self.transport.leave().await;
    }

    /// Sends what this host has still to send to the other hosts (see
    /// [`Transport::close`]).
    pub async fn close_transport(&self) {
        self.transport.close().await;
    }

    /// What this host shows of the cluster it joins (see [`Transport::view`]).
    pub async fn cluster(&self) -> crate::transport::ClusterView {
        self.transport.view().await
    }

    /// Waits until the other hosts can reach every route this host serves.
    pub async fn transport_ready(&self) {
        self.transport.ready().await;
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

    /// How many handlers subscribe to a broadcast: on every host, when the transport knows,
    /// else on this one.
    fn subscribers(&self, signal: &Signal) -> u32 {
        let route = Route::of(signal);
        self.transport
            .subscribers(route.clone())
            .unwrap_or_else(|| self.local_subscribers(&route))
    }

    /// How many handlers of this host subscribe to a broadcast route.
    fn local_subscribers(&self, route: &Route<'_>) -> u32 {
        let table = self.read();
        let list = match route {
            Route::Event(event_type) => table.events.get(*event_type),
            Route::DataChange(object_type) => table.changes.get(*object_type),
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
                        reason: undelivered.label().to_owned(),
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

    /// Marks a handler's send whose reply comes back to it with this host's inbox, so that
    /// the reply returns here, where the room for it is kept, and not to another host running
    /// the same handler; clears the mark a guest set on any other send. In process there is
    /// no inbox and nothing to do.
    fn stamp_reply_via(&self, signal: &mut Signal) {
        let Some(inbox) = self.transport.inbox() else {
            return;
        };
        let headers = &mut signal.envelope.headers;
        if self.callbacks.is_open(&signal.envelope.id) {
            headers.insert(REPLY_VIA_HEADER.to_owned(), inbox.to_owned());
        } else {
            headers.remove(REPLY_VIA_HEADER);
        }
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
        // Where the answer finds this waiter when another host produces it; an answer
        // routed through another host's inbox would miss it.
        if let (Some(inbox), Body::Message(m)) = (self.transport.inbox(), &mut signal.body) {
            if m.return_address.is_none() {
                m.return_address = Some(inbox.to_owned());
            }
            signal.envelope.headers.remove(REPLY_VIA_HEADER);
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
            match self.offer_copy(entry, signal.clone(), None) {
                Copy::Delivered => accepted.delivered += 1,
                Copy::Keep(room, reason, copy) => refusals.push((room, reason, copy)),
                Copy::Refused => accepted.refused += 1,
            }
        }
        drop(table);
        for (mut room, reason, copy) in refusals {
            self.keep(&mut room, reason, copy);
            accepted.dead_lettered += 1;
        }
        Ok(accepted)
    }

    /// Offers one subscriber's copy of a broadcast to its mailbox; a refused copy is to be
    /// kept, if the subscriber's share of the dead-letter store has room (the caller keeps it
    /// once it has let go of the table).
    fn offer_copy(&self, entry: &Entry, copy: Signal, handled: Option<Handled>) -> Copy<'_> {
        let (reason, copy) = match entry.offer(copy, false, handled) {
            Ok(()) => return Copy::Delivered,
            Err(Refused::Full(copy) | Refused::OverBytes(copy, _)) => {
                (DeadReason::MailboxFull, copy)
            }
            Err(Refused::Closed(copy)) => (DeadReason::HandlerStopped, copy),
        };
        match self.dead_letters.reserve(&entry.slot.name) {
            Some(room) => Copy::Keep(room, reason, copy),
            None => {
                self.refused_copy(&entry.slot.name, &copy);
                Copy::Refused
            }
        }
    }

    /// A signal from another host as it came over the network, checked and decoded like any
    /// input from outside: at most this host's largest signal, well formed. What fails is
    /// refused ([`Reason::TooLarge`], [`Reason::NotAccepted`]) and counted.
    fn decode_foreign(&self, bytes: &[u8]) -> Result<Signal, Reason> {
        // The envelope adds a little to a signal's own size.
        let largest = self.max_message_bytes().saturating_add(4096);
        if bytes.len() > largest {
            let why = format!("{} bytes, over {largest}", bytes.len());
            return Err(self.refuse_foreign(Reason::TooLarge, "too_large", &why));
        }
        serde_json::from_slice::<Signal>(bytes)
            .map_err(|error| self.refuse_foreign(Reason::NotAccepted, "undecodable", &error))
    }

    /// [`Router::decode_foreign`], for what must be a broadcast (an event or data change).
    fn decode_broadcast(&self, bytes: &[u8]) -> Result<Signal, Reason> {
        let signal = self.decode_foreign(bytes)?;
        if !matches!(signal.body, Body::Event { .. } | Body::DataChange { .. }) {
            let why = format!("a {} where a broadcast was expected", signal.kind());
            return Err(self.refuse_foreign(Reason::NotAccepted, "not_a_broadcast", &why));
        }
        Ok(signal)
    }

    /// Counts (and, rate-limited, logs) a signal from another host refused for `label`.
    fn refuse_foreign(&self, reason: Reason, label: &str, error: &dyn std::fmt::Display) -> Reason {
        (self.metrics.foreign_refused)
            .get_or_create(&ReasonLabels {
                reason: label.to_owned(),
            })
            .inc();
        if self.may_warn("transport") {
            tracing::warn!(%error, reason = label, "refused a signal from another host");
        }
        reason
    }

    /// Offers a dead letter again to the one handler (or client) it was meant for, never to
    /// every subscriber. On success the caller removes it from the store.
    pub fn redeliver(&self, letter: &DeadLetter) -> Result<(), Undelivered> {
        let signal = letter.signal.clone();
        let table = self.read();
        if Address::kind_of(&letter.handler) == Kind::User {
            return self.to_client(&table, &letter.handler, signal);
        }
        let Some(entry) = table.handler_named(&letter.handler) else {
            return Err(Undelivered::new(signal, Reason::NoRoute));
        };
        self.offer_to(entry, signal, false, None)
            .map_err(Refused::undelivered)
    }

    /// Delivers a signal to the handlers or clients of this host that serve its route.
    fn deliver_local(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        let table = self.read();
        let fail = |signal, reason| Err(Undelivered::new(signal, reason));
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
                self.deliver_to_handler(&table, &home, signal, None)
            }
            Route::Address(address) => {
                let address = address.to_owned();
                self.deliver_to_handler(&table, &address, signal, None)
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
        handled: Option<Handled>,
    ) -> Result<Accepted, Undelivered> {
        let fail = |signal, reason| Err(Undelivered::new(signal, reason));
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
        self.offer_to(entry, signal, promised, handled)
            .map(|()| Accepted::ONE)
            .map_err(Refused::undelivered)
    }

    /// Offers a signal to a handler's mailbox. A message is opened for its one answer first
    /// (the answer may come as soon as it is queued), and closed again if the mailbox
    /// refuses it.
    fn offer_to(
        &self,
        entry: &Entry,
        signal: Signal,
        promised: bool,
        handled: Option<Handled>,
    ) -> Result<(), Refused> {
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
        let offered = entry.offer(signal, promised, handled);
        if let (Err(_), Some(id)) = (&offered, &id) {
            let _ = self.answers.claim_any(id);
        }
        offered
    }

    /// Whether a warning about `handler` may be logged now (a per-handler rate limit).
    pub(crate) fn may_warn(&self, handler: &str) -> bool {
        self.runtime.log_limit().admit(handler)
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

    /// The largest signal the host takes, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.runtime.config().max_message_bytes
    }

    /// The host's keyed-state store (which also keeps pushes for users), if it has one.
    pub fn state_store(&self) -> Option<Arc<crate::keyed::StateStore>> {
        self.runtime.state_store()
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
