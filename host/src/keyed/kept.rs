//! Pushes kept for users until a client acknowledges them (offline delivery): committed
//! with the turn that kept them, in the order they were kept, `(user, seq)`, with an index
//! by push id for the acknowledgement. At most [`StateLimits::kept_per_user`] per user, each
//! until its expiry; expired ones are never delivered and are removed when the user's pushes
//! are next read or the user's box is full.

use redb::{ReadableTable, Table};

use super::commit::{Tables, read_u64, write_u64};
use super::tables::{KEPT, KEPT_COUNT, KEPT_IDS, KeptKey, KeptValue};
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

/// What keeping a batch's pushes removes first: expired pushes of users at their limit.
pub(super) type Expired = Vec<(String, u64, String)>;

/// Checks a batch's kept pushes against each user's limit, finding the expired pushes that
/// make room. The inner `Err` refuses the batch.
pub(super) fn plan(
    t: &Tables<'_>,
    limits: &StateLimits,
    keep: &[KeptPush],
    now_ms: u64,
) -> Result<Result<Expired, CommitError>, DbError> {
    let mut added: std::collections::BTreeMap<&str, u64> = Default::default();
    for push in keep {
        *added.entry(push.user.as_str()).or_default() += 1;
    }
    let mut expired = Vec::new();
    for (user, added) in added {
        let stored = read_u64(&t.kept_count, user)?;
        let limit = limits.kept_per_user as u64;
        if stored + added <= limit {
            continue;
        }
        let found = expired_of(&t.kept, user, now_ms)?;
        let gone = found.len() as u64;
        expired.extend(
            found
                .into_iter()
                .map(|(seq, id)| (user.to_owned(), seq, id)),
        );
        if stored - gone + added > limit {
            return Ok(Err(CommitError::TooManyKept {
                user: user.to_owned(),
                would: (stored - gone + added) as usize,
                limit: limits.kept_per_user,
            }));
        }
    }
    Ok(Ok(expired))
}

/// Stores a validated batch's kept pushes after removing `expired`, numbering them from
/// `seq` on (the next free number is returned).
pub(super) fn apply(
    t: &mut Tables<'_>,
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
                (push.expires_ms, push.id.as_str(), push.signal.as_slice()),
            )
            .map_err(DbError::from_redb)?;
        t.kept_ids
            .insert((user, push.id.as_str()), seq)
            .map_err(DbError::from_redb)?;
        let n = read_u64(&t.kept_count, user)?;
        write_u64(&mut t.kept_count, user, n + 1)?;
    }
    Ok(seq)
}

fn remove(t: &mut Tables<'_>, user: &str, seq: u64, id: &str) -> Result<(), DbError> {
    t.kept.remove((user, seq)).map_err(DbError::from_redb)?;
    t.kept_ids.remove((user, id)).map_err(DbError::from_redb)?;
    let n = read_u64(&t.kept_count, user)?;
    write_u64(&mut t.kept_count, user, n.saturating_sub(1))
}

impl StateStore {
    /// Up to `limit` unexpired pushes kept for `user`, in the order they were kept.
    pub fn kept(&self, user: &str, now_ms: u64, limit: usize) -> Result<Vec<KeptPush>, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(KEPT).map_err(DbError::from_redb)?;
        let mut kept = Vec::new();
        for item in table
            .range((user, 0)..=(user, u64::MAX))
            .map_err(DbError::from_redb)?
        {
            if kept.len() >= limit {
                break;
            }
            let (_, value) = item.map_err(DbError::from_redb)?;
            let (expires_ms, id, signal) = value.value();
            if expires_ms > now_ms {
                kept.push(KeptPush {
                    user: user.to_owned(),
                    id: id.to_owned(),
                    expires_ms,
                    signal: signal.to_vec(),
                });
            }
        }
        Ok(kept)
    }

    /// How many pushes are kept for `user`, expired ones included until they are removed.
    pub fn kept_count(&self, user: &str) -> Result<u64, StateError> {
        let tx = self.read()?;
        let table = tx.open_table(KEPT_COUNT).map_err(DbError::from_redb)?;
        let count = table.get(user).map_err(DbError::from_redb)?;
        Ok(count.map_or(0, |c| c.value()))
    }

    /// Removes push `id` of `user` once a client acknowledged it, and the user's expired
    /// pushes with it; whether it was kept. Durable when it returns: it waits for the
    /// store's writer and an fsync, so call it from a blocking thread.
    pub fn acknowledge(&self, user: &str, id: &str, now_ms: u64) -> Result<bool, StateError> {
        // A read first: an unknown id (a repeat, or a hostile client's) costs no write.
        let known = {
            let tx = self.read()?;
            let ids = tx.open_table(KEPT_IDS).map_err(DbError::from_redb)?;
            ids.get((user, id)).map_err(DbError::from_redb)?.is_some()
        };
        if !known {
            return Ok(false);
        }
        let tx = self.shared.db.begin_durable()?;
        let found = {
            let mut t = Tables::open(&tx)?;
            let found = t
                .kept_ids
                .get((user, id))
                .map_err(DbError::from_redb)?
                .map(|g| g.value());
            if let Some(seq) = found {
                remove(&mut t, user, seq, id)?;
            }
            for (seq, expired) in expired_of(&t.kept, user, now_ms)? {
                remove(&mut t, user, seq, &expired)?;
            }
            found.is_some()
        };
        tx.commit().map_err(DbError::from_redb)?;
        Ok(found)
    }
}

/// The expired pushes of `user`: `(seq, id)`.
fn expired_of(
    kept: &Table<'_, KeptKey, KeptValue>,
    user: &str,
    now_ms: u64,
) -> Result<Vec<(u64, String)>, DbError> {
    let mut expired = Vec::new();
    for item in kept
        .range((user, 0)..=(user, u64::MAX))
        .map_err(DbError::from_redb)?
    {
        let (key, value) = item.map_err(DbError::from_redb)?;
        let (expires_ms, id, _) = value.value();
        if expires_ms <= now_ms {
            expired.push((key.value().1, id.to_owned()));
        }
    }
    Ok(expired)
}
