//! Where a signal's wall-clock deadline is enforced, and where a deleted handler's calls
//! are abandoned.
//!
//! A guest blocked in a host call (a WASI sleep, a long `request`) never reaches an epoch
//! check, so neither its CPU limit nor a trap can stop it. [`guarded`] races the wasmtime
//! call future against the deadline and the mailbox's [`Stop`]: the loser is dropped, which
//! abandons the guest mid-call. Its instance must then be discarded, never reused.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::signal::{Failure, code};

/// Tells the workers of a mailbox to abandon the calls they are in. Signals a worker takes
/// afterwards (those still queued when the handler was deleted) are handled as before.
#[derive(Clone, Debug, Default)]
pub(in crate::router) struct Stop(Arc<Notify>);

impl Stop {
    /// Abandons every call in progress on the mailbox's workers.
    pub(in crate::router) fn stop(&self) {
        self.0.notify_waiters();
    }
}

/// Why a call was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// The wall-clock deadline passed.
    Deadline(Duration),
    /// The handler was deleted.
    Stopped,
}

impl Cut {
    /// The ErrorReply the sender gets: 504 past the deadline, 503 when deleted.
    pub(super) fn failure(self, handler: &str) -> Failure {
        match self {
            Self::Deadline(deadline) => Failure::new(
                code::TIMEOUT,
                format!(
                    "handler `{handler}` did not finish within its deadline of {} ms per signal \
                     (the `deadline_ms` deploy setting)",
                    deadline.as_millis()
                ),
            )
            .with_help(
                "the handler may be blocked in a sleep or a slow call; redeploy it with a larger \
                 deadline if it needs more time",
            ),
            Self::Stopped => Failure::new(
                code::OVERLOADED,
                format!("handler `{handler}` was deleted while handling this signal"),
            ),
        }
    }
}

/// Runs `call` until it finishes, `deadline` passes, or `stop` fires, whichever is first.
/// An abandoned call's future is dropped here; its instance must not be used again.
pub(super) async fn guarded<F: Future>(
    call: F,
    deadline: Duration,
    stop: &Stop,
) -> Result<F::Output, Cut> {
    // Registered before the call starts, so a stop that comes during it is never missed.
    let stopped = stop.0.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    tokio::select! {
        biased;
        output = call => Ok(output),
        () = &mut stopped => Err(Cut::Stopped),
        () = tokio::time::sleep(deadline) => Err(Cut::Deadline(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a call that never ends is cut at its deadline.
    #[tokio::test]
    async fn deadline_cuts_a_call_that_never_ends() {
        let stop = Stop::default();
        let deadline = Duration::from_millis(50);
        let cut = guarded(std::future::pending::<()>(), deadline, &stop).await;
        assert_eq!(cut, Err(Cut::Deadline(deadline)));
        assert_eq!(cut.unwrap_err().failure("x").code, code::TIMEOUT);
    }

    /// Proves a stop abandons a call in progress, and a call started after the stop runs
    /// to its end.
    #[tokio::test]
    async fn stop_cuts_calls_in_progress_only() {
        let stop = Stop::default();
        let long = Duration::from_secs(3600);
        let running = tokio::spawn({
            let stop = stop.clone();
            async move { guarded(std::future::pending::<()>(), long, &stop).await }
        });
        tokio::task::yield_now().await;
        stop.stop();
        assert_eq!(running.await.unwrap(), Err(Cut::Stopped));
        let later = guarded(async { 7 }, long, &stop).await;
        assert_eq!(later, Ok(7));
        let failure = Cut::Stopped.failure("x");
        assert_eq!(failure.code, code::OVERLOADED);
        assert!(failure.description.contains("deleted"), "{failure}");
    }
}
