//! The dead-letter store: events, data changes and replies that a mailbox or a client queue
//! refused, kept with the handler they were meant for and the reason, until an operator
//! replays (to that one handler) or purges them.
//!
//! The store is bounded. A broadcast reserves room for every subscriber before it is offered
//! to any ([`DeadLetters::reserve`]), so when the store is full the signal is refused at its
//! source instead of being accepted and then lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::signal::Signal;

/// Most dead letters one listing returns.
pub const MAX_PAGE: usize = 1000;

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// Why a signal became a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// The handler's mailbox was full.
    MailboxFull,
    /// The handler stopped (deleted or moved) while the signal was on its way.
    HandlerStopped,
    /// The client's queue was full.
    ClientSlow,
    /// The client disconnected.
    ClientGone,
}

impl DeadReason {
    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MailboxFull => "mailbox_full",
            Self::HandlerStopped => "handler_stopped",
            Self::ClientSlow => "client_slow",
            Self::ClientGone => "client_gone",
        }
    }
}

/// A kept signal.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its number in the store, increasing.
    pub id: u64,
    /// The handler (or `user:<id>` client) it was meant for.
    pub handler: String,
    /// Why it was not delivered.
    pub reason: DeadReason,
    /// When it was kept, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The signal itself, envelope included.
    #[schema(value_type = crate::wire::WireSignal)]
    pub signal: Signal,
}

/// The bounded dead-letter store.
pub struct DeadLetters {
    db: Arc<Db>,
    capacity: usize,
    /// Stored plus reserved.
    used: AtomicUsize,
    next_id: std::sync::atomic::AtomicU64,
}

/// Room for up to `n` dead letters, taken from the store's capacity; what is not used is
/// given back on drop.
pub struct Reservation<'a> {
    store: &'a DeadLetters,
    left: usize,
}

impl Reservation<'_> {
    /// Keeps `signal` as a dead letter for `handler`, using one unit of the reservation.
    pub fn keep(
        &mut self,
        handler: &str,
        reason: DeadReason,
        signal: Signal,
    ) -> Result<u64, DbError> {
        debug_assert!(self.left > 0, "a reservation used more than it reserved");
        self.left = self.left.saturating_sub(1);
        let result = self.store.write(handler, reason, signal);
        if result.is_err() {
            self.store.used.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }
}

impl Reservation<'_> {
    /// Puts a letter taken with [`DeadLetters::take`] back under its own id, durably.
    pub fn put_back(&mut self, letter: &DeadLetter) -> Result<(), DbError> {
        self.left = self.left.saturating_sub(1);
        let result = self
            .store
            .db
            .begin_durable()
            .and_then(|tx| self.store.insert(letter, tx));
        if result.is_err() {
            self.store.used.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.store.used.fetch_sub(self.left, Ordering::AcqRel);
        }
    }
}

impl DeadLetters {
    /// The store in `db`, holding at most `capacity` dead letters.
    pub fn open(db: Arc<Db>, capacity: usize) -> Result<Self, DbError> {
        let tx = db.begin_durable()?;
        let (len, last) = {
            let table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            let len = table.len().map_err(DbError::from_redb)? as usize;
            let last = table
                .last()
                .map_err(DbError::from_redb)?
                .map_or(0, |(k, _)| k.value());
            (len, last)
        };
        tx.commit().map_err(DbError::from_redb)?;
        Ok(Self {
            db,
            capacity,
            used: AtomicUsize::new(len),
            next_id: std::sync::atomic::AtomicU64::new(last + 1),
        })
    }

    /// Reserves room for `n` dead letters, or `None` if the store cannot take that many.
    pub fn reserve(&self, n: usize) -> Option<Reservation<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.capacity)
            })
            .ok()?;
        Some(Reservation {
            store: self,
            left: n,
        })
    }

    /// Dead letters kept now.
    pub fn len(&self) -> usize {
        self.count().unwrap_or(0)
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most the store holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn count(&self) -> Result<usize, DbError> {
        Ok(self.table()?.len().map_err(DbError::from_redb)? as usize)
    }

    /// The table as of now, for reading; [`DeadLetters::open`] created it.
    fn table(&self) -> Result<redb::ReadOnlyTable<u64, &'static [u8]>, DbError> {
        let tx = self
            .db
            .database()
            .begin_read()
            .map_err(DbError::from_redb)?;
        tx.open_table(TABLE).map_err(DbError::from_redb)
    }

    fn write(&self, handler: &str, reason: DeadReason, signal: Signal) -> Result<u64, DbError> {
        let letter = DeadLetter {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            handler: handler.to_owned(),
            reason,
            at: now_millis(),
            signal,
        };
        self.insert(&letter, self.db.begin_fast()?)?;
        Ok(letter.id)
    }

    fn insert(&self, letter: &DeadLetter, tx: redb::WriteTransaction) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(letter).expect("a dead letter always serializes");
        tx.open_table(TABLE)
            .map_err(DbError::from_redb)?
            .insert(letter.id, bytes.as_slice())
            .map_err(DbError::from_redb)?;
        tx.commit().map_err(DbError::from_redb)
    }

    /// Takes one dead letter out of the store (durably) to offer it again, keeping its room
    /// in the returned reservation: [`Reservation::put_back`] restores it if the offer is
    /// refused; dropping the reservation frees the room. Only one taker gets a given letter,
    /// so a replay can never deliver it twice.
    pub fn take(&self, id: u64) -> Result<Option<(DeadLetter, Reservation<'_>)>, DbError> {
        let tx = self.db.begin_durable()?;
        let letter = {
            let mut table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            let removed = table.remove(id).map_err(DbError::from_redb)?;
            removed.and_then(|v| decode(v.value()))
        };
        tx.commit().map_err(DbError::from_redb)?;
        // The stored letter's unit of room becomes the reservation's.
        Ok(letter.map(|letter| {
            (
                letter,
                Reservation {
                    store: self,
                    left: 1,
                },
            )
        }))
    }

    /// Up to `limit` dead letters (at most [`MAX_PAGE`]) with ids above `after`, oldest
    /// first, optionally only those meant for `handler`.
    pub fn list(
        &self,
        handler: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DbError> {
        let table = self.table()?;
        let mut out = Vec::new();
        let start = after.saturating_add(1);
        for item in table.range(start..).map_err(DbError::from_redb)? {
            if out.len() >= limit.min(MAX_PAGE) {
                break;
            }
            let (_, value) = item.map_err(DbError::from_redb)?;
            let Some(letter) = decode(value.value()) else {
                continue;
            };
            if handler.is_none_or(|h| h == letter.handler) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// One dead letter.
    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>, DbError> {
        let table = self.table()?;
        let value = table.get(id).map_err(DbError::from_redb)?;
        Ok(value.and_then(|v| decode(v.value())))
    }

    /// Removes one dead letter (after a successful replay, or by an operator); durable when
    /// it returns. Returns whether it was there.
    pub fn remove(&self, id: u64) -> Result<bool, DbError> {
        let tx = self.db.begin_durable()?;
        let removed = tx
            .open_table(TABLE)
            .map_err(DbError::from_redb)?
            .remove(id)
            .map_err(DbError::from_redb)?
            .is_some();
        tx.commit().map_err(DbError::from_redb)?;
        if removed {
            self.used.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(removed)
    }

    /// Removes every dead letter, or those meant for `handler`; durable when it returns.
    /// Returns how many went.
    pub fn purge(&self, handler: Option<&str>) -> Result<usize, DbError> {
        let tx = self.db.begin_durable()?;
        let mut purged = 0;
        {
            let mut table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            table
                .retain(|_, value| {
                    let gone = handler.is_none_or(|h| decode(value).is_none_or(|l| l.handler == h));
                    purged += usize::from(gone);
                    !gone
                })
                .map_err(DbError::from_redb)?;
        }
        tx.commit().map_err(DbError::from_redb)?;
        self.used.fetch_sub(purged, Ordering::AcqRel);
        Ok(purged)
    }
}

fn decode(bytes: &[u8]) -> Option<DeadLetter> {
    match serde_json::from_slice(bytes) {
        Ok(letter) => Some(letter),
        Err(error) => {
            tracing::error!(%error, "skipping an unreadable dead letter");
            None
        }
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Body, Envelope, HOST_ADDRESS, Headers, Json};

    fn event(n: u32) -> Signal {
        Signal {
            envelope: Envelope::new(HOST_ADDRESS, Headers::new()),
            body: Body::Event {
                event_type: "E".into(),
                payload: Json::from_value(&serde_json::json!({ "n": n })),
            },
        }
    }

    /// Proves the store is bounded: reservations past the capacity are refused, and unused
    /// room comes back when a reservation is dropped.
    #[test]
    fn reservations_respect_the_capacity() {
        let store = DeadLetters::open(Db::in_memory().unwrap(), 3).unwrap();
        let mut two = store.reserve(2).unwrap();
        assert!(store.reserve(2).is_none(), "2 + 2 > 3");
        two.keep("a", DeadReason::MailboxFull, event(1)).unwrap();
        drop(two);
        assert_eq!(store.len(), 1);
        assert!(store.reserve(2).is_some(), "the unused unit came back");
        assert!(store.reserve(3).is_none());
    }

    /// Proves dead letters can be listed by handler, fetched, removed and purged, and that
    /// removing frees room.
    #[test]
    fn list_get_remove_and_purge() {
        let store = DeadLetters::open(Db::in_memory().unwrap(), 10).unwrap();
        let mut room = store.reserve(3).unwrap();
        let a1 = room.keep("a", DeadReason::MailboxFull, event(1)).unwrap();
        let b1 = room.keep("b", DeadReason::ClientGone, event(2)).unwrap();
        let a2 = room.keep("a", DeadReason::MailboxFull, event(3)).unwrap();
        drop(room);
        let ids = |list: Vec<DeadLetter>| list.into_iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list(None, 0, 10).unwrap()), [a1, b1, a2]);
        assert_eq!(ids(store.list(Some("a"), 0, 10).unwrap()), [a1, a2]);
        assert_eq!(ids(store.list(None, a1, 1).unwrap()), [b1]);
        let got = store.get(b1).unwrap().unwrap();
        assert_eq!(got.reason, DeadReason::ClientGone);
        assert_eq!(got.signal.body, event(2).body);
        let (taken, mut room) = store.take(b1).unwrap().unwrap();
        assert!(store.take(b1).unwrap().is_none(), "only one taker gets it");
        room.put_back(&taken).unwrap();
        drop(room);
        assert_eq!(
            store.get(b1).unwrap().unwrap().id,
            b1,
            "put back under its id"
        );
        assert!(
            store.reserve(7).is_some() && store.reserve(8).is_none(),
            "3 stored"
        );
        assert!(store.remove(b1).unwrap());
        assert!(!store.remove(b1).unwrap());
        assert_eq!(store.purge(Some("a")).unwrap(), 2);
        assert!(store.is_empty());
        assert!(
            store.reserve(10).is_some(),
            "everything removed frees its room"
        );
    }

    /// Proves dead letters survive reopening the store file, and ids keep increasing.
    #[test]
    fn dead_letters_persist_in_the_file() {
        let dir = std::env::temp_dir().join(format!("sb-dl-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(crate::db::FILE_NAME);
        let first = {
            let store = DeadLetters::open(Db::open(&path).unwrap(), 10).unwrap();
            let mut room = store.reserve(1).unwrap();
            room.keep("a", DeadReason::MailboxFull, event(7)).unwrap()
        };
        // The flusher thread may hold the old store for a moment after the drop.
        let db = (0..100)
            .find_map(|_| {
                Db::open(&path).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                })
            })
            .expect("the store reopens");
        let store = DeadLetters::open(db, 10).unwrap();
        assert_eq!(store.len(), 1);
        let mut room = store.reserve(1).unwrap();
        let second = room.keep("a", DeadReason::MailboxFull, event(8)).unwrap();
        assert!(second > first);
        let _ = std::fs::remove_dir_all(dir);
    }
}
