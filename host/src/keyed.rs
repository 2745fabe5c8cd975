//! Durable keyed state and timers: what agents (keyed actors) and services keep between
//! signals, in the host's embedded store ([`crate::db`]), so it outlives instances, hot
//! swaps, rollbacks and restarts.
//!
//! State is scoped ([`Scope`]) to a handler, or to one agent of a handler. Reads see what is
//! committed and never wait for a writer. A turn's writes, the timers it schedules and those
//! it cancels commit together as one [`Batch`], durably (fsync), with every other turn's batch
//! queued at the same moment: one redb transaction for the whole group (group commit, see
//! `commit`), so concurrent turns share an fsync. Each batch is validated on its own inside
//! that transaction: a conflict (optimistic concurrency on the versions the turn read) or a
//! quota leaves that batch out with its own error and changes nothing of it.
//!
//! Keys are redb tuples `(handler, agent, key)`: no separator byte exists, so no agent id or
//! key, however hostile, can name another scope's data. Every committed write stamps the key
//! with the store's commit counter, so a key deleted and created again never comes back with
//! a version a turn saw before (no ABA).

mod commit;
#[cfg(test)]
mod commit_tests;
mod error;
mod kept;
#[cfg(test)]
mod kept_tests;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timer_tests;
mod timers;
mod wheel;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use redb::ReadableDatabase;
use tokio::sync::{Notify, oneshot};

use crate::clock::Clock;
use crate::config::{
    DEFAULT_KEPT_PER_USER, DEFAULT_KEPT_TTL, DEFAULT_STATE_HANDLER_BYTES,
    DEFAULT_STATE_VALUE_BYTES, DEFAULT_TIMER_FIRES_PER_SECOND, DEFAULT_TIMER_MIN_INTERVAL,
    DEFAULT_TIMERS_PER_HANDLER, HostConfig,
};
use crate::db::{Db, DbError};
use crate::metrics::Metrics;

pub use error::{CommitError, StateError};
pub use kept::{KeptPush, SWEEP_EVERY, spawn_kept_sweeper};
pub use timers::{NewTimer, StoredTimer, Timer};
pub use wheel::{RETRY_AFTER, spawn_timer_loop};

/// Longest key, in bytes: keys live in the store's B-tree pages, which long keys bloat.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most turns' batches committed in one transaction.
pub const MAX_GROUP: usize = 1024;

/// Whose state: a handler's own (services, and an agent handler's broadcasts) or one agent's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The handler's name.
    pub handler: String,
    /// The agent id, for an agent's own state.
    pub agent: Option<String>,
}

impl Scope {
    /// A handler's own scope.
    pub fn handler(handler: impl Into<String>) -> Self {
        Self {
            handler: handler.into(),
            agent: None,
        }
    }

    /// One agent's scope.
    pub fn agent(handler: impl Into<String>, agent: impl Into<String>) -> Self {
        Self {
            handler: handler.into(),
            agent: Some(agent.into()),
        }
    }
}

/// Size limits of state and timers, and the clock they are kept by.
#[derive(Clone, Debug)]
pub struct StateLimits {
    /// Largest value of one key, in bytes.
    pub value_bytes: usize,
    /// Bytes (keys and values) one handler may store.
    pub handler_bytes: u64,
    /// Pending timers one handler may have.
    pub timers_per_handler: usize,
    /// Least delay of a timer scheduled by a turn descending from a fired timer.
    pub timer_min_interval: std::time::Duration,
    /// Most timers of one handler fired per second.
    pub timer_fires_per_second: u32,
    /// Pushes one handler may keep for one user until acknowledged.
    pub kept_per_user: usize,
    /// Longest a push is kept.
    pub kept_ttl: std::time::Duration,
    /// The host's clock: when timers are due, when kept pushes expire.
    pub clock: Clock,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            value_bytes: DEFAULT_STATE_VALUE_BYTES,
            handler_bytes: DEFAULT_STATE_HANDLER_BYTES,
            timers_per_handler: DEFAULT_TIMERS_PER_HANDLER,
            timer_min_interval: DEFAULT_TIMER_MIN_INTERVAL,
            timer_fires_per_second: DEFAULT_TIMER_FIRES_PER_SECOND,
            kept_per_user: DEFAULT_KEPT_PER_USER,
            kept_ttl: DEFAULT_KEPT_TTL,
            clock: Clock::system(),
        }
    }
}

impl StateLimits {
    /// The limits a host is configured with.
    pub fn of(config: &HostConfig) -> Self {
        Self {
            value_bytes: config.state_value_bytes,
            handler_bytes: config.state_handler_bytes,
            timers_per_handler: config.timers_per_handler,
            timer_min_interval: config.timer_min_interval,
            timer_fires_per_second: config.timer_fires_per_second,
            kept_per_user: config.kept_per_user,
            kept_ttl: config.kept_ttl,
            clock: config.clock.clone(),
        }
    }
}

/// A committed value and its version (0: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value, if the key is set.
    pub value: Option<Vec<u8>>,
    /// The commit that wrote it; 0 when absent.
    pub version: u64,
}

/// One turn's effects on state and timers, committed together or not at all.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Whose state the writes and reads are in.
    pub scope: Scope,
    /// Key to its new value, or `None` to delete it.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Optimistic concurrency: the version each key had when the turn first read it. If any
    /// has another version at commit, the batch fails with [`CommitError::Conflict`].
    pub reads: BTreeMap<String, u64>,
    /// Timers to schedule.
    pub schedule: Vec<NewTimer>,
    /// Ids of this handler's timers to cancel (those already gone are ignored).
    pub cancel: Vec<String>,
    /// Pushes to keep for their users until acknowledged.
    pub keep: Vec<KeptPush>,
}

impl Default for Scope {
    fn default() -> Self {
        Self::handler("")
    }
}

/// What a committed batch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The version stamped on every key the batch wrote.
    pub version: u64,
    /// How many of the batch's cancels removed a pending timer.
    pub cancelled: usize,
}

/// What the committer and the store share.
pub(crate) struct Shared {
    db: Arc<Db>,
    limits: StateLimits,
    metrics: Arc<Metrics>,
    /// Transactions the committer has run (a group of batches is one).
    transactions: AtomicU64,
    /// Batches sent to the committer and not yet in a group it is committing.
    queued: AtomicUsize,
    /// Held by a test to keep the committer from taking more than one batch, so a group
    /// can be formed on purpose.
    #[cfg(test)]
    gate: std::sync::Mutex<()>,
    /// Woken when a commit schedules a timer (the timer loop may need to wake earlier).
    timers_changed: Arc<Notify>,
}

type Reply = oneshot::Sender<Result<Committed, CommitError>>;

/// The durable keyed-state and timer store.
pub struct StateStore {
    shared: Arc<Shared>,
    queue: mpsc::Sender<(Batch, Reply)>,
}

impl StateStore {
    /// The store in `db`, creating its tables, with its committer thread grouping up to
    /// [`MAX_GROUP`] batches per transaction.
    pub fn open(
        db: Arc<Db>,
        limits: StateLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, DbError> {
        Self::open_grouping(db, limits, metrics, MAX_GROUP)
    }

    /// As [`StateStore::open`], committing at most `max_group` batches per transaction
    /// (1: one transaction and fsync per batch, to measure what grouping saves).
    pub fn open_grouping(
        db: Arc<Db>,
        limits: StateLimits,
        metrics: Arc<Metrics>,
        max_group: usize,
    ) -> Result<Arc<Self>, DbError> {
        tables::create(&db)?;
        let shared = Arc::new(Shared {
            db,
            limits,
            metrics,
            transactions: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            #[cfg(test)]
            gate: std::sync::Mutex::new(()),
            timers_changed: Arc::new(Notify::new()),
        });
        let (queue, incoming) = mpsc::channel();
        let committer = shared.clone();
        std::thread::Builder::new()
            .name("switchboard-state-commit".into())
            .spawn(move || commit::run(&committer, &incoming, max_group.max(1)))
            .expect("spawning the state committer thread");
        Ok(Arc::new(Self { shared, queue }))
    }

    /// The limits in force.
    pub fn limits(&self) -> &StateLimits {
        &self.shared.limits
    }

    /// Checks a value's size when a handler sets it, before the commit checks it again.
    pub fn check_value(&self, key: &str, len: usize) -> Result<(), CommitError> {
        commit::check_write(&self.shared.limits, key, len)
    }

    /// A committed value and its version (0 = absent). Reads never block on the committer.
    pub fn get(&self, scope: &Scope, key: &str) -> Result<Versioned, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(tables::STATE).map_err(DbError::from_redb)?;
        let found = table
            .get((scope.handler.as_str(), scope.agent.as_deref(), key))
            .map_err(DbError::from_redb)?;
        Ok(found.map_or(
            Versioned {
                value: None,
                version: 0,
            },
            |guard| {
                let (version, value) = guard.value();
                Versioned {
                    value: Some(value.to_vec()),
                    version,
                }
            },
        ))
    }

    /// The keys of `scope` that start with `prefix`, in order.
    pub fn keys(&self, scope: &Scope, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys = Vec::new();
        self.scan(scope, prefix, |key, _| keys.push(key.to_owned()))?;
        Ok(keys)
    }

    /// Everything stored for a scope, in key order (admin API).
    pub fn entries(&self, scope: &Scope) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let mut entries = Vec::new();
        self.scan(scope, "", |key, value| {
            entries.push((key.to_owned(), value.to_vec()))
        })?;
        Ok(entries)
    }

    fn scan(
        &self,
        scope: &Scope,
        prefix: &str,
        mut each: impl FnMut(&str, &[u8]),
    ) -> Result<(), StateError> {
        let tx = self.read()?;
        let table = tx.open_table(tables::STATE).map_err(DbError::from_redb)?;
        let (handler, agent) = (scope.handler.as_str(), scope.agent.as_deref());
        for item in table
            .range((handler, agent, prefix)..)
            .map_err(DbError::from_redb)?
        {
            let (key, value) = item.map_err(DbError::from_redb)?;
            let (h, a, k) = key.value();
            if h != handler || a != agent || !k.starts_with(prefix) {
                break;
            }
            each(k, value.value().1);
        }
        Ok(())
    }

    /// Up to `limit` agents of `handler` that have state, in order, after `after`.
    pub fn agents(
        &self,
        handler: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        use std::ops::Bound;
        let tx = self.read()?;
        let table = tx.open_table(tables::AGENTS).map_err(DbError::from_redb)?;
        let start = match after {
            Some(after) => Bound::Excluded((handler, after)),
            None => Bound::Included((handler, "")),
        };
        let mut agents = Vec::new();
        for item in table
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(DbError::from_redb)?
        {
            if agents.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(DbError::from_redb)?;
            let (h, agent) = key.value();
            if h != handler {
                break;
            }
            agents.push(agent.to_owned());
        }
        Ok(agents)
    }

    /// Bytes stored for a handler (keys and values), as kept in the usage table.
    pub fn usage(&self, handler: &str) -> Result<u64, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(tables::USAGE).map_err(DbError::from_redb)?;
        let used = table.get(handler).map_err(DbError::from_redb)?;
        Ok(used.map_or(0, |g| g.value()))
    }

    /// Removes every key and timer of a handler (operator `--purge`); durable when it returns.
    /// It waits for the store's writer and an fsync: call it from a blocking thread.
    pub fn purge(&self, handler: &str) -> Result<(), StateError> {
        let tx = self.shared.db.begin_durable()?;
        tables::purge(&tx, handler)?;
        tx.commit().map_err(DbError::from_redb)?;
        Ok(())
    }

    /// Commits one turn's batch durably, in one transaction with every other batch queued
    /// at the same moment, and returns once it is durable. A batch that fails validation is
    /// left out with its own error; the others commit.
    pub async fn commit(&self, batch: Batch) -> Result<Committed, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.queue
            .send((batch, reply))
            .map_err(|_| CommitError::Stopped)?;
        answer.await.unwrap_or(Err(CommitError::Stopped))
    }

    /// Transactions the committer has run so far (each commits a group of batches).
    pub fn transactions(&self) -> u64 {
        self.shared.transactions.load(Ordering::Relaxed)
    }

    /// Batches sent to the committer and not yet in a group it is committing.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    fn read(&self) -> Result<redb::ReadTransaction, DbError> {
        self.shared
            .db
            .database()
            .begin_read()
            .map_err(DbError::from_redb)
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        // The timer loop sleeps on this; it finds the store gone and stops.
        self.shared.timers_changed.notify_one();
    }
}
