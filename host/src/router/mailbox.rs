//! A deployed handler's mailbox and the workers that drain it.
//!
//! Each handler has one bounded mailbox and `concurrency` workers, each owning one warm
//! instance. The workers take signals from one multi-consumer queue: no lock between them,
//! and each signal wakes one worker. Before every signal a worker looks at the handler's
//! current version, so a hot swap sends queued signals to the new version while signals
//! already running finish on the old instance, which is dropped afterwards. The version that
//! handles a signal also decides whether it takes it: a message type it does not accept is
//! answered with 404, a broadcast it no longer subscribes to is counted and dropped. A worker
//! whose instance traps drops it and starts a fresh one for the next signal.
//!
//! A redeploy that changes the mailbox's shape (kind, concurrency, size) opens a new mailbox
//! whose workers start only once every worker of the old one has exited: the two never run
//! side by side, so a concurrency-1 handler handles one signal at a time through the move.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::watch;
use tracing::Instrument;

use std::time::Instant;

mod admission;

use admission::Admission;

use super::Router;
use super::callbacks::CALLBACK_CAP;
use crate::metrics::{Metrics, SignalLabels};
use crate::runtime::{HandlerKind, Instance, Outcome, Runtime, Version};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, HOST_ADDRESS, Signal, code};

/// Counters of one handler, for listings and metrics. A handler keeps them across a move to
/// a new mailbox.
#[derive(Debug, Default)]
pub struct Counters {
    /// Signals handed to the handler.
    pub handled: AtomicU64,
    /// Signals the handler answered with an error (its own or a trap).
    pub failed: AtomicU64,
    /// Traps and limit hits: instances discarded.
    pub traps: AtomicU64,
    /// Version swaps after the first deploy.
    pub swaps: AtomicU64,
    /// Signals being handled right now.
    pub active: AtomicU64,
    /// The most signals it has handled at once.
    pub peak_active: AtomicU64,
    /// Signals taken into the mailbox and not yet done with: queued, taken by a worker, or
    /// being handled. What a drain waits for.
    pub in_flight: AtomicUsize,
}

/// A deployed handler as its workers see it.
pub struct Slot {
    /// The name it was deployed under.
    pub name: Arc<str>,
    /// The address it serves: its name, or `agents`.
    pub address: String,
    current: RwLock<Arc<Version>>,
    /// Its counters, shared with the mailbox it moved from, if any.
    pub counters: Arc<Counters>,
}

impl Slot {
    /// The version new signals go to.
    pub fn current(&self) -> Arc<Version> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `version` the one its workers hand signals to from now on.
    fn set_current(&self, version: Arc<Version>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = version;
    }

    /// The address signals sent while handling `signal` come from: an agent speaks as the
    /// agent the signal is for.
    fn speaking_address(&self, kind: HandlerKind, signal: &Signal) -> String {
        if kind == HandlerKind::Agent {
            let to = match &signal.body {
                Body::Message(m) => Some(&m.to),
                Body::Reply { to, .. } | Body::ErrorReply { to, .. } => Some(to),
                _ => None,
            };
            if let Some(to) = to.filter(|to| to.starts_with(crate::signal::AGENT_PREFIX)) {
                return to.clone();
            }
            return AGENTS_ADDRESS.to_owned();
        }
        self.name.to_string()
    }
}

/// The router's handle on a handler: the slot, and the sending side of its mailbox.
/// Dropping it closes the mailbox; the workers finish what is queued and stop.
pub struct Entry {
    pub slot: Arc<Slot>,
    mailbox: async_channel::Sender<Signal>,
    workers: u32,
    /// Signals other than replies in the mailbox: at most the handler's mailbox limit. The
    /// channel holds [`CALLBACK_CAP`] more, kept for replies to the handler's own sends.
    others: Arc<AtomicUsize>,
    limit: usize,
    /// Becomes true once every worker has exited.
    exited: watch::Receiver<bool>,
    /// The mailbox this one replaced, closed, until its workers have exited.
    predecessor: Option<Box<Entry>>,
}

/// Whether a signal may use the room kept for replies.
fn is_reply(signal: &Signal) -> bool {
    matches!(signal.body, Body::Reply { .. } | Body::ErrorReply { .. })
}

/// Why a mailbox did not take a signal.
#[derive(Debug)]
pub enum Refused {
    Full(Signal),
    Closed(Signal),
}

impl Entry {
    /// Opens a mailbox for a handler and starts its workers. With a `predecessor` (the
    /// handler's previous mailbox, whose shape no longer fits), the workers wait until every
    /// worker of the predecessor has exited, and the handler keeps its counters.
    pub fn open(
        name: &str,
        address: String,
        version: Arc<Version>,
        predecessor: Option<Entry>,
        runtime: Arc<Runtime>,
        router: Weak<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = version.limits;
        let limit = limits.mailbox.max(1) as usize;
        let (tx, rx) = async_channel::bounded(limit + CALLBACK_CAP);
        let others = Arc::new(AtomicUsize::new(0));
        let predecessor = predecessor.map(Entry::retire);
        let slot = Arc::new(Slot {
            name: Arc::from(name),
            address,
            current: RwLock::new(version),
            counters: predecessor
                .as_ref()
                .map(|p| p.slot.counters.clone())
                .unwrap_or_default(),
        });
        let (exited_tx, exited) = watch::channel(false);
        let exit = Arc::new(ExitNotice(exited_tx));
        let workers = limits.concurrency.max(1);
        for _ in 0..workers {
            let worker = Worker {
                slot: slot.clone(),
                mailbox: rx.clone(),
                runtime: runtime.clone(),
                router: router.clone(),
                metrics: metrics.clone(),
                others: others.clone(),
                warm: None,
                after: predecessor.as_ref().map(|p| p.exited.clone()),
                _exit: exit.clone(),
                handles: Handles::default(),
            };
            tokio::spawn(worker.run());
        }
        Self {
            slot,
            mailbox: tx,
            workers,
            others,
            limit,
            exited,
            predecessor: predecessor.map(Box::new),
        }
    }

    /// Closes the mailbox for good (its queue is still handled) and forgets predecessors
    /// that have drained.
    fn retire(self) -> Self {
        self.mailbox.close();
        self.pruned()
    }

    fn pruned(mut self) -> Self {
        self.predecessor = self
            .predecessor
            .take()
            .filter(|p| !*p.exited.borrow())
            .map(|p| Box::new(p.pruned()));
        self
    }

    /// Makes `version` current, for this mailbox and those still draining before it, so
    /// every queued signal goes to it.
    pub fn swap(&self, version: Arc<Version>) {
        let mut entry = Some(self);
        while let Some(e) = entry {
            e.slot.set_current(version.clone());
            entry = e.predecessor.as_deref();
        }
        self.slot.counters.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a signal without waiting; a full mailbox refuses it. Replies may use the room
    /// kept for them; everything else only the mailbox's own size.
    pub fn offer(&self, signal: Signal) -> Result<(), Refused> {
        let counted = !is_reply(&signal);
        if counted && self.others.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.others.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(signal));
        }
        // Counted from here until a worker is done with it, so a drain never misses it.
        let in_flight = &self.slot.counters.in_flight;
        in_flight.fetch_add(1, Ordering::AcqRel);
        self.mailbox.try_send(signal).map_err(|e| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            if counted {
                self.others.fetch_sub(1, Ordering::AcqRel);
            }
            match e {
                async_channel::TrySendError::Full(s) => Refused::Full(s),
                async_channel::TrySendError::Closed(s) => Refused::Closed(s),
            }
        })
    }

    /// Whether this mailbox and its workers match `limits` (mailbox size and concurrency).
    pub fn fits(&self, limits: &crate::config::Limits) -> bool {
        self.limit == limits.mailbox.max(1) as usize && self.workers == limits.concurrency.max(1)
    }

    /// Signals waiting in the mailbox and in those still draining before it.
    pub fn queued(&self) -> usize {
        self.mailbox.len() + self.predecessor.as_ref().map_or(0, |p| p.queued())
    }
}

/// Held by every worker of a mailbox; the last one to exit tells the successor mailbox.
struct ExitNotice(watch::Sender<bool>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

struct Worker {
    slot: Arc<Slot>,
    mailbox: async_channel::Receiver<Signal>,
    runtime: Arc<Runtime>,
    router: Weak<Router>,
    metrics: Arc<Metrics>,
    others: Arc<AtomicUsize>,
    warm: Option<Instance>,
    /// The predecessor mailbox's exit notice: start handling only once it is true.
    after: Option<watch::Receiver<bool>>,
    _exit: Arc<ExitNotice>,
    /// This handler's metric handles, looked up once rather than per signal.
    handles: Handles,
}

/// A worker's cached metric handles: the label sets are built and hashed once.
#[derive(Default)]
struct Handles {
    handling: Option<prometheus_client::metrics::histogram::Histogram>,
    /// Signal counters by kind and verdict.
    signals: Vec<(
        &'static str,
        &'static str,
        prometheus_client::metrics::counter::Counter,
    )>,
}

impl Worker {
    async fn run(mut self) {
        if let Some(mut before) = self.after.take() {
            // An error means the notice is gone, which also means every worker exited.
            let _ = before.wait_for(|exited| *exited).await;
        }
        while let Ok(signal) = self.mailbox.recv().await {
            match &signal.body {
                Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } => {
                    // Its place in the room kept for replies is free again.
                    if let Some(router) = self.router.upgrade() {
                        router.callbacks().close(reply_to);
                    }
                }
                _ => {
                    self.others.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let version = self.slot.current();
            let span = tracing::debug_span!(
                "signal",
                id = %signal.envelope.id,
                kind = signal.kind(),
                handler = %self.slot.name,
                version = version.id,
            );
            let counters = self.slot.counters.clone();
            let now = counters.active.fetch_add(1, Ordering::Relaxed) + 1;
            if counters.peak_active.fetch_max(now, Ordering::Relaxed) < now {
                let labels = Metrics::handler(&self.slot.name);
                let gauge = self.metrics.peak_active.get_or_create(&labels);
                gauge.inner().fetch_max(now as i64, Ordering::Relaxed);
            }
            self.admit(signal, version).instrument(span).await;
            counters.active.fetch_sub(1, Ordering::Relaxed);
            counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        self.set_warm(None);
    }

    /// Hands `signal` to `version` if that version takes it.
    async fn admit(&mut self, signal: Signal, version: Arc<Version>) {
        match Admission::of(&version.description, &self.slot.name, &signal) {
            Admission::Handle => self.handle(signal, version).await,
            Admission::Refuse(failure) => self.finish(signal, Err(failure), HOST_ADDRESS.into()),
            Admission::Unsubscribed => {
                self.metrics
                    .unsubscribed
                    .get_or_create(&Metrics::handler(&self.slot.name))
                    .inc();
                tracing::debug!("dropped a broadcast the handling version does not subscribe to");
            }
        }
    }

    async fn handle(&mut self, signal: Signal, version: Arc<Version>) {
        let slot = self.slot.clone();
        slot.counters.handled.fetch_add(1, Ordering::Relaxed);
        let address = slot.speaking_address(version.description.kind, &signal);
        if self.warm.as_ref().map(Instance::version) != Some(version.id) {
            self.set_warm(None);
            let identity = crate::runtime::Identity {
                handler: slot.name.clone(),
                version: version.id,
                address: address.clone(),
            };
            match Instance::new(
                &self.runtime,
                &version,
                identity,
                self.router.clone() as Weak<dyn crate::runtime::Outbound>,
            )
            .await
            {
                Ok(instance) => self.set_warm(Some(instance)),
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "could not start an instance");
                    slot.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let failure = Failure::new(
                        code::OVERLOADED,
                        format!(
                            "handler `{}` could not start an instance: {error:#}",
                            slot.name
                        ),
                    );
                    self.finish(signal, Err(failure), address);
                    return;
                }
            }
        }
        let Some(instance) = self.warm.as_mut() else {
            return;
        };
        let started = Instant::now();
        let outcome = instance.handle(&signal, address.clone()).await;
        self.record(&signal, &outcome, started);
        if outcome.poisoned {
            self.set_warm(None);
            slot.counters.traps.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.result.is_err() {
            slot.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.finish(signal, outcome.result, address);
    }

    /// Counts a handled signal by kind and outcome, and how long it took.
    fn record(&mut self, signal: &Signal, outcome: &Outcome, started: Instant) {
        let metrics = &self.metrics;
        let name = &self.slot.name;
        let elapsed = started.elapsed().as_secs_f64();
        self.handles
            .handling
            .get_or_insert_with(|| {
                let labels = Metrics::handler(name);
                metrics.handling_seconds.get_or_create(&labels).clone()
            })
            .observe(elapsed);
        let verdict = match &outcome.result {
            Ok(_) => "ok",
            Err(_) if !outcome.poisoned => "error",
            Err(failure) if failure.code == code::LIMIT => "limit",
            Err(_) => "trap",
        };
        match verdict {
            "limit" => metrics
                .limit_hits
                .get_or_create(&Metrics::handler(name))
                .inc(),
            "trap" => metrics.traps.get_or_create(&Metrics::handler(name)).inc(),
            _ => 0,
        };
        let kind = signal.kind();
        let cached = self
            .handles
            .signals
            .iter()
            .find(|(k, v, _)| *k == kind && *v == verdict);
        match cached {
            Some((_, _, counter)) => {
                counter.inc();
            }
            None => {
                let labels = SignalLabels {
                    handler: name.to_string(),
                    kind: kind.to_owned(),
                    outcome: verdict.to_owned(),
                };
                let counter = metrics.signals.get_or_create(&labels).clone();
                counter.inc();
                self.handles.signals.push((kind, verdict, counter));
            }
        }
    }

    /// Replaces the warm instance, keeping the instances gauge true.
    fn set_warm(&mut self, instance: Option<Instance>) {
        let gauge = self
            .metrics
            .instances
            .get_or_create(&Metrics::handler(&self.slot.name));
        if self.warm.is_some() {
            gauge.dec();
        }
        if instance.is_some() {
            gauge.inc();
        }
        self.warm = instance;
    }

    fn finish(
        &self,
        signal: Signal,
        result: Result<Option<crate::signal::Json>, Failure>,
        address: String,
    ) {
        match result {
            Err(ref failure) => tracing::debug!(%failure, "handler failed"),
            Ok(_) => tracing::trace!("handled"),
        }
        if let Some(router) = self.router.upgrade() {
            router.finish(signal, result, address);
        }
    }
}
