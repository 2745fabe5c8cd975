//! The instance pool's slots: how many handler instances may be alive at once, and which
//! handler may take the next one.
//!
//! The pool has `max_instances` slots (`--max-instances`). Every deployed handler holds a
//! [`Reservation`] of one slot for as long as it is deployed, so it can always run at least
//! one instance, however busy its neighbours are; a new handler that cannot be given one is
//! refused at deploy time. A handler's instances beyond its reserved ones take shared slots,
//! of which there are `max - reserved`. Every instance holds an [`InstanceSlot`] until it is
//! dropped (trap, swap, idle release, delete), which keeps the handler's
//! `switchboard_instances` gauge true.
//!
//! Reserving a slot for a new handler never waits: if every slot is in use, the pool is
//! over-committed for a moment. Then no shared slot is granted, and workers holding shared
//! slots give theirs back ([`InstanceSlot::should_yield`], [`InstanceSlot::owed`]), so the
//! new handler's first instance gets its slot within one signal of its neighbours.
//!
//! `describe` probes at deploy time run in [`PROBE_SLOTS`] slots of their own beyond
//! `max_instances`, so a deploy never competes with traffic for a slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use thiserror::Error;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::SlotLabels;

/// Instances kept beyond `max_instances` for the `describe` probes of deploys in progress;
/// a deploy waits for one when this many run at once.
pub const PROBE_SLOTS: u32 = 4;

/// Why the pool has no slot to give.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PoolFull {
    /// No slot is free for another instance of a deployed handler.
    #[error(
        "the instance pool is full: {in_use} of {max} instances in use (set by --max-instances); handler `{handler}` already has {has}"
    )]
    Instances {
        handler: String,
        in_use: u32,
        max: u32,
        has: u32,
    },
    /// Every slot is reserved by a deployed handler: a new one cannot be guaranteed one.
    #[error(
        "cannot deploy handler `{handler}`: all {max} instance slots (set by --max-instances) are reserved, one for each deployed handler"
    )]
    Reserved { handler: String, max: u32 },
}

impl PoolFull {
    /// What an operator can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            Self::Instances { .. } => {
                "retry shortly: idle instances are released after --instance-idle; or raise --max-instances, or lower the concurrency of busy handlers"
            }
            Self::Reserved { .. } => {
                "delete a handler that is no longer needed, or restart the host with a larger --max-instances"
            }
        }
    }
}

/// The slots one handler uses.
#[derive(Clone, Copy, Debug, Default)]
struct Use {
    /// Slots reserved for it (one while it is deployed).
    reserved: u32,
    /// Its instances alive now.
    live: u32,
}

impl Use {
    /// Its instances beyond its reserved slots.
    fn shared(self) -> u32 {
        self.live.saturating_sub(self.reserved)
    }
}

/// Who holds which slots. Totals are kept beside the per-handler figures so that every
/// check is a comparison.
#[derive(Debug, Default)]
struct Ledger {
    /// Reserved slots, in use or not.
    reserved: u32,
    /// Instances alive.
    live: u32,
    /// Instances alive beyond their handler's reserved slots.
    shared: u32,
    handlers: HashMap<Arc<str>, Use>,
}

impl Ledger {
    fn of(&self, handler: &str) -> Use {
        self.handlers.get(handler).copied().unwrap_or_default()
    }

    /// Applies `change` to a handler's figures and keeps the totals true.
    fn update(&mut self, handler: &Arc<str>, change: impl FnOnce(&mut Use)) {
        let entry = self.handlers.entry(handler.clone()).or_default();
        let before = *entry;
        change(entry);
        let after = *entry;
        if after.live == 0 && after.reserved == 0 {
            self.handlers.remove(handler);
        }
        self.reserved = self.reserved - before.reserved + after.reserved;
        self.live = self.live - before.live + after.live;
        self.shared = self.shared - before.shared() + after.shared();
    }

    /// Whether shared instances hold slots that reservations are owed.
    fn overcommitted(&self, max: u32) -> bool {
        self.reserved + self.shared > max
    }
}

/// The slots of one host's instances.
#[derive(Debug)]
pub struct InstancePool {
    max: u32,
    ledger: Mutex<Ledger>,
    /// Mirrors [`Ledger::overcommitted`], so that workers can check it after every signal
    /// without taking the lock.
    overcommitted: AtomicBool,
    /// Woken when a slot is freed.
    freed: Notify,
    /// Woken when the pool becomes over-committed.
    owed: Notify,
    probes: Arc<Semaphore>,
}

/// How the pool's slots are used at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Slots in all (`--max-instances`).
    pub max: u32,
    /// Slots reserved for deployed handlers, in use or not.
    pub reserved: u32,
    /// Instances alive.
    pub in_use: u32,
    /// Instances alive beyond their handler's reserved slot.
    pub shared: u32,
}

impl Usage {
    /// Sets the `switchboard_instance_slots` gauges to these figures.
    pub fn record(&self, gauges: &Family<SlotLabels, Gauge>) {
        for (state, value) in [
            ("max", self.max),
            ("reserved", self.reserved),
            ("in_use", self.in_use),
            ("shared", self.shared),
        ] {
            let labels = SlotLabels {
                state: state.to_owned(),
            };
            gauges.get_or_create(&labels).set(i64::from(value));
        }
    }
}

impl InstancePool {
    /// A pool of `max` slots (at least one).
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            ledger: Mutex::default(),
            overcommitted: AtomicBool::new(false),
            freed: Notify::new(),
            owed: Notify::new(),
            probes: Arc::new(Semaphore::new(PROBE_SLOTS as usize)),
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an over-commitment change, waking workers that may have to give a slot back.
    fn settle(&self, ledger: &Ledger) {
        let over = ledger.overcommitted(self.max);
        if !self.overcommitted.swap(over, Ordering::AcqRel) && over {
            self.owed.notify_waiters();
        }
    }

    /// How the slots are used now.
    pub fn usage(&self) -> Usage {
        let ledger = self.ledger();
        Usage {
            max: self.max,
            reserved: ledger.reserved,
            in_use: ledger.live,
            shared: ledger.shared,
        }
    }

    /// Whether `handler` could be deployed now: it holds a reservation (it is deployed), or
    /// one is free. For refusing a deploy before compiling; [`InstancePool::reserve`] decides.
    pub fn check_room(&self, handler: &str) -> Result<(), PoolFull> {
        let ledger = self.ledger();
        if ledger.of(handler).reserved > 0 || ledger.reserved < self.max {
            return Ok(());
        }
        Err(PoolFull::Reserved {
            handler: handler.to_owned(),
            max: self.max,
        })
    }

    /// Reserves one slot for `handler` while the returned guard lives. Refused when every
    /// slot is already reserved.
    pub fn reserve(self: &Arc<Self>, handler: &str) -> Result<Reservation, PoolFull> {
        let mut ledger = self.ledger();
        if ledger.reserved >= self.max {
            return Err(PoolFull::Reserved {
                handler: handler.to_owned(),
                max: self.max,
            });
        }
        let handler: Arc<str> = Arc::from(handler);
        ledger.update(&handler, |u| u.reserved += 1);
        self.settle(&ledger);
        Ok(Reservation {
            pool: self.clone(),
            handler,
        })
    }

    /// Takes a slot for an instance of `handler` if one is free: its reserved slot, else a
    /// shared one. `gauge` counts the handler's instances while the slot is held.
    pub fn try_acquire(
        self: &Arc<Self>,
        handler: &Arc<str>,
        gauge: Gauge,
    ) -> Result<InstanceSlot, PoolFull> {
        let mut ledger = self.ledger();
        let has = ledger.of(handler);
        let free = ledger.live < self.max;
        let granted = if has.live < has.reserved {
            free
        } else {
            free && ledger.reserved + ledger.shared < self.max
        };
        if !granted {
            return Err(PoolFull::Instances {
                handler: handler.to_string(),
                in_use: ledger.live,
                max: self.max,
                has: has.live,
            });
        }
        ledger.update(handler, |u| u.live += 1);
        self.settle(&ledger);
        drop(ledger);
        gauge.inc();
        Ok(InstanceSlot {
            pool: self.clone(),
            holder: Holder::Handler {
                name: handler.clone(),
                gauge,
            },
        })
    }

    /// Like [`InstancePool::try_acquire`], waiting up to `wait` for a slot to be freed.
    pub async fn acquire(
        self: &Arc<Self>,
        handler: &Arc<str>,
        gauge: Gauge,
        wait: Duration,
    ) -> Result<InstanceSlot, PoolFull> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let full = match self.try_acquire(handler, gauge.clone()) {
                Ok(slot) => return Ok(slot),
                Err(full) => full,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(full);
            }
        }
    }

    /// A slot for a deploy's `describe` probe, beyond `max_instances`; waits while
    /// [`PROBE_SLOTS`] probes run.
    pub async fn probe(self: &Arc<Self>) -> InstanceSlot {
        let permit = self
            .probes
            .clone()
            .acquire_owned()
            .await
            .expect("the probe semaphore is never closed");
        InstanceSlot {
            pool: self.clone(),
            holder: Holder::Probe(permit),
        }
    }

    fn release(&self, handler: &Arc<str>, change: impl FnOnce(&mut Use)) {
        let mut ledger = self.ledger();
        ledger.update(handler, change);
        self.settle(&ledger);
        drop(ledger);
        self.freed.notify_waiters();
    }

    /// Whether `handler` holds a shared slot that a reservation is owed.
    fn owes(&self, handler: &str) -> bool {
        if !self.overcommitted.load(Ordering::Acquire) {
            return false;
        }
        let ledger = self.ledger();
        ledger.overcommitted(self.max) && ledger.of(handler).shared() > 0
    }
}

/// A slot reserved for a deployed handler; dropping it gives the slot back.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<InstancePool>,
    handler: Arc<str>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.release(&self.handler, |u| u.reserved -= 1);
    }
}

#[derive(Debug)]
enum Holder {
    Handler { name: Arc<str>, gauge: Gauge },
    Probe(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit),
}

/// The slot an instance runs in, held for as long as the instance lives.
#[derive(Debug)]
pub struct InstanceSlot {
    pool: Arc<InstancePool>,
    holder: Holder,
}

impl InstanceSlot {
    /// Whether this instance's handler holds a shared slot that a reservation is owed: the
    /// instance should be dropped once its signal is done.
    pub fn should_yield(&self) -> bool {
        match &self.holder {
            Holder::Handler { name, .. } => self.pool.owes(name),
            Holder::Probe(_) => false,
        }
    }

    /// Resolves once this instance should be dropped to pay a reservation its slot (see
    /// [`InstanceSlot::should_yield`]); for an idle instance.
    pub async fn owed(&self) {
        loop {
            let owed = self.pool.owed.notified();
            tokio::pin!(owed);
            owed.as_mut().enable();
            if self.should_yield() {
                return;
            }
            owed.await;
        }
    }
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        if let Holder::Handler { name, gauge } = &self.holder {
            gauge.dec();
            self.pool.release(name, |u| u.live -= 1);
        }
    }
}

#[cfg(test)]
mod tests;
