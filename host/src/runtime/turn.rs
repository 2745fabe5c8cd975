//! A turn: what one signal's handling does that takes effect only when it commits. Its
//! writes are an overlay on the keyed store (reads see them first), with the version of
//! every key read for optimistic concurrency; its timers and its [`Output`]s wait with them.
//! Committed together ([`Turn::into_parts`] gives the store's batch and the outputs), or
//! discarded together.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::held::{Charge, HeldBudget};
use super::outbound::Output;
use crate::keyed::{Batch, CommitError, KeptPush, MAX_KEY_BYTES, NewTimer, Scope, StateStore};
use crate::signal::{Failure, Signal, code};

/// Most distinct keys one signal may read or write: each is remembered until it commits.
pub const MAX_KEYS_PER_TURN: usize = 100_000;

/// One signal's pending effects.
#[derive(Default)]
pub struct Turn {
    /// Whose state it reads and writes; `None` outside a signal (instance start, describe).
    scope: Option<Scope>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Bytes of keys and values written so far, bounded so a turn cannot hold more than
    /// its handler may store.
    written: u64,
    reads: BTreeMap<String, u64>,
    schedule: Vec<NewTimer>,
    cancel: Vec<String>,
    /// Pushes kept until acknowledged, stored with the batch (each is an output too).
    keep: Vec<KeptPush>,
    outputs: Vec<Output>,
    /// Bytes of the signals and timers held, bounded like a mailbox's bytes.
    held: usize,
    /// What it holds (writes, signals, timers), charged to the host-wide budget.
    charge: Charge,
}

/// What a turn leaves to commit: the store's batch (if it changes anything) and the signals
/// to release after.
pub struct Parts {
    pub batch: Option<Batch>,
    pub outputs: Vec<Output>,
    /// What the turn held, given back to the host-wide budget when this drops: after the
    /// commit or the discard.
    pub charge: Charge,
}

impl Turn {
    /// A fresh turn in `scope`, holding what it writes against `budget`.
    pub fn new(scope: Option<Scope>, budget: &Arc<HeldBudget>) -> Self {
        Self {
            scope,
            charge: Charge::to(budget),
            ..Self::default()
        }
    }

    /// Holds an output until the turn commits (its bytes counted by [`Turn::make_room`]).
    pub fn hold(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// Counts `bytes` more held until the turn commits, or refuses them (413) past `limit`:
    /// what one signal sends waits in the host's memory until it commits, so it is bounded
    /// like a mailbox's bytes.
    pub fn make_room(&mut self, bytes: usize, limit: usize) -> Result<(), Failure> {
        let held = self.held.saturating_add(bytes);
        if held > limit {
            return Err(Failure::new(
                code::TOO_LARGE,
                format!("one signal may send at most {limit} bytes of signals and timers before it commits (the larger of the host setting `mailbox_bytes` and 16 of the largest messages)"),
            )
            .with_help("send references to the data, or split the work over several signals"));
        }
        self.charge.grow(bytes as u64)?;
        self.held = held;
        Ok(())
    }

    /// Whether the turn holds anything to commit or release.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.schedule.is_empty()
            && self.cancel.is_empty()
            && self.keep.is_empty()
            && self.outputs.is_empty()
    }

    fn scope(&self) -> Result<&Scope, Failure> {
        self.scope.as_ref().ok_or_else(|| {
            Failure::new(
                code::BAD_REQUEST,
                "keyed state is available only while handling a signal",
            )
        })
    }

    /// The value at `key`: the turn's own write, or the store's, whose version is noted.
    pub fn get(&mut self, store: &StateStore, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        check_key(key)?;
        if let Some(written) = self.writes.get(key) {
            return Ok(written.clone());
        }
        let scope = self.scope()?;
        if !self.reads.contains_key(key) {
            self.room_for_key()?;
        }
        let found = store.get(scope, key).map_err(store_failure)?;
        self.reads.entry(key.to_owned()).or_insert(found.version);
        Ok(found.value)
    }

    /// Sets `key` in the turn.
    pub fn set(&mut self, store: &StateStore, key: String, value: Vec<u8>) -> Result<(), Failure> {
        check_key(&key)?;
        self.scope()?;
        store
            .check_value(&key, value.len())
            .map_err(|e| commit_failure(&e))?;
        let limit = store.limits().handler_bytes;
        let size = (key.len() + value.len()) as u64;
        // Writing a key again replaces what the turn held for it.
        let replaced = self.writes.get(&key).map_or(0, |old| {
            (key.len() + old.as_ref().map_or(0, Vec::len)) as u64
        });
        if !self.writes.contains_key(&key) {
            self.room_for_key()?;
        }
        let written = self.written - replaced;
        if written.saturating_add(size) > limit {
            return Err(Failure::new(
                code::LIMIT,
                format!(
                    "one signal may write at most {limit} bytes of state (the host setting `state_handler_bytes`)"
                ),
            ));
        }
        if size > replaced {
            self.charge.grow(size - replaced)?;
        } else {
            self.charge.shrink(replaced - size);
        }
        self.written = written + size;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Refuses one more distinct key past [`MAX_KEYS_PER_TURN`] (507).
    fn room_for_key(&self) -> Result<(), Failure> {
        if self.reads.len() + self.writes.len() >= MAX_KEYS_PER_TURN {
            return Err(Failure::new(
                code::LIMIT,
                format!("one signal may read or write at most {MAX_KEYS_PER_TURN} keys"),
            )
            .with_help("split the work over several signals"));
        }
        Ok(())
    }

    /// Removes `key` in the turn; whether it was there.
    pub fn delete(&mut self, store: &StateStore, key: String) -> Result<bool, Failure> {
        let existed = self.get(store, &key)?.is_some();
        if let Some(Some(old)) = self.writes.get(&key) {
            let freed = (key.len() + old.len()) as u64;
            self.written -= freed;
            self.charge.shrink(freed);
        }
        self.writes.insert(key, None);
        Ok(existed)
    }

    /// The keys starting with `prefix`, as this turn sees them.
    pub fn keys(&mut self, store: &StateStore, prefix: &str) -> Result<Vec<String>, Failure> {
        let stored = store.keys(self.scope()?, prefix).map_err(store_failure)?;
        let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (key, value) in self.writes.range(prefix.to_owned()..) {
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

    /// Schedules a timer with the turn.
    pub fn schedule(&mut self, timer: NewTimer) {
        self.schedule.push(timer);
    }

    /// Cancels a timer with the turn: a timer scheduled in this same turn is dropped at
    /// once; a stored one is cancelled when the turn commits. Whether there was one.
    pub fn cancel(&mut self, store: &StateStore, handler: &str, id: &str) -> Result<bool, Failure> {
        if let Some(at) = self.schedule.iter().position(|t| t.id == id) {
            self.schedule.remove(at);
            return Ok(true);
        }
        let stored = store.timer_exists(handler, id).map_err(store_failure)?;
        if stored && !self.cancel.iter().any(|c| c == id) {
            self.cancel.push(id.to_owned());
        }
        Ok(stored)
    }

    /// Keeps a push for its user with the turn's batch; it goes out as an output too.
    pub fn keep(&mut self, push: KeptPush, signal: Signal) -> Result<(), Failure> {
        self.scope()?;
        self.keep.push(push);
        self.outputs.push(Output::Push(signal));
        Ok(())
    }

    /// Timers this turn schedules.
    pub fn scheduled(&self) -> usize {
        self.schedule.len()
    }

    /// The batch to commit (none if the turn changes no state and no timers) and the
    /// outputs to release after it.
    pub fn into_parts(self) -> Parts {
        let changes = !(self.writes.is_empty()
            && self.schedule.is_empty()
            && self.cancel.is_empty()
            && self.keep.is_empty());
        let batch = match (changes, self.scope) {
            (true, Some(scope)) => Some(Batch {
                scope,
                writes: self.writes,
                reads: self.reads,
                schedule: self.schedule,
                cancel: self.cancel,
                keep: self.keep,
            }),
            _ => None,
        };
        Parts {
            batch,
            outputs: self.outputs,
            charge: self.charge,
        }
    }
}

/// Refuses a key longer than the store takes.
fn check_key(key: &str) -> Result<(), Failure> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Failure::new(
            code::TOO_LARGE,
            format!(
                "a state key of {} bytes is past the limit of {MAX_KEY_BYTES} bytes",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The failure a guest (or a sender) gets for a refused commit.
pub fn commit_failure(error: &CommitError) -> Failure {
    Failure::new(u32::from(error.code()), error.to_string())
}

fn store_failure(error: crate::keyed::StateError) -> Failure {
    Failure::new(u32::from(error.code()), error.to_string())
}

/// The store a turn works on, when the host has one.
pub type Store = Option<Arc<StateStore>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::keyed::StateLimits;
    use crate::metrics::Metrics;

    fn store() -> Arc<StateStore> {
        let limits = StateLimits {
            value_bytes: 16,
            handler_bytes: 64,
            timers_per_handler: 10,

            ..StateLimits::default()
        };
        StateStore::open(
            Db::in_memory().unwrap(),
            limits,
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    /// What a turn holds is bounded in bytes: past the limit a send is refused (413) and
    /// nothing more is counted.
    #[test]
    fn held_bytes_are_bounded() {
        let mut turn = Turn::new(None, &HeldBudget::new(u64::MAX));
        turn.make_room(60, 100).unwrap();
        assert_eq!(turn.make_room(41, 100).unwrap_err().code, 413);
        turn.make_room(40, 100).unwrap();
        assert_eq!(turn.make_room(1, 100).unwrap_err().code, 413);
    }

    /// Reads see the turn's own writes and deletes; keys merge the overlay with the store.
    #[tokio::test]
    async fn reads_see_the_turns_own_writes() {
        let store = store();
        let scope = Scope::agent("counter", "alice");
        let mut first = Turn::new(Some(scope.clone()), &HeldBudget::new(u64::MAX));
        first.set(&store, "a".into(), b"1".to_vec()).unwrap();
        first.set(&store, "b".into(), b"2".to_vec()).unwrap();
        store
            .commit(first.into_parts().batch.unwrap())
            .await
            .unwrap();

        let mut turn = Turn::new(Some(scope), &HeldBudget::new(u64::MAX));
        assert_eq!(turn.get(&store, "a").unwrap(), Some(b"1".to_vec()));
        turn.set(&store, "a".into(), b"9".to_vec()).unwrap();
        turn.set(&store, "c".into(), b"3".to_vec()).unwrap();
        assert!(turn.delete(&store, "b".into()).unwrap());
        assert!(!turn.delete(&store, "zz".into()).unwrap());
        assert_eq!(turn.get(&store, "a").unwrap(), Some(b"9".to_vec()));
        assert_eq!(turn.get(&store, "b").unwrap(), None);
        assert_eq!(turn.keys(&store, "").unwrap(), ["a", "c"]);
        let parts = turn.into_parts();
        let batch = parts.batch.unwrap();
        assert_eq!(batch.reads.len(), 3, "a, b and zz were read from the store");
    }

    /// A turn that only reads commits nothing; one outside a signal has no state.
    #[test]
    fn a_read_only_turn_has_no_batch() {
        let store = store();
        let mut turn = Turn::new(Some(Scope::handler("svc")), &HeldBudget::new(u64::MAX));
        assert_eq!(turn.get(&store, "k").unwrap(), None);
        assert!(turn.into_parts().batch.is_none());
        let mut outside = Turn::new(None, &HeldBudget::new(u64::MAX));
        assert_eq!(outside.get(&store, "k").unwrap_err().code, 400);
    }

    /// Sizes are checked when set: a value over the limit (507), a key over the key limit
    /// (413), and a turn writing more than its handler may store (507).
    #[test]
    fn sizes_are_checked_when_set() {
        let store = store();
        let mut turn = Turn::new(Some(Scope::handler("svc")), &HeldBudget::new(u64::MAX));
        let big = turn.set(&store, "k".into(), vec![0; 17]).unwrap_err();
        assert_eq!(big.code, 507, "{big}");
        let long = turn
            .get(&store, &"k".repeat(MAX_KEY_BYTES + 1))
            .unwrap_err();
        assert_eq!(long.code, 413);
        for i in 0..4 {
            turn.set(&store, format!("k{i}"), vec![0; 14]).unwrap();
        }
        assert_eq!(
            turn.set(&store, "k9".into(), vec![0; 14]).unwrap_err().code,
            507
        );
    }
}
