//! The errors of keyed state, each with the code a client gets and a message naming what to
//! change.

use thiserror::Error;

use crate::db::DbError;

/// A read or an operator action on the store failed.
#[derive(Debug, Error)]
pub enum StateError {
    /// The store itself failed; nothing changed.
    #[error(transparent)]
    Store(#[from] DbError),
}

impl StateError {
    /// The HTTP-style code a client gets.
    pub fn code(&self) -> u16 {
        503
    }
}

/// Why a batch was not committed; in every case nothing of it changed.
#[derive(Debug, Error)]
pub enum CommitError {
    /// Another turn changed a key after this turn read it.
    #[error(
        "state key `{}` changed after this signal read it (another signal wrote it meanwhile); handle the signal again",
        short(key)
    )]
    Conflict {
        /// The key that changed.
        key: String,
    },
    /// A value is past the per-value limit.
    #[error(
        "the value of state key `{}` is {bytes} bytes, past the limit of {limit} bytes per value (the host setting `state_value_bytes`)",
        short(key)
    )]
    ValueTooLarge {
        /// The key being set.
        key: String,
        /// The value's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A key is longer than [`super::MAX_KEY_BYTES`].
    #[error("a state key of {bytes} bytes is past the limit of {limit} bytes per key")]
    KeyTooLong {
        /// The key's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The handler would store more than its limit.
    #[error(
        "handler `{handler}` would store {would} bytes of state, past its limit of {limit} (the host setting `state_handler_bytes`); delete keys or raise it"
    )]
    HandlerFull {
        /// The handler.
        handler: String,
        /// What it would store with this batch.
        would: u64,
        /// The limit.
        limit: u64,
    },
    /// The handler would have more pending timers than its quota.
    #[error(
        "handler `{handler}` would have {would} pending timers, past its quota of {limit} (the host setting `timers_per_handler`); cancel timers or raise it"
    )]
    TooManyTimers {
        /// The handler.
        handler: String,
        /// How many it would have.
        would: usize,
        /// The quota.
        limit: usize,
    },
    /// A handler would keep more pushes for a user than the host lets one handler keep
    /// for one user.
    #[error(
        "handler `{}` would keep {would} pushes for user `{}`, past the host's limit of {limit} per handler and user (the host setting `kept_per_user`); the user must connect and acknowledge them first",
        short(handler),
        short(user)
    )]
    TooManyKept {
        /// The user.
        user: String,
        /// The handler keeping them.
        handler: String,
        /// How many it would have.
        would: usize,
        /// The limit.
        limit: usize,
    },
    /// The store failed; nothing of the batch changed.
    #[error(transparent)]
    Store(#[from] DbError),
    /// The store is shutting down and commits nothing more.
    #[error("the state store is shutting down")]
    Stopped,
}

impl CommitError {
    /// The HTTP-style code a client gets: 409 conflict, 507 past a size limit, 429 past the
    /// timer quota, 413 a key too long, 503 the store failed.
    pub fn code(&self) -> u16 {
        match self {
            Self::Conflict { .. } => 409,
            Self::ValueTooLarge { .. } | Self::HandlerFull { .. } => 507,
            Self::KeyTooLong { .. } => 413,
            Self::TooManyTimers { .. } | Self::TooManyKept { .. } => 429,
            Self::Store(_) | Self::Stopped => 503,
        }
    }
}

/// A key for an error message, cut so a hostile key cannot flood a log line.
fn short(key: &str) -> String {
    const MAX: usize = 64;
    if key.len() <= MAX {
        return key.to_owned();
    }
    let mut end = MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &key[..end])
}
