//! A deployed handler's mailbox and the workers that drain it.
//!
//! Each handler has one bounded mailbox and `concurrency` workers, each owning one warm
//! instance. Before every signal a worker looks at the handler's current version, so a hot
//! swap sends queued signals to the new version while signals already running finish on the
//! old instance, which is dropped afterwards. A worker whose instance traps drops it and
//! starts a fresh one for the next signal.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::{Mutex, mpsc};
use tracing::Instrument;

use std::time::Instant;

use super::Router;
use super::callbacks::CALLBACK_CAP;
use crate::metrics::{Metrics, SignalLabels};
use crate::runtime::{HandlerKind, Instance, Outcome, Runtime, Version};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, Signal, code};

/// Counters of one handler, for listings and metrics.
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
}

/// A deployed handler as its workers see it.
pub struct Slot {
    /// The name it was deployed under.
    pub name: Arc<str>,
    /// The address it serves: its name, or `agents`.
    pub address: String,
    current: RwLock<Arc<Version>>,
    /// Its counters.
    pub counters: Counters,
}

impl Slot {
    /// The version new signals go to.
    pub fn current(&self) -> Arc<Version> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `version` current; queued signals go to it from now on.
    pub fn swap(&self, version: Arc<Version>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = version;
        self.counters.swaps.fetch_add(1, Ordering::Relaxed);
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
    mailbox: mpsc::Sender<Signal>,
    workers: u32,
    /// Signals other than replies in the mailbox: at most the handler's mailbox limit. The
    /// channel holds [`CALLBACK_CAP`] more, kept for replies to the handler's own sends.
    others: Arc<AtomicUsize>,
    limit: usize,
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
    /// Opens a mailbox for a newly deployed handler and starts its workers.
    pub fn open(
        name: &str,
        address: String,
        version: Arc<Version>,
        runtime: Arc<Runtime>,
        router: Weak<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = version.limits;
        let limit = limits.mailbox.max(1) as usize;
        let (tx, rx) = mpsc::channel(limit + CALLBACK_CAP);
        let others = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot {
            name: Arc::from(name),
            address,
            current: RwLock::new(version),
            counters: Counters::default(),
        });
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..limits.concurrency.max(1) {
            let worker = Worker {
                slot: slot.clone(),
                mailbox: rx.clone(),
                runtime: runtime.clone(),
                router: router.clone(),
                metrics: metrics.clone(),
                others: others.clone(),
                warm: None,
            };
            tokio::spawn(worker.run());
        }
        Self {
            slot,
            mailbox: tx,
            workers: limits.concurrency.max(1),
            others,
            limit,
        }
    }

    /// Queues a signal without waiting; a full mailbox refuses it. Replies may use the room
    /// kept for them; everything else only the mailbox's own size.
    pub fn offer(&self, signal: Signal) -> Result<(), Refused> {
        let counted = !is_reply(&signal);
        if counted && self.others.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.others.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(signal));
        }
        self.mailbox.try_send(signal).map_err(|e| {
            if counted {
                self.others.fetch_sub(1, Ordering::AcqRel);
            }
            match e {
                mpsc::error::TrySendError::Full(s) => Refused::Full(s),
                mpsc::error::TrySendError::Closed(s) => Refused::Closed(s),
            }
        })
    }

    /// Whether this mailbox and its workers match `limits` (mailbox size and concurrency).
    pub fn fits(&self, limits: &crate::config::Limits) -> bool {
        self.limit == limits.mailbox.max(1) as usize && self.workers == limits.concurrency.max(1)
    }

    /// Signals waiting in the mailbox.
    pub fn queued(&self) -> usize {
        self.mailbox.max_capacity() - self.mailbox.capacity()
    }
}

struct Worker {
    slot: Arc<Slot>,
    mailbox: Arc<Mutex<mpsc::Receiver<Signal>>>,
    runtime: Arc<Runtime>,
    router: Weak<Router>,
    metrics: Arc<Metrics>,
    others: Arc<AtomicUsize>,
    warm: Option<Instance>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let next = self.mailbox.lock().await.recv().await;
            let Some(signal) = next else { break };
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
            let slot = self.slot.clone();
            slot.counters.active.fetch_add(1, Ordering::Relaxed);
            self.handle(signal, version).instrument(span).await;
            slot.counters.active.fetch_sub(1, Ordering::Relaxed);
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
    fn record(&self, signal: &Signal, outcome: &Outcome, started: Instant) {
        let labels = Metrics::handler(&self.slot.name);
        let metrics = &self.metrics;
        let elapsed = started.elapsed().as_secs_f64();
        metrics
            .handling_seconds
            .get_or_create(&labels)
            .observe(elapsed);
        let verdict = match &outcome.result {
            Ok(_) => "ok",
            Err(_) if !outcome.poisoned => "error",
            Err(failure) if failure.code == code::LIMIT => "limit",
            Err(_) => "trap",
        };
        match verdict {
            "limit" => metrics.limit_hits.get_or_create(&labels).inc(),
            "trap" => metrics.traps.get_or_create(&labels).inc(),
            _ => 0,
        };
        let labels = SignalLabels {
            handler: self.slot.name.to_string(),
            kind: signal.kind().to_owned(),
            outcome: verdict.to_owned(),
        };
        metrics.signals.get_or_create(&labels).inc();
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
