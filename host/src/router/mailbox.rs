//! A deployed handler's mailbox, and the workers ([`super::worker`]) it starts to drain it.
//!
//! Each handler has one bounded mailbox and `concurrency` workers, each owning one warm
//! instance. The workers take signals from one multi-consumer queue: no lock between them,
//! and each signal wakes one worker. The mailbox keeps [`CALLBACK_CAP`] places beyond its
//! size for replies to the handler's own sends. Besides its count, a mailbox is bounded in
//! bytes, and draws on the host's budget of queued bytes ([`super::queue_bytes`]).
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

use super::Router;
use super::callbacks::CALLBACK_CAP;
use super::queue_bytes::{MailboxBytes, QueueBudget};
use super::turns::{Turns, agent_of};
use super::worker::{ExitNotice, Stop, Worker};
use crate::address::{Address, Kind};
use crate::metrics::Metrics;
use crate::runtime::{HandlerKind, Runtime, Version};
use crate::signal::{AGENTS_ADDRESS, Body, Signal};
use crate::transport::{Handled, OverBytes, Reason, Undelivered};

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
    pub(super) fn speaking_address(&self, kind: HandlerKind, signal: &Signal) -> String {
        if kind == HandlerKind::Agent {
            let to = match &signal.body {
                Body::Message(m) => Some(&m.to),
                Body::Reply { to, .. } | Body::ErrorReply { to, .. } => Some(to),
                _ => None,
            };
            if let Some(to) = to.filter(|to| Address::kind_of(to) == Kind::Agent) {
                return to.clone();
            }
            return AGENTS_ADDRESS.to_owned();
        }
        String::from(&*self.name)
    }
}

/// A signal in a mailbox, with whom to tell once it has been handled (a broadcast's copy
/// from a stream, acknowledged then).
pub(super) struct Queued {
    pub signal: Signal,
    pub handled: Option<Handled>,
}

/// The router's handle on a handler: the slot, and the sending side of its mailbox.
/// Dropping it closes the mailbox; the workers finish what is queued and stop.
pub struct Entry {
    pub slot: Arc<Slot>,
    mailbox: async_channel::Sender<Queued>,
    workers: u32,
    /// Signals other than replies in the mailbox: at most the handler's mailbox limit. The
    /// channel holds [`CALLBACK_CAP`] more, kept for replies to the handler's own sends.
    others: Arc<AtomicUsize>,
    limit: usize,
    /// Bytes of the signals queued, shared with the mailbox it moved from.
    bytes: Arc<MailboxBytes>,
    /// Becomes true once every worker has exited.
    exited: watch::Receiver<bool>,
    /// Abandons the calls its workers are in.
    stop: Stop,
    /// The mailbox this one replaced, closed, until its workers have exited.
    predecessor: Option<Box<Entry>>,
    /// For an agent handler: one turn at a time per agent.
    turns: Option<Arc<Turns<Queued>>>,
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
    /// Its bytes would pass the mailbox's byte bound or the host's queue budget.
    OverBytes(Signal, OverBytes),
}

impl Refused {
    /// The refusal as the signal's sender gets it.
    pub fn undelivered(self) -> Undelivered {
        match self {
            Self::Full(signal) => Undelivered::new(signal, Reason::Overloaded),
            Self::OverBytes(signal, over) => Undelivered::over_bytes(signal, over),
            Self::Closed(signal) => Undelivered::new(signal, Reason::ShuttingDown),
        }
    }
}

impl Entry {
    /// Opens a mailbox for a handler and starts its workers. With a `predecessor` (the
    /// handler's previous mailbox, whose shape no longer fits), the workers wait until every
    /// worker of the predecessor has exited, and the handler keeps its counters and its
    /// account of queued bytes; a new handler opens one drawing on `budget`.
    #[expect(
        clippy::too_many_arguments,
        reason = "called from one place, the router"
    )]
    pub fn open(
        name: &str,
        address: String,
        version: Arc<Version>,
        predecessor: Option<Entry>,
        budget: &Arc<QueueBudget>,
        runtime: Arc<Runtime>,
        router: Weak<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = version.limits;
        let limit = limits.mailbox.max(1) as usize;
        let (tx, rx) = async_channel::bounded(limit + CALLBACK_CAP);
        let others = Arc::new(AtomicUsize::new(0));
        let predecessor = predecessor.map(Entry::retire);
        let bytes = predecessor.as_ref().map_or_else(
            || MailboxBytes::new(runtime.config().mailbox_bytes, budget.clone()),
            |p| p.bytes.clone(),
        );
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
        let stop = Stop::default();
        let turns = (Address::kind_of(&slot.address) == Kind::Agent).then(Arc::default);
        for _ in 0..workers {
            Worker::spawn(Worker {
                slot: slot.clone(),
                mailbox: rx.clone(),
                runtime: runtime.clone(),
                router: router.clone(),
                metrics: metrics.clone(),
                others: others.clone(),
                bytes: bytes.clone(),
                after: predecessor.as_ref().map(|p| p.exited.clone()),
                stop: stop.clone(),
                exit: exit.clone(),
                turns: turns.clone(),
            });
        }
        Self {
            slot,
            mailbox: tx,
            workers,
            others,
            limit,
            bytes,
            exited,
            stop,
            predecessor: predecessor.map(Box::new),
            turns,
        }
    }

    /// Abandons the calls in progress on this mailbox's workers and on those of the
    /// mailboxes still draining before it; each sender gets 503. Queued signals are still
    /// handled. Used when the handler is deleted.
    pub fn stop(&self) {
        let mut entry = Some(self);
        while let Some(e) = entry {
            e.stop.stop();
            entry = e.predecessor.as_deref();
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
    /// kept for them; everything else only the mailbox's own size. The signal's bytes are
    /// refused past the mailbox's byte bound or the host's budget, unless it is `promised`
    /// room: a reply to an open callback send of this handler. `handled` is told once it has
    /// been handled (dropped untold if it is refused).
    pub fn offer(
        &self,
        signal: Signal,
        promised: bool,
        handled: Option<Handled>,
    ) -> Result<(), Refused> {
        let counted = !is_reply(&signal);
        if counted && self.others.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.others.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(signal));
        }
        let size = signal.size();
        if let Err(over) = self.bytes.charge(size, promised) {
            if counted {
                self.others.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Refused::OverBytes(signal, over));
        }
        // Counted from here until a worker is done with it, so a drain never misses it.
        let in_flight = &self.slot.counters.in_flight;
        in_flight.fetch_add(1, Ordering::AcqRel);
        let queue = |queued| self.mailbox.try_send(queued);
        let agent = self
            .turns
            .as_ref()
            .and(agent_of(&signal))
            .map(str::to_owned);
        let queued = Queued { signal, handled };
        let queued = match (&self.turns, agent) {
            (Some(turns), Some(agent)) => turns.enter(&agent, queued, queue),
            _ => queue(queued),
        };
        queued.map_err(|e| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            self.bytes.release(size);
            if counted {
                self.others.fetch_sub(1, Ordering::AcqRel);
            }
            match e {
                async_channel::TrySendError::Full(q) => Refused::Full(q.signal),
                async_channel::TrySendError::Closed(q) => Refused::Closed(q.signal),
            }
        })
    }

    /// The address a message offered here is delivered to, and that alone may answer it:
    /// the handler's name, or the agent the message is for.
    pub fn addressee(&self, signal: &Signal) -> String {
        let kind = self.slot.current().description.kind;
        self.slot.speaking_address(kind, signal)
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
