//! Where a signal's wall-clock deadline is enforced, and where a deleted handler's calls
//! are abandoned.
//!
//! A guest blocked in a host call (a WASI sleep, a long `request`) never reaches an epoch
//! check, so neither its CPU limit nor a trap can stop it. [`guarded`] races the wasmtime
//! call future against the deadline and the mailbox's [`Stop`]: the loser is dropped, which
//! abandons the guest mid-call. Its instance must then be discarded, never reused.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;

use crate::signal::{Failure, code};

/// Tells the workers of a mailbox to abandon the signals they are handling. Signals a worker
/// takes afterwards (those still queued when the handler was deleted) are handled as before.
#[derive(Clone, Debug, Default)]
pub(in crate::router) struct Stop(Arc<Stopping>);

#[derive(Debug, Default)]
struct Stopping {
    notify: Notify,
    /// How many times the mailbox was stopped.
    stops: AtomicU64,
}

impl Stop {
    /// Abandons every signal being handled on the mailbox's workers.
    pub(in crate::router) fn stop(&self) {
        self.0.stops.fetch_add(1, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Marks the start of handling one signal: a stop from now on abandons it, even between
    /// its calls (starting an instance, then handling).
    pub(super) fn watch(&self) -> Watch {
        Watch {
            stop: self.clone(),
            stops: self.0.stops.load(Ordering::SeqCst),
        }
    }
}

/// One signal's view of its mailbox's [`Stop`].
pub(super) struct Watch {
    stop: Stop,
    stops: u64,
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
///
/// Most calls finish in their first poll (a warm instance answering at once), so the stop
/// and the deadline are armed only for a call that has to wait: a signal handled at once
/// registers no timer and no waiter.
pub(super) async fn guarded<F: Future>(
    call: F,
    deadline: Duration,
    watch: &Watch,
) -> Result<F::Output, Cut> {
    let started = tokio::time::Instant::now();
    if watch.stopped() {
        return Err(Cut::Stopped);
    }
    let mut call = std::pin::pin!(call);
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    if let Poll::Ready(output) = first {
        return Ok(output);
    }
    // Registered before the count is read, so a stop is either seen in the count or wakes
    // this call.
    let stopped = watch.stop.0.notify.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    if watch.stopped() {
        return Err(Cut::Stopped);
    }
    tokio::select! {
        biased;
        output = call => Ok(output),
        () = &mut stopped => Err(Cut::Stopped),
        () = tokio::time::sleep_until(started + deadline) => Err(Cut::Deadline(deadline)),
    }
}

impl Watch {
    /// Whether the mailbox was stopped since this signal's handling began.
    fn stopped(&self) -> bool {
        self.stop.0.stops.load(Ordering::SeqCst) != self.stops
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
        let cut = guarded(std::future::pending::<()>(), deadline, &stop.watch()).await;
        assert_eq!(cut, Err(Cut::Deadline(deadline)));
        assert_eq!(cut.unwrap_err().failure("x").code, code::TIMEOUT);
    }

    /// Proves a stop abandons a call in progress and a later call of the same signal, while
    /// a signal whose handling starts after the stop runs to its end.
    #[tokio::test]
    async fn stop_cuts_calls_in_progress_only() {
        let stop = Stop::default();
        let long = Duration::from_secs(3600);
        let running = tokio::spawn({
            let stop = stop.clone();
            async move {
                let watch = stop.watch();
                let first = guarded(std::future::pending::<()>(), long, &watch).await;
                let second = guarded(async { 1 }, long, &watch).await;
                (first, second)
            }
        });
        tokio::task::yield_now().await;
        stop.stop();
        let (first, second) = running.await.unwrap();
        assert_eq!(first, Err(Cut::Stopped));
        assert_eq!(second, Err(Cut::Stopped));
        let later = guarded(async { 7 }, long, &stop.watch()).await;
        assert_eq!(later, Ok(7));
        let failure = Cut::Stopped.failure("x");
        assert_eq!(failure.code, code::OVERLOADED);
        assert!(failure.description.contains("deleted"), "{failure}");
    }
}
