//! Open messages: every message delivered to a handler stays open until it is answered, and
//! takes exactly one answer, from the address it was delivered to.
//!
//! A handler answers by returning from `handle-message`, or later with the host's `reply`,
//! naming only the message: the host knows where the answer goes (the return address or the
//! sender, where a waiter may be registered in [`super::pending`]). A second answer, or one
//! from anyone but the addressee, is refused and counted; nothing reaches the sender. A
//! message still open at its deadline is answered 504 by the host.
//!
//! An answer given during a turn is [`claim`](Answers::claim)ed at once (so a second
//! claim fails at once) and released when the turn commits, or [`reopen`](Answers::reopen)ed
//! if the turn is discarded.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FastMap, ID_SHARDS, shard_of};
use crate::clock::Clock;
use crate::runtime::TIMER_HEADER;
use crate::signal::{Body, Failure, Json, REPLY_VIA_HEADER, ReplyTarget, Signal, code};

/// An open message: enough to answer it, and to check who may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The message's id (shared by the tables that index it).
    pub id: Arc<str>,
    /// The address it was delivered to: only it may answer.
    pub addressee: String,
    /// Where the answer goes: the message's return address, else its sender; nowhere for a
    /// timer's message.
    pub answer_to: Option<String>,
    /// The message's causal depth; its answer is one deeper.
    pub depth: u32,
    /// Whether the message descends from a fired timer; so does its answer.
    pub paced: bool,
    /// When the host answers it with 504, in milliseconds since the Unix epoch.
    pub deadline: u64,
    /// The handler that said it answers later, counted against its cap while open.
    pub deferred_by: Option<String>,
    /// The inbox of the host the answer must go back to ([`REPLY_VIA_HEADER`]), if any.
    pub reply_via: Option<String>,
}

impl Open {
    /// The open record of `message`, delivered to `addressee`; `None` for other kinds.
    pub fn of(message: &Signal, addressee: &str, default_deadline: u64) -> Option<Self> {
        let Body::Message(m) = &message.body else {
            return None;
        };
        Some(Self {
            id: Arc::from(message.envelope.id.as_str()),
            addressee: addressee.to_owned(),
            answer_to: (!message.envelope.headers.contains_key(TIMER_HEADER)).then(|| {
                m.return_address
                    .clone()
                    .unwrap_or_else(|| message.envelope.from.clone())
            }),
            depth: message.envelope.depth,
            paced: message.envelope.paced,
            deadline: message.envelope.deadline.unwrap_or(default_deadline),
            deferred_by: None,
            reply_via: message.envelope.headers.get(REPLY_VIA_HEADER).cloned(),
        })
    }

    /// The Reply or ErrorReply answering this message, from its addressee.
    pub fn answer(&self, outcome: Result<Json, Failure>, clock: &Clock) -> Signal {
        self.clone().into_answer(None, outcome, clock)
    }

    /// The answer, taking the record (its strings move into the answer), from `from` (the
    /// host, for a 504) or else from its addressee.
    pub fn into_answer(
        self,
        from: Option<String>,
        outcome: Result<Json, Failure>,
        clock: &Clock,
    ) -> Signal {
        let target = ReplyTarget {
            message_id: String::from(&*self.id),
            return_address: None,
            sender: self.answer_to.unwrap_or_default(),
        };
        let from = from.unwrap_or(self.addressee);
        let mut answer = target.answer(from, outcome, None, clock);
        answer.envelope.depth = self.depth.saturating_add(1);
        answer.envelope.paced = self.paced;
        if let Some(via) = self.reply_via {
            answer
                .envelope
                .headers
                .insert(REPLY_VIA_HEADER.to_owned(), via);
        }
        answer
    }
}

/// Why an answer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerRefused {
    /// The message is not open: answered already, past its deadline, or never delivered.
    NotOpen,
    /// The message is open, but was delivered to another address.
    NotAddressee,
}

impl AnswerRefused {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotOpen => "not_open",
            Self::NotAddressee => "not_addressee",
        }
    }

    /// What the guest that tried gets: 409.
    pub fn failure(&self, message_id: &str) -> Failure {
        match self {
            Self::NotOpen => Failure::new(
                code::CONFLICT,
                format!("message {message_id} is not open: it was answered already, passed its deadline, or was never delivered here"),
            )
            .with_help("a message takes exactly one answer: return it from handle-message, or return `later` and `reply` once"),
            Self::NotAddressee => Failure::new(
                code::CONFLICT,
                format!("message {message_id} was not delivered to this handler, so it cannot answer it"),
            ),
        }
    }
}

#[derive(Default)]
struct Table {
    open: FastMap<Arc<str>, Open>,
    by_deadline: BTreeSet<(u64, Arc<str>)>,
    /// Answered by a turn not yet committed: settled when it commits, open again if it fails.
    claimed: FastMap<Arc<str>, Open>,
}

/// Open messages each handler said it answers later, across every table. Locked after a
/// table, never before.
type Deferred = Mutex<HashMap<String, usize>>;

impl Table {
    fn insert(&mut self, open: Open, deferred: &Deferred) {
        if let Some(handler) = &open.deferred_by {
            *lock(deferred).entry(handler.clone()).or_default() += 1;
        }
        self.by_deadline.insert((open.deadline, open.id.clone()));
        self.open.insert(open.id.clone(), open);
    }

    fn remove(&mut self, id: &str, deferred: &Deferred) -> Option<Open> {
        let open = self.open.remove(id)?;
        self.by_deadline.remove(&(open.deadline, open.id.clone()));
        if let Some(handler) = &open.deferred_by {
            let mut deferred = lock(deferred);
            if let Some(count) = deferred.get_mut(handler) {
                *count -= 1;
                if *count == 0 {
                    deferred.remove(handler);
                }
            }
        }
        Some(open)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the messages delivered to a host's handlers stay open until their one answer: in
/// this process ([`Answers`]), or in a store the hosts of a cluster share. A message is
/// opened as it is delivered, claimed by its one answer (or the host's), held while the turn
/// that answered it commits, then settled or opened again, and expired at its deadline; an
/// implementation makes each step atomic for its message, so that two answers can never both
/// claim one.
pub trait OpenMessages: Send + Sync + 'static {
    /// Opens a message delivered to a handler.
    fn open(&self, open: Open);

    /// Notes that `handler` answers open message `id` later. False, changing nothing, when
    /// the handler already has `cap` such messages open. A message answered meanwhile (by
    /// `reply` in the same turn) needs nothing.
    fn defer(&self, id: &str, handler: &str, cap: usize) -> bool;

    /// Closes message `id` for an answer from `answerer`: the one answer it takes.
    fn claim(&self, id: &str, answerer: &str) -> Result<Open, AnswerRefused>;

    /// Closes message `id` for the host's own answer (a refusal, a trap, a deadline): the
    /// host may answer any open message.
    fn claim_any(&self, id: &str) -> Result<Open, AnswerRefused>;

    /// Holds a claimed message until its turn commits ([`OpenMessages::settle`]) or fails
    /// ([`OpenMessages::reopen`]).
    fn hold(&self, open: Open);

    /// Forgets a held message: its answer went out.
    fn settle(&self, id: &str);

    /// Opens again a held message whose answer was discarded with its turn.
    fn reopen(&self, id: &str);

    /// Closes every message past its deadline at `now` (milliseconds), for the host to
    /// answer 504, earliest first.
    fn expire(&self, now: u64) -> Vec<Open>;

    /// Whether message `id` is open.
    fn is_open(&self, id: &str) -> bool;

    /// Messages open now.
    fn len(&self) -> usize;

    /// Whether no message is open.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The open messages of this host, in memory.
pub struct Answers {
    shards: Box<[Mutex<Table>]>,
    deferred: Deferred,
}

impl Default for Answers {
    fn default() -> Self {
        Self {
            shards: (0..ID_SHARDS).map(|_| Mutex::default()).collect(),
            deferred: Mutex::default(),
        }
    }
}

impl OpenMessages for Answers {
    fn open(&self, open: Open) {
        self.lock(&open.id).insert(open, &self.deferred);
    }

    fn defer(&self, id: &str, handler: &str, cap: usize) -> bool {
        let mut table = self.lock(id);
        let Some(open) = table.open.get_mut(id) else {
            return true;
        };
        if open.deferred_by.is_some() {
            return true;
        }
        // Checked and counted under one lock: messages in other tables may be deferred by
        // the same handler at the same moment, and the cap holds across all of them.
        let mut deferred = lock(&self.deferred);
        let count = deferred.get(handler).copied().unwrap_or(0);
        if count >= cap {
            return false;
        }
        deferred.insert(handler.to_owned(), count + 1);
        open.deferred_by = Some(handler.to_owned());
        true
    }

    fn claim(&self, id: &str, answerer: &str) -> Result<Open, AnswerRefused> {
        let mut table = self.lock(id);
        match table.open.get(id) {
            None => Err(AnswerRefused::NotOpen),
            Some(open) if open.addressee != answerer => Err(AnswerRefused::NotAddressee),
            Some(_) => table
                .remove(id, &self.deferred)
                .ok_or(AnswerRefused::NotOpen),
        }
    }

    fn claim_any(&self, id: &str) -> Result<Open, AnswerRefused> {
        self.lock(id)
            .remove(id, &self.deferred)
            .ok_or(AnswerRefused::NotOpen)
    }

    fn hold(&self, open: Open) {
        self.lock(&open.id).claimed.insert(open.id.clone(), open);
    }

    fn settle(&self, id: &str) {
        self.lock(id).claimed.remove(id);
    }

    fn reopen(&self, id: &str) {
        let mut table = self.lock(id);
        if let Some(open) = table.claimed.remove(id) {
            table.insert(open, &self.deferred);
        }
    }

    fn expire(&self, now: u64) -> Vec<Open> {
        let mut expired = Vec::new();
        for shard in &self.shards {
            let mut table = lock(shard);
            while let Some((deadline, id)) = table.by_deadline.first().cloned() {
                if deadline > now {
                    break;
                }
                table.by_deadline.pop_first();
                if let Some(open) = table.remove(&id, &self.deferred) {
                    expired.push(open);
                }
            }
        }
        expired.sort_by_key(|open| open.deadline);
        expired
    }

    fn is_open(&self, id: &str) -> bool {
        self.lock(id).open.contains_key(id)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).open.len()).sum()
    }
}

impl Answers {
    /// The table message `id` is kept in. Ids are the host's own random UUIDs, so their
    /// last bytes spread them evenly; an id from elsewhere can only crowd one table, never
    /// change an answer.
    fn lock(&self, id: &str) -> MutexGuard<'_, Table> {
        lock(shard_of(&self.shards, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Envelope, Headers, Message};

    fn message(return_address: Option<&str>, deadline: Option<u64>) -> Signal {
        let mut envelope = Envelope::new("orders", Headers::new(), &Clock::system()).at_depth(3);
        envelope.deadline = deadline;
        Signal {
            envelope,
            body: Body::Message(Message {
                message_type: "Reserve".into(),
                to: "inventory".into(),
                return_address: return_address.map(str::to_owned),
                payload: Json::null(),
            }),
        }
    }

    /// The answer goes to the return address, else the sender, one step deeper, from the
    /// addressee.
    #[test]
    fn an_answer_goes_where_the_sender_asked() {
        let msg = message(Some("audit"), Some(10));
        let open = Open::of(&msg, "inventory", 99).unwrap();
        assert_eq!(
            (open.answer_to.as_deref(), open.deadline),
            (Some("audit"), 10)
        );
        let answer = open.answer(Ok(Json::null()), &Clock::system());
        assert_eq!(answer.envelope.from, "inventory");
        assert_eq!(answer.envelope.depth, 4);
        assert!(
            matches!(&answer.body, Body::Reply { reply_to, to, .. } if reply_to == msg.id() && to == "audit")
        );
        let open = Open::of(&message(None, None), "inventory", 99).unwrap();
        assert_eq!(
            (open.answer_to.as_deref(), open.deadline),
            (Some("orders"), 99)
        );
        let mut timer = message(None, None);
        timer
            .envelope
            .headers
            .insert(TIMER_HEADER.into(), "t-1".into());
        assert_eq!(Open::of(&timer, "inventory", 99).unwrap().answer_to, None);
    }

    /// Exactly one answer, and only from the addressee; a refused claim changes nothing.
    #[test]
    fn a_message_takes_one_answer_from_its_addressee() {
        let answers = Answers::default();
        let msg = message(None, Some(10));
        answers.open(Open::of(&msg, "inventory", 0).unwrap());
        assert_eq!(
            answers.claim(msg.id(), "mallory"),
            Err(AnswerRefused::NotAddressee)
        );
        let open = answers.claim(msg.id(), "inventory").unwrap();
        assert_eq!(
            answers.claim(msg.id(), "inventory"),
            Err(AnswerRefused::NotOpen)
        );
        answers.hold(open);
        answers.reopen(msg.id());
        let open = answers.claim(msg.id(), "inventory").unwrap();
        answers.hold(open);
        answers.settle(msg.id());
        answers.reopen(msg.id());
        assert!(answers.is_empty(), "a settled answer stays closed");
        assert_eq!(
            answers.claim("never-sent", "inventory"),
            Err(AnswerRefused::NotOpen)
        );
    }

    /// The cap on later answers holds when workers defer messages kept in different tables
    /// at the same moment: in each of 300 rounds, 8 threads released together defer 2
    /// messages each under a cap of 4, and exactly 4 are taken.
    #[test]
    fn the_later_cap_holds_across_tables_and_threads() {
        for _ in 0..300 {
            let answers = Answers::default();
            let msgs: Vec<_> = (0..16).map(|_| message(None, Some(10))).collect();
            for m in &msgs {
                answers.open(Open::of(m, "inventory", 0).unwrap());
            }
            let taken = std::sync::atomic::AtomicUsize::new(0);
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                for chunk in msgs.chunks(2) {
                    let (answers, taken, start) = (&answers, &taken, &start);
                    scope.spawn(move || {
                        start.wait();
                        for m in chunk {
                            if answers.defer(m.id(), "inventory", 4) {
                                taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            assert_eq!(taken.into_inner(), 4);
            assert_eq!(lock(&answers.deferred)["inventory"], 4);
        }
    }

    /// A handler may leave at most `cap` messages open for a later answer; each answered or
    /// expired one frees its place.
    #[test]
    fn later_answers_are_capped_per_handler() {
        let answers = Answers::default();
        let msgs: Vec<_> = (0..3).map(|_| message(None, Some(10))).collect();
        for m in &msgs {
            answers.open(Open::of(m, "inventory", 0).unwrap());
        }
        assert!(answers.defer(msgs[0].id(), "inventory", 2));
        assert!(answers.defer(msgs[1].id(), "inventory", 2));
        assert!(!answers.defer(msgs[2].id(), "inventory", 2), "past the cap");
        assert!(
            answers.defer(msgs[2].id(), "other", 2),
            "another handler's own cap"
        );
        answers.claim(msgs[0].id(), "inventory").unwrap();
        let fresh = message(None, Some(10));
        answers.open(Open::of(&fresh, "inventory", 0).unwrap());
        assert!(
            answers.defer(fresh.id(), "inventory", 2),
            "an answer freed a place"
        );
        assert_eq!(answers.expire(10).len(), 3);
        assert!(
            lock(&answers.deferred).is_empty(),
            "expiry frees every place"
        );
    }

    /// Past its deadline a message closes for the host's 504, in deadline order; an
    /// answered one is not expired.
    #[test]
    fn messages_expire_at_their_deadline() {
        let answers = Answers::default();
        let (a, b, c) = (
            message(None, Some(30)),
            message(None, Some(10)),
            message(None, Some(20)),
        );
        for m in [&a, &b, &c] {
            answers.open(Open::of(m, "inventory", 0).unwrap());
        }
        answers.claim(c.id(), "inventory").unwrap();
        assert!(answers.expire(5).is_empty());
        let expired: Vec<_> = answers
            .expire(30)
            .into_iter()
            .map(|o| o.id.to_string())
            .collect();
        assert_eq!(expired, [b.id().to_owned(), a.id().to_owned()]);
        assert!(answers.is_empty());
    }
}
