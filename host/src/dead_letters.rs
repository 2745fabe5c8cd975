//! The dead-letter store: events, data changes and replies that a mailbox or a client queue
//! refused, kept with the handler they were meant for and the reason, until an operator
//! replays (to that one handler) or purges them.
//!
//! The store is bounded in all and for each handler (or client): every handler has its own
//! share, so one handler's failures (a stuck subscriber under an event storm) never take
//! the store from the others. Room for a copy is reserved ([`DeadLetters::reserve`]) before
//! the copy counts as accepted; a copy the store has no room for is refused at its source
//! and counted, never accepted and then lost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
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
    /// The transport lost track of it on its way.
    Lost,
    /// The other hosts of the cluster could not be reached.
    Unreachable,
    /// A broadcast's copy, or a message nobody awaited, was offered from the cluster's
    /// streams as many times as they offer one, never handled to the end (its handling may
    /// be what stops the hosts that take it).
    Undeliverable,
}

impl DeadReason {
    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MailboxFull => "mailbox_full",
            Self::HandlerStopped => "handler_stopped",
            Self::ClientSlow => "client_slow",
            Self::ClientGone => "client_gone",
            Self::Lost => "lost",
            Self::Unreachable => "unreachable",
            Self::Undeliverable => "undeliverable",
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
///
/// Letters are written by a thread of its own (`Writer`), never on the caller's: a storm of
/// refused copies on the signal path must not wait for the store's write lock, which a
/// durable commit (an fsync) may hold. Room is taken at once, so the bounds hold however far
/// the writer lags; every read first waits for the letters kept before it.
pub struct DeadLetters {
    db: Arc<Db>,
    capacity: usize,
    handler_capacity: usize,
    /// Stored plus reserved, in all and by handler.
    used: Arc<Mutex<Used>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Stamps each letter's `at`.
    clock: Clock,
    /// Where letters go to be written; taken on drop, which closes the writer's queue.
    writer: Option<std::sync::mpsc::Sender<Job>>,
    /// The writer thread, joined on drop so that every letter kept is written before the
    /// store can close.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DeadLetters {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Work for the writer thread.
enum Job {
    /// Write this letter.
    Keep(Box<DeadLetter>),
    /// Say when every letter sent before is written (or failed).
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Most letters written in one transaction.
const WRITE_BATCH: usize = 256;

/// The thread that writes dead letters, in the order they were kept, a batch per
/// transaction. A batch that fails to write is lost: logged, and its room given back.
struct Writer {
    db: Arc<Db>,
    used: Arc<Mutex<Used>>,
    jobs: std::sync::mpsc::Receiver<Job>,
}

impl Writer {
    fn run(self) {
        while let Ok(first) = self.jobs.recv() {
            let mut letters = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Keep(letter) => letters.push(*letter),
                    Job::Flush(done) => flushes.push(done),
                }
                if letters.len() < WRITE_BATCH {
                    next = self.jobs.try_recv().ok();
                }
            }
            if !letters.is_empty()
                && let Err(error) = self.write(&letters)
            {
                tracing::error!(%error, letters = letters.len(), "could not write dead letters; those signals are lost");
                let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
                for letter in &letters {
                    used.sub(&letter.handler, 1);
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&self, letters: &[DeadLetter]) -> Result<(), DbError> {
        insert(self.db.begin_fast()?, letters)
    }
}

/// Writes `letters` under their ids in `tx`, and commits it.
fn insert(tx: redb::WriteTransaction, letters: &[DeadLetter]) -> Result<(), DbError> {
    {
        let mut table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
        for letter in letters {
            let bytes = serde_json::to_vec(letter).expect("a dead letter always serializes");
            table
                .insert(letter.id, bytes.as_slice())
                .map_err(DbError::from_redb)?;
        }
    }
    tx.commit().map_err(DbError::from_redb)
}

/// Dead letters stored plus reserved.
#[derive(Debug, Default)]
struct Used {
    total: usize,
    by_handler: HashMap<String, usize>,
}

impl Used {
    fn add(&mut self, handler: &str, n: usize) {
        self.total += n;
        *self.by_handler.entry(handler.to_owned()).or_default() += n;
    }

    fn sub(&mut self, handler: &str, n: usize) {
        self.total = self.total.saturating_sub(n);
        if let Some(used) = self.by_handler.get_mut(handler) {
            *used = used.saturating_sub(n);
            if *used == 0 {
                self.by_handler.remove(handler);
            }
        }
    }
}

/// Room for one dead letter of one handler, taken from the store's capacity and the
/// handler's share; given back on drop if not used.
pub struct Reservation<'a> {
    store: &'a DeadLetters,
    handler: String,
    left: usize,
}

impl Reservation<'_> {
    /// The handler (or `user:<id>` client) the room is for.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// Keeps `signal` as a dead letter for the reservation's handler.
    pub fn keep(&mut self, reason: DeadReason, signal: Signal) -> Result<u64, DbError> {
        debug_assert!(self.left > 0, "a reservation used more than it reserved");
        self.left = self.left.saturating_sub(1);
        let result = self.store.write(&self.handler, reason, signal);
        if result.is_err() {
            self.store.used().sub(&self.handler, 1);
        }
        result
    }

    /// Puts a letter taken with [`DeadLetters::take`] back under its own id, durably.
    pub fn put_back(&mut self, letter: &DeadLetter) -> Result<(), DbError> {
        self.left = self.left.saturating_sub(1);
        let result = self
            .store
            .db
            .begin_durable()
            .and_then(|tx| insert(tx, std::slice::from_ref(letter)));
        if result.is_err() {
            self.store.used().sub(&self.handler, 1);
        }
        result
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.store.used().sub(&self.handler, self.left);
        }
    }
}

/// Just the owner of a stored letter, read without decoding the signal.
#[derive(Deserialize)]
struct Owner {
    handler: String,
}

impl DeadLetters {
    /// The store in `db`, holding at most `capacity` dead letters in all and
    /// `handler_capacity` for any one handler (or client), stamped by `clock`.
    pub fn open(
        db: Arc<Db>,
        capacity: usize,
        handler_capacity: usize,
        clock: Clock,
    ) -> Result<Self, DbError> {
        let tx = db.begin_durable()?;
        let mut used = Used::default();
        let last = {
            let table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            for item in table.iter().map_err(DbError::from_redb)? {
                let (_, value) = item.map_err(DbError::from_redb)?;
                // An unreadable letter still takes room, in a share of its own.
                used.add(&owner_of(value.value()), 1);
            }
            table
                .last()
                .map_err(DbError::from_redb)?
                .map_or(0, |(k, _)| k.value())
        };
        tx.commit().map_err(DbError::from_redb)?;
        let used = Arc::new(Mutex::new(used));
        let (writer, jobs) = std::sync::mpsc::channel();
        let thread = Writer {
            db: db.clone(),
            used: used.clone(),
            jobs,
        };
        let thread = std::thread::Builder::new()
            .name("switchboard-dead-letters".into())
            .spawn(move || thread.run())
            .map_err(|e| DbError::from_redb(redb::Error::Io(e)))?;
        Ok(Self {
            db,
            capacity,
            handler_capacity,
            used,
            next_id: std::sync::atomic::AtomicU64::new(last + 1),
            clock,
            writer: Some(writer),
            thread: Some(thread),
        })
    }

    fn used(&self) -> MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every letter kept so far is written (or lost). Blocks: call it off the
    /// async workers.
    pub fn flush(&self) {
        let (done, written) = std::sync::mpsc::sync_channel(1);
        let sent = self.writer.as_ref().map(|w| w.send(Job::Flush(done)));
        if matches!(sent, Some(Ok(()))) {
            let _ = written.recv();
        }
    }

    /// Room for one dead letter of `handler`, if both the store and the handler's share
    /// have it.
    pub fn reserve(&self, handler: &str) -> Option<Reservation<'_>> {
        let mut used = self.used();
        let share = used.by_handler.get(handler).copied().unwrap_or(0);
        if used.total >= self.capacity || share >= self.handler_capacity {
            return None;
        }
        used.add(handler, 1);
        Some(Reservation {
            store: self,
            handler: handler.to_owned(),
            left: 1,
        })
    }

    /// Dead letters kept (and reserved) for `handler`.
    pub fn used_by(&self, handler: &str) -> usize {
        self.used().by_handler.get(handler).copied().unwrap_or(0)
    }

    /// Dead letters stored, once those kept so far are written (blocks: call it off the
    /// async workers).
    pub fn len(&self) -> usize {
        self.flush();
        self.count().unwrap_or(0)
    }

    /// Dead letters stored, being written, or with room reserved: what the store holds or is
    /// about to, read without waiting for the writer.
    pub fn held(&self) -> usize {
        self.used().total
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most the store holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most dead letters kept for one handler.
    pub fn handler_capacity(&self) -> usize {
        self.handler_capacity
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

    /// Hands a letter to the writer thread; its id.
    fn write(&self, handler: &str, reason: DeadReason, signal: Signal) -> Result<u64, DbError> {
        let letter = DeadLetter {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            handler: handler.to_owned(),
            reason,
            at: self.clock.now_millis(),
            signal,
        };
        let id = letter.id;
        let sent = self
            .writer
            .as_ref()
            .is_some_and(|writer| writer.send(Job::Keep(Box::new(letter))).is_ok());
        if !sent {
            let stopped = std::io::Error::other("the dead-letter writer has stopped");
            return Err(DbError::from_redb(redb::Error::Io(stopped)));
        }
        Ok(id)
    }

    /// Takes one dead letter out of the store (durably) to offer it again, keeping its room
    /// in the returned reservation: [`Reservation::put_back`] restores it if the offer is
    /// refused; dropping the reservation frees the room. Only one taker gets a given letter,
    /// so a replay can never deliver it twice.
    pub fn take(&self, id: u64) -> Result<Option<(DeadLetter, Reservation<'_>)>, DbError> {
        self.flush();
        let tx = self.db.begin_durable()?;
        let letter = {
            let mut table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            let removed = table.remove(id).map_err(DbError::from_redb)?;
            removed.and_then(|v| decode(v.value()))
        };
        tx.commit().map_err(DbError::from_redb)?;
        // The stored letter's unit of room becomes the reservation's.
        Ok(letter.map(|letter| {
            let handler = letter.handler.clone();
            (
                letter,
                Reservation {
                    store: self,
                    handler,
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
        self.flush();
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
        self.flush();
        let table = self.table()?;
        let value = table.get(id).map_err(DbError::from_redb)?;
        Ok(value.and_then(|v| decode(v.value())))
    }

    /// Removes one dead letter (after a successful replay, or by an operator); durable when
    /// it returns. Returns whether it was there.
    pub fn remove(&self, id: u64) -> Result<bool, DbError> {
        self.flush();
        let tx = self.db.begin_durable()?;
        let removed = tx
            .open_table(TABLE)
            .map_err(DbError::from_redb)?
            .remove(id)
            .map_err(DbError::from_redb)?
            .map(|value| owner_of(value.value()));
        tx.commit().map_err(DbError::from_redb)?;
        if let Some(owner) = &removed {
            self.used().sub(owner, 1);
        }
        Ok(removed.is_some())
    }

    /// Removes every dead letter, or those meant for `handler`; durable when it returns.
    /// Returns how many went.
    pub fn purge(&self, handler: Option<&str>) -> Result<usize, DbError> {
        self.flush();
        let tx = self.db.begin_durable()?;
        let mut purged: HashMap<String, usize> = HashMap::new();
        {
            let mut table = tx.open_table(TABLE).map_err(DbError::from_redb)?;
            table
                .retain(|_, value| {
                    let owner = owner_of(value);
                    let gone = handler.is_none_or(|h| owner.is_empty() || owner == h);
                    if gone {
                        *purged.entry(owner).or_default() += 1;
                    }
                    !gone
                })
                .map_err(DbError::from_redb)?;
        }
        tx.commit().map_err(DbError::from_redb)?;
        let mut used = self.used();
        for (owner, n) in &purged {
            used.sub(owner, *n);
        }
        Ok(purged.values().sum())
    }
}

/// The handler a stored letter is for; empty if unreadable.
fn owner_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Owner>(bytes).map_or_else(|_| String::new(), |owner| owner.handler)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Body, Envelope, HOST_ADDRESS, Headers, Json};

    fn event(n: u32) -> Signal {
        Signal {
            envelope: Envelope::new(HOST_ADDRESS, Headers::new(), &Clock::system()),
            body: Body::Event {
                event_type: "E".into(),
                payload: Json::from_value(&serde_json::json!({ "n": n })),
            },
        }
    }

    /// Proves keeping a dead letter never waits for the store's write lock: while another
    /// writer holds it (as a durable commit's fsync does), a letter is kept at once, and it
    /// is listed once that writer is done. On the code before, keeping waited for the lock.
    #[test]
    fn keeping_never_waits_for_the_write_lock() {
        let db = Db::in_memory().unwrap();
        let store = Arc::new(DeadLetters::open(db.clone(), 5, 5, Clock::system()).unwrap());
        let holding = db.begin_durable().unwrap();
        let (kept, keeping) = std::sync::mpsc::channel();
        let keeper = std::thread::spawn({
            let store = store.clone();
            move || {
                let mut room = store.reserve("stuck").unwrap();
                kept.send(room.keep(DeadReason::MailboxFull, event(1)).is_ok())
                    .unwrap();
            }
        });
        let waited = keeping.recv_timeout(std::time::Duration::from_secs(10));
        drop(holding);
        assert_eq!(
            waited,
            Ok(true),
            "keeping a letter waited for the write lock"
        );
        keeper.join().unwrap();
        let listed = store.list(None, 0, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].handler, "stuck");
        assert_eq!(store.len(), 1);
    }

    /// Proves every letter kept is written before the store lets go of its file: letters
    /// kept just before it is dropped are all there when the file is opened again.
    #[test]
    fn letters_kept_before_a_drop_are_written() {
        let dir = std::env::temp_dir().join(format!("sb-dead-letters-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        {
            let store =
                DeadLetters::open(Db::open(&path).unwrap(), 500, 500, Clock::system()).unwrap();
            for n in 0..300 {
                let mut room = store.reserve("stuck").unwrap();
                room.keep(DeadReason::MailboxFull, event(n)).unwrap();
            }
        }
        let reopened = Db::open(&path).expect("the file is free once the store is dropped");
        let store = DeadLetters::open(reopened, 500, 500, Clock::system()).unwrap();
        assert_eq!(store.len(), 300);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Proves the store is bounded: reservations past the capacity are refused, and unused
    /// room comes back when a reservation is dropped.
    /// Proves room is bounded in all and per handler: a handler at its share is refused
    /// while another still gets room, and unused room comes back.
    #[test]
    fn reservations_respect_the_capacity_and_each_share() {
        let store = DeadLetters::open(Db::in_memory().unwrap(), 5, 3, Clock::system()).unwrap();
        let mut kept = Vec::new();
        for n in 0..3 {
            let mut room = store.reserve("stuck").unwrap();
            kept.push(room.keep(DeadReason::MailboxFull, event(n)).unwrap());
        }
        assert!(store.reserve("stuck").is_none(), "its share is full");
        assert_eq!(store.used_by("stuck"), 3);
        let unused = store
            .reserve("other")
            .expect("another handler still has room");
        drop(unused);
        assert_eq!(store.used_by("other"), 0, "the unused room came back");
        let _a = store.reserve("other").unwrap();
        let _b = store.reserve("third").unwrap();
        assert!(
            store.reserve("fourth").is_none(),
            "the store is full: 3 + 2"
        );
        assert!(store.remove(kept[0]).unwrap());
        assert!(
            store.reserve("stuck").is_some(),
            "a removed letter frees its share"
        );
    }

    /// Proves listing, getting, taking and putting back, removing and purging, each
    /// keeping the shares right.
    #[test]
    fn list_get_remove_and_purge() {
        let store = DeadLetters::open(Db::in_memory().unwrap(), 10, 10, Clock::system()).unwrap();
        let keep = |handler: &str, reason, n| {
            let mut room = store.reserve(handler).unwrap();
            room.keep(reason, event(n)).unwrap()
        };
        let a1 = keep("a", DeadReason::MailboxFull, 1);
        let b1 = keep("b", DeadReason::ClientGone, 2);
        let a2 = keep("a", DeadReason::MailboxFull, 3);
        let ids = |list: Vec<DeadLetter>| list.into_iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list(None, 0, 10).unwrap()), [a1, b1, a2]);
        assert_eq!(ids(store.list(Some("a"), 0, 10).unwrap()), [a1, a2]);
        assert_eq!(ids(store.list(None, a1, 1).unwrap()), [b1]);
        let got = store.get(b1).unwrap().unwrap();
        assert_eq!(got.reason, DeadReason::ClientGone);
        assert_eq!(got.signal.body, event(2).body);
        let (taken, mut room) = store.take(b1).unwrap().unwrap();
        assert_eq!(room.handler(), "b");
        assert!(store.take(b1).unwrap().is_none(), "only one taker gets it");
        room.put_back(&taken).unwrap();
        drop(room);
        assert_eq!(
            store.get(b1).unwrap().unwrap().id,
            b1,
            "put back under its id"
        );
        assert_eq!((store.used_by("a"), store.used_by("b")), (2, 1));
        assert!(store.remove(b1).unwrap());
        assert!(!store.remove(b1).unwrap());
        assert_eq!(store.used_by("b"), 0);
        assert_eq!(store.purge(Some("a")).unwrap(), 2);
        assert!(store.is_empty());
        assert_eq!(store.used_by("a"), 0, "everything removed frees its room");
    }

    /// Proves dead letters survive reopening the store file, and ids keep increasing.
    #[test]
    fn dead_letters_persist_in_the_file() {
        let dir = std::env::temp_dir().join(format!("sb-dl-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(crate::db::FILE_NAME);
        let first = {
            let store =
                DeadLetters::open(Db::open(&path).unwrap(), 10, 10, Clock::system()).unwrap();
            let mut room = store.reserve("a").unwrap();
            room.keep(DeadReason::MailboxFull, event(7)).unwrap()
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
        let store = DeadLetters::open(db, 10, 10, Clock::system()).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.used_by("a"),
            1,
            "its share is counted again on opening"
        );
        let mut room = store.reserve("a").unwrap();
        let second = room.keep(DeadReason::MailboxFull, event(8)).unwrap();
        assert!(second > first);
        let _ = std::fs::remove_dir_all(dir);
    }
}
