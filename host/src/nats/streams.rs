//! What the cluster keeps in JetStream (`../shared/CLUSTER.md`): two streams, and the
//! durable pull consumers every host running a handler pulls from.
//!
//! - **Broadcasts**: events and data changes, on `sb.<cluster>.evt.<type>` and
//!   `sb.<cluster>.data.<objectType>`; each subscribed handler has one consumer
//!   (`h-<handler>`), filtered to its subscriptions, so each event is handled once per
//!   subscribed handler across the cluster. The stream keeps a message while a consumer
//!   still wants it (interest retention).
//! - **Messages nobody awaits** (sent without waiting, a handler's send whose reply comes
//!   back to it later): a work queue on `sb.<cluster>.queue.<service>`, one consumer per
//!   service (`s-<service>`), de-duplicated by the signal's id. A message someone awaits
//!   goes over a core request instead (the caller learns of a failure at once).
//!
//! A signal pulled here is offered to the handler's mailbox and acknowledged only once its
//! turn is over (with in-progress acknowledgements while it runs, so a long turn is not
//! offered again from under a live host). A broadcast's copy its mailbox refuses is a dead
//! letter here and acknowledged, as on one host, so a stuck subscriber's backlog stays its
//! own; a message a mailbox refuses is answered with the host's error, as on one host. A
//! host that dies leaves what it held unacknowledged: the stream offers it again after the
//! ack wait. What was offered more than `max_deliver` times (its turn may be what kills its
//! hosts) is kept as a dead letter instead of being handled again. A server that dies can
//! forget acknowledgements it had taken and offer a handled signal again as if for the first
//! time: each feed remembers the ids of the signals it handled lately ([`Recent`]) and
//! acknowledges such a copy without a second turn (counted `duplicate`).
//!
//! Both streams are bounded in bytes and messages: past them a publish is refused (503),
//! never an old message dropped. Each host knows the cluster's subscribers and queued
//! services from the streams' consumers, listed when it starts, after each of its own
//! deploys and every few seconds, and from what hosts announce on `sb.<cluster>.subscribers`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::{Nats, NatsError, Pending, Subscribing};
use crate::address::{subject_name, subject_token};
use crate::transport::{FeedView, Handled, Reason, Route, StreamView, Subscriptions};

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

impl From<Backlog> for FeedView {
    fn from(backlog: Backlog) -> Self {
        Self {
            pending: backlog.pending,
            unacknowledged: backlog.unacknowledged as u64,
            redelivered: backlog.redelivered as u64,
            ..Self::default()
        }
    }
}

/// The most signals one consumer has out unacknowledged across the cluster: more than its
/// hosts' mailboxes hold, so the bound that acts is the mailbox's.
const MAX_ACK_PENDING: i64 = 20_000;
/// Signals pulled in one request.
const BATCH: usize = 64;
/// How often the subscribers and services known are listed again from the consumers.
pub(super) const RELIST: Duration = Duration::from_secs(5);

/// How many handled signals' ids each feed remembers, to acknowledge one offered again
/// without a second turn: more than a server forgets when it dies (its unflushed
/// acknowledgements) and than a feed has unacknowledged at once.
const RECENT: usize = 16_384;

/// The ids of the signals a feed handled lately on this host, the oldest forgotten first.
/// Ids are kept as keyed hashes (a sender cannot choose two that collide).
struct Recent {
    hasher: std::hash::RandomState,
    ids: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn handled(&self, id: &str) -> bool {
        self.ids.contains(&self.key(id))
    }

    fn remember(&mut self, id: &str) {
        let key = self.key(id);
        if !self.ids.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }
}

fn lock(recent: &Mutex<Recent>) -> std::sync::MutexGuard<'_, Recent> {
    recent.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one consumer feeds a handler of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Feed {
    /// A subscribed handler's copies of broadcasts.
    Copies {
        handler: String,
        subscriptions: Subscriptions,
    },
    /// A service's messages nobody awaits.
    Queue { service: String },
}

impl Feed {
    /// Its durable consumer's name.
    fn consumer(&self) -> String {
        match self {
            Self::Copies { handler, .. } => format!("h-{}", subject_token(handler)),
            Self::Queue { service } => Self::queue_consumer(service),
        }
    }

    fn queue_consumer(service: &str) -> String {
        format!("s-{}", subject_token(service))
    }

    /// The handler (or service) it feeds.
    fn handler(&self) -> &str {
        match self {
            Self::Copies { handler, .. } => handler,
            Self::Queue { service } => service,
        }
    }
}

/// The subscribers and services of the cluster, as this host knows them.
#[derive(Default)]
struct Known {
    /// Every subscribing handler and its subscriptions, by handler name.
    subscribers: BTreeMap<String, Subscriptions>,
    /// Every service with a queue of messages nobody awaits.
    services: BTreeSet<String>,
}

/// The cluster's streams, and this host's consumers of them.
pub(super) struct Streams {
    jetstream: jetstream::Context,
    broadcasts: String,
    messages: String,
    /// `sb.<cluster>.`
    prefix: String,
    settings: StreamSettings,
    known: Mutex<Known>,
    /// This host's feeds, by consumer: each pull stops when its sender is dropped.
    pulling: Mutex<HashMap<String, (Feed, oneshot::Sender<()>)>>,
    /// Signals handed to a mailbox here and not yet acknowledged (or handed back).
    unconfirmed: Arc<Pending>,
    /// When a stream last refused a publish of this host's for space, in milliseconds since
    /// `opened` plus one; 0 while the streams take its publishes (read on every publish, so
    /// no lock).
    full_at: AtomicU64,
    opened: std::time::Instant,
}

/// How long after a stream refused a publish for space the host says it is full (not
/// ready): the next publish that is taken says no more.
const FULL_FOR: Duration = Duration::from_secs(10);

/// What a host announces as it starts or stops feeding a handler.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    handler: String,
    /// A service's queue rather than a subscriber's copies.
    #[serde(default)]
    service: bool,
    /// Its subscriptions.
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    changes: Vec<String>,
    /// It has gone, and its consumer with it.
    #[serde(default)]
    gone: bool,
}

impl Announcement {
    fn of(feed: &Feed, gone: bool) -> Self {
        let (events, changes) = match feed {
            Feed::Copies { subscriptions, .. } if !gone => (
                subscriptions.events.iter().cloned().collect(),
                subscriptions.changes.iter().cloned().collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        Self {
            handler: feed.handler().to_owned(),
            service: matches!(feed, Feed::Queue { .. }),
            events,
            changes,
            gone,
        }
    }
}

impl Streams {
    /// Opens (creating if need be) the cluster's streams.
    pub(super) async fn open(
        client: &async_nats::Client,
        cluster: &str,
        prefix: &str,
        settings: StreamSettings,
    ) -> Result<Self, NatsError> {
        let jetstream = jetstream::new(client.clone());
        let bounded = |name: String, subjects, retention| stream::Config {
            name,
            subjects,
            retention,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: settings.max_bytes,
            max_messages: settings.max_messages,
            num_replicas: settings.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let broadcasts = bounded(
            format!("sb-{cluster}-broadcasts"),
            vec![format!("{prefix}evt.>"), format!("{prefix}data.>")],
            stream::RetentionPolicy::Interest,
        );
        let messages = bounded(
            format!("sb-{cluster}-messages"),
            vec![format!("{prefix}queue.>")],
            stream::RetentionPolicy::WorkQueue,
        );
        let names = (broadcasts.name.clone(), messages.name.clone());
        for config in [broadcasts, messages] {
            let name = config.name.clone();
            let hint = "is JetStream enabled on the NATS server? start it with -js";
            let opened =
                tokio::time::timeout(super::OUTCOME_WAIT, jetstream.get_or_create_stream(config))
                    .await
                    .map_err(|_| {
                        NatsError::JetStream(format!(
                            "creating the stream {name}: timed out ({hint})"
                        ))
                    })?;
            opened.map_err(|error| {
                NatsError::JetStream(format!("creating the stream {name}: {error} ({hint})"))
            })?;
        }
        Ok(Self {
            jetstream,
            broadcasts: names.0,
            messages: names.1,
            prefix: prefix.to_owned(),
            settings,
            known: Mutex::default(),
            pulling: Mutex::default(),
            unconfirmed: Arc::default(),
            full_at: AtomicU64::new(0),
            opened: std::time::Instant::now(),
        })
    }

    /// The stream a feed's consumer is on, if it can be reached.
    async fn stream_of(&self, feed: &Feed) -> Option<jetstream::stream::Stream> {
        let name = match feed {
            Feed::Copies { .. } => &self.broadcasts,
            Feed::Queue { .. } => &self.messages,
        };
        self.jetstream.get_stream(name).await.ok()
    }

    /// A stream refused a publish for space.
    fn refused_for_space(&self) {
        let now = self.opened.elapsed().as_millis() as u64 + 1;
        self.full_at.store(now, Ordering::Relaxed);
    }

    /// A stream took a publish: it has room again.
    fn took(&self) {
        if self.full_at.load(Ordering::Relaxed) != 0 {
            self.full_at.store(0, Ordering::Relaxed);
        }
    }

    /// Why the host is not ready, if a stream refused one of its publishes for space lately.
    pub(super) fn full_lately(&self) -> Option<String> {
        let at = self.full_at.load(Ordering::Relaxed).checked_sub(1)?;
        let ago = Duration::from_millis(self.opened.elapsed().as_millis() as u64 - at);
        (ago < FULL_FOR).then(|| {
            format!(
                "a stream of the cluster refused a signal for space {} s ago: it is full (see GET /v1/cluster)",
                ago.as_secs()
            )
        })
    }

    /// `sb.<cluster>.subscribers`, where hosts announce their feeds.
    pub(super) fn announcements(&self) -> String {
        format!("{}subscribers", self.prefix)
    }

    /// `sb.<cluster>.queue.<service>`: the service's messages nobody awaits.
    pub(super) fn queue_subject(&self, service: &str) -> String {
        format!("{}queue.{}", self.prefix, subject_token(service))
    }

    /// The subjects a feed's consumer takes.
    fn filters(&self, feed: &Feed) -> Vec<String> {
        let prefix = &self.prefix;
        match feed {
            Feed::Copies { subscriptions, .. } => {
                let events = (subscriptions.events.iter())
                    .map(|e| format!("{prefix}evt.{}", subject_token(e)));
                let changes = (subscriptions.changes.iter())
                    .map(|c| format!("{prefix}data.{}", subject_token(c)));
                events.chain(changes).collect()
            }
            Feed::Queue { service } => vec![self.queue_subject(service)],
        }
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

    fn lock_known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pulling(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Feed, oneshot::Sender<()>)>> {
        self.pulling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many handlers of the cluster subscribe to `route`, as this host knows.
    pub(super) fn subscribers(&self, route: &Route<'_>) -> u32 {
        (self.lock_known().subscribers.values())
            .filter(|subscriptions| subscriptions.takes(route))
            .count() as u32
    }

    /// Whether `service` has a queue in the cluster, as this host knows.
    pub(super) fn queues(&self, service: &str) -> bool {
        self.lock_known().services.contains(service)
    }

    /// Whether `service` has a queue in the cluster, asking the stream (and noting it) when
    /// this host does not know.
    pub(super) async fn lookup_queue(&self, service: &str) -> bool {
        if self.queues(service) {
            return true;
        }
        let feed = Feed::Queue {
            service: service.to_owned(),
        };
        let asked = async {
            let stream = self.stream_of(&feed).await?;
            stream.consumer_info(feed.consumer()).await.ok()
        };
        let found = (tokio::time::timeout(super::OUTCOME_WAIT, asked).await)
            .ok()
            .flatten()
            .is_some();
        if found {
            self.note(&feed, false);
        }
        found
    }

    /// Every subscribing handler of the cluster this host knows of.
    pub(super) fn known(&self) -> BTreeMap<String, Subscriptions> {
        self.lock_known().subscribers.clone()
    }

    /// Every service with a queue in the cluster this host knows of.
    pub(super) fn known_queues(&self) -> BTreeSet<String> {
        self.lock_known().services.clone()
    }

    /// Notes a feed as known (this host feeds it), or forgets it.
    fn note(&self, feed: &Feed, gone: bool) {
        let mut known = self.lock_known();
        match feed {
            Feed::Copies { handler, .. } if gone => {
                known.subscribers.remove(handler);
            }
            Feed::Copies {
                handler,
                subscriptions,
            } => {
                known
                    .subscribers
                    .insert(handler.clone(), subscriptions.clone());
            }
            Feed::Queue { service } if gone => {
                known.services.remove(service);
            }
            Feed::Queue { service } => {
                known.services.insert(service.clone());
            }
        }
    }

    /// Lists the subscribers and services from the streams' consumers, replacing what was
    /// known.
    pub(super) async fn relist(&self) {
        let listed = async {
            let mut known = Known::default();
            for name in [&self.broadcasts, &self.messages] {
                let stream = self.jetstream.get_stream(name).await.ok()?;
                let mut consumers = stream.consumers();
                while let Some(info) = consumers.next().await {
                    let info = info.ok()?;
                    if let Some(service) = info.name.strip_prefix("s-").and_then(subject_name) {
                        known.services.insert(service);
                        continue;
                    }
                    let Some(handler) = info.name.strip_prefix("h-").and_then(subject_name) else {
                        continue;
                    };
                    let mut filters = info.config.filter_subjects.clone();
                    if !info.config.filter_subject.is_empty() {
                        filters.push(info.config.filter_subject.clone());
                    }
                    if let Some(subscriptions) = self.subscriptions_of(&filters) {
                        known.subscribers.insert(handler, subscriptions);
                    }
                }
            }
            Some(known)
        };
        match tokio::time::timeout(super::OUTCOME_WAIT, listed).await {
            Ok(Some(found)) => *self.lock_known() = found,
            _ => tracing::debug!("could not list the cluster's subscribers now"),
        }
    }

    /// Takes another host's announcement. One saying a feed this host also pulls has gone
    /// (its consumer deleted with it) gives that feed back, to be started again here.
    pub(super) fn heard(&self, payload: &[u8]) -> Option<Feed> {
        let announcement: Announcement = serde_json::from_slice(payload).ok()?;
        let feed = if announcement.service {
            Feed::Queue {
                service: announcement.handler,
            }
        } else {
            Feed::Copies {
                handler: announcement.handler,
                subscriptions: Subscriptions {
                    events: announcement.events.into_iter().collect(),
                    changes: announcement.changes.into_iter().collect(),
                },
            }
        };
        self.note(&feed, announcement.gone);
        if !announcement.gone {
            return None;
        }
        let pulling = self.lock_pulling();
        pulling.get(&feed.consumer()).map(|(mine, _)| mine.clone())
    }

    /// The consumer config of a feed.
    fn consumer_config(&self, feed: &Feed) -> consumer::pull::Config {
        let name = feed.consumer();
        let what = match feed {
            Feed::Copies { .. } => "broadcasts to",
            Feed::Queue { .. } => "messages nobody awaits for",
        };
        consumer::pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name),
            description: Some(format!("switchboard: {what} {}", feed.handler())),
            filter_subjects: self.filters(feed),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            // Counted here, so that the last offer keeps the signal as a dead letter.
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            // A new subscriber takes the events from now on, as on one host; a service's
            // queue takes whatever waits for it.
            deliver_policy: match feed {
                Feed::Copies { .. } => consumer::DeliverPolicy::New,
                Feed::Queue { .. } => consumer::DeliverPolicy::All,
            },
            ..Default::default()
        }
    }

    /// Creates or updates a feed's consumer.
    async fn ensure(&self, feed: &Feed) -> Result<consumer::PullConsumer, String> {
        let config = self.consumer_config(feed);
        let made = async {
            let stream = self
                .stream_of(feed)
                .await
                .ok_or("the stream is not there")?;
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
    /// This host feeds `feed`'s handler: its consumer is made (or its filters changed),
    /// announced, and pulled from here. A deploy's
    /// [`Transport::ready`](crate::transport::Transport::ready) waits for it.
    pub(super) fn start_pulling(&self, feed: Feed) {
        let subscribing = Subscribing::start(&self.subscribing);
        let (keep, stop) = oneshot::channel();
        let replaced = (self.streams.lock_pulling()).insert(feed.consumer(), (feed.clone(), keep));
        let me = self.me.clone();
        self.runtime.spawn(async move {
            // The pull it replaces stops (its sender dropped) before this one starts.
            drop(replaced);
            pull(me, feed, stop, Some(subscribing)).await;
        });
    }

    /// This host no longer feeds `feed`'s handler (it was removed, or subscribes to nothing
    /// now): its pull stops, and, since a handler's removal is the cluster's until the
    /// registry is shared, its consumer is deleted and its going announced. A host that
    /// still runs the handler starts the feed again when it hears.
    pub(super) fn stop_pulling(&self, feed: Feed) {
        drop(self.streams.lock_pulling().remove(&feed.consumer()));
        self.streams.note(&feed, true);
        let me = self.me.clone();
        let subscribing = Subscribing::start(&self.subscribing);
        self.runtime.spawn(async move {
            let Some(nats) = me.upgrade() else { return };
            let deleted = async {
                let stream = nats.streams.stream_of(&feed).await?;
                stream.delete_consumer(&feed.consumer()).await.ok()
            };
            if tokio::time::timeout(super::OUTCOME_WAIT, deleted)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                tracing::debug!(handler = feed.handler(), "no consumer to delete");
            }
            nats.announce(&Announcement::of(&feed, true)).await;
            drop(subscribing);
        });
    }

    /// The feed of `subscriptions` to `handler`.
    pub(super) fn copies(handler: &str, subscriptions: &Subscriptions) -> Feed {
        Feed::Copies {
            handler: handler.to_owned(),
            subscriptions: subscriptions.clone(),
        }
    }

    /// The feed of messages nobody awaits to `service`.
    pub(super) fn queue(service: &str) -> Feed {
        Feed::Queue {
            service: service.to_owned(),
        }
    }

    /// The subscribed handler `handler`'s copies as the stream holds them, if it has a
    /// consumer.
    pub async fn backlog(&self, handler: &str) -> Option<Backlog> {
        let feed = Self::copies(handler, &Subscriptions::default());
        self.backlog_of(&feed).await
    }

    /// The service `service`'s messages nobody awaits as the stream holds them, if it has a
    /// consumer.
    pub async fn queue_backlog(&self, service: &str) -> Option<Backlog> {
        self.backlog_of(&Self::queue(service)).await
    }

    async fn backlog_of(&self, feed: &Feed) -> Option<Backlog> {
        let asked = async {
            let stream = self.streams.stream_of(feed).await?;
            let info = stream.consumer_info(feed.consumer()).await.ok()?;
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

    /// The cluster's streams and every feed this host knows of, with their backlogs.
    pub(super) async fn streams_view(&self) -> (Vec<StreamView>, Vec<FeedView>, Vec<FeedView>) {
        let streams = &self.streams;
        let mut views = Vec::new();
        for name in [&streams.broadcasts, &streams.messages] {
            let asked = async {
                let mut stream = streams.jetstream.get_stream(name).await.ok()?;
                stream.info().await.ok().map(|info| info.state.clone())
            };
            let state = (tokio::time::timeout(super::OUTCOME_WAIT, asked).await)
                .ok()
                .flatten();
            views.push(StreamView {
                name: name.clone(),
                messages: state.as_ref().map_or(0, |s| s.messages),
                max_messages: streams.settings.max_messages,
                bytes: state.as_ref().map_or(0, |s| s.bytes),
                max_bytes: streams.settings.max_bytes,
            });
        }
        let (subscribers, services) = {
            let known = streams.lock_known();
            (known.subscribers.clone(), known.services.clone())
        };
        let mut subscribing = Vec::new();
        for (handler, subscriptions) in subscribers {
            let feed = Self::copies(&handler, &subscriptions);
            let backlog = self.backlog_of(&feed).await.unwrap_or_default();
            subscribing.push(FeedView {
                handler,
                events: subscriptions.events.into_iter().collect(),
                changes: subscriptions.changes.into_iter().collect(),
                ..backlog.into()
            });
        }
        let mut queued = Vec::new();
        for service in services {
            let backlog = self.backlog_of(&Self::queue(&service)).await;
            queued.push(FeedView {
                handler: service,
                ..backlog.unwrap_or_default().into()
            });
        }
        (views, subscribing, queued)
    }

    /// Stops every pull of this host (it is leaving): what was already handed to a mailbox
    /// is still acknowledged once handled.
    pub(super) fn stop_all_pulls(&self) {
        self.streams.lock_pulling().clear();
    }

    /// Waits (at most `within`) until everything handed to a mailbox here was acknowledged.
    pub(super) async fn confirmed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.streams.unconfirmed.settled()).await;
    }

    async fn announce(&self, announcement: &Announcement) {
        let Ok(payload) = serde_json::to_vec(announcement) else {
            return;
        };
        let subject = self.streams.announcements();
        if let Err(error) = self.client.publish(subject, payload.into()).await {
            tracing::debug!(%error, "could not announce a handler's feed");
        }
    }

    /// Publishes a signal to a stream, with its id as the message id (a retry after a
    /// timeout is dropped as a duplicate): `taken` once the stream has it, or why it
    /// refused it.
    pub(super) async fn publish_to(
        &self,
        subject: String,
        id: &str,
        payload: bytes::Bytes,
        taken: crate::transport::Accepted,
    ) -> Result<crate::transport::Accepted, Reason> {
        use async_nats::jetstream::context::PublishErrorKind as Kind;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            let published = async {
                let ack = (self.streams.jetstream)
                    .send_publish(subject.clone(), message)
                    .await?;
                ack.await
            };
            let error = match published.await {
                Ok(_) => {
                    self.streams.took();
                    return Ok(taken);
                }
                Err(error) => error,
            };
            let retry = matches!(error.kind(), Kind::TimedOut | Kind::BrokenPipe);
            if retry
                && attempt < 3
                && self.client.connection_state() == async_nats::connection::State::Connected
            {
                self.count("publish_retry");
                continue;
            }
            return Err(match error.kind() {
                Kind::MaxPayloadExceeded => Reason::TooLarge,
                Kind::StreamNotFound => Reason::Unreachable,
                Kind::TimedOut | Kind::BrokenPipe => Reason::Lost,
                _ if is_full(&error) => {
                    self.count("no_space");
                    self.streams.refused_for_space();
                    Reason::NoSpace
                }
                _ => {
                    tracing::warn!(%error, "the cluster's stream refused a signal");
                    Reason::Lost
                }
            });
        }
    }

    fn count(&self, what: &'static str) {
        if let Some(local) = self.local.get().and_then(Weak::upgrade) {
            local.count(what);
        }
    }
}

/// Whether a publish was refused because the stream is full.
/// (JetStream answers a stream past its bounds with "store failed", and a server or
/// account out of storage with a resources error.)
fn is_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    let refusal = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
    refusal.is_some_and(|refusal| {
        [
            ErrorCode::STREAM_STORE_FAILED,
            ErrorCode::STORAGE_RESOURCES_EXCEEDED,
            ErrorCode::MEMORY_RESOURCES_EXCEEDED,
            ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
            ErrorCode::INSUFFICIENT_RESOURCES,
        ]
        .contains(&refusal.error_code())
    })
}

/// Pulls a feed's signals and hands each to its handler here, until told to stop. When the
/// consumer cannot be reached (it was deleted, NATS is away) it makes it again and goes on.
/// `subscribing` is let go once the consumer exists (or could not be made).
async fn pull(
    nats: Weak<Nats>,
    feed: Feed,
    mut stop: oneshot::Receiver<()>,
    mut subscribing: Option<Subscribing>,
) {
    let handler = feed.handler().to_owned();
    let recent = Arc::new(Mutex::new(Recent::new(RECENT)));
    loop {
        let Some(this) = nats.upgrade() else { return };
        let consumer = match this.streams.ensure(&feed).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%handler, %error, "could not make a handler's consumer; trying again");
                drop(subscribing.take());
                drop(this);
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        this.streams.note(&feed, false);
        this.announce(&Announcement::of(&feed, false)).await;
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
                tracing::warn!(%handler, %error, "could not pull a handler's signals; trying again");
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
                    this.take(&feed, message, &recent).await;
                }
                Some(Err(error)) => {
                    tracing::debug!(%handler, %error, "pulling a handler's signals");
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
    /// Hands one pulled signal to its handler here and acknowledges it once handled; keeps
    /// it as a dead letter instead once it was offered too many times, and acknowledges one
    /// handled here lately without a second turn.
    async fn take(&self, feed: &Feed, message: jetstream::Message, recent: &Arc<Mutex<Recent>>) {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let (message, acker) = message.split();
        let handler = feed.handler();
        let Some(local) = self.local.get().and_then(Weak::upgrade) else {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
            return;
        };
        let id = (message.headers.as_ref())
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        if let Some(id) = &id
            && lock(recent).handled(id)
        {
            tracing::debug!(%handler, %id, "a signal handled here was offered again; acknowledged");
            local.count("duplicate");
            let _ = acker.ack().await;
            return;
        }
        if delivered > 1 {
            local.count("redelivered");
        }
        if delivered > i64::from(self.streams.settings.max_deliver) {
            tracing::warn!(%handler, delivered, "a signal was offered too many times; kept as a dead letter");
            local.count("max_deliver");
            let kind = match local.keep_copy(handler, &message.payload) {
                Ok(true) => AckKind::Ack,
                _ => AckKind::Term,
            };
            let _ = acker.ack_with(kind).await;
            return;
        }
        let (handled, told) = Handled::new();
        let taken = match feed {
            Feed::Copies { .. } => local.deliver_copy(handler, &message.payload, handled),
            Feed::Queue { .. } => local.deliver_queued(&message.payload, handled),
        };
        match taken {
            Ok(taken) if taken.delivered > 0 => {
                let unconfirmed = Subscribing::start(&self.streams.unconfirmed);
                let every = (self.streams.settings.ack_wait / 3).max(Duration::from_millis(100));
                let handled = id.map(|id| (id, recent.clone()));
                self.runtime
                    .spawn(confirm(acker, told, every, unconfirmed, handled));
            }
            // Kept as a dead letter, answered with an error, or refused for want of room to
            // keep it (counted where refused): done with.
            Ok(_) => {
                let _ = acker.ack().await;
            }
            // No signal for this feed (counted where refused): never to be offered again.
            Err(Reason::NotAccepted | Reason::TooLarge) => {
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

/// Acknowledges a copy once it has been handled (and remembers its id in its feed's
/// [`Recent`]), saying it is still being worked on every `every` until then; one dropped
/// unhandled (its host stopping) goes back at once.
async fn confirm(
    acker: jetstream::message::Acker,
    mut told: oneshot::Receiver<()>,
    every: Duration,
    unconfirmed: Subscribing,
    id: Option<(String, Arc<Mutex<Recent>>)>,
) {
    loop {
        tokio::select! {
            handled = &mut told => {
                let kind = if handled.is_ok() { AckKind::Ack } else { AckKind::Nak(None) };
                if handled.is_ok()
                    && let Some((id, recent)) = &id
                {
                    lock(recent).remember(id);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a feed remembers the ids it handled, and forgets the oldest first once it holds
    /// its capacity (so a long-lived feed's memory stays bounded).
    #[test]
    fn recent_ids_are_remembered_up_to_the_capacity() {
        let mut recent = Recent::new(2);
        recent.remember("a");
        recent.remember("b");
        recent.remember("a");
        assert!(recent.handled("a") && recent.handled("b"));
        assert!(!recent.handled("c"));
        recent.remember("c");
        assert!(!recent.handled("a"), "the oldest is forgotten");
        assert!(recent.handled("b") && recent.handled("c"));
        assert_eq!((recent.ids.len(), recent.order.len()), (2, 2));
    }
}
