//! Pushes kept for users until a client acknowledges them (offline delivery): committed
//! with the turn that kept them, in the order they were kept, `(user, seq)`, with an index
//! by push id for the acknowledgement. At most [`StateLimits::kept_per_user`] per user and
//! keeping handler (a handler that fills its share cannot stop another keeping for the
//! same user), each until its expiry; their bytes count against the keeping handler's state
//! limit (`state_handler_bytes`) until they are gone. Expired ones are never delivered; they
//! are removed when the user acknowledges, when a handler's share for the user is full, and
//! by [`StateStore::sweep_kept`], which the host runs every [`SWEEP_EVERY`].

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, WriteTransaction};

use super::commit::{Tables, read_u64, write_u64};
use super::tables::{KEPT, KEPT_BY, KEPT_IDS, KeptKey, KeptValue};
use super::{CommitError, StateError, StateLimits, StateStore};
use crate::db::DbError;

/// A push kept for a user: a serialized signal, opaque to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptPush {
    /// The user (the id, without `user:`).
    pub user: String,
    /// The pushed signal's id, which the client acknowledges.
    pub id: String,
    /// When it is dropped unacknowledged, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// The serialized signal.
    pub signal: Vec<u8>,
}

/// How often the host removes expired kept pushes.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Most expired pushes one sweep removes.
const SWEEP_BATCH: usize = 10_000;

/// The bytes a kept push counts against its handler's state limit.
pub(super) fn kept_bytes(push: &KeptPush) -> u64 {
    (push.id.len() + push.signal.len()) as u64
}

/// What keeping a batch's pushes removes first: expired pushes of users at their limit.
pub(super) type Expired = Vec<(String, u64, String)>;

/// Checks the pushes `handler` keeps in a batch against its limit for each user, finding
/// the expired pushes that make room. The inner `Err` refuses the batch.
pub(super) fn plan(
    t: &Tables<'_>,
    limits: &StateLimits,
    handler: &str,
    keep: &[KeptPush],
    now_ms: u64,
) -> Result<Result<Expired, CommitError>, DbError> {
    let mut added: BTreeMap<&str, u64> = Default::default();
    for push in keep {
        *added.entry(push.user.as_str()).or_default() += 1;
    }
    let mut expired = Vec::new();
    for (user, added) in added {
        let stored = count(&t.kept_by, user, handler)?;
        let limit = limits.kept_per_user as u64;
        if stored + added <= limit {
            continue;
        }
        // Every expired push of the user goes; only the handler's own make it room.
        let found = expired_of(&t.kept, user, now_ms)?;
        let gone = found.iter().filter(|(_, _, by)| by == handler).count() as u64;
        expired.extend(
            found
                .into_iter()
                .map(|(seq, id, _)| (user.to_owned(), seq, id)),
        );
        if stored - gone + added > limit {
            return Ok(Err(CommitError::TooManyKept {
                user: user.to_owned(),
                handler: handler.to_owned(),
                would: (stored - gone + added) as usize,
                limit: limits.kept_per_user,
            }));
        }
    }
    Ok(Ok(expired))
}

/// How many pushes `handler` keeps for `user`.
fn count(
    kept_by: &impl ReadableTable<(&'static str, &'static str), u64>,
    user: &str,
    handler: &str,
) -> Result<u64, DbError> {
    Ok(kept_by
        .get((user, handler))
        .map_err(DbError::from_redb)?
        .map_or(0, |n| n.value()))
}

/// Adds `delta` to how many pushes `handler` keeps for `user` (a row at 0 is removed).
fn add_to_count(
    kept_by: &mut Table<'_, (&'static str, &'static str), u64>,
    user: &str,
    handler: &str,
    delta: i64,
) -> Result<(), DbError> {
    let n = count(kept_by, user, handler)?.saturating_add_signed(delta);
    if n == 0 {
        kept_by
            .remove((user, handler))
            .map_err(DbError::from_redb)?;
    } else {
        kept_by
            .insert((user, handler), n)
            .map_err(DbError::from_redb)?;
    }
    Ok(())
}

/// Counts the pushes each handler keeps for each user into [`KEPT_BY`], in `tx`: for a
/// store written before the counts were kept per handler (they were per user then).
pub(super) fn count_by_handler(tx: &WriteTransaction) -> Result<(), DbError> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let kept = tx.open_table(KEPT).map_err(DbError::from_redb)?;
    for item in kept.iter().map_err(DbError::from_redb)? {
        let (key, value) = item.map_err(DbError::from_redb)?;
        let ((user, _), (_, _, handler, _)) = (key.value(), value.value());
        *counts
            .entry((user.to_owned(), handler.to_owned()))
            .or_default() += 1;
    }
    let mut kept_by = tx.open_table(KEPT_BY).map_err(DbError::from_redb)?;
    for ((user, handler), n) in counts {
        kept_by
            .insert((user.as_str(), handler.as_str()), n)
            .map_err(DbError::from_redb)?;
    }
    Ok(())
}

/// Stores a validated batch's kept pushes after removing `expired`, numbering them from
/// `seq` on (the next free number is returned).
pub(super) fn apply(
    t: &mut Tables<'_>,
    handler: &str,
    keep: &[KeptPush],
    expired: &Expired,
    mut seq: u64,
) -> Result<u64, DbError> {
    for (user, at, id) in expired {
        remove(t, user, *at, id)?;
    }
    for push in keep {
        seq += 1;
        let user = push.user.as_str();
        // A push id kept again (never by the host: ids are fresh) replaces the old one.
        let old = t
            .kept_ids
            .get((user, push.id.as_str()))
            .map_err(DbError::from_redb)?
            .map(|g| g.value());
        if let Some(old) = old {
            remove(t, user, old, &push.id)?;
        }
        t.kept
            .insert(
                (user, seq),
                (
                    push.expires_ms,
                    push.id.as_str(),
                    handler,
                    push.signal.as_slice(),
                ),
            )
            .map_err(DbError::from_redb)?;
        t.kept_ids
            .insert((user, push.id.as_str()), seq)
            .map_err(DbError::from_redb)?;
        add_to_count(&mut t.kept_by, user, handler, 1)?;
    }
    Ok(seq)
}

/// Removes one kept push, giving its bytes back to the handler that kept it; whether it
/// was there (one removed already, by an acknowledgement racing a sweep, changes nothing).
fn remove(t: &mut Tables<'_>, user: &str, seq: u64, id: &str) -> Result<bool, DbError> {
    let gone = t
        .kept
        .remove((user, seq))
        .map_err(DbError::from_redb)?
        .map(|g| {
            let (_, id, handler, signal) = g.value();
            (handler.to_owned(), (id.len() + signal.len()) as u64)
        });
    let Some((handler, bytes)) = gone else {
        return Ok(false);
    };
    t.kept_ids.remove((user, id)).map_err(DbError::from_redb)?;
    add_to_count(&mut t.kept_by, user, &handler, -1)?;
    let used = read_u64(&t.usage, &handler)?;
    write_u64(&mut t.usage, &handler, used.saturating_sub(bytes))?;
    Ok(true)
}

/// Removes every push `handler` kept (operator `--purge`), in `tx`.
pub(super) fn purge(tx: &redb::WriteTransaction, handler: &str) -> Result<(), DbError> {
    let mut t = Tables::open(tx)?;
    let mut kept_by = Vec::new();
    for item in t.kept.iter().map_err(DbError::from_redb)? {
        let (key, value) = item.map_err(DbError::from_redb)?;
        let ((user, seq), (_, id, owner, _)) = (key.value(), value.value());
        if owner == handler {
            kept_by.push((user.to_owned(), seq, id.to_owned()));
        }
    }
    for (user, seq, id) in kept_by {
        remove(&mut t, &user, seq, &id)?;
    }
    Ok(())
}

impl StateStore {
    /// Up to `limit` unexpired pushes kept for `user`, in the order they were kept.
    #[cfg(test)]
    pub fn kept(&self, user: &str, now_ms: u64, limit: usize) -> Result<Vec<KeptPush>, StateError> {
        let page = self.kept_after(user, 0, now_ms, limit)?;
        Ok(page.into_iter().map(|(_, push)| push).collect())
    }

    /// Up to `limit` unexpired pushes kept for `user` after place `after` in its order (0:
    /// from the first), each with its place: a client's backlog is read a page at a time.
    pub fn kept_after(
        &self,
        user: &str,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, KeptPush)>, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(KEPT).map_err(DbError::from_redb)?;
        let mut kept = Vec::new();
        for item in table
            .range((user, after.saturating_add(1))..=(user, u64::MAX))
            .map_err(DbError::from_redb)?
        {
            if kept.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(DbError::from_redb)?;
            let (expires_ms, id, _, signal) = value.value();
            if expires_ms > now_ms {
                let push = KeptPush {
                    user: user.to_owned(),
                    id: id.to_owned(),
                    expires_ms,
                    signal: signal.to_vec(),
                };
                kept.push((key.value().1, push));
            }
        }
        Ok(kept)
    }

    /// How many pushes `handler` keeps for `user`, expired ones included until they are
    /// removed.
    pub fn kept_count(&self, user: &str, handler: &str) -> Result<u64, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(KEPT_BY).map_err(DbError::from_redb)?;
        Ok(count(&table, user, handler)?)
    }

    /// Removes push `id` of `user` once a client acknowledged it, and the user's expired
    /// pushes with it; whether it was kept. Durable when it returns: it waits for the
    /// store's writer and an fsync, so call it from a blocking thread.
    #[cfg(test)]
    pub fn acknowledge(&self, user: &str, id: &str, now_ms: u64) -> Result<bool, StateError> {
        Ok(!self.acknowledge_all(user, &[id], now_ms)?.is_empty())
    }

    /// Removes the pushes `ids` of `user` once a client acknowledged them, and the user's
    /// expired pushes with them, in one durable transaction (call it from a blocking
    /// thread); the ids that were kept. Ids not kept (repeats, or a hostile client's) cost
    /// a read, never a write.
    pub fn acknowledge_all(
        &self,
        user: &str,
        ids: &[&str],
        now_ms: u64,
    ) -> Result<Vec<String>, StateError> {
        let known: Vec<&str> = {
            let tx = self.read()?;
            let table = tx.open_table(KEPT_IDS).map_err(DbError::from_redb)?;
            let mut known = Vec::new();
            for id in ids {
                if table
                    .get((user, *id))
                    .map_err(DbError::from_redb)?
                    .is_some()
                {
                    known.push(*id);
                }
            }
            known
        };
        if known.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.shared.db.begin_durable()?;
        let mut removed = Vec::new();
        {
            let mut t = Tables::open(&tx)?;
            for id in known {
                let seq = t
                    .kept_ids
                    .get((user, id))
                    .map_err(DbError::from_redb)?
                    .map(|g| g.value());
                if let Some(seq) = seq
                    && remove(&mut t, user, seq, id)?
                {
                    removed.push(id.to_owned());
                }
            }
            for (seq, expired, _) in expired_of(&t.kept, user, now_ms)? {
                remove(&mut t, user, seq, &expired)?;
            }
        }
        tx.commit().map_err(DbError::from_redb)?;
        Ok(removed)
    }
}

impl StateStore {
    /// Removes up to a batch of expired kept pushes of every user, durably; how many. Call
    /// it from a blocking thread.
    pub fn sweep_kept(&self, now_ms: u64) -> Result<usize, StateError> {
        let expired: Vec<(String, u64, String)> = {
            let tx = self.read()?;
            let kept = tx.open_table(KEPT).map_err(DbError::from_redb)?;
            let mut expired = Vec::new();
            for item in kept.iter().map_err(DbError::from_redb)? {
                if expired.len() >= SWEEP_BATCH {
                    break;
                }
                let (key, value) = item.map_err(DbError::from_redb)?;
                let ((user, seq), (expires_ms, id, _, _)) = (key.value(), value.value());
                if expires_ms <= now_ms {
                    expired.push((user.to_owned(), seq, id.to_owned()));
                }
            }
            expired
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let tx = self.shared.db.begin_durable()?;
        let mut removed = 0;
        {
            let mut t = Tables::open(&tx)?;
            for (user, seq, id) in &expired {
                removed += usize::from(remove(&mut t, user, *seq, id)?);
            }
        }
        tx.commit().map_err(DbError::from_redb)?;
        self.shared
            .metrics
            .gateway
            .pushes_expired
            .inc_by(removed as u64);
        Ok(removed)
    }
}

/// Removes expired kept pushes every [`SWEEP_EVERY`] while the store lives.
pub fn spawn_kept_sweeper(store: std::sync::Weak<StateStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(strong) = store.upgrade() else {
                return;
            };
            let now = strong.limits().clock.now_millis();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || strong.sweep_kept(now)).await
            {
                tracing::warn!(%error, "could not remove expired kept pushes");
            }
        }
    })
}

/// The expired pushes of `user`: `(seq, id, handler that kept it)`.
fn expired_of(
    kept: &Table<'_, KeptKey, KeptValue>,
    user: &str,
    now_ms: u64,
) -> Result<Vec<(u64, String, String)>, DbError> {
    let mut expired = Vec::new();
    for item in kept
        .range((user, 0)..=(user, u64::MAX))
        .map_err(DbError::from_redb)?
    {
        let (key, value) = item.map_err(DbError::from_redb)?;
        let (expires_ms, id, handler, _) = value.value();
        if expires_ms <= now_ms {
            expired.push((key.value().1, id.to_owned(), handler.to_owned()));
        }
    }
    Ok(expired)
}
