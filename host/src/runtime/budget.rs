//! What handling one signal may cause: how deep in a causal chain the signals a handler
//! sends may go, and how many it may send, emit, request and log.
//!
//! A [`Budget`] lives in each instance's store and is re-armed with the incoming signal's
//! depth before every call; every host call that sends something spends from it first. A
//! chain that would go past the host's causal depth limit is refused with 508 (a loop), and
//! a call past a per-signal cap with 429. Replies are never refused: an answer must arrive.

use crate::config::HostConfig;
use crate::signal::{Failure, code};

/// The host calls a per-signal cap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// `send`.
    Send,
    /// `emit` and `emit-data-change`.
    Emit,
    /// `request`.
    Request,
}

impl Spend {
    /// The call as labelled in metrics: `send`, `emit`, `request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Emit => "emit",
            Self::Request => "request",
        }
    }

    /// The host setting that holds this call's cap.
    fn setting(self) -> &'static str {
        match self {
            Self::Send => "max_sends_per_signal",
            Self::Emit => "max_emits_per_signal",
            Self::Request => "max_requests_per_signal",
        }
    }

    /// What the call does, for an error message.
    fn verb(self) -> &'static str {
        match self {
            Self::Send => "sent messages",
            Self::Emit => "emitted events and data changes",
            Self::Request => "made requests",
        }
    }
}

/// The host-wide limits a `Budget` enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Longest causal chain.
    pub max_depth: u32,
    /// `send`s per signal.
    pub sends: u32,
    /// Emits per signal.
    pub emits: u32,
    /// `request`s per signal.
    pub requests: u32,
    /// `log` lines per signal.
    pub log_lines: u32,
}

impl Caps {
    /// The caps a host's settings name.
    pub fn of(config: &HostConfig) -> Self {
        Self {
            max_depth: config.max_causal_depth,
            sends: config.max_sends_per_signal,
            emits: config.max_emits_per_signal,
            requests: config.max_requests_per_signal,
            log_lines: config.max_log_lines_per_signal,
        }
    }
}

/// Why a host call was refused before it sent anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The new signal would be `depth` steps into its chain, past `limit`.
    Depth { depth: u32, limit: u32 },
    /// The handler already made `cap` calls of this kind for this signal.
    Cap { spend: Spend, cap: u32 },
}

impl Refusal {
    /// The typed failure the guest's host call returns: 508 or 429.
    pub fn failure(self, handler: &str) -> Failure {
        match self {
            Self::Depth { depth, limit } => Failure::new(
                code::LOOP_DETECTED,
                format!(
                    "loop detected: handler `{handler}` tried to send a signal {depth} steps \
                     from the client signal that started its chain, past the host's limit of \
                     {limit} (max_causal_depth)"
                ),
            )
            .with_help(
                "a handler that sends, emits or requests what it handles, directly or through \
                 other handlers, loops forever: stop the chain on some condition (do not \
                 re-emit the event type being handled, count hops in the payload), or raise \
                 the host's max_causal_depth if the chain is meant to be this long",
            ),
            Self::Cap { spend, cap } => Failure::new(
                code::TOO_MANY,
                format!(
                    "handler `{handler}` already {} {cap} times while handling this one \
                     signal, the most the host allows ({})",
                    spend.verb(),
                    spend.setting()
                ),
            )
            .with_help(format!(
                "spread the work over several signals (send one message carrying a batch \
                 instead of one per item), or raise the host's {} setting",
                spend.setting()
            )),
        }
    }
}

/// What the signal being handled has used so far.
#[derive(Debug)]
pub struct Budget {
    caps: Caps,
    /// Depth of the signal being handled.
    depth: u32,
    /// Whether the signal being handled descends from a fired timer.
    paced: bool,
    sent: u32,
    emitted: u32,
    requested: u32,
    logged: u32,
    log_dropped: u32,
    /// A hash of the id of the message being handled, until the handler answers it.
    answering: Option<u64>,
}

/// A cheap fingerprint of a message id (compared, never trusted for anything else):
/// foldhash, seeded at random once per process.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(id)
}

impl Budget {
    /// A budget under `caps`, armed for a signal at depth 0.
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            depth: 0,
            paced: false,
            sent: 0,
            emitted: 0,
            requested: 0,
            logged: 0,
            log_dropped: 0,
            answering: None,
        }
    }

    /// Starts afresh for a signal at causal depth `depth`; `answering` is the id of the
    /// message being handled, which the handler may answer once with `reply` whatever the
    /// limits.
    pub fn arm(&mut self, depth: u32, answering: Option<&str>) {
        *self = Self::new(self.caps);
        self.depth = depth;
        self.answering = answering.map(id_hash);
    }

    /// Marks the signal being handled as descending from a fired timer, or not: everything
    /// it sends does too (see [`crate::signal::Envelope::paced`]).
    pub fn pace(&mut self, paced: bool) {
        self.paced = paced;
    }

    /// Whether the signal being handled descends from a fired timer.
    pub fn paced(&self) -> bool {
        self.paced
    }

    /// Spends a `reply` to message `message_id`: free the first time it answers the message
    /// being handled (an answer must be able to arrive), otherwise a send like any other, so
    /// a guest cannot use `reply` to loop or flood past the limits.
    pub fn reply(&mut self, message_id: &str) -> Result<u32, Refusal> {
        if self.answering.is_some() && self.answering == Some(id_hash(message_id)) {
            self.answering = None;
            return Ok(self.next_depth());
        }
        self.spend(Spend::Send)
    }

    /// The depth of anything sent while handling the current signal.
    pub fn next_depth(&self) -> u32 {
        self.depth.saturating_add(1)
    }

    /// Spends one call of kind `spend`: the new signal's depth, or why it may not be sent.
    /// A refused call spends nothing.
    pub fn spend(&mut self, spend: Spend) -> Result<u32, Refusal> {
        let depth = self.next_depth();
        if depth > self.caps.max_depth {
            return Err(Refusal::Depth {
                depth,
                limit: self.caps.max_depth,
            });
        }
        let (used, cap) = match spend {
            Spend::Send => (&mut self.sent, self.caps.sends),
            Spend::Emit => (&mut self.emitted, self.caps.emits),
            Spend::Request => (&mut self.requested, self.caps.requests),
        };
        if *used >= cap {
            return Err(Refusal::Cap { spend, cap });
        }
        *used += 1;
        Ok(depth)
    }

    /// Whether one more `log` line fits the per-signal cap; a line that does not is counted.
    pub fn log_line(&mut self) -> bool {
        if self.logged < self.caps.log_lines {
            self.logged += 1;
            true
        } else {
            self.log_dropped = self.log_dropped.saturating_add(1);
            false
        }
    }

    /// Lines dropped by the per-signal cap since the last time this was asked.
    pub fn take_log_dropped(&mut self) -> u32 {
        std::mem::take(&mut self.log_dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Caps {
        Caps {
            max_depth: 4,
            sends: 2,
            emits: 3,
            requests: 1,
            log_lines: 2,
        }
    }

    /// Signals sent while handling depth d are at d + 1; past the limit they are refused
    /// with 508 naming the depth, the limit and the setting.
    #[test]
    fn depth_grows_by_one_and_stops_at_the_limit() {
        let mut budget = Budget::new(caps());
        budget.arm(2, None);
        assert_eq!(budget.spend(Spend::Emit), Ok(3));
        budget.arm(3, None);
        assert_eq!(budget.spend(Spend::Send), Ok(4));
        budget.arm(4, None);
        let refused = budget.spend(Spend::Request).unwrap_err();
        assert_eq!(refused, Refusal::Depth { depth: 5, limit: 4 });
        let failure = refused.failure("storm");
        assert_eq!(failure.code, code::LOOP_DETECTED);
        assert!(failure.description.contains("5 steps"), "{failure}");
        assert!(failure.description.contains("limit of 4"), "{failure}");
        assert!(failure.help.unwrap().contains("max_causal_depth"));
        budget.arm(u32::MAX, None);
        assert!(budget.spend(Spend::Emit).is_err(), "no wrap-around");
    }

    /// Each kind of call has its own cap per signal, reset when the next signal is armed;
    /// past it, 429 naming the setting.
    #[test]
    fn caps_count_per_signal_and_kind() {
        let mut budget = Budget::new(caps());
        budget.arm(0, None);
        for _ in 0..3 {
            assert!(budget.spend(Spend::Emit).is_ok());
        }
        let refused = budget.spend(Spend::Emit).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Cap {
                spend: Spend::Emit,
                cap: 3
            }
        );
        let failure = refused.failure("flood");
        assert_eq!(failure.code, code::TOO_MANY);
        assert!(
            failure.description.contains("max_emits_per_signal"),
            "{failure}"
        );
        assert!(failure.description.contains("`flood`"), "{failure}");
        assert!(
            budget.spend(Spend::Send).is_ok(),
            "sends have their own cap"
        );
        assert!(budget.spend(Spend::Request).is_ok());
        assert!(budget.spend(Spend::Request).is_err());
        budget.arm(0, None);
        assert!(
            budget.spend(Spend::Emit).is_ok(),
            "a new signal, a new budget"
        );
    }

    /// Log lines past the per-signal cap are dropped and counted once.
    #[test]
    fn log_lines_are_capped_per_signal() {
        let mut budget = Budget::new(caps());
        budget.arm(0, None);
        assert!(budget.log_line() && budget.log_line());
        assert!(!budget.log_line() && !budget.log_line());
        assert_eq!(budget.take_log_dropped(), 2);
        assert_eq!(budget.take_log_dropped(), 0);
        budget.arm(0, None);
        assert!(budget.log_line());
    }

    /// The first reply to the message being handled is free even at the depth limit; any
    /// other reply is a send: refused past the depth limit and counted against the cap.
    #[test]
    fn only_the_answer_to_the_message_being_handled_is_free() {
        let mut budget = Budget::new(caps());
        budget.arm(4, Some("m1"));
        assert_eq!(
            budget.reply("m1"),
            Ok(5),
            "the answer gets through at the limit"
        );
        assert!(
            matches!(budget.reply("m1"), Err(Refusal::Depth { .. })),
            "a second answer is a send past the limit"
        );
        budget.arm(0, Some("m1"));
        for _ in 0..2 {
            assert!(budget.reply("other").is_ok(), "a deferred reply is a send");
        }
        assert_eq!(
            budget.reply("other"),
            Err(Refusal::Cap {
                spend: Spend::Send,
                cap: 2
            })
        );
        assert_eq!(
            budget.reply("m1"),
            Ok(1),
            "the handled message can still be answered"
        );
    }
}
