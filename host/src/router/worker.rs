//! The worker loop: takes a signal from a handler's mailbox and runs it on a warm instance.
//!
//! Before every signal a worker looks at the handler's current version, so a hot swap sends
//! queued signals to the new version while signals already running finish on the old
//! instance, which is dropped afterwards. The version that handles a signal also decides
//! whether it takes it ([`admission`]): a message type it does not accept is answered with
//! 404, a broadcast it no longer subscribes to is counted and dropped. A worker whose
//! instance traps drops it and starts a fresh one for the next signal; so does one whose
//! call was abandoned at its deadline or because the handler was deleted ([`call`]). An idle
//! worker releases its instance ([`warm`]).

mod admission;
mod call;
mod commit;
mod warm;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use admission::Admission;
pub(super) use call::Stop;
use commit::Settled;

use super::Router;
use super::mailbox::{Queued, Slot};
use super::turns::agent_of;
use crate::metrics::{Metrics, SignalLabels};
use crate::runtime::{Instance, Outcome, Runtime, Version};
use crate::signal::{Body, Failure, HOST_ADDRESS, Signal, code};

/// What a mailbox hands a worker it starts.
pub(super) struct Worker {
    pub slot: Arc<Slot>,
    pub mailbox: async_channel::Receiver<Queued>,
    pub runtime: Arc<Runtime>,
    pub router: Weak<Router>,
    pub metrics: Arc<Metrics>,
    /// The mailbox's count of queued signals other than replies.
    pub others: Arc<AtomicUsize>,
    /// The mailbox's queued bytes.
    pub bytes: Arc<super::queue_bytes::MailboxBytes>,
    /// The predecessor mailbox's exit notice: start handling only once it is true.
    pub after: Option<watch::Receiver<bool>>,
    /// Fires when the handler is deleted: the call in progress is abandoned.
    pub stop: Stop,
    /// For an agent handler, the mailbox's turns: after a signal for an agent, the worker
    /// takes that agent's next one itself.
    pub turns: Option<Arc<super::turns::Turns<Queued>>>,
    /// Dropped when the worker exits; the last one to go tells the successor mailbox.
    #[expect(dead_code, reason = "held for its Drop")]
    pub exit: Arc<ExitNotice>,
}

impl Worker {
    /// Starts the worker's loop on the runtime.
    pub fn spawn(self) {
        let running = Running {
            worker: self,
            warm: None,
            handles: Handles::default(),
        };
        tokio::spawn(running.run());
    }
}

/// Held by every worker of a mailbox; the last one to exit tells the successor mailbox.
pub(super) struct ExitNotice(pub watch::Sender<bool>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A worker at work: its warm instance and cached metric handles.
struct Running {
    worker: Worker,
    warm: Option<Instance>,
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

impl Running {
    async fn run(mut self) {
        if let Some(mut before) = self.worker.after.take() {
            // An error means the notice is gone, which also means every worker exited.
            let _ = before.wait_for(|exited| *exited).await;
        }
        while let Some(queued) = self.next_signal().await {
            let mut next = Some(queued);
            while let Some(queued) = next.take() {
                let agent = self
                    .worker
                    .turns
                    .as_ref()
                    .and(agent_of(&queued.signal))
                    .map(str::to_owned);
                self.take(queued).await;
                if let (Some(turns), Some(agent)) = (&self.worker.turns, agent) {
                    next = turns.next(&agent);
                }
            }
        }
        self.set_warm(None);
    }

    /// Handles one signal taken from the mailbox (or from its agent's line), settles the
    /// mailbox's accounts of it, and tells whoever waits to hear it was handled.
    async fn take(&mut self, Queued { signal, handled }: Queued) {
        self.worker.bytes.release(signal.size());
        match &signal.body {
            Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } => {
                // Its place in the room kept for replies is free again.
                if let Some(router) = self.worker.router.upgrade() {
                    router.callbacks().close(reply_to);
                }
            }
            _ => {
                self.worker.others.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let version = self.worker.slot.current();
        let span = tracing::debug_span!(
            "signal",
            id = %signal.envelope.id,
            kind = signal.kind(),
            handler = %self.worker.slot.name,
            version = version.id,
        );
        let counters = self.worker.slot.counters.clone();
        let now = counters.active.fetch_add(1, Ordering::Relaxed) + 1;
        if counters.peak_active.fetch_max(now, Ordering::Relaxed) < now {
            let labels = Metrics::handler(&self.worker.slot.name);
            let gauge = self.worker.metrics.peak_active.get_or_create(&labels);
            gauge.inner().fetch_max(now as i64, Ordering::Relaxed);
        }
        self.admit(signal, version).instrument(span).await;
        self.give_back_if_owed();
        counters.active.fetch_sub(1, Ordering::Relaxed);
        counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(handled) = handled {
            handled.done();
        }
    }

    /// Hands `signal` to `version` if that version takes it.
    async fn admit(&mut self, signal: Signal, version: Arc<Version>) {
        // A message answered while it waited (its deadline passed in the queue, or it was
        // answered from another turn) is not handled: its sender already has its answer.
        if matches!(signal.body, Body::Message(_))
            && let Some(router) = self.worker.router.upgrade()
            && !router.is_open(signal.id())
        {
            tracing::debug!("skipped a message answered while it waited");
            return;
        }
        let name = &self.worker.slot.name;
        let opened = self
            .worker
            .runtime
            .config()
            .open_to_clients
            .iter()
            .any(|h| h == "*" || **h == **name);
        match Admission::of(&version.description, name, opened, &signal) {
            Admission::Handle => self.handle(signal, version).await,
            Admission::Refuse(failure) => self.finish(signal, Err(failure), HOST_ADDRESS, false),
            Admission::Unsubscribed => {
                self.worker
                    .metrics
                    .unsubscribed
                    .get_or_create(&Metrics::handler(&self.worker.slot.name))
                    .inc();
                tracing::debug!("dropped a broadcast the handling version does not subscribe to");
            }
        }
    }

    async fn handle(&mut self, signal: Signal, version: Arc<Version>) {
        let slot = self.worker.slot.clone();
        slot.counters.handled.fetch_add(1, Ordering::Relaxed);
        let address = slot.speaking_address(version.description.kind, &signal);
        let watch = self.worker.stop.watch();
        if self.warm.as_ref().map(Instance::version) != Some(version.id) {
            self.set_warm(None);
            let identity = crate::runtime::Identity {
                handler: slot.name.clone(),
                version: version.id,
                address: address.clone(),
            };
            if let Err(failure) = self.start(&version, identity, &watch).await {
                slot.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.finish(signal, Err(failure), &address, false);
                return;
            }
        }
        let started = Instant::now();
        let mut attempt = 1;
        let outcome = loop {
            let Some(instance) = self.warm.as_mut() else {
                return;
            };
            let call = instance.handle(&signal, address.clone());
            let outcome = match call::guarded(call, version.limits.deadline, &watch).await {
                Ok(outcome) => outcome,
                Err(cut) => Outcome {
                    result: Err(cut.failure(&slot.name)),
                    poisoned: true,
                    later: false,
                },
            };
            let turn = self
                .warm
                .as_mut()
                .map(Instance::take_turn)
                .unwrap_or_default();
            match self.worker.settle(turn, outcome, attempt).await {
                Settled::Done(outcome) => break outcome,
                Settled::Again => attempt += 1,
            }
        };
        self.record(&signal, &outcome, started);
        if outcome.poisoned {
            self.set_warm(None);
            slot.counters.traps.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.result.is_err() {
            slot.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.finish(signal, outcome.result, &address, outcome.later);
    }

    /// Counts a handled signal by kind and outcome, and how long it took.
    fn record(&mut self, signal: &Signal, outcome: &Outcome, started: Instant) {
        let metrics = &self.worker.metrics;
        let name = &self.worker.slot.name;
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
            // Abandoned calls (see `call`): past the deadline, or the handler was deleted.
            Err(failure) if failure.code == code::TIMEOUT => "deadline",
            Err(failure) if failure.code == code::OVERLOADED => "stopped",
            Err(_) => "trap",
        };
        match verdict {
            "limit" | "deadline" => metrics
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

    fn finish(
        &self,
        signal: Signal,
        result: Result<Option<crate::signal::Json>, Failure>,
        address: &str,
        later: bool,
    ) {
        match result {
            // A message's failure goes back to its sender; a broadcast's has nobody to go to,
            // so it is logged: its code only (a description can be as long as a payload),
            // and rate-limited per handler, so a storm of failures cannot flood the log.
            Err(ref failure) if !matches!(signal.body, Body::Message(_)) && self.may_warn() => {
                tracing::warn!(
                    handler = %self.worker.slot.name,
                    id = %signal.envelope.id,
                    kind = signal.kind(),
                    code = failure.code,
                    "handler failed on a signal"
                )
            }
            Err(ref failure) => tracing::debug!(%failure, "handler failed"),
            Ok(_) => tracing::trace!("handled"),
        }
        if let Some(router) = self.worker.router.upgrade() {
            router.finish(&signal, result, address, later);
        }
    }

    /// Whether a warning about this worker's handler may be logged now.
    fn may_warn(&self) -> bool {
        self.worker
            .router
            .upgrade()
            .is_some_and(|router| router.may_warn(&self.worker.slot.name))
    }
}
