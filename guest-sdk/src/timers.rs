//! Durable timers: a message sent later (a reminder), stored by the host with the state and
//! committed with the current signal, so it fires even after a restart, and at least once.
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use std::time::Duration;
//! # use switchboard_sdk::{Failure, Message, timers::{self, When}};
//! #[derive(Serialize, Deserialize)]
//! struct Remind { text: String }
//! impl Message for Remind {}
//!
//! let id = timers::schedule("agent:reminders/ann", &Remind { text: "tea".into() },
//!     When::After(Duration::from_secs(60)))?;
//! timers::cancel(&id)?;
//! # Ok::<(), Failure>(())
//! ```
//!
//! The message comes from the scheduling address, carries the header [`TIMER_HEADER`] set
//! to the timer's id, and its answer goes nowhere: handle it as a one-way message.

use std::time::Duration;

use crate::failure::Failure;
use crate::outgoing::{self, SendOptions};
use crate::typed::Message;
use crate::wit_timers as host;

/// The header a timer's message carries: the timer's id. A handler can tell a fired timer
/// from a message sent by someone.
pub const TIMER_HEADER: &str = "switchboard-timer";

/// When a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long after the current signal's turn commits.
    After(Duration),
    /// At this time, in milliseconds since the Unix epoch (at once if it is past).
    At(u64),
}

impl From<When> for host::When {
    fn from(when: When) -> Self {
        match when {
            When::After(delay) => {
                Self::AfterMs(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            When::At(ms) => Self::AtMs(ms),
        }
    }
}

/// Schedules `msg` for `to` at `when`. Returns the timer's id, to [`cancel`] it; fails with
/// 429 past the handler's quota of timers.
pub fn schedule<M: Message>(to: &str, msg: &M, when: When) -> Result<String, Failure> {
    schedule_with(to, msg, when, SendOptions::new())
}

/// [`schedule`] with headers (a return address is ignored: a timer's answer goes nowhere).
pub fn schedule_with<M: Message>(
    to: &str,
    msg: &M,
    when: When,
    options: SendOptions,
) -> Result<String, Failure> {
    let out = outgoing::typed_outgoing(to, msg, options)?;
    Ok(host::schedule(&out, when.into())?)
}

/// Schedules a message of any type with any JSON payload.
pub fn schedule_untyped(
    to: &str,
    message_type: &str,
    payload: &serde_json::Value,
    when: When,
) -> Result<String, Failure> {
    let out = outgoing::untyped_outgoing(to, message_type, payload, SendOptions::new());
    Ok(host::schedule(&out, when.into())?)
}

/// Cancels a timer of this handler that has not fired yet; whether there was one. The
/// cancel commits with the current signal.
pub fn cancel(id: &str) -> Result<bool, Failure> {
    Ok(host::cancel(id)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::tests::{Unencodable, assert_unencodable};

    /// A delay or a time becomes the host's variant; delays round down to whole
    /// milliseconds and saturate instead of wrapping.
    #[test]
    fn when_becomes_the_wit_variant() {
        assert_eq!(
            host::When::from(When::After(Duration::from_millis(1500))),
            host::When::AfterMs(1500)
        );
        assert_eq!(host::When::from(When::At(42)), host::When::AtMs(42));
        assert_eq!(
            host::When::from(When::After(Duration::MAX)),
            host::When::AfterMs(u64::MAX)
        );
        assert_eq!(
            host::When::from(When::After(Duration::from_micros(1999))),
            host::When::AfterMs(1)
        );
        assert_eq!(
            host::When::from(When::After(Duration::ZERO)),
            host::When::AfterMs(0)
        );
    }

    /// A timer's message is encoded before the host stores the timer: one that does not
    /// encode is a 500 and schedules nothing (the host's import would panic natively).
    #[test]
    fn an_unencodable_message_schedules_nothing() {
        let when = When::After(Duration::from_secs(60));
        assert_unencodable(schedule("agent:reminders/ann", &Unencodable, when));
        let options = SendOptions::new().header("k", "v");
        assert_unencodable(schedule_with("reminders", &Unencodable, when, options));
    }
}
