//! How signals travel between the router and wherever their address is served.
//!
//! The router hands every outgoing signal to its [`Transport`]; a transport carries it to
//! the host that serves the signal's [`Route`] and gives it to that host's [`Inbound`]
//! side. The embedded default, [`InProcess`], is that loop within one process. A networked
//! transport (NATS) implements the same trait: subjects per route, queue groups per
//! handler; it learns some outcomes ("no responders") only after `publish` returns, so a
//! publish can complete later ([`Publish::Later`]).

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{OnceLock, Weak};

use tokio::sync::oneshot;

use crate::address::{Address, Kind};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, Signal, code};

/// A signal the transport could not deliver, handed back with the reason.
#[derive(Debug)]
pub struct Undelivered {
    pub signal: Signal,
    pub reason: Reason,
    /// For a refusal by this host's byte bounds ([`Reason::Overloaded`]): which bound, its
    /// setting and the sizes. It stays on the host that refused: a sender on another host
    /// gets the reason alone, since it cannot act on this host's settings.
    pub over: Option<Box<OverBytes>>,
}

/// Why a signal could not be delivered: all that crosses between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing serves the address.
    NoRoute,
    /// The handler there does not accept this message type.
    NotAccepted,
    /// The handler's mailbox or the client's queue is full, or the signal's bytes would take
    /// its mailbox past its byte bound, or the host past its budget of queued bytes.
    Overloaded,
    /// The client at the address disconnected.
    ClientGone,
    /// The host is shutting down.
    ShuttingDown,
    /// The transport took the signal and lost track of it before it could say whether it
    /// was delivered (its promise was dropped, say with its connection): it may or may not
    /// have arrived.
    Lost,
    /// The other hosts cannot be reached now (the connection to the cluster is down): the
    /// signal was not sent.
    Unreachable,
    /// The signal is larger than the cluster carries (NATS's `max_payload`) or than the
    /// host serving its route takes.
    TooLarge,
    /// The cluster's stream has no room to keep the signal now (its byte or message bound):
    /// it was not accepted.
    NoSpace,
}

impl Reason {
    /// The reason a label names ([`Reason::as_str`]).
    pub fn parse(label: &str) -> Option<Self> {
        [
            Self::NoRoute,
            Self::NotAccepted,
            Self::Overloaded,
            Self::ClientGone,
            Self::ShuttingDown,
            Self::Lost,
            Self::Unreachable,
            Self::TooLarge,
            Self::NoSpace,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == label)
    }

    /// The reason as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::NotAccepted => "not_accepted",
            Self::Overloaded => "overloaded",
            Self::ClientGone => "client_gone",
            Self::ShuttingDown => "shutting_down",
            Self::Lost => "lost",
            Self::Unreachable => "unreachable",
            Self::TooLarge => "too_large",
            Self::NoSpace => "no_space",
        }
    }
}

/// Which bound on queued bytes a signal would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteBound {
    /// The handler's mailbox (the host's `mailbox_bytes` setting).
    Mailbox,
    /// All mailboxes together (the host's `queue_budget_bytes` setting).
    Host,
}

/// A signal refused because its bytes would pass a bound on queued bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBytes {
    /// The bound.
    pub bound: ByteBound,
    /// Its size in bytes.
    pub limit: usize,
    /// Bytes it held when the signal came.
    pub queued: usize,
    /// The signal's size in bytes.
    pub size: usize,
}

impl OverBytes {
    /// The bound as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self.bound {
            ByteBound::Mailbox => "mailbox_bytes",
            ByteBound::Host => "queue_budget",
        }
    }

    /// What happened, for the sender of a signal to `to`.
    pub fn describe(&self, to: &str) -> String {
        let (size, queued, limit) = (self.size, self.queued, show_bytes(self.limit));
        match self.bound {
            ByteBound::Mailbox => format!(
                "the mailbox of `{to}` is full: it holds {queued} bytes of signals and this one of {size} bytes would pass its bound of {limit} (setting `mailbox_bytes`)"
            ),
            ByteBound::Host => format!(
                "the host's queues are full: its mailboxes hold {queued} bytes of signals and this one of {size} bytes would pass the host's budget of {limit} (setting `queue_budget_bytes`)"
            ),
        }
    }

    /// What the sender can do about it.
    pub fn help(&self) -> &'static str {
        match self.bound {
            ByteBound::Mailbox => {
                "retry later, once the handler has caught up; send smaller signals, or ask the operator for a larger `mailbox_bytes`"
            }
            ByteBound::Host => {
                "retry later, once the host's handlers have caught up, or ask the operator for a larger `queue_budget_bytes`"
            }
        }
    }
}

/// A byte count as an operator would write it: `8 MiB`, or `1500 bytes`.
fn show_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// How a signal was taken: for a broadcast, how many subscribers took it, how many refused
/// it (their copies are in the dead-letter store), and how many copies were refused at the
/// source because a refusing subscriber's share of the dead-letter store was full (never
/// accepted, counted); for anything else, one delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Copies handed to a mailbox or client queue.
    pub delivered: usize,
    /// Copies a mailbox refused, kept as dead letters.
    pub dead_lettered: usize,
    /// Copies a mailbox refused with no room left in its handler's share of the
    /// dead-letter store (or in the store): refused at the source, not accepted.
    pub refused: usize,
}

impl Accepted {
    /// One signal delivered.
    pub const ONE: Self = Self {
        delivered: 1,
        dead_lettered: 0,
        refused: 0,
    };

    /// Copies accepted in all.
    pub fn total(&self) -> usize {
        // Saturating: counts decoded from another host may be anything.
        self.delivered.saturating_add(self.dead_lettered)
    }
}

impl Undelivered {
    /// `signal`, not delivered for `reason`.
    pub fn new(signal: Signal, reason: Reason) -> Self {
        Self {
            signal,
            reason,
            over: None,
        }
    }

    /// `signal`, refused by one of this host's bounds on queued bytes.
    pub fn over_bytes(signal: Signal, over: OverBytes) -> Self {
        Self {
            signal,
            reason: Reason::Overloaded,
            over: Some(Box::new(over)),
        }
    }

    /// Why, as a metric label: the byte bound when one refused it.
    pub fn label(&self) -> &'static str {
        self.over
            .as_deref()
            .map_or_else(|| self.reason.as_str(), OverBytes::as_str)
    }

    /// The failure the sender of the undelivered message gets: one mapping from a delivery
    /// failure to an error, for a handler's ErrorReply and an HTTP client alike.
    pub fn failure(&self) -> Failure {
        let to = match &self.signal.body {
            Body::Message(m) => m.to.as_str(),
            Body::Reply { to, .. } | Body::ErrorReply { to, .. } => to.as_str(),
            _ => "",
        };
        self.failure_at(to)
    }

    /// [`Undelivered::failure`], naming `to` as where it was going (a dead letter's
    /// handler, which an event does not name).
    pub fn failure_at(&self, to: &str) -> Failure {
        let message_type = match &self.signal.body {
            Body::Message(m) => m.message_type.as_str(),
            _ => "",
        };
        if let Some(over) = &self.over {
            return Failure::new(code::OVERLOADED, over.describe(to)).with_help(over.help());
        }
        match self.reason {
            Reason::NoRoute | Reason::ClientGone => Failure::new(
                code::NOT_FOUND,
                format!("nothing serves the address `{to}`"),
            )
            .with_help("check the address, or deploy a handler under that name"),
            Reason::NotAccepted => Failure::new(
                code::NOT_FOUND,
                format!("the handler at `{to}` does not accept messages of type `{message_type}`"),
            ),
            Reason::Overloaded => {
                Failure::new(code::OVERLOADED, format!("the mailbox of `{to}` is full"))
                    .with_help("retry later")
            }
            Reason::ShuttingDown => Failure::new(code::OVERLOADED, "the host is shutting down"),
            Reason::Lost => Failure::new(
                code::OVERLOADED,
                format!("the transport lost track of the message to `{to}`: it may or may not have been delivered"),
            )
            .with_help("check whether it took effect before sending it again"),
            Reason::Unreachable => Failure::new(
                code::OVERLOADED,
                format!("the message to `{to}` was not sent: this host cannot reach the other hosts of its cluster now"),
            )
            .with_help("retry later, once the host has reconnected (its /readyz says so)"),
            Reason::TooLarge => Failure::new(
                code::TOO_LARGE,
                format!("the message to `{to}` is larger than the host serving it takes, or than its cluster carries (NATS max_payload)"),
            )
            .with_help("send less, or ask the operator to raise max_payload on the NATS servers and the hosts' largest signal alike"),
            Reason::NoSpace => Failure::new(
                code::OVERLOADED,
                format!("the {} was not accepted: the cluster's stream has no room for it now", self.signal.kind()),
            )
            .with_help("retry later, once handlers have caught up; the operator can raise the stream's limits"),
        }
    }

    /// The signal could not be delivered because the host is stopping.
    pub fn shutting_down(signal: Signal) -> Self {
        Self::new(signal, Reason::ShuttingDown)
    }
}

/// What a host offers its transport: the handlers and clients it serves.
pub trait Inbound: Send + Sync + 'static {
    /// Delivers a signal from another host to the handlers or clients here that serve its
    /// route (a reply, first to the caller here awaiting it). A refusal is its [`Reason`]
    /// alone: the sender's transport kept its own copy to answer or keep, and this host's
    /// mailbox details (its byte bounds and their settings) stay here.
    fn deliver(&self, signal: Signal) -> Result<Accepted, Reason>;

    /// Delivers a signal from another host as it came over the network: checked and decoded
    /// like any input from outside (at most this host's largest signal, a well-formed
    /// signal), then [`Inbound::deliver`]ed. What fails the checks is refused
    /// ([`Reason::TooLarge`], [`Reason::NotAccepted`]) and counted, never a panic.
    fn deliver_encoded(&self, bytes: &[u8]) -> Result<Accepted, Reason>;

    /// Delivers a signal sent on this host, handing it back when refused with all this host
    /// knows of why: for a transport that loops back in process. A reply has already been
    /// offered to the caller here awaiting it, on its way out.
    fn deliver_here(&self, signal: Signal) -> Result<Accepted, Undelivered>;

    /// How many handlers of this host subscribe to a broadcast route (0 for an address).
    fn subscribers(&self, route: Route<'_>) -> u32;

    /// Delivers one copy of a broadcast from another host (or this one), as it came over the
    /// network, to handler `handler` alone: for a transport that gives each subscribed
    /// handler its copy from a stream. Checked like [`Inbound::deliver_encoded`]. A copy its
    /// mailbox refuses is kept as a dead letter here (or, with no room for it, refused and
    /// counted), as a broadcast's copy is. Once a delivered copy has been handled (its turn
    /// over, its outputs handed on), `handled` is told; dropped untold, the copy was not
    /// handled here (the host stopped first), and the stream may offer it again.
    fn deliver_copy(
        &self,
        handler: &str,
        bytes: &[u8],
        handled: Handled,
    ) -> Result<Accepted, Reason>;

    /// Delivers a message nobody awaits from another host (or this one), as it came over the
    /// network from a service's queue, to the service here. Checked like
    /// [`Inbound::deliver_encoded`]. A refusal other than [`Reason::NoRoute`] and
    /// [`Reason::ShuttingDown`] (which another host may not give) is answered here with the
    /// host's error, as on one host, and is `Ok` with nothing delivered. `handled` is told
    /// once it has been handled, as for [`Inbound::deliver_copy`].
    fn deliver_queued(&self, bytes: &[u8], handled: Handled) -> Result<Accepted, Reason>;

    /// Keeps a broadcast's copy for `handler`, or a queued message for the service
    /// `handler`, as a dead letter without handling it: one offered too many times (its turn
    /// may be what kills the hosts that take it). `Ok(false)` when the dead-letter store has
    /// no room for it (counted).
    fn keep_copy(&self, handler: &str, bytes: &[u8]) -> Result<bool, Reason>;

    /// Counts something the transport did that an operator watches for (`publish_retry`,
    /// `no_space`, `redelivered`, `max_deliver`, `duplicate`).
    fn count(&self, what: &'static str);
}

/// A handler's subscriptions: what a transport that carries broadcasts between hosts needs
/// to give the handler its copies.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscriptions {
    /// Event types.
    pub events: BTreeSet<String>,
    /// Object types whose data changes it takes.
    pub changes: BTreeSet<String>,
}

impl Subscriptions {
    /// Whether it takes signals of `route`.
    pub fn takes(&self, route: &Route<'_>) -> bool {
        match route {
            Route::Event(event_type) => self.events.contains(*event_type),
            Route::DataChange(object_type) => self.changes.contains(*object_type),
            Route::Address(_) => false,
        }
    }

    /// Whether it takes nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.changes.is_empty()
    }
}

/// What a transport shows of the cluster it joins (`GET /v1/cluster`).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Whether the host is in a cluster (false: every signal stays in this process).
    pub clustered: bool,
    /// The cluster's name (its subjects' prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// This host's id in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The connection to the cluster: `connected`, or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The cluster's streams.
    #[serde(default)]
    pub streams: Vec<StreamView>,
    /// Every subscribing handler of the cluster, with its copies' backlog.
    #[serde(default)]
    pub subscribers: Vec<FeedView>,
    /// Every service with a queue of messages nobody awaits, with its backlog.
    #[serde(default)]
    pub services: Vec<FeedView>,
}

impl ClusterView {
    /// Whether nothing waits in any feed: no signal pending or unacknowledged.
    pub fn settled(&self) -> bool {
        (self.subscribers.iter().chain(&self.services))
            .all(|feed| feed.pending == 0 && feed.unacknowledged == 0)
    }
}

/// One of the cluster's streams.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    pub name: String,
    /// Signals it holds now, and its bound.
    pub messages: u64,
    pub max_messages: i64,
    /// Bytes it holds now, and its bound.
    pub bytes: u64,
    pub max_bytes: i64,
}

/// A handler's (or service's) feed from a stream: its consumer's backlog.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct FeedView {
    /// The handler or service.
    pub handler: String,
    /// The event types it subscribes to (subscribers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The object types whose changes it takes (subscribers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Signals no host has taken yet.
    pub pending: u64,
    /// Signals a host has taken and not yet acknowledged.
    pub unacknowledged: u64,
    /// Signals offered more than once.
    pub redelivered: u64,
}

/// Told once a copy given with [`Inbound::deliver_copy`] has been handled; dropped untold
/// when it was not.
#[derive(Debug)]
pub struct Handled(oneshot::Sender<()>);

impl Handled {
    /// A token, and what hears of it: `Ok(())` once handled, an error if dropped untold.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }

    /// Says the copy has been handled.
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

/// The outcome of a publish: known at once, or later.
#[allow(
    clippy::large_enum_variant,
    reason = "`Now` is the common, in-process case; boxing it would add an allocation per signal"
)]
pub enum Publish {
    /// The transport knew the outcome when it took the signal.
    Now(Result<Accepted, Undelivered>),
    /// The outcome arrives later, through the [`Promise`] the transport keeps.
    Later(Later),
}

/// A publish whose outcome the transport learns later. It keeps its own copy of the signal,
/// so that a refusal (or a promise the transport dropped) can still answer the sender or
/// keep the signal as a dead letter.
#[derive(Debug)]
pub struct Later {
    signal: Signal,
    outcome: oneshot::Receiver<Result<Accepted, Reason>>,
}

/// A transport's promise to say what became of a signal it published later. Dropping it
/// unkept reads as [`Reason::Lost`], never as delivered.
#[derive(Debug)]
pub struct Promise(oneshot::Sender<Result<Accepted, Reason>>);

impl Promise {
    /// Says what became of the signal.
    pub fn keep(self, outcome: Result<Accepted, Reason>) {
        // The publisher stopped waiting: nobody is left to tell.
        let _ = self.0.send(outcome);
    }
}

impl Publish {
    /// For a transport that learns the outcome of publishing `signal` after returning: the
    /// promise to keep, and what to return.
    pub fn later(signal: &Signal) -> (Promise, Self) {
        let (tx, rx) = oneshot::channel();
        let later = Later {
            signal: signal.clone(),
            outcome: rx,
        };
        (Promise(tx), Self::Later(later))
    }

    /// Waits for the outcome. A promise the transport dropped unkept is [`Reason::Lost`].
    pub async fn outcome(self) -> Result<Accepted, Undelivered> {
        match self {
            Self::Now(outcome) => outcome,
            Self::Later(Later { signal, outcome }) => match outcome.await {
                Ok(Ok(accepted)) => Ok(accepted),
                Ok(Err(reason)) => Err(Undelivered::new(signal, reason)),
                Err(_) => {
                    tracing::warn!(id = %signal.envelope.id, "the transport dropped a publish without saying what became of it");
                    Err(Undelivered::new(signal, Reason::Lost))
                }
            },
        }
    }
}

/// Where a signal is headed, independent of how it gets there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// One address: a service name, `agents`, or `user:<id>` (messages and replies).
    Address(&'a str),
    /// Every subscriber of an event type.
    Event(&'a str),
    /// Every subscriber of changes to an object type.
    DataChange(&'a str),
}

impl<'a> Route<'a> {
    /// The route of a signal: its `to` for messages and replies (with `agent:<id>` served at
    /// the shared `agents` address), its type for broadcasts.
    pub fn of(signal: &'a Signal) -> Self {
        match &signal.body {
            Body::Message(m) => Self::Address(address_of(&m.to)),
            Body::Reply { to, .. } | Body::ErrorReply { to, .. } => Self::Address(address_of(to)),
            Body::Event { event_type, .. } => Self::Event(event_type),
            Body::DataChange { object_type, .. } => Self::DataChange(object_type),
        }
    }
}

/// The address that serves `to`: `agent:<id>` is served by the agents handler.
pub fn address_of(to: &str) -> &str {
    if Address::kind_of(to) == Kind::Agent {
        AGENTS_ADDRESS
    } else {
        to
    }
}

/// Carries signals from a router to the routers that serve them.
pub trait Transport: Send + Sync + 'static {
    /// Called once with this host's inbound side, which receives what arrives for it.
    fn attach(&self, local: Weak<dyn Inbound>);

    /// Carries `signal` towards the handlers or clients of its [`Route`]. Fails when nothing
    /// serves that route or its mailbox is full, giving the signal back so the router can
    /// answer the sender. A broadcast says how many subscribers took it and how many refused
    /// it (those copies are dead-lettered); it fails only if the dead-letter store could not
    /// have taken every refusal, and then no subscriber got it.
    fn publish(&self, signal: Signal) -> Publish;

    /// This host now serves `route`: a handler's address, an event or object type one of its
    /// handlers subscribes to, or a connected client's address. A network transport
    /// subscribes to it here. Called under the router's table lock, in the order of the
    /// changes, so it must not block: queue the work. In process every route is here
    /// already, so the default does nothing.
    fn serve(&self, route: Route<'_>) {
        let _ = route;
    }

    /// This host no longer serves `route` (see [`Transport::serve`]).
    fn unserve(&self, route: Route<'_>) {
        let _ = route;
    }

    /// Handler `handler` of this host subscribes to `subscriptions` (it is new, or they
    /// changed). A transport that carries each subscribed handler's copies of broadcasts
    /// separately starts giving them to it here ([`Inbound::deliver_copy`]); one such copy
    /// goes to one host among those running the handler. Called like [`Transport::serve`],
    /// under the table lock: it must not block. In process, broadcasts are delivered to
    /// every subscriber here, so the default does nothing.
    fn subscribe(&self, handler: &str, subscriptions: &Subscriptions) {
        let _ = (handler, subscriptions);
    }

    /// Handler `handler` was removed from this host, or subscribes to nothing now.
    fn unsubscribe(&self, handler: &str) {
        let _ = handler;
    }

    /// This host's inbox (`inbox:<host>`), when an answer may be produced on another host:
    /// a message someone here awaits carries it as its return address, and the transport
    /// brings what is sent to it back here, where the waiter takes it. In process every
    /// answer is produced here, so there is none.
    fn inbox(&self) -> Option<&str> {
        None
    }

    /// Resolves once every route this host serves ([`Transport::serve`]) can be reached from
    /// the other hosts: a network transport subscribes in the background, and a deploy waits
    /// for it before saying the handler is served. In process, at once.
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// This host stops taking new signals for its services from the other hosts (it is
    /// shutting down): a network transport leaves their queue groups, so that other hosts
    /// take what comes next, and delivers what it was already given. Answers to this host's
    /// callers still arrive. Resolves once the other hosts no longer send it any. In
    /// process, at once.
    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Sends what this host has still to send to the others, before it stops. In process,
    /// nothing.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Why the other hosts cannot be reached now, if they cannot (a lost connection to the
    /// cluster); the host is not ready meanwhile. In process, never.
    fn unreachable(&self) -> Option<String> {
        None
    }

    /// The cluster's name and this host's id in it, if the transport joins one.
    fn identity(&self) -> Option<(&str, &str)> {
        None
    }

    /// What the transport shows of the cluster it joins. In process, that there is none.
    fn view(&self) -> Pin<Box<dyn Future<Output = ClusterView> + Send + '_>> {
        Box::pin(std::future::ready(ClusterView::default()))
    }

    /// How many handlers subscribe to a broadcast route on every host the transport joins,
    /// if it knows; `None` leaves the count to this host's own table (in process, the whole
    /// story).
    fn subscribers(&self, route: Route<'_>) -> Option<u32> {
        let _ = route;
        None
    }
}

/// The embedded transport: every address is served in this process.
#[derive(Default)]
pub struct InProcess {
    local: OnceLock<Weak<dyn Inbound>>,
}

impl Transport for InProcess {
    fn attach(&self, local: Weak<dyn Inbound>) {
        let _ = self.local.set(local);
    }

    fn publish(&self, signal: Signal) -> Publish {
        Publish::Now(match self.local.get().and_then(Weak::upgrade) {
            Some(local) => local.deliver_here(signal),
            None => Err(Undelivered::shutting_down(signal)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::signal::{Envelope, Headers, Json, Message};

    fn message() -> Signal {
        Signal {
            envelope: Envelope::new("host", Headers::new(), &Clock::system()),
            body: Body::Message(Message {
                message_type: "Ping".into(),
                to: "echo".into(),
                return_address: None,
                payload: Json::null(),
            }),
        }
    }

    /// Proves a later outcome is what the transport says, and a promise dropped unkept reads
    /// as lost (with the signal, so its sender can be answered), never as delivered.
    #[tokio::test]
    async fn later_outcomes_are_kept_or_lost_never_assumed() {
        let signal = message();
        let (promise, later) = Publish::later(&signal);
        promise.keep(Ok(Accepted::ONE));
        assert_eq!(later.outcome().await.unwrap().total(), 1);

        let (promise, later) = Publish::later(&signal);
        promise.keep(Err(Reason::NoRoute));
        let refused = later.outcome().await.unwrap_err();
        assert!(matches!(refused.reason, Reason::NoRoute));
        assert_eq!(refused.signal.id(), signal.id());

        let (promise, later) = Publish::later(&signal);
        drop(promise);
        let lost = later.outcome().await.unwrap_err();
        assert!(matches!(lost.reason, Reason::Lost));
        assert_eq!(lost.signal.id(), signal.id());
        let failure = lost.failure();
        assert_eq!(failure.code, code::OVERLOADED);
        assert!(failure.description.contains("may or may not"), "{failure}");
    }

    /// Proves a byte refusal names its bound, the setting and the sizes.
    #[test]
    fn byte_refusals_say_which_bound() {
        let over = OverBytes {
            bound: ByteBound::Mailbox,
            limit: 8 << 20,
            queued: 8_000_000,
            size: 1_000_000,
        };
        let text = over.describe("chaos");
        for part in [
            "`chaos`",
            "8000000 bytes",
            "1000000 bytes",
            "8 MiB",
            "`mailbox_bytes`",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(over.as_str(), "mailbox_bytes");
        let host = OverBytes {
            bound: ByteBound::Host,
            limit: 1 << 30,
            queued: 1,
            size: 1500,
        };
        assert!(host.describe("x").contains("1 GiB"));
        assert!(host.describe("x").contains("`queue_budget_bytes`"));
        assert_eq!(host.as_str(), "queue_budget");
    }

    #[test]
    fn agents_share_one_address() {
        assert_eq!(address_of("agent:alice"), "agents");
        assert_eq!(address_of("echo"), "echo");
        assert_eq!(address_of("user:bob"), "user:bob");
    }
}
