//! The end of a turn: a handler that finished without error commits its state writes and
//! timers (durably, grouped with other turns' commits) and only then lets out what it sent;
//! one that failed, trapped or broke a limit has no effects at all.
//!
//! A service with concurrency above 1 may run two turns that read and write one key; the
//! later commit finds the key changed after it read it, and its turn is handled again from
//! the start (its sends were held, so nothing went out twice), up to [`ATTEMPTS`] times,
//! then the sender gets 409. No update is lost silently.

use super::Worker;
use crate::keyed::CommitError;
use crate::runtime::turn::{Turn, commit_failure};
use crate::runtime::{Outbound, Outcome};
use crate::signal::{Failure, code};

/// How many times a turn is handled before a conflict is the sender's answer.
pub(super) const ATTEMPTS: u32 = 5;

/// What became of a turn.
pub(super) enum Settled {
    /// Committed (or discarded): the outcome to answer with.
    Done(Outcome),
    /// Its state changed under it: handle the signal again.
    Again,
}

impl Worker {
    /// Commits or discards `turn`, the effects of the call that gave `outcome`.
    pub(super) async fn settle(&self, turn: Turn, mut outcome: Outcome, attempt: u32) -> Settled {
        let Some(router) = self.router.upgrade() else {
            return Settled::Done(outcome);
        };
        let parts = turn.into_parts();
        if outcome.result.is_err() {
            router.discard(parts.outputs);
            return Settled::Done(outcome);
        }
        if let Some(batch) = parts.batch {
            let Some(store) = self.runtime.state_store() else {
                router.discard(parts.outputs);
                outcome.result = Err(Failure::new(
                    code::OVERLOADED,
                    "this host keeps no keyed state",
                ));
                return Settled::Done(outcome);
            };
            match store.commit(batch).await {
                Ok(_) => {}
                Err(CommitError::Conflict { .. }) if attempt < ATTEMPTS => {
                    router.discard(parts.outputs);
                    return Settled::Again;
                }
                Err(error) => {
                    router.discard(parts.outputs);
                    if router.may_warn(&self.slot.name) {
                        tracing::warn!(handler = %self.slot.name, code = error.code(), attempt, "a turn's state did not commit");
                    }
                    outcome.result = Err(commit_failure(&error));
                    outcome.later = false;
                    return Settled::Done(outcome);
                }
            }
        }
        router.release(parts.outputs);
        Settled::Done(outcome)
    }
}
