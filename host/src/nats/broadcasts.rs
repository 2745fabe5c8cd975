//! Events and data changes across the cluster (`../shared/CLUSTER.md`): one JetStream
//! stream holds them, on `sb.<cluster>.evt.<type>` and `sb.<cluster>.data.<objectType>`;
//! each subscribed handler has one durable pull consumer, filtered to its subscriptions,
//! that every host running the handler pulls from. So each event is handled once per
//! subscribed handler across the cluster.
//!
//! A copy pulled here is offered to the handler's mailbox and acknowledged only once its
//! turn is over (with in-progress acknowledgements while it runs, so a long turn is not
//! redelivered from under a live host); a copy its mailbox refuses is a dead letter here and
//! acknowledged, as on one host, so a stuck subscriber's backlog stays its own. A host that
//! dies leaves its copies unacknowledged: the stream offers them again after the ack wait.
//! A copy offered more than `max_deliver` times (its turn may be what kills its hosts) is
//! kept as a dead letter instead of being handled again.
//!
//! The stream keeps a message while a consumer still wants it (interest retention) and is
//! bounded in bytes and messages: past them a publish is refused (503), never an old message
//! dropped. Each host knows which handlers subscribe to what from the stream's consumers,
//! listed when it starts, after each of its own deploys and every few seconds, and from what
//! hosts announce on `sb.<cluster>.subscribers` as they subscribe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::{Nats, NatsError, Pending, Subscribing};
use crate::address::{subject_name, subject_token};
use crate::transport::{Handled, Reason, Route, Subscriptions};

/// How the cluster's broadcast stream and its consumers are bounded and paced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long a host may hold a copy without acknowledging it (or saying it is still at
    /// work on it) before the stream offers it to another host.
    pub ack_wait: Duration,
    /// How many times a copy is offered before it is kept as a dead letter instead.
    pub max_deliver: u32,
    /// The stream's bound in bytes: past it, publishes are refused.
    pub max_bytes: i64,
    /// The stream's bound in messages: past it, publishes are refused.
    pub max_messages: i64,
    /// Copies of the stream on the NATS servers (1 on one server; 3 in production).
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_bytes: 1 << 30,
            max_messages: 1_000_000,
            replicas: 1,
        }
    }
}

/// A subscribed handler's copies as the cluster's stream holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// Copies no host has taken yet.
    pub pending: u64,
    /// Copies a host has taken and not yet acknowledged.
    pub unacknowledged: usize,
    /// Copies offered more than once.
    pub redelivered: usize,
}

/// The most copies a handler's consumer has out unacknowledged across the cluster: more
/// than its hosts' mailboxes hold, so the bound that acts is the mailbox's.
const MAX_ACK_PENDING: i64 = 20_000;
/// Copies pulled in one request.
const BATCH: usize = 64;
/// How often the subscribers known are listed again from the stream's consumers.
pub(super) const RELIST: Duration = Duration::from_secs(5);

/// The stream of one cluster's broadcasts, and this host's consumers of it.
pub(super) struct Broadcasts {
    jetstream: jetstream::Context,
    stream: String,
    /// `sb.<cluster>.`
    prefix: String,
    settings: StreamSettings,
    /// Every subscribing handler of the cluster and its subscriptions, by handler name.
    known: Mutex<BTreeMap<String, Subscriptions>>,
    /// This host's subscribing handlers: their subscriptions, and the pull that stops when
    /// the sender is dropped.
    pulling: Mutex<HashMap<String, (Subscriptions, oneshot::Sender<()>)>>,
    /// Copies handed to a mailbox here and not yet acknowledged (or handed back).
    unconfirmed: Arc<Pending>,
}

/// What a host announces as it starts or stops giving a handler its copies.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    handler: String,
    /// Its subscriptions, or none when it has gone.
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    changes: Vec<String>,
    #[serde(default)]
    gone: bool,
}

impl Broadcasts {
    /// Opens (creating if need be) the cluster's broadcast stream.
    pub(super) async fn open(
        client: &async_nats::Client,
        cluster: &str,
        prefix: &str,
        settings: StreamSettings,
    ) -> Result<Self, NatsError> {
        let jetstream = jetstream::new(client.clone());
        let name = format!("sb-{cluster}-broadcasts");
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}evt.>"), format!("{prefix}data.>")],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: settings.max_bytes,
            max_messages: settings.max_messages,
            num_replicas: settings.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let opened = tokio::time::timeout(super::OUTCOME_WAIT, jetstream.get_or_create_stream(config))
            .await
            .map_err(|_| NatsError::JetStream(format!("creating the stream {name}: timed out (is JetStream enabled on the NATS server? start it with -js)")))?;
        opened.map_err(|error| {
            NatsError::JetStream(format!(
                "creating the stream {name}: {error} (is JetStream enabled on the NATS server? start it with -js)"
            ))
        })?;
        Ok(Self {
            jetstream,
            stream: name,
            prefix: prefix.to_owned(),
            settings,
            known: Mutex::default(),
            pulling: Mutex::default(),
            unconfirmed: Arc::default(),
        })
    }

    /// The cluster's broadcast stream, if it can be reached.
    async fn stream(&self) -> Option<jetstream::stream::Stream> {
        self.jetstream.get_stream(&self.stream).await.ok()
    }

    /// `sb.<cluster>.subscribers`, where hosts announce their handlers' subscriptions.
    pub(super) fn announcements(&self) -> String {
        format!("{}subscribers", self.prefix)
    }

    /// The durable consumer of `handler`'s copies.
    fn consumer_name(handler: &str) -> String {
        format!("h-{}", subject_token(handler))
    }

    /// The subjects of what `subscriptions` take.
    fn filters(&self, subscriptions: &Subscriptions) -> Vec<String> {
        let prefix = &self.prefix;
        let events =
            (subscriptions.events.iter()).map(|e| format!("{prefix}evt.{}", subject_token(e)));
        let changes =
            (subscriptions.changes.iter()).map(|c| format!("{prefix}data.{}", subject_token(c)));
        events.chain(changes).collect()
    }

    /// The subscriptions a consumer's filter subjects stand for; `None` for one that is not
    /// a handler's.
    fn subscriptions_of(&self, filters: &[String]) -> Option<Subscriptions> {
        let mut subscriptions = Subscriptions::default();
        for filter in filters {
            let rest = filter.strip_prefix(&self.prefix)?;
            if let Some(token) = rest.strip_prefix("evt.") {
                subscriptions.events.insert(subject_name(token)?);
            } else if let Some(token) = rest.strip_prefix("data.") {
                subscriptions.changes.insert(subject_name(token)?);
            } else {
                return None;
            }
        }
        Some(subscriptions)
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Subscriptions>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pulling(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Subscriptions, oneshot::Sender<()>)>> {
        self.pulling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many handlers of the cluster subscribe to `route`, as this host knows.
    pub(super) fn subscribers(&self, route: &Route<'_>) -> u32 {
        self.lock_known()
            .values()
            .filter(|subscriptions| subscriptions.takes(route))
            .count() as u32
    }

    /// Every subscribing handler of the cluster this host knows of.
    pub(super) fn known(&self) -> BTreeMap<String, Subscriptions> {
        self.lock_known().clone()
    }

    /// Lists the subscribers from the stream's consumers, replacing what was known.
    pub(super) async fn relist(&self) {
        let listed = async {
            let stream = self.stream().await?;
            let mut consumers = stream.consumers();
            let mut found = BTreeMap::new();
            while let Some(info) = consumers.next().await {
                let info = info.ok()?;
                let Some(handler) = info.name.strip_prefix("h-").and_then(subject_name) else {
                    continue;
                };
                let mut filters = info.config.filter_subjects.clone();
                if !info.config.filter_subject.is_empty() {
                    filters.push(info.config.filter_subject.clone());
                }
                if let Some(subscriptions) = self.subscriptions_of(&filters) {
                    found.insert(handler, subscriptions);
                }
            }
            Some(found)
        };
        match tokio::time::timeout(super::OUTCOME_WAIT, listed).await {
            Ok(Some(found)) => *self.lock_known() = found,
            _ => tracing::debug!("could not list the cluster's subscribers now"),
        }
    }

    /// Takes another host's announcement; one about a handler this host also runs that says
    /// it has gone (and its consumer with it) makes this host subscribe it again.
    pub(super) fn heard(&self, payload: &[u8]) -> Option<(String, Subscriptions)> {
        let announcement: Announcement = serde_json::from_slice(payload).ok()?;
        let mut known = self.lock_known();
        if announcement.gone {
            known.remove(&announcement.handler);
            drop(known);
            let pulling = self.lock_pulling();
            let (subscriptions, _) = pulling.get(&announcement.handler)?;
            return Some((announcement.handler, subscriptions.clone()));
        }
        let subscriptions = Subscriptions {
            events: announcement.events.into_iter().collect(),
            changes: announcement.changes.into_iter().collect(),
        };
        known.insert(announcement.handler, subscriptions);
        None
    }

    /// The consumer config of `handler`'s copies.
    fn consumer_config(
        &self,
        handler: &str,
        subscriptions: &Subscriptions,
    ) -> consumer::pull::Config {
        let name = Self::consumer_name(handler);
        consumer::pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name),
            description: Some(format!("switchboard handler {handler}")),
            filter_subjects: self.filters(subscriptions),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            // Counted here, so that the last offer keeps the copy as a dead letter.
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        }
    }

    /// Creates or updates `handler`'s consumer.
    async fn ensure(
        &self,
        handler: &str,
        subscriptions: &Subscriptions,
    ) -> Result<consumer::PullConsumer, String> {
        let config = self.consumer_config(handler, subscriptions);
        let made = async {
            let stream = self
                .jetstream
                .get_stream(&self.stream)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(super::OUTCOME_WAIT, made)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

impl Nats {
    /// Handler `handler` of this host takes its copies of the broadcasts it subscribes to:
    /// its consumer is made (or its filters changed), announced, and pulled from here. A
    /// deploy's [`Transport::ready`](crate::transport::Transport::ready) waits for it.
    pub(super) fn start_pulling(&self, handler: &str, subscriptions: &Subscriptions) {
        let subscribing = Subscribing::start(&self.subscribing);
        let (keep, stop) = oneshot::channel();
        let replaced = self
            .broadcasts
            .lock_pulling()
            .insert(handler.to_owned(), (subscriptions.clone(), keep));
        let me = self.me.clone();
        let handler = handler.to_owned();
        let subscriptions = subscriptions.clone();
        self.runtime.spawn(async move {
            // The pull it replaces stops (its sender dropped) before this one starts.
            drop(replaced);
            pull(me, handler, subscriptions, stop, Some(subscribing)).await;
        });
    }

    /// Handler `handler` no longer runs here (or subscribes to nothing): its pull stops,
    /// and, since a handler's removal is the cluster's until the registry is shared, its
    /// consumer is deleted and its going announced. A host that still runs it subscribes it
    /// again when it hears.
    pub(super) fn stop_pulling(&self, handler: &str) {
        drop(self.broadcasts.lock_pulling().remove(handler));
        self.broadcasts.lock_known().remove(handler);
        let me = self.me.clone();
        let handler = handler.to_owned();
        let subscribing = Subscribing::start(&self.subscribing);
        self.runtime.spawn(async move {
            let Some(nats) = me.upgrade() else { return };
            let name = Broadcasts::consumer_name(&handler);
            let deleted = async {
                let stream = nats.broadcasts.stream().await?;
                stream.delete_consumer(&name).await.ok()
            };
            if tokio::time::timeout(super::OUTCOME_WAIT, deleted)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                tracing::debug!(%handler, "no consumer of its broadcasts to delete");
            }
            nats.announce(&Announcement {
                handler,
                events: Vec::new(),
                changes: Vec::new(),
                gone: true,
            })
            .await;
            drop(subscribing);
        });
    }

    /// `handler`'s copies as the stream holds them, if it has a consumer.
    pub async fn backlog(&self, handler: &str) -> Option<Backlog> {
        let asked = async {
            let stream = self.broadcasts.stream().await?;
            let info = stream
                .consumer_info(Broadcasts::consumer_name(handler))
                .await
                .ok()?;
            Some(Backlog {
                pending: info.num_pending,
                unacknowledged: info.num_ack_pending,
                redelivered: info.num_redelivered,
            })
        };
        tokio::time::timeout(super::OUTCOME_WAIT, asked)
            .await
            .ok()
            .flatten()
    }

    /// Stops every pull of this host (it is leaving): copies already handed to a mailbox
    /// are still acknowledged once handled.
    pub(super) fn stop_all_pulls(&self) {
        self.broadcasts.lock_pulling().clear();
    }

    /// Waits (at most `within`) until every copy handed to a mailbox here was acknowledged.
    pub(super) async fn confirmed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.broadcasts.unconfirmed.settled()).await;
    }

    async fn announce(&self, announcement: &Announcement) {
        let Ok(payload) = serde_json::to_vec(announcement) else {
            return;
        };
        let subject = self.broadcasts.announcements();
        if let Err(error) = self.client.publish(subject, payload.into()).await {
            tracing::debug!(%error, "could not announce a handler's subscriptions");
        }
    }

    /// Publishes a broadcast to the stream, with its id as the message id (a retry after a
    /// timeout is dropped as a duplicate): how many handlers of the cluster take it, or why
    /// the stream refused it.
    pub(super) async fn publish_broadcast(
        &self,
        subject: String,
        id: &str,
        payload: bytes::Bytes,
        subscribers: u32,
    ) -> Result<crate::transport::Accepted, Reason> {
        use async_nats::jetstream::context::PublishErrorKind as Kind;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            let published = async {
                let ack = (self.broadcasts.jetstream)
                    .send_publish(subject.clone(), message)
                    .await?;
                ack.await
            };
            let error = match published.await {
                Ok(_) => {
                    return Ok(crate::transport::Accepted {
                        delivered: subscribers as usize,
                        ..Default::default()
                    });
                }
                Err(error) => error,
            };
            let retry = matches!(error.kind(), Kind::TimedOut | Kind::BrokenPipe);
            if retry
                && attempt < 3
                && self.client.connection_state() == async_nats::connection::State::Connected
            {
                self.count_retry();
                continue;
            }
            return Err(match error.kind() {
                Kind::MaxPayloadExceeded => Reason::TooLarge,
                Kind::StreamNotFound => Reason::Unreachable,
                Kind::TimedOut | Kind::BrokenPipe => Reason::Lost,
                _ if is_full(&error) => {
                    self.count_no_space();
                    Reason::NoSpace
                }
                _ => {
                    tracing::warn!(%error, "the cluster's stream refused a broadcast");
                    Reason::Lost
                }
            });
        }
    }

    fn count_retry(&self) {
        if let Some(local) = self.local.get().and_then(Weak::upgrade) {
            local.count("publish_retry");
        }
    }

    fn count_no_space(&self) {
        if let Some(local) = self.local.get().and_then(Weak::upgrade) {
            local.count("no_space");
        }
    }
}

/// Whether a publish was refused because the stream is full.
fn is_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    let text = error.to_string();
    let source = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default();
    [text, source].iter().any(|t| {
        t.contains("maximum messages exceeded")
            || t.contains("maximum bytes exceeded")
            || t.contains("insufficient resources")
            || t.contains("10077")
            || t.contains("10047")
    })
}

/// Pulls `handler`'s copies and hands each to its mailbox here, until told to stop. When
/// the consumer cannot be reached (it was deleted, NATS is away) it makes it again and goes
/// on. `subscribing` is let go once the consumer exists.
async fn pull(
    nats: Weak<Nats>,
    handler: String,
    subscriptions: Subscriptions,
    mut stop: oneshot::Receiver<()>,
    mut subscribing: Option<Subscribing>,
) {
    loop {
        let Some(this) = nats.upgrade() else { return };
        let consumer = match this.broadcasts.ensure(&handler, &subscriptions).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%handler, %error, "could not make the consumer of a handler's broadcasts; trying again");
                drop(subscribing.take());
                drop(this);
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        this.announce(&Announcement {
            handler: handler.clone(),
            events: subscriptions.events.iter().cloned().collect(),
            changes: subscriptions.changes.iter().cloned().collect(),
            gone: false,
        })
        .await;
        this.broadcasts
            .lock_known()
            .insert(handler.clone(), subscriptions.clone());
        let messages = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(3))
            .messages()
            .await;
        drop(subscribing.take());
        drop(this);
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%handler, %error, "could not pull a handler's broadcasts; trying again");
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = &mut stop => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let Some(this) = nats.upgrade() else { return };
                    this.take_copy(&handler, message).await;
                }
                Some(Err(error)) => {
                    tracing::debug!(%handler, %error, "pulling a handler's broadcasts");
                    if matches!(
                        error.kind(),
                        consumer::pull::MessagesErrorKind::ConsumerDeleted
                            | consumer::pull::MessagesErrorKind::NoResponders
                    ) {
                        break;
                    }
                }
                None => break,
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl Nats {
    /// Hands one pulled copy to `handler`'s mailbox here and acknowledges it once handled;
    /// keeps it as a dead letter instead once it was offered too many times.
    async fn take_copy(&self, handler: &str, message: jetstream::Message) {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let (message, acker) = message.split();
        let Some(local) = self.local.get().and_then(Weak::upgrade) else {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
            return;
        };
        if delivered > i64::from(self.broadcasts.settings.max_deliver) {
            tracing::warn!(%handler, delivered, "a broadcast's copy was offered too many times; kept as a dead letter");
            local.count("max_deliver");
            let kind = match local.keep_copy(handler, &message.payload) {
                Ok(true) => AckKind::Ack,
                _ => AckKind::Term,
            };
            let _ = acker.ack_with(kind).await;
            return;
        }
        let (handled, told) = Handled::new();
        match local.deliver_copy(handler, &message.payload, handled) {
            Ok(taken) if taken.delivered > 0 => {
                let unconfirmed = Subscribing::start(&self.broadcasts.unconfirmed);
                let every = (self.broadcasts.settings.ack_wait / 3).max(Duration::from_millis(100));
                self.runtime.spawn(confirm(acker, told, every, unconfirmed));
            }
            // Kept as a dead letter here: done with.
            Ok(taken) if taken.dead_lettered > 0 => {
                let _ = acker.ack().await;
            }
            // Refused (no room to keep it, or it is no signal): counted where refused.
            Ok(_) | Err(Reason::NotAccepted | Reason::TooLarge) => {
                let _ = acker.ack_with(AckKind::Term).await;
            }
            // Not here (any more): another host may take it.
            Err(_) => {
                let _ = acker
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }
}

/// Acknowledges a copy once it has been handled, saying it is still being worked on every
/// `every` until then; one dropped unhandled (its host stopping) goes back at once.
async fn confirm(
    acker: jetstream::message::Acker,
    mut told: oneshot::Receiver<()>,
    every: Duration,
    unconfirmed: Subscribing,
) {
    loop {
        tokio::select! {
            handled = &mut told => {
                let kind = if handled.is_ok() { AckKind::Ack } else { AckKind::Nak(None) };
                if let Err(error) = acker.ack_with(kind).await {
                    tracing::debug!(%error, "could not acknowledge a broadcast's copy; it will be offered again");
                }
                drop(unconfirmed);
                return;
            }
            () = tokio::time::sleep(every) => {
                let _ = acker.ack_with(AckKind::Progress).await;
            }
        }
    }
}
