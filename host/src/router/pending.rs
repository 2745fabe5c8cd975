//! Pending replies: where a Reply or ErrorReply finds the waiter of the message it answers.
//!
//! A waiter is registered before its message is routed and removed when the reply arrives
//! or the deadline passes. Only the addressee of the message (or the host, for the errors it
//! raises) can answer it: a guest that learns another message's id cannot forge its reply. The ids of timed-out requests are remembered for a while so a
//! late reply is dropped and counted instead of surprising the requester's `handle-reply`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{ID_SHARDS, shard_of};
use crate::address::Address;
use crate::signal::{HOST_ADDRESS, Signal};

/// How long a timed-out request's id is remembered to recognise its late reply.
const EXPIRED_MEMORY: Duration = Duration::from_secs(600);
/// Most timed-out ids remembered at once.
const EXPIRED_CAPACITY: usize = 100_000;

struct Waiter {
    /// The address the message went to: replies must come from there.
    addressee: String,
    tx: oneshot::Sender<Signal>,
}

#[derive(Default)]
struct Expired {
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

type Waiters = Mutex<HashMap<String, Waiter, foldhash::fast::RandomState>>;

/// The table of messages awaiting a reply.
pub struct Pending {
    waiters: Box<[Waiters]>,
    expired: Mutex<Expired>,
    late: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            waiters: (0..ID_SHARDS).map(|_| Waiters::default()).collect(),
            expired: Mutex::default(),
            late: AtomicU64::default(),
        }
    }
}

/// What became of a reply offered to the table.
#[derive(Debug)]
pub enum Claim {
    /// A waiter took it.
    Delivered,
    /// It answers a request that already timed out; it was dropped.
    Late,
    /// Nobody waits for it: route it by its address.
    Unclaimed(Signal),
    /// It claims to answer a message that was not sent to its sender; it was dropped.
    /// Carries who sent it and who the message went to, for the caller's (rate-limited) log.
    Forged { from: String, addressee: String },
}

impl Pending {
    /// Registers a waiter for the reply to message `id`, sent to `addressee`.
    pub fn register(&self, id: String, addressee: String) -> oneshot::Receiver<Signal> {
        let (tx, rx) = oneshot::channel();
        lock(self.shard(&id)).insert(id, Waiter { addressee, tx });
        rx
    }

    /// Offers a reply whose `reply-to` is `reply_to` to its waiter.
    pub fn claim(&self, reply_to: &str, reply: Signal) -> Claim {
        let waiter = {
            let mut waiters = lock(self.shard(reply_to));
            let from = reply.envelope.from.as_str();
            match waiters.get(reply_to) {
                Some(w) if answers_for(&w.addressee, from) || from == HOST_ADDRESS => {
                    waiters.remove(reply_to)
                }
                Some(w) => {
                    return Claim::Forged {
                        from: from.to_owned(),
                        addressee: w.addressee.clone(),
                    };
                }
                None => None,
            }
        };
        if let Some(waiter) = waiter {
            // A waiter that gave up between our remove and this send is a late reply too.
            return match waiter.tx.send(reply) {
                Ok(()) => Claim::Delivered,
                Err(_) => self.count_late(),
            };
        }
        if lock(&self.expired).ids.contains(reply_to) {
            return self.count_late();
        }
        Claim::Unclaimed(reply)
    }

    fn count_late(&self) -> Claim {
        self.late.fetch_add(1, Ordering::Relaxed);
        Claim::Late
    }

    /// Gives up waiting for message `id`'s reply.
    pub fn expire(&self, id: &str) {
        lock(self.shard(id)).remove(id);
        let mut expired = lock(&self.expired);
        let now = Instant::now();
        while let Some((at, old)) = expired.order.front() {
            if now.duration_since(*at) < EXPIRED_MEMORY && expired.order.len() < EXPIRED_CAPACITY {
                break;
            }
            let old = old.clone();
            expired.ids.remove(&old);
            expired.order.pop_front();
        }
        expired.ids.insert(id.to_owned());
        expired.order.push_back((now, id.to_owned()));
    }

    /// Messages currently awaiting a reply.
    pub fn waiting(&self) -> usize {
        self.waiters.iter().map(|shard| lock(shard).len()).sum()
    }

    /// The table holding message `id`'s waiter.
    fn shard(&self, id: &str) -> &Waiters {
        shard_of(&self.waiters, id)
    }

    /// Replies that arrived after their request had timed out.
    pub fn late_replies(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }
}

/// Expires a request's waiter when dropped, unless its reply came: a request abandoned
/// early (its caller hung up) leaves no entry behind, and its late reply is recognised.
pub struct Forget<'a> {
    pending: &'a Pending,
    id: &'a str,
    /// The reply came or the waiter was expired already: nothing to forget.
    settled: bool,
}

impl<'a> Forget<'a> {
    /// Watches message `id`'s waiter in `pending`.
    pub fn new(pending: &'a Pending, id: &'a str) -> Self {
        Self {
            pending,
            id,
            settled: false,
        }
    }

    /// The waiter is gone (its reply was claimed, or it was expired): dropping this guard
    /// needs no lock.
    pub fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if !self.settled && lock(self.pending.shard(self.id)).contains_key(self.id) {
            self.pending.expire(self.id);
        }
    }
}

/// Whether an answer from `from` comes from the address a message was sent to: the same
/// address, or the full form (`agent:<handler>/<id>`) of a short agent address
/// (`agent:<id>`) the host resolved when it delivered the message.
fn answers_for(addressee: &str, from: &str) -> bool {
    addressee == from
        || matches!(
            (Address::parse(addressee), Address::parse(from)),
            (
                Ok(Address::Agent { handler: None, id: short }),
                Ok(Address::Agent { handler: Some(_), id }),
            ) if short == id
        )
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Json, ReplyTarget};

    fn reply_to(id: &str) -> Signal {
        reply_from(id, "b")
    }

    fn reply_from(id: &str, from: &str) -> Signal {
        ReplyTarget {
            message_id: id.into(),
            return_address: None,
            sender: "a".into(),
        }
        .answer(from, Ok(Json::null()), None, &crate::clock::Clock::system())
    }

    #[test]
    fn a_reply_reaches_its_waiter_once() {
        let pending = Pending::default();
        let mut rx = pending.register("m1".into(), "b".into());
        assert!(matches!(
            pending.claim("m1", reply_to("m1")),
            Claim::Delivered
        ));
        assert!(rx.try_recv().is_ok());
        assert!(matches!(
            pending.claim("m1", reply_to("m1")),
            Claim::Unclaimed(_)
        ));
        assert_eq!(pending.waiting(), 0);
    }

    /// An answer from the full address of an agent sent to by its short address is its
    /// addressee's; another agent's is not.
    #[test]
    fn a_short_agent_address_is_answered_from_its_full_form() {
        assert!(answers_for("agent:alice", "agent:counter/alice"));
        assert!(answers_for("agent:counter/alice", "agent:counter/alice"));
        assert!(!answers_for("agent:alice", "agent:counter/bob"));
        assert!(!answers_for("agent:counter/alice", "agent:other/alice"));
        assert!(!answers_for("echo", "agent:counter/echo"));
    }

    /// A caller that stops waiting (its guard dropped before the reply) leaves no waiter, and
    /// the reply that comes later is counted late; a settled guard changes nothing. Waiters
    /// spread over the tables all count.
    #[test]
    fn an_abandoned_request_forgets_its_waiter() {
        let pending = Pending::default();
        let ids: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        let _waiters: Vec<_> = ids
            .iter()
            .map(|id| pending.register(id.clone(), "b".into()))
            .collect();
        assert_eq!(pending.waiting(), 40);
        drop(Forget::new(&pending, "m1"));
        assert_eq!(pending.waiting(), 39);
        assert!(matches!(pending.claim("m1", reply_to("m1")), Claim::Late));
        let mut settled = Forget::new(&pending, "m2");
        settled.settled();
        drop(settled);
        assert_eq!(
            pending.waiting(),
            39,
            "a settled guard leaves the table alone"
        );
        assert!(matches!(
            pending.claim("m2", reply_to("m2")),
            Claim::Delivered
        ));
    }

    #[test]
    fn a_late_reply_is_dropped_and_counted() {
        let pending = Pending::default();
        let _rx = pending.register("m1".into(), "b".into());
        pending.expire("m1");
        assert!(matches!(pending.claim("m1", reply_to("m1")), Claim::Late));
        assert_eq!(pending.late_replies(), 1);
    }

    #[test]
    fn only_the_addressee_or_the_host_can_answer() {
        let pending = Pending::default();
        let mut rx = pending.register("m1".into(), "b".into());
        assert!(matches!(
            pending.claim("m1", reply_from("m1", "mallory")),
            Claim::Forged { from, addressee } if from == "mallory" && addressee == "b"
        ));
        assert!(rx.try_recv().is_err());
        assert!(matches!(
            pending.claim("m1", reply_from("m1", "host")),
            Claim::Delivered
        ));
        assert!(rx.try_recv().is_ok());
    }
}
