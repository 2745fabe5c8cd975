//! The host's embedded transactional store: one redb file in the data directory (or memory,
//! for a host without one). Dead letters live here; agent state, timers and offline messages
//! are meant to join them, each in its own table.
//!
//! Writes on the signal path commit without an fsync ([`Durability::None`]); a flusher
//! thread makes them durable with one fsync every [`FLUSH_EVERY`], so a flood of writes
//! costs one fsync per interval rather than one per write. A crash loses at most the last
//! interval of such writes; everything an operator does (replay, purge) commits durably.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};
use thiserror::Error;

/// How often writes made without an fsync are made durable.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "switchboard.redb";

/// The store failed; the operation changed nothing.
#[derive(Debug, Error)]
#[error("the host's store failed: {0}")]
pub struct DbError(#[from] redb::Error);

impl DbError {
    /// Wraps any of redb's specific errors.
    pub fn from_redb(error: impl Into<redb::Error>) -> Self {
        Self(error.into())
    }
}

/// The embedded store, shared by everything that keeps state.
pub struct Db {
    database: Database,
    dirty: AtomicBool,
}

impl Db {
    /// Opens (or creates) the store file at `path` and starts its flusher.
    pub fn open(path: &Path) -> Result<Arc<Self>, DbError> {
        let database = Database::create(path).map_err(DbError::from_redb)?;
        Ok(Self::start(database))
    }

    /// A store held in memory, gone with the process: for hosts without a data directory.
    pub fn in_memory() -> Result<Arc<Self>, DbError> {
        let database = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(DbError::from_redb)?;
        Ok(Self::start(database))
    }

    fn start(database: Database) -> Arc<Self> {
        let db = Arc::new(Self {
            database,
            dirty: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("switchboard-db-flush".into())
            .spawn(move || flush_loop(weak))
            .expect("spawning the store's flusher thread");
        db
    }

    /// The underlying database, for reads.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Begins a write on the signal path: committed without an fsync, made durable by the
    /// flusher within [`FLUSH_EVERY`].
    pub fn begin_fast(&self) -> Result<WriteTransaction, DbError> {
        let mut tx = self.database.begin_write().map_err(DbError::from_redb)?;
        tx.set_durability(Durability::None)
            .map_err(DbError::from_redb)?;
        self.dirty.store(true, Ordering::Release);
        Ok(tx)
    }

    /// Begins a write that is durable when its commit returns.
    pub fn begin_durable(&self) -> Result<WriteTransaction, DbError> {
        self.database.begin_write().map_err(DbError::from_redb)
    }

    /// Makes every earlier write durable now.
    pub fn flush(&self) -> Result<(), DbError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let tx = self.begin_durable()?;
            tx.commit().map_err(DbError::from_redb)?;
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::error!(%error, "could not make the last writes durable");
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until the store is dropped.
fn flush_loop(db: Weak<Db>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(db) = db.upgrade() else { break };
        if let Err(error) = db.flush() {
            tracing::error!(%error, "could not make recent writes durable");
        }
    }
}
