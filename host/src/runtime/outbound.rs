//! What a running guest's host calls need from the rest of the host: the runtime's one
//! outbound interface. The router implements it; [`DenyAll`] serves the `describe` probe, so
//! a handler being checked at deploy time cannot act on anyone.
//!
//! Everything a guest sends during a signal's turn except an awaited `request` is an
//! [`Output`] held in the turn (an output gate): [`Outbound::release`]d when the turn
//! commits, [`Outbound::discard`]ed when it fails. What must be refused at once (a send past
//! the callback cap, a second answer) is reserved when the guest asks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::signal::{Failure, Json, Signal, code};

/// A request's eventual answer: the Reply or ErrorReply signal, or the host's failure.
pub type Answer = Pin<Box<dyn Future<Output = Result<Signal, Failure>> + Send>>;

/// A signal a turn sends, held until the turn commits.
#[derive(Debug)]
pub enum Output {
    /// A message sent without waiting (its callback room reserved by [`Outbound::send`]).
    Send(Signal),
    /// An event or data change.
    Broadcast(Signal),
    /// A one-way push to a client.
    Push(Signal),
    /// The answer to a message, claimed by [`Outbound::claim`].
    Answer(Signal),
}

/// Where the signals a guest sends go. Every signal arrives stamped by the host.
pub trait Outbound: Send + Sync + 'static {
    /// Reserves what a message sent by handler `owner` without waiting needs: if its reply
    /// will come back to the handler, one of its places for replies. Fails (429) when the
    /// handler has too many messages awaiting replies. The message goes out as an
    /// [`Output::Send`].
    fn send(&self, signal: &Signal, owner: &Arc<str>) -> Result<(), Failure>;

    /// A message whose reply the guest awaits, suspended, until `timeout`: it goes out at
    /// once.
    fn request(&self, signal: Signal, timeout: Duration) -> Answer;

    /// Claims message `id`, open at `answerer`, for the answer `outcome`, and gives back
    /// the answer to hold as an [`Output::Answer`]. Fails with 409 for a message answered
    /// already or not delivered to `answerer`.
    fn claim(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<Signal, Failure>;

    /// How many subscribers a broadcast would be offered to now.
    fn subscribers(&self, signal: &Signal) -> u32;

    /// Whether a client is connected at `address` (`user:<id>`).
    fn is_online(&self, address: &str) -> bool;

    /// Sends what a committed turn held.
    fn release(&self, outputs: Vec<Output>);

    /// Drops what a failed turn held, giving back what was reserved for it.
    fn discard(&self, outputs: Vec<Output>);
}

/// Refuses every host call: for a guest that must not reach anyone (the deploy-time probe).
pub struct DenyAll;

impl DenyAll {
    fn refuse() -> Failure {
        Failure::new(
            code::OVERLOADED,
            "host calls are not available while the handler is being checked",
        )
        .with_help("send signals from the handle functions, not from `describe`")
    }
}

impl Outbound for DenyAll {
    fn send(&self, _: &Signal, _: &Arc<str>) -> Result<(), Failure> {
        Err(Self::refuse())
    }

    fn request(&self, _: Signal, _: Duration) -> Answer {
        Box::pin(async { Err(Self::refuse()) })
    }

    fn claim(&self, _: &str, _: &str, _: Result<Json, Failure>) -> Result<Signal, Failure> {
        Err(Self::refuse())
    }

    fn subscribers(&self, _: &Signal) -> u32 {
        0
    }

    fn is_online(&self, _: &str) -> bool {
        false
    }

    fn release(&self, outputs: Vec<Output>) {
        if !outputs.is_empty() {
            tracing::debug!(
                count = outputs.len(),
                "a handler being checked tried to send; ignored"
            );
        }
    }

    fn discard(&self, _: Vec<Output>) {}
}
