//! Bytes of queued signals ([`Signal::size`](crate::Signal::size)), bounded twice: each
//! handler's mailbox by the host's `mailbox_bytes`, and all mailboxes together by its
//! `queue_budget_bytes`. A mailbox charges a signal's bytes when it takes it and releases
//! them when a worker takes it out; bytes still charged when a mailbox's last holder goes
//! (its queue dropped unhandled) are given back to the host's budget then.
//!
//! A reply to a message the handler sent itself (an open callback send, see
//! [`super::callbacks`]) is charged but never refused: the mailbox promises it room. Those
//! replies are at most [`super::CALLBACK_CAP`] per handler, each at most the largest signal,
//! so they can take a mailbox past its bound by that much and no more; everything else is
//! refused while they hold the room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::transport::{ByteBound, OverBytes};

/// The host's budget of queued bytes, shared by every mailbox.
#[derive(Debug)]
pub struct QueueBudget {
    queued: AtomicUsize,
    limit: usize,
}

impl QueueBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes queued in every mailbox now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// One handler's queued bytes, shared by its mailboxes (the one it moved from, while that
/// one drains, and the new one) and their workers.
#[derive(Debug)]
pub struct MailboxBytes {
    queued: AtomicUsize,
    limit: usize,
    budget: Arc<QueueBudget>,
}

impl MailboxBytes {
    /// A mailbox's account, bounded at `limit` bytes, drawing on `budget`.
    pub fn new(limit: usize, budget: Arc<QueueBudget>) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            limit,
            budget,
        })
    }

    /// Charges `size` bytes, or refuses them if they would take the mailbox past its bound
    /// or the host past its budget. A `promised` signal (a reply the mailbox keeps room
    /// for) is charged without a check.
    pub fn charge(&self, size: usize, promised: bool) -> Result<(), OverBytes> {
        if promised {
            self.queued.fetch_add(size, Ordering::AcqRel);
            self.budget.queued.fetch_add(size, Ordering::AcqRel);
            return Ok(());
        }
        take(&self.queued, size, self.limit).map_err(|queued| OverBytes {
            bound: ByteBound::Mailbox,
            limit: self.limit,
            queued,
            size,
        })?;
        take(&self.budget.queued, size, self.budget.limit).map_err(|queued| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            OverBytes {
                bound: ByteBound::Host,
                limit: self.budget.limit,
                queued,
                size,
            }
        })
    }

    /// Gives back the bytes of a signal taken out of the mailbox (or never queued).
    pub fn release(&self, size: usize) {
        self.queued.fetch_sub(size, Ordering::AcqRel);
        self.budget.queued.fetch_sub(size, Ordering::AcqRel);
    }

    /// Bytes queued in this handler's mailbox now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Drop for MailboxBytes {
    fn drop(&mut self) {
        // Signals still queued went with the mailbox: their bytes are free again.
        let left = *self.queued.get_mut();
        self.budget.queued.fetch_sub(left, Ordering::AcqRel);
    }
}

/// Adds `size` to `counter` unless that would pass `limit`; on refusal, what it held.
fn take(counter: &AtomicUsize, size: usize, limit: usize) -> Result<(), usize> {
    let before = counter.fetch_add(size, Ordering::AcqRel);
    if before.saturating_add(size) > limit {
        counter.fetch_sub(size, Ordering::AcqRel);
        return Err(before);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the mailbox bound and the host budget each refuse what would pass them,
    /// naming themselves; a refusal charges nothing; promised bytes are never refused; and a
    /// dropped mailbox gives its bytes back to the budget.
    #[test]
    fn both_bounds_hold_and_bytes_come_back() {
        let budget = QueueBudget::new(100);
        let a = MailboxBytes::new(60, budget.clone());
        let b = MailboxBytes::new(60, budget.clone());
        a.charge(50, false).unwrap();
        let over = a.charge(20, false).unwrap_err();
        assert_eq!(
            (over.bound, over.limit, over.queued, over.size),
            (ByteBound::Mailbox, 60, 50, 20)
        );
        b.charge(40, false).unwrap();
        let over = b.charge(20, false).unwrap_err();
        assert_eq!(
            (over.bound, over.limit, over.queued),
            (ByteBound::Host, 100, 90)
        );
        assert_eq!((a.queued(), b.queued(), budget.queued()), (50, 40, 90));
        a.charge(30, true).unwrap();
        assert_eq!(
            (a.queued(), budget.queued()),
            (80, 120),
            "a promised reply is charged"
        );
        a.release(30);
        a.release(50);
        b.charge(20, false).unwrap();
        assert_eq!(budget.queued(), 60);
        drop(b);
        assert_eq!(budget.queued(), 0, "a dropped mailbox gives its bytes back");
    }
}
