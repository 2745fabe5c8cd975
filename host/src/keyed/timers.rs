//! Durable timers: stored with the state and committed with a turn's batch, kept in firing
//! order `(due_ms, id)` with an index by id for cancelling, and removed only once delivered
//! ([`StateStore::fired`]), so each fires at least once, after a restart too.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use super::commit::{Tables, remove_timer};
use super::tables::{TIMER_COUNT, TIMER_IDS, TIMERS};
use super::{Scope, StateError, StateStore};
use crate::db::DbError;
use crate::metrics::Metrics;

/// A timer: a serialized message sent when it is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// Its id, a UUID v7 ([`Timer::new_id`]).
    pub id: String,
    /// The handler that owns it: its quota, and the only one that may cancel it.
    pub handler: String,
    /// The scope that scheduled it (the message's sender).
    pub scope: Scope,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// The serialized message, opaque to the store.
    pub signal: Vec<u8>,
}

/// A timer a turn schedules.
pub type NewTimer = Timer;
/// A timer as stored, due or not.
pub type StoredTimer = Timer;

impl Timer {
    /// A fresh timer id.
    pub fn new_id() -> String {
        crate::signal::new_id()
    }
}

/// Most due timers one look passes over: a handler's backlog waiting for its rate costs
/// each look at most this, and timers behind more than this many waiting ones wait too.
const MAX_SCANNED: usize = 10_000;

/// Timers the timer loop passes over for now: ones offered and refused (retried later),
/// and every timer of a handler that has fired its share for the moment.
#[derive(Debug, Default)]
pub struct Skip {
    /// Timer ids, with when each is offered again.
    pub ids: HashMap<String, u64>,
    /// Handlers whose timers wait.
    pub handlers: HashSet<String>,
}

impl Skip {
    fn skips(&self, id: &str, handler: &str) -> bool {
        self.ids.contains_key(id) || self.handlers.contains(handler)
    }
}

impl StateStore {
    /// Up to `limit` timers due at `now_ms` or before, earliest first.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<StoredTimer>, StateError> {
        self.due_except(now_ms, limit, &Skip::default())
    }

    /// Up to `limit` timers due at `now_ms` or before and not in `skip`, earliest first.
    pub fn due_except(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &Skip,
    ) -> Result<Vec<StoredTimer>, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(TIMERS).map_err(DbError::from_redb)?;
        let mut due = Vec::new();
        for (scanned, item) in table
            .range::<(u64, &str)>(..(now_ms.saturating_add(1), ""))
            .map_err(DbError::from_redb)?
            .enumerate()
        {
            if due.len() >= limit || scanned >= MAX_SCANNED {
                break;
            }
            let (key, value) = item.map_err(DbError::from_redb)?;
            let ((due_ms, id), (handler, scope_handler, agent, signal)) =
                (key.value(), value.value());
            if skip.skips(id, handler) {
                continue;
            }
            due.push(Timer {
                id: id.to_owned(),
                handler: handler.to_owned(),
                scope: Scope {
                    handler: scope_handler.to_owned(),
                    agent: agent.map(str::to_owned),
                },
                due_ms,
                signal: signal.to_vec(),
            });
        }
        Ok(due)
    }

    /// When the earliest timer is due, if there is one.
    pub fn next_due(&self) -> Option<u64> {
        self.next_due_except(&Skip::default())
    }

    /// When the earliest timer not in `skip` is due.
    pub(super) fn next_due_except(&self, skip: &Skip) -> Option<u64> {
        let first = || -> Result<Option<u64>, StateError> {
            let tx = self.read()?;
            let table = tx.open_table(TIMERS).map_err(DbError::from_redb)?;
            for item in table.iter().map_err(DbError::from_redb)? {
                let (key, value) = item.map_err(DbError::from_redb)?;
                let (due, id) = key.value();
                if !skip.skips(id, value.value().0) {
                    return Ok(Some(due));
                }
            }
            Ok(None)
        };
        first().unwrap_or_else(|error| {
            tracing::error!(%error, "could not read the next timer");
            None
        })
    }

    /// Removes a timer once it was delivered (at least once: a crash before this fires it
    /// again). A timer already gone is fine. It waits for the store's writer (not an fsync).
    pub fn fired(&self, id: &str) -> Result<(), StateError> {
        self.fired_all(&[id])
    }

    /// [`StateStore::fired`] for several timers, in one transaction.
    pub fn fired_all(&self, ids: &[&str]) -> Result<(), StateError> {
        // Without an fsync: a fired timer lost in a crash only fires again.
        let tx = self.shared.db.begin_fast()?;
        let mut owners = Vec::new();
        {
            let mut tables = Tables::open(&tx)?;
            for id in ids {
                owners.extend(remove_timer(&mut tables, id)?);
            }
        }
        tx.commit().map_err(DbError::from_redb)?;
        for owner in owners {
            self.shared
                .metrics
                .timers_fired
                .get_or_create(&Metrics::handler(&owner))
                .inc();
        }
        Ok(())
    }

    /// Cancels a pending timer of `handler` at once, outside any turn, durably; whether there
    /// was one. It waits for the store's writer and an fsync: call it from a blocking thread.
    pub fn cancel_now(&self, handler: &str, id: &str) -> Result<bool, StateError> {
        if !self.timer_exists(handler, id)? {
            return Ok(false);
        }
        let tx = self.shared.db.begin_durable()?;
        let removed = {
            let mut tables = Tables::open(&tx)?;
            let owned = tables
                .timer_ids
                .get(id)
                .map_err(DbError::from_redb)?
                .is_some_and(|found| found.value().1 == handler);
            owned && remove_timer(&mut tables, id)?.is_some()
        };
        tx.commit().map_err(DbError::from_redb)?;
        if removed {
            self.shared
                .metrics
                .timers_cancelled
                .get_or_create(&Metrics::handler(handler))
                .inc();
        }
        Ok(removed)
    }

    /// Whether `handler` has a pending timer `id` (committed; a turn's own are not seen).
    pub fn timer_exists(&self, handler: &str, id: &str) -> Result<bool, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(TIMER_IDS).map_err(DbError::from_redb)?;
        let found = table.get(id).map_err(DbError::from_redb)?;
        Ok(found.is_some_and(|found| found.value().1 == handler))
    }

    /// How many pending timers `handler` has.
    pub fn timers_of(&self, handler: &str) -> Result<u64, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(TIMER_COUNT).map_err(DbError::from_redb)?;
        let count = table.get(handler).map_err(DbError::from_redb)?;
        Ok(count.map_or(0, |c| c.value()))
    }
}
