//! What a running guest's host calls need from the rest of the host: the runtime's one
//! outbound interface. The router implements it; [`DenyAll`] serves the `describe` probe, so
//! a handler being checked at deploy time cannot act on anyone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::signal::{Failure, Json, Signal, code};

/// A request's eventual answer: the Reply or ErrorReply signal, or the host's failure.
pub type Answer = Pin<Box<dyn Future<Output = Result<Signal, Failure>> + Send>>;

/// Where the signals a guest sends go. Every signal arrives stamped by the host.
pub trait Outbound: Send + Sync + 'static {
    /// A message sent by handler `owner` without waiting; its reply comes back later as a
    /// signal. Fails (429) when the handler has too many such messages awaiting replies.
    fn send(&self, signal: Signal, owner: &Arc<str>) -> Result<(), Failure>;

    /// A message whose reply the guest awaits, suspended, until `timeout`.
    fn request(&self, signal: Signal, timeout: Duration) -> Answer;

    /// An event or data change; how many subscriber copies were taken (handed to a mailbox
    /// or kept as a dead letter). Fails (503) when it is refused at its source.
    fn broadcast(&self, signal: Signal) -> Result<u32, Failure>;

    /// Answers message `id`, open at `answerer`, with `outcome`; the answer's id. Fails
    /// with 409 for a message answered already or not delivered to `answerer`.
    fn answer(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<String, Failure>;

    /// Whether a client is connected at `address` (`user:<id>`).
    fn is_online(&self, address: &str) -> bool;

    /// A one-way push to a client; a client who is not connected gets nothing (counted).
    fn push(&self, signal: Signal);
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
    fn send(&self, _: Signal, _: &Arc<str>) -> Result<(), Failure> {
        Err(Self::refuse())
    }

    fn request(&self, _: Signal, _: Duration) -> Answer {
        Box::pin(async { Err(Self::refuse()) })
    }

    fn broadcast(&self, _: Signal) -> Result<u32, Failure> {
        Err(Self::refuse())
    }

    fn answer(&self, _: &str, _: &str, _: Result<Json, Failure>) -> Result<String, Failure> {
        Err(Self::refuse())
    }

    fn is_online(&self, _: &str) -> bool {
        false
    }

    fn push(&self, signal: Signal) {
        tracing::debug!(id = %signal.envelope.id, "a handler being checked tried to push; ignored");
    }
}
