//! Turns: one signal at a time per agent, in arrival order, while distinct agents of one
//! handler run in parallel up to its concurrency.
//!
//! An agent handler's mailbox lets at most one signal per agent into its shared queue. A
//! signal for an agent that already has one queued or being handled waits in that agent's
//! own line, and the worker that finishes the agent's turn takes the next one itself. So the
//! order is the order the mailbox took them, whichever worker runs each. Waiting signals
//! stay counted in the mailbox's bounds. An agent with nothing in flight has no entry: idle
//! agents cost nothing here.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::FastMap;
use crate::address::{Address, Kind};
use crate::signal::{Body, Signal};

/// The agent a signal is for, if it is a message or reply to an agent.
pub fn agent_of(signal: &Signal) -> Option<&str> {
    let to = match &signal.body {
        Body::Message(m) => &m.to,
        Body::Reply { to, .. } | Body::ErrorReply { to, .. } => to,
        _ => return None,
    };
    (Address::kind_of(to) == Kind::Agent).then_some(to.as_str())
}

/// The agents of one mailbox with a signal in flight, and the signals (`T`, a signal as
/// queued) waiting behind it.
pub struct Turns<T> {
    busy: Mutex<FastMap<String, VecDeque<T>>>,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Self {
            busy: Mutex::default(),
        }
    }
}

impl<T> Turns<T> {
    /// Offers a signal for `agent`: queued behind the agent's turn in progress (and
    /// `Ok(None)`), or handed to `start` when the agent is idle. If `start` refuses it, the
    /// agent stays idle and the refusal is returned.
    pub fn enter<E>(
        &self,
        agent: &str,
        signal: T,
        start: impl FnOnce(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut busy = self.lock();
        if let Some(line) = busy.get_mut(agent) {
            line.push_back(signal);
            return Ok(());
        }
        start(signal)?;
        busy.insert(agent.to_owned(), VecDeque::new());
        Ok(())
    }

    /// Ends a turn of `agent`: its next signal, for the same worker to handle, or `None`
    /// when it has nothing more (it is idle again).
    pub fn next(&self, agent: &str) -> Option<T> {
        let mut busy = self.lock();
        let next = busy.get_mut(agent).and_then(VecDeque::pop_front);
        if next.is_none() {
            busy.remove(agent);
        }
        next
    }

    /// Agents with a signal in flight now.
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<String, VecDeque<T>>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::signal::{Envelope, Headers, Json, Message};

    fn to(address: &str) -> Signal {
        Signal {
            envelope: Envelope::new("user:ann", Headers::new(), &Clock::system()),
            body: Body::Message(Message {
                message_type: "Step".into(),
                to: address.into(),
                return_address: None,
                payload: Json::null(),
            }),
        }
    }

    /// An idle agent's signal starts at once; the next ones wait in order and are handed
    /// out one by one as turns end; then the agent is forgotten.
    #[test]
    fn one_turn_at_a_time_in_order() {
        let turns = Turns::<Signal>::default();
        let mut started = Vec::new();
        let (a1, a2, a3, b1) = (
            to("agent:c/a"),
            to("agent:c/a"),
            to("agent:c/a"),
            to("agent:c/b"),
        );
        let ids = [a2.id().to_owned(), a3.id().to_owned()];
        for signal in [a1, a2, a3, b1] {
            let agent = agent_of(&signal).unwrap().to_owned();
            turns
                .enter(&agent, signal, |s| {
                    started.push(s.id().to_owned());
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        assert_eq!(started.len(), 2, "a's first and b's first start at once");
        assert_eq!(turns.busy(), 2);
        assert_eq!(turns.next("agent:c/a").unwrap().id(), ids[0]);
        assert_eq!(turns.next("agent:c/a").unwrap().id(), ids[1]);
        assert!(turns.next("agent:c/a").is_none());
        assert!(turns.next("agent:c/b").is_none());
        assert_eq!(turns.busy(), 0, "idle agents leave no entry");
    }

    /// A refused start leaves the agent idle, so its next signal starts.
    #[test]
    fn a_refused_start_leaves_the_agent_idle() {
        let turns = Turns::<Signal>::default();
        let refused = turns.enter("agent:c/a", to("agent:c/a"), |_| Err("full"));
        assert_eq!(refused, Err("full"));
        assert_eq!(turns.busy(), 0);
        let mut ran = false;
        turns
            .enter("agent:c/a", to("agent:c/a"), |_| {
                ran = true;
                Ok::<_, ()>(())
            })
            .unwrap();
        assert!(ran);
    }

    /// Only messages and replies to agents have an agent.
    #[test]
    fn the_agent_of_a_signal() {
        assert_eq!(agent_of(&to("agent:c/a")), Some("agent:c/a"));
        assert_eq!(agent_of(&to("echo")), None);
    }
}
