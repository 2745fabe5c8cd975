//! The NATS transport: hosts that join one NATS server (or cluster) serve each other's
//! handlers (`../shared/CLUSTER.md`).
//!
//! What this transport carries so far, under the subject prefix `sb.<cluster>.`:
//! - a message someone awaits, or a reply, to a service, as a core request to `svc.<name>`,
//!   taken by one of the hosts serving it (a queue group per service); the host that takes
//!   it answers the request with the message's answer, or the delivery's outcome, so the
//!   sender learns at once that nothing serves the address (no responders: 404) or that a
//!   mailbox refused it;
//! - a message nobody awaits, through the service's JetStream work queue (`nats/streams.rs`),
//!   where it waits while no host serves the service and is acknowledged once handled;
//! - an answer to a caller on another host, as a core request to that host's `inbox.<host>`;
//! - a signal to a user's connections, as a core request to `user.<id>`, which every host
//!   holding one of its connections subscribes to (no queue group); the first host to answer
//!   gives the outcome;
//! - events and data changes, through a JetStream stream with one durable consumer per
//!   subscribed handler (`nats/streams.rs`): each handled once per subscribed handler across
//!   the cluster, acknowledged once its turn is over.
//!
//! Agents stay on the host they start on until the part of the cluster that carries them
//! lands (partitioned agents); presence is still each host's own. Every name in a subject is
//! encoded ([`subject_token`]), so no name can add or widen a token.

// An undelivered signal is handed back by value on the rare failure path, as the
// `Transport` interface does.
#![allow(clippy::result_large_err)]

mod shared;
mod streams;

pub use shared::{MAX_RECORD_BYTES, RecordChange, SharedError, Watched};
pub use streams::{Backlog, StreamSettings};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, RequestErrorKind, jetstream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot};

use crate::address::{Address, Kind, subject_token};
use crate::signal::{Body, REPLY_VIA_HEADER, Signal};
use crate::transport::{
    Accepted, ClusterView, Inbound, Publish, Reason, Route, Subscriptions, Transport, Undelivered,
};
use shared::Shared;
use streams::Streams;

/// How long a sender waits for the host that took a signal to say what became of it (it
/// only offers the signal to a mailbox); past it the signal is [`Reason::Lost`].
pub const OUTCOME_WAIT: Duration = Duration::from_secs(5);

/// The NATS header of a message whose caller waits on the sending host: its id. The host
/// that takes it responds with the message's answer (a core request/reply, one round trip)
/// rather than with the delivery's outcome, which a refusal still is.
const AWAITED: &str = "Sb-Awaited";
/// The NATS header of a response that is a message's answer, not a delivery's outcome.
const ANSWER: &str = "Sb-Answer";
/// Awaited messages noted before the table of them is swept of expired ones.
const SWEEP_AT: usize = 4096;
/// The most awaited messages noted at once.
const MAX_AWAITED: usize = 100_000;
/// The longest a caller's request is waited on, or noted: a day.
const LONGEST_AWAIT: Duration = Duration::from_secs(24 * 3600);

/// Awaited messages taken here: by id, the subject their caller's request waits on, the
/// caller's inbox, and until when.
struct Awaited {
    callers: HashMap<String, (async_nats::Subject, String, Instant)>,
    swept: Instant,
}

/// The longest message id noted (the host's own are 36 bytes).
const MAX_ID_BYTES: usize = 128;

/// How a host reaches NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsOptions {
    /// The servers' URLs (`nats://host:4222`); any one is enough to join.
    pub servers: Vec<String>,
    /// The cluster's name, the subjects' prefix (`sb.<cluster>.`): clusters with different
    /// names can share one NATS account without hearing each other.
    pub cluster: String,
    /// This host's id, unique in the cluster: its inbox is `inbox:<id>`.
    pub host_id: String,
    /// A credentials file (a user JWT and its NKey seed).
    pub creds: Option<PathBuf>,
    /// An NKey seed.
    pub nkey: Option<String>,
    /// A user and password.
    pub user: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// CA certificates (PEM) to verify the servers with; setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// How the cluster's streams are bounded and paced.
    pub streams: StreamSettings,
}

/// Why this host could not join NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("no NATS server URL given")]
    NoServers,
    #[error("the cluster name `{0}` is not a NATS subject token: use letters, digits, `-` and `_`")]
    ClusterName(String),
    #[error("reading the NATS credentials file {path}: {source}")]
    Creds {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to NATS at {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
}

/// The NATS transport of one host.
pub struct Nats {
    client: Client,
    /// `sb.<cluster>.`
    prefix: String,
    /// `inbox:<host id>`.
    inbox: String,
    /// The cluster's name, and this host's id in it.
    cluster: String,
    host_id: String,
    local: OnceLock<Weak<dyn Inbound>>,
    /// The subscription serving each route this host serves, by subject: its task leaves
    /// (unsubscribes, then takes what the server had already sent it) when told to, or when
    /// this is dropped.
    serving: Mutex<HashMap<String, oneshot::Sender<Subscribing>>>,
    /// Subscriptions on their way out.
    leaving: Arc<Pending>,
    /// Subscriptions not yet on the server.
    subscribing: Arc<Pending>,
    /// Awaited messages taken here, whose answers are the responses their callers wait on.
    awaited: Mutex<Awaited>,
    /// The cluster's streams (broadcasts, messages nobody awaits) and this host's consumers.
    streams: Streams,
    /// The cluster's registry of handlers and their modules.
    shared: Shared,
    runtime: tokio::runtime::Handle,
    me: Weak<Nats>,
}

impl Nats {
    /// Joins NATS as host `options.host_id` and starts taking what is sent to its inbox.
    pub async fn connect(options: &NatsOptions) -> Result<Arc<Self>, NatsError> {
        if options.servers.is_empty() {
            return Err(NatsError::NoServers);
        }
        let cluster = &options.cluster;
        if cluster.is_empty()
            || !cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NatsError::ClusterName(cluster.clone()));
        }
        let mut connect = ConnectOptions::new()
            .name(format!("switchboard {}", options.host_id))
            .max_reconnects(None);
        if let Some(path) = &options.creds {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Creds {
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(seed) = &options.nkey {
            connect = connect.nkey(seed.clone());
        }
        if let Some((user, password)) = &options.user {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        if let Some(ca) = &options.tls_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &options.tls_cert {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        let servers = options.servers.join(",");
        let addresses: Vec<async_nats::ServerAddr> = options
            .servers
            .iter()
            .map(|url| url.parse())
            .collect::<Result<_, _>>()
            .map_err(|source: std::io::Error| NatsError::Connect {
                servers: servers.clone(),
                source: async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::ServerParse,
                    source,
                ),
            })?;
        let client = tokio::time::timeout(Duration::from_secs(10), connect.connect(addresses))
            .await
            .unwrap_or_else(|_| {
                Err(async_nats::ConnectError::new(
                    async_nats::ConnectErrorKind::TimedOut,
                ))
            })
            .map_err(|source| NatsError::Connect {
                servers: servers.clone(),
                source,
            })?;
        let streams = Streams::open(
            &client,
            cluster,
            &format!("sb.{cluster}."),
            options.streams.clone(),
        )
        .await?;
        let shared = Shared::open(
            &jetstream::new(client.clone()),
            cluster,
            options.streams.replicas,
        )
        .await?;
        let nats = Arc::new_cyclic(|me| Self {
            client,
            prefix: format!("sb.{cluster}."),
            inbox: Address::Inbox(&options.host_id).to_string(),
            cluster: cluster.clone(),
            host_id: options.host_id.clone(),
            local: OnceLock::new(),
            serving: Mutex::default(),
            leaving: Arc::default(),
            subscribing: Arc::default(),
            awaited: Mutex::new(Awaited {
                callers: HashMap::new(),
                swept: Instant::now(),
            }),
            streams,
            shared,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        let inbox = nats.subject(&Route::Address(&nats.inbox));
        let subscriber = nats
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| NatsError::Subscribe {
                subject: inbox.clone(),
                source,
            })?;
        // The inbox stays as long as the host (`leave` keeps it): answers to its callers
        // arrive there.
        let (stay, leave) = oneshot::channel();
        tokio::spawn(take(Arc::downgrade(&nats), subscriber, false, leave));
        nats.lock().insert(inbox.clone(), stay);
        let announcements = nats.streams.announcements();
        let heard = nats
            .client
            .subscribe(announcements.clone())
            .await
            .map_err(|source| NatsError::Subscribe {
                subject: announcements,
                source,
            })?;
        tokio::spawn(hear(Arc::downgrade(&nats), heard));
        // The subscription is on the server before a caller can await an answer there.
        on_the_server(&nats.client).await;
        nats.streams.relist().await;
        Ok(nats)
    }

    /// This host's id in the cluster.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The subscribing handlers of the cluster this host knows of, and what each takes.
    pub fn subscribers_known(&self) -> BTreeMap<String, Subscriptions> {
        self.streams.known()
    }

    /// The services of the cluster with a queue of messages nobody awaits, as this host
    /// knows: a message to one of them that nobody here awaits goes to its queue.
    pub fn queues_known(&self) -> std::collections::BTreeSet<String> {
        self.streams.known_queues()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Subscribing>>> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Awaited messages taken here whose answers have not gone back yet.
    pub fn awaited(&self) -> usize {
        self.lock_awaited().callers.len()
    }

    fn lock_awaited(&self) -> std::sync::MutexGuard<'_, Awaited> {
        self.awaited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes where the caller of an awaited message waits (the request's reply subject), by
    /// the message's id, until its deadline by this host's clock plus [`OUTCOME_WAIT`]; the
    /// id, if it is one.
    fn note_awaited(&self, message: &async_nats::Message) -> Option<String> {
        let reply = message.reply.clone()?;
        let marked = message.headers.as_ref()?.get(AWAITED)?.as_str();
        // The header is only a hint: the signal itself must be a message with that id whose
        // caller waits on another host (one from this host is answered to its waiter here,
        // never through the transport, so it is not noted).
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            id: String,
            signal_type: String,
            return_address: Option<String>,
            deadline: Option<u64>,
        }
        let head: Head = serde_json::from_slice(&message.payload).ok()?;
        let caller = head.return_address?;
        let waits_elsewhere =
            matches!(Address::parse(&caller), Ok(Address::Inbox(_))) && caller != self.inbox;
        if head.id != marked
            || head.id.len() > MAX_ID_BYTES
            || head.signal_type != "MESSAGE"
            || !waits_elsewhere
        {
            return None;
        }
        let until = Instant::now() + remaining(head.deadline.unwrap_or(0)) + OUTCOME_WAIT;
        let id = head.id;
        let mut awaited = self.lock_awaited();
        // An id a hostile publisher sent whose answer never comes here is forgotten at its
        // deadline: swept once the table has grown, at most once a second. A full table
        // notes nothing more: those answers go to the inbox, the longer way.
        if awaited.callers.len() >= SWEEP_AT && awaited.swept.elapsed() >= Duration::from_secs(1) {
            let now = Instant::now();
            awaited.callers.retain(|_, (.., until)| *until > now);
            awaited.swept = now;
        }
        if awaited.callers.len() >= MAX_AWAITED || awaited.callers.contains_key(&id) {
            return None;
        }
        awaited.callers.insert(id.clone(), (reply, caller, until));
        Some(id)
    }

    /// Sends an answer as the response its caller's request waits on, if it is the answer
    /// to an awaited message taken here; gives the answer back otherwise.
    fn answer_awaited(&self, signal: Signal) -> Result<(), Signal> {
        let (Body::Reply { reply_to, to, .. } | Body::ErrorReply { reply_to, to, .. }) =
            &signal.body
        else {
            return Err(signal);
        };
        if Address::kind_of(to) != Kind::Inbox {
            return Err(signal);
        }
        let noted = |awaited: &Awaited| matches!(awaited.callers.get(reply_to), Some((_, caller, _)) if caller == to);
        if !noted(&self.lock_awaited()) {
            return Err(signal);
        }
        // What cannot go now goes the usual way, which says why (unreachable, too large).
        let Ok(payload) = serde_json::to_vec(&signal) else {
            return Err(signal);
        };
        if self.client.connection_state() != State::Connected
            || payload.len() > self.client.max_payload()
        {
            return Err(signal);
        }
        let reply = {
            let mut awaited = self.lock_awaited();
            if !noted(&awaited) {
                return Err(signal);
            }
            let Some((reply, ..)) = awaited.callers.remove(reply_to) else {
                return Err(signal);
            };
            reply
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ANSWER, "1");
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let _ = (client.publish_with_headers(reply, headers, payload.into())).await;
        });
        Ok(())
    }

    /// The subject of a route this transport carries; `None` for what stays on its host.
    fn carried(&self, route: &Route<'_>) -> Option<String> {
        match route {
            Route::Address(address) => match Address::kind_of(address) {
                Kind::Service | Kind::Inbox | Kind::User => Some(self.subject(route)),
                _ => None,
            },
            Route::Event(_) | Route::DataChange(_) => None,
        }
    }

    /// `sb.<cluster>.svc.<name>` for a service, `sb.<cluster>.inbox.<host>` for an inbox,
    /// `sb.<cluster>.user.<id>` for a user's connections.
    fn subject(&self, route: &Route<'_>) -> String {
        let prefix = &self.prefix;
        match route {
            Route::Address(address) => match Address::parse(address) {
                Ok(Address::Inbox(host)) => format!("{prefix}inbox.{}", subject_token(host)),
                Ok(Address::User(id)) => format!("{prefix}user.{}", subject_token(id)),
                _ => format!("{prefix}svc.{}", subject_token(address)),
            },
            Route::Event(event_type) => format!("{prefix}evt.{}", subject_token(event_type)),
            Route::DataChange(object_type) => {
                format!("{prefix}data.{}", subject_token(object_type))
            }
        }
    }

    /// A signal to send to the cluster, encoded; refused at once while NATS is away, or if
    /// it does not encode.
    fn encode_to_send(&self, signal: Signal) -> Result<(Signal, Bytes), Publish> {
        if self.client.connection_state() != State::Connected {
            return Err(Publish::Now(Err(Undelivered::new(
                signal,
                Reason::Unreachable,
            ))));
        }
        match serde_json::to_vec(&signal) {
            Ok(payload) => Ok((signal, Bytes::from(payload))),
            Err(error) => {
                tracing::error!(%error, "a signal did not encode");
                Err(Publish::Now(Err(Undelivered::new(
                    signal,
                    Reason::NotAccepted,
                ))))
            }
        }
    }

    /// Whether a signal goes through a stream: an event or data change, or a message to a
    /// service nobody on this host awaits, once the service has a queue in the cluster (until
    /// this host knows of it, a core request finds whether any host serves it).
    fn streamed(&self, signal: &Signal) -> bool {
        match &signal.body {
            Body::Event { .. } | Body::DataChange { .. } => true,
            _ => (self.unawaited_service(signal)).is_some_and(|to| self.streams.queues(to)),
        }
    }

    /// The service a message nobody on this host awaits is for (a message to a service whose
    /// return address is not this host's inbox).
    fn unawaited_service<'a>(&self, signal: &'a Signal) -> Option<&'a str> {
        match &signal.body {
            Body::Message(m)
                if m.return_address.as_deref() != Some(self.inbox.as_str())
                    && Address::kind_of(&m.to) == Kind::Service =>
            {
                Some(&m.to)
            }
            _ => None,
        }
    }

    /// Publishes an event or data change, or a message nobody awaits, to its stream.
    fn publish_to_stream(&self, signal: Signal) -> Publish {
        let (signal, payload) = match self.encode_to_send(signal) {
            Ok(encoded) => encoded,
            Err(refused) => return refused,
        };
        let route = Route::of(&signal);
        let (subject, taken) = match route {
            Route::Address(service) => (self.streams.queue_subject(service), Accepted::ONE),
            _ => {
                let subscribers = self.streams.subscribers(&route) as usize;
                let taken = Accepted {
                    delivered: subscribers,
                    ..Accepted::default()
                };
                (self.subject(&route), taken)
            }
        };
        let id = signal.envelope.id.clone();
        let (promise, later) = Publish::later(&signal);
        let me = self.me.clone();
        self.runtime.spawn(async move {
            let Some(nats) = me.upgrade() else {
                return promise.keep(Err(Reason::ShuttingDown));
            };
            let outcome = nats.publish_to(subject, &id, payload, taken).await;
            promise.keep(outcome);
        });
        later
    }

    fn deliver_here(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        match self.local.get().and_then(Weak::upgrade) {
            Some(local) => local.deliver_here(signal),
            None => Err(Undelivered::shutting_down(signal)),
        }
    }
}

/// Takes what hosts announce of their handlers' subscriptions, and lists them again from the
/// stream every few seconds, until the transport is dropped.
async fn hear(nats: Weak<Nats>, mut heard: async_nats::Subscriber) {
    let mut relist = tokio::time::interval(streams::RELIST);
    relist.tick().await;
    loop {
        tokio::select! {
            message = heard.next() => {
                let Some(message) = message else { return };
                let Some(nats) = nats.upgrade() else { return };
                if let Some(feed) = nats.streams.heard(&message.payload) {
                    nats.start_pulling(feed);
                }
            }
            _ = relist.tick() => {
                let Some(nats) = nats.upgrade() else { return };
                nats.streams.relist().await;
            }
        }
    }
}

/// Waits until the server has taken what the client sent before (its subscriptions
/// included): the server handles one connection's commands in order, so a message the client
/// sends itself through the server comes back after them. A flush alone only writes them
/// out. Gives up after [`OUTCOME_WAIT`], with a warning.
async fn on_the_server(client: &Client) {
    let probe = client.new_inbox();
    let round_trip = async {
        let mut echo = client.subscribe(probe.clone()).await.ok()?;
        client.publish(probe, Bytes::new()).await.ok()?;
        echo.next().await
    };
    if tokio::time::timeout(OUTCOME_WAIT, round_trip)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::warn!("NATS did not confirm this host's subscriptions in time");
    }
}

/// Takes what arrives on one subscription: each signal is delivered here and its outcome
/// sent back to the requester.
/// On a user's subject (`only_taken`), every host holding one of its connections takes the
/// signal and the first to respond gives the outcome, so only a host that delivered it
/// responds: silence from the others is no refusal.
///
/// Told to `leave` (or its sender gone), it unsubscribes and goes on taking what the server
/// had already sent it, so nothing given to this host is dropped unanswered.
async fn take(
    nats: Weak<Nats>,
    mut subscriber: async_nats::Subscriber,
    only_taken: bool,
    leave: oneshot::Receiver<Subscribing>,
) {
    let mut leave = Some(leave);
    loop {
        let message = match leave.as_mut() {
            Some(told) => tokio::select! {
                message = subscriber.next() => message,
                leaving = told => {
                    leave = None;
                    let _ = subscriber.drain().await;
                    // Counted until the unsubscribe is queued before anything sent later.
                    drop(leaving);
                    continue;
                }
            },
            None => subscriber.next().await,
        };
        let Some(message) = message else { return };
        let Some(nats) = nats.upgrade() else { return };
        // A message whose caller waits: its answer will be the response. Noted before it is
        // delivered, since the answer may come before `deliver` returns.
        let awaited = nats.note_awaited(&message);
        let outcome = match nats.local.get().and_then(Weak::upgrade) {
            Some(local) => local.deliver_encoded(&message.payload),
            None => Err(Reason::ShuttingDown),
        };
        if let (Ok(_), Some(_)) = (&outcome, &awaited) {
            continue;
        }
        if let Some(id) = awaited {
            nats.lock_awaited().callers.remove(&id);
        }
        if only_taken && !matches!(&outcome, Ok(taken) if taken.total() > 0) {
            continue;
        }
        if let Some(reply) = message.reply {
            let _ = nats.client.publish(reply, encode(&outcome)).await;
        }
    }
}

/// Whether a response is a message's answer rather than a delivery's outcome.
fn is_answer(response: &async_nats::Message) -> bool {
    (response.headers.as_ref()).is_some_and(|headers| headers.get(ANSWER).is_some())
}

/// Time left until `deadline` (milliseconds since the Unix epoch), by this machine's clock,
/// at most [`LONGEST_AWAIT`] (a deadline from another host may be anything).
fn remaining(deadline: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    Duration::from_millis(deadline.saturating_sub(now)).min(LONGEST_AWAIT)
}

/// The inbox an answer must go back to ([`REPLY_VIA_HEADER`]), if it names one.
fn reply_via(signal: &Signal) -> Option<&str> {
    if !matches!(signal.body, Body::Reply { .. } | Body::ErrorReply { .. }) {
        return None;
    }
    let via = signal.envelope.headers.get(REPLY_VIA_HEADER)?;
    matches!(Address::parse(via), Ok(Address::Inbox(_))).then_some(via.as_str())
}

/// A delivery's outcome as it goes back to the sender: `{"delivered":1,..}` or
/// `{"reason":"no_route"}`.
fn encode(outcome: &Result<Accepted, Reason>) -> Bytes {
    let value = match outcome {
        Ok(accepted) => serde_json::to_value(accepted).unwrap_or_default(),
        Err(reason) => serde_json::json!({ "reason": reason.as_str() }),
    };
    Bytes::from(value.to_string())
}

/// The outcome another host sent back; one that does not decode is [`Reason::Lost`].
fn decode(payload: &[u8]) -> Result<Accepted, Reason> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        reason: Option<String>,
        #[serde(default)]
        delivered: usize,
        #[serde(default)]
        dead_lettered: usize,
        #[serde(default)]
        refused: usize,
    }
    let Ok(wire) = serde_json::from_slice::<Wire>(payload) else {
        return Err(Reason::Lost);
    };
    match wire.reason {
        Some(reason) => Err(Reason::parse(&reason).unwrap_or(Reason::Lost)),
        None => Ok(Accepted {
            delivered: wire.delivered,
            dead_lettered: wire.dead_lettered,
            refused: wire.refused,
        }),
    }
}

impl Transport for Nats {
    fn attach(&self, local: Weak<dyn Inbound>) {
        let _ = self.local.set(local);
    }

    fn publish(&self, signal: Signal) -> Publish {
        let signal = match self.answer_awaited(signal) {
            Ok(()) => return Publish::Now(Ok(Accepted::ONE)),
            Err(signal) => signal,
        };
        if self.streamed(&signal) {
            return self.publish_to_stream(signal);
        }
        let subject = match reply_via(&signal) {
            Some(inbox) => Some(self.subject(&Route::Address(inbox))),
            None => self.carried(&Route::of(&signal)),
        };
        let Some(subject) = subject else {
            return Publish::Now(self.deliver_here(signal));
        };
        let (signal, payload) = match self.encode_to_send(signal) {
            Ok(encoded) => encoded,
            Err(refused) => return refused,
        };
        // Not streamed: a service this host knows no queue for (yet).
        let unqueued = self.unawaited_service(&signal).map(str::to_owned);
        let id = signal.envelope.id.clone();
        let (promise, later) = Publish::later(&signal);
        let client = self.client.clone();
        let mut request = async_nats::Request::new().payload(payload.clone());
        // A message whose caller waits here is answered in the response (one round trip),
        // so it waits until the message's deadline (and a little more), not for an outcome.
        let mut wait = OUTCOME_WAIT;
        if let Body::Message(m) = &signal.body
            && m.return_address.as_deref() == Some(self.inbox.as_str())
            && Address::kind_of(&m.to) == Kind::Service
        {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(AWAITED, signal.envelope.id.as_str());
            request = request.headers(headers);
            wait += remaining(signal.envelope.deadline.unwrap_or(0));
        }
        let request = request.timeout(Some(wait));
        let me = self.me.clone();
        self.runtime.spawn(async move {
            // A service this host did not know had a queue may have just been given one (a
            // deploy on another host): its queue, if it has one, keeps the message.
            if let Some(service) = unqueued
                && let Some(nats) = me.upgrade()
                && nats.streams.lookup_queue(&service).await
            {
                let subject = nats.streams.queue_subject(&service);
                let outcome = nats.publish_to(subject, &id, payload, Accepted::ONE).await;
                return promise.keep(outcome);
            }
            let asked = tokio::time::timeout(wait, client.send_request(subject, request));
            let outcome = match asked.await {
                Ok(Ok(response)) if is_answer(&response) => {
                    // The answer itself, for the caller waiting here; one this host refuses
                    // (too large for it) makes the message's outcome, so the caller gets
                    // the host's error answer instead.
                    let local = me.upgrade().and_then(|nats| nats.local.get()?.upgrade());
                    match local {
                        Some(local) => local
                            .deliver_encoded(&response.payload)
                            .map(|_| Accepted::ONE),
                        None => Err(Reason::ShuttingDown),
                    }
                }
                Ok(Ok(response)) => decode(&response.payload),
                Ok(Err(error)) if error.kind() == RequestErrorKind::NoResponders => {
                    Err(Reason::NoRoute)
                }
                Ok(Err(error)) if error.kind() == RequestErrorKind::MaxPayloadExceeded => {
                    Err(Reason::TooLarge)
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "a signal's delivery over NATS is unknown");
                    Err(Reason::Lost)
                }
                Err(_) => Err(Reason::Lost),
            };
            promise.keep(outcome);
        });
        later
    }

    fn subscribe(&self, handler: &str, subscriptions: &Subscriptions) {
        self.start_pulling(Self::copies(handler, subscriptions));
    }

    fn unsubscribe(&self, handler: &str) {
        self.stop_pulling(Self::copies(handler, &Subscriptions::default()));
    }

    fn subscribers(&self, route: Route<'_>) -> Option<u32> {
        match route {
            Route::Event(_) | Route::DataChange(_) => Some(self.streams.subscribers(&route)),
            Route::Address(_) => None,
        }
    }

    fn serve(&self, route: Route<'_>) {
        let Some(subject) = self.carried(&route) else {
            return;
        };
        if let Route::Address(service) = route
            && Address::kind_of(service) == Kind::Service
        {
            self.start_pulling(Self::queue(service));
        }
        // One queue group per service: each message goes to one of the hosts serving it. A
        // user's pushes go to every host holding one of its connections.
        let group = match route {
            Route::Address(address) if Address::kind_of(address) == Kind::User => None,
            _ => Some(subject.clone()),
        };
        let only_taken = group.is_none();
        let client = self.client.clone();
        let me = self.me.clone();
        let subscribing = Subscribing::start(&self.subscribing);
        let (stay, leave) = oneshot::channel();
        self.runtime.spawn({
            let subject = subject.clone();
            async move {
                let subscribed = match group {
                    Some(group) => client.queue_subscribe(subject.clone(), group).await,
                    None => client.subscribe(subject.clone()).await,
                };
                match subscribed {
                    Ok(subscriber) => {
                        on_the_server(&client).await;
                        drop(subscribing);
                        take(me, subscriber, only_taken, leave).await;
                    }
                    Err(error) => {
                        tracing::error!(%subject, %error, "could not serve a route over NATS")
                    }
                }
            }
        });
        // A subscription it replaces leaves (its sender dropped).
        self.lock().insert(subject, stay);
    }

    fn unserve(&self, route: Route<'_>) {
        if let Route::Address(service) = route
            && Address::kind_of(service) == Kind::Service
        {
            self.stop_pulling(Self::queue(service));
        }
        if let Some(subject) = self.carried(&route) {
            self.lock().remove(&subject);
        }
    }

    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            let services = format!("{}svc.", self.prefix);
            let leaving: Vec<_> = {
                let mut serving = self.lock();
                let subjects: Vec<String> = (serving.keys())
                    .filter(|subject| subject.starts_with(&services))
                    .cloned()
                    .collect();
                subjects
                    .iter()
                    .filter_map(|subject| serving.remove(subject))
                    .collect()
            };
            for stay in leaving {
                let _ = stay.send(Subscribing::start(&self.leaving));
            }
            self.stop_all_pulls();
            self.leaving.settled().await;
            on_the_server(&self.client).await;
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            // Copies handled in the drain are acknowledged before the host goes; the rest
            // are offered to another host after their ack wait.
            self.confirmed(OUTCOME_WAIT).await;
            if let Err(error) = self.client.flush().await {
                tracing::warn!(%error, "signals for other hosts may not have left before the host stopped");
            }
        })
    }

    fn inbox(&self) -> Option<&str> {
        Some(&self.inbox)
    }

    fn unreachable(&self) -> Option<String> {
        match self.client.connection_state() {
            State::Connected => self.streams.full_lately(),
            state => Some(format!("not connected to NATS ({state:?}); reconnecting")),
        }
    }

    fn identity(&self) -> Option<(&str, &str)> {
        Some((&self.cluster, &self.host_id))
    }

    fn view(&self) -> Pin<Box<dyn Future<Output = ClusterView> + Send + '_>> {
        Box::pin(async {
            let (streams, subscribers, services) = self.streams_view().await;
            let connection = match self.unreachable() {
                None => "connected".to_owned(),
                Some(why) => why,
            };
            ClusterView {
                clustered: true,
                cluster: Some(self.cluster.clone()),
                host_id: Some(self.host_id.clone()),
                connection: Some(connection),
                streams,
                subscribers,
                services,
            }
        })
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            self.subscribing.settled().await;
            // What the other hosts subscribed before, as of now.
            self.streams.relist().await;
        })
    }
}

/// Subscriptions on their way to (or out of) the server.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    done: Notify,
}

impl Pending {
    /// Resolves once none is on its way.
    async fn settled(&self) {
        loop {
            let done = self.done.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// One subscription on its way: counted until it is on (or off) the server, or abandoned.
struct Subscribing(Arc<Pending>);

impl Subscribing {
    fn start(pending: &Arc<Pending>) -> Self {
        pending.count.fetch_add(1, Ordering::SeqCst);
        Self(pending.clone())
    }
}

impl Drop for Subscribing {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a deadline from another host waits at most a day, however far it is, and
    /// nothing for one past.
    #[test]
    fn waits_are_bounded() {
        assert_eq!(remaining(u64::MAX), LONGEST_AWAIT);
        assert_eq!(remaining(0), Duration::ZERO);
    }
}
