//! Callback sends still awaiting their reply, counted per handler.
//!
//! A handler that `send`s a message gets its reply later as a signal in its own mailbox.
//! Each mailbox keeps room for [`CALLBACK_CAP`] such replies beyond its normal size, and a
//! handler may have at most that many callback sends open: past the cap, `send` fails with
//! 429. So a reply to a message a handler sent never finds its mailbox full. A send is
//! closed when its reply leaves the mailbox (or is dead-lettered or dropped); one whose
//! reply never comes is forgotten after [`OPEN_FOR`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::FastMap;

/// Callback sends one handler may have awaiting replies; also the room each mailbox keeps
/// for replies.
pub const CALLBACK_CAP: usize = 256;
/// How long an unanswered callback send holds its place.
pub const OPEN_FOR: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Inner {
    /// Open sends by message id: the handler, when the place is given up, and whether a
    /// reply has already taken the room kept for it.
    open: FastMap<String, (Arc<str>, Instant, bool)>,
    /// Open sends per handler.
    per_handler: FastMap<Arc<str>, usize>,
}

/// The open callback sends of every handler.
#[derive(Default)]
pub struct Callbacks {
    inner: Mutex<Inner>,
}

impl Callbacks {
    /// Opens a callback send `id` for `handler`, or says how many it already has open when
    /// that is [`CALLBACK_CAP`].
    pub fn open(&self, id: &str, handler: &Arc<str>) -> Result<(), usize> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.per_handler.get(handler).copied().unwrap_or(0) >= CALLBACK_CAP {
            Self::sweep(&mut inner, now);
            let open = inner.per_handler.get(handler).copied().unwrap_or(0);
            if open >= CALLBACK_CAP {
                return Err(open);
            }
        }
        inner
            .open
            .insert(id.to_owned(), (handler.clone(), now + OPEN_FOR, false));
        *inner.per_handler.entry(handler.clone()).or_default() += 1;
        Ok(())
    }

    /// Whether `id` is a callback send still awaiting its reply.
    pub fn is_open(&self, id: &str) -> bool {
        self.lock().open.contains_key(id)
    }

    /// Closes the callback send `id`, if it is open.
    pub fn close(&self, id: &str) {
        let mut inner = self.lock();
        if let Some((handler, ..)) = inner.open.remove(id) {
            Self::release(&mut inner, &handler);
        }
    }

    /// Whether a reply to `id` may take the room kept for it: `id` is a callback send of
    /// `handler` still awaiting its reply, and no reply has taken that room yet. Only the
    /// first reply does; any other is bounded like every other signal.
    pub fn claim_room(&self, id: &str, handler: &str) -> bool {
        match self.lock().open.get_mut(id) {
            Some((owner, _, taken)) if **owner == *handler && !*taken => {
                *taken = true;
                true
            }
            _ => false,
        }
    }

    /// Callback sends `handler` has open.
    pub fn open_for(&self, handler: &str) -> usize {
        self.lock().per_handler.get(handler).copied().unwrap_or(0)
    }

    fn release(inner: &mut Inner, handler: &Arc<str>) {
        if let Some(n) = inner.per_handler.get_mut(handler) {
            *n -= 1;
            if *n == 0 {
                inner.per_handler.remove(handler);
            }
        }
    }

    /// Forgets sends whose reply is overdue.
    fn sweep(inner: &mut Inner, now: Instant) {
        let overdue: Vec<_> = inner
            .open
            .iter()
            .filter(|(_, (_, until, _))| *until <= now)
            .map(|(id, (handler, ..))| (id.clone(), handler.clone()))
            .collect();
        for (id, handler) in overdue {
            inner.open.remove(&id);
            Self::release(inner, &handler);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the cap holds per handler and closing a send frees its place.
    #[test]
    fn the_cap_is_per_handler_and_closing_frees_a_place() {
        let callbacks = Callbacks::default();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        for n in 0..CALLBACK_CAP {
            callbacks.open(&format!("a{n}"), &a).unwrap();
        }
        assert_eq!(callbacks.open("a-extra", &a), Err(CALLBACK_CAP));
        callbacks.open("b0", &b).unwrap();
        callbacks.close("a0");
        callbacks.close("a0");
        assert_eq!(callbacks.open_for("a"), CALLBACK_CAP - 1);
        callbacks.open("a-extra", &a).unwrap();
        assert_eq!(callbacks.open_for("b"), 1);
    }

    /// Proves only the first reply to a callback send, and only to its sender, takes the
    /// room kept for it: a guest that answers one message many times is bounded like any
    /// other sender.
    #[test]
    fn only_the_first_reply_takes_the_kept_room() {
        let callbacks = Callbacks::default();
        let a: Arc<str> = Arc::from("a");
        callbacks.open("m1", &a).unwrap();
        assert!(!callbacks.claim_room("m1", "b"), "not b's send");
        assert!(callbacks.claim_room("m1", "a"));
        assert!(
            !callbacks.claim_room("m1", "a"),
            "a second reply has no kept room"
        );
        assert!(!callbacks.claim_room("unknown", "a"));
        callbacks.close("m1");
        assert!(!callbacks.claim_room("m1", "a"));
    }
}
