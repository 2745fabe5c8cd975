//! One turn's view of keyed state: an overlay of the turn's own writes and timers over the
//! committed store, recording the version of every key it read so the commit can detect a
//! concurrent change ([`super::CommitError::Conflict`]). Nothing reaches the store until
//! [`TurnState::into_batch`] is committed; dropping the overlay discards the turn.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Batch, CommitError, NewTimer, Scope, StateError, StateStore, Timer};

/// The keyed state of one signal being handled.
pub struct TurnState {
    store: Arc<StateStore>,
    batch: Batch,
    /// Bytes of keys and values in the overlay, bounded by the handler's limit so one turn
    /// cannot hold more in memory than it could ever commit.
    overlay_bytes: u64,
}

impl TurnState {
    /// A turn with no effects yet on `scope`'s state.
    pub fn new(store: Arc<StateStore>, scope: Scope) -> Self {
        Self {
            store,
            batch: Batch {
                scope,
                ..Batch::default()
            },
            overlay_bytes: 0,
        }
    }

    /// Whose state this turn works on.
    pub fn scope(&self) -> &Scope {
        &self.batch.scope
    }

    /// Whether the turn changed nothing (no writes, timers or cancels): its commit may be
    /// skipped.
    pub fn is_empty(&self) -> bool {
        self.batch.writes.is_empty()
            && self.batch.schedule.is_empty()
            && self.batch.cancel.is_empty()
    }

    /// The value at `key`: the turn's own write if any, else the committed one (whose
    /// version the commit will check).
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(own) = self.batch.writes.get(key) {
            return Ok(own.clone());
        }
        let committed = self.store.get(&self.batch.scope, key)?;
        // The first read counts: a later read of a changed value must not hide the change.
        self.batch
            .reads
            .entry(key.to_owned())
            .or_insert(committed.version);
        Ok(committed.value)
    }

    /// Sets `key` to `value` in the turn; refused at once past the size limits.
    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), CommitError> {
        self.store.check_value(key, value.len())?;
        self.write(key, Some(value))
    }

    /// Deletes `key` in the turn; whether it was there (as the turn saw it).
    pub fn delete(&mut self, key: &str) -> Result<bool, CommitError> {
        self.store.check_value(key, 0)?;
        let existed = self.get(key)?.is_some();
        self.write(key, None)?;
        Ok(existed)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), CommitError> {
        let size = |v: &Option<Vec<u8>>| (key.len() + v.as_ref().map_or(0, Vec::len)) as u64;
        let added = size(&value);
        let removed = self.batch.writes.get(key).map_or(0, size);
        let bytes = self.overlay_bytes - removed + added;
        let limit = self.store.limits().handler_bytes;
        if bytes > limit {
            return Err(CommitError::HandlerFull {
                handler: self.batch.scope.handler.clone(),
                would: bytes,
                limit,
            });
        }
        self.overlay_bytes = bytes;
        self.batch.writes.insert(key.to_owned(), value);
        Ok(())
    }

    /// The keys starting with `prefix`, in order, as the turn sees them: committed keys with
    /// the turn's own sets added and deletes removed. (The listing itself is not checked at
    /// commit; the values a turn then reads are.)
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys: BTreeSet<String> = self
            .store
            .keys(&self.batch.scope, prefix)?
            .into_iter()
            .collect();
        for (key, value) in self.batch.writes.range(prefix.to_owned()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().collect())
    }

    /// Schedules `signal` (serialized) to be sent at `due_ms`, from this turn's scope, when
    /// the turn commits; the timer's id. Refused at once past the handler's timer quota (as
    /// committed; the commit checks again).
    pub fn schedule(&mut self, due_ms: u64, signal: Vec<u8>) -> Result<String, CommitError> {
        let handler = self.batch.scope.handler.clone();
        let limit = self.store.limits().timers_per_handler;
        let would = self.store.timers_of(&handler)? as usize + self.batch.schedule.len() + 1;
        let would = would.saturating_sub(self.batch.cancel.len());
        if would > limit {
            return Err(CommitError::TooManyTimers {
                handler,
                would,
                limit,
            });
        }
        let timer: NewTimer = Timer {
            id: Timer::new_id(),
            handler,
            scope: self.batch.scope.clone(),
            due_ms,
            signal,
        };
        let id = timer.id.clone();
        self.batch.schedule.push(timer);
        Ok(id)
    }

    /// Cancels a timer of this handler: one this turn scheduled, or a committed one not yet
    /// fired (cancelled when the turn commits); whether there was one.
    pub fn cancel(&mut self, id: &str) -> Result<bool, StateError> {
        if let Some(at) = self.batch.schedule.iter().position(|t| t.id == id) {
            self.batch.schedule.remove(at);
            return Ok(true);
        }
        if self.batch.cancel.iter().any(|c| c == id) {
            return Ok(false);
        }
        let exists = self.store.timer_exists(&self.batch.scope.handler, id)?;
        if exists {
            self.batch.cancel.push(id.to_owned());
        }
        Ok(exists)
    }

    /// The turn's effects, to commit with [`StateStore::commit`].
    pub fn into_batch(self) -> Batch {
        self.batch
    }

    /// Commits the turn's effects (nothing to do when it changed nothing).
    pub async fn commit(self) -> Result<Option<super::Committed>, CommitError> {
        if self.is_empty() {
            return Ok(None);
        }
        let store = self.store.clone();
        store.commit(self.into_batch()).await.map(Some)
    }
}
