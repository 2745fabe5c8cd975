//! How signals travel between the router and wherever their address is served.
//!
//! The router hands every outgoing signal to its [`Transport`]; a transport carries it to
//! the host that serves the signal's [`Route`] and gives it to that host's router through
//! [`Router::deliver_local`]. The embedded default, [`InProcess`], is that loop within one
//! process. A networked transport (NATS) implements the same trait: subjects per route,
//! queue groups per handler.

// An undelivered signal is handed back by value on the rare failure path, so that its
// sender can be answered; boxing it would only add an allocation there.
#![allow(clippy::result_large_err)]

use std::sync::{OnceLock, Weak};

use crate::router::{Accepted, Router, Undelivered};
use crate::signal::{AGENT_PREFIX, AGENTS_ADDRESS, Body, Signal};

/// Where a signal is headed, independent of how it gets there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// One address: a service name, `agents`, or `user:<id>` (messages and replies).
    Address(&'a str),
    /// Every subscriber of an event type.
    Event(&'a str),
    /// Every subscriber of changes to an object type.
    DataChange(&'a str),
}

impl<'a> Route<'a> {
    /// The route of a signal: its `to` for messages and replies (with `agent:<id>` served at
    /// the shared `agents` address), its type for broadcasts.
    pub fn of(signal: &'a Signal) -> Self {
        match &signal.body {
            Body::Message(m) => Self::Address(address_of(&m.to)),
            Body::Reply { to, .. } | Body::ErrorReply { to, .. } => Self::Address(address_of(to)),
            Body::Event { event_type, .. } => Self::Event(event_type),
            Body::DataChange { object_type, .. } => Self::DataChange(object_type),
        }
    }
}

/// The address that serves `to`: `agent:<id>` is served by the agents handler.
pub fn address_of(to: &str) -> &str {
    if to.starts_with(AGENT_PREFIX) {
        AGENTS_ADDRESS
    } else {
        to
    }
}

/// Carries signals from a router to the routers that serve them.
pub trait Transport: Send + Sync + 'static {
    /// Called once with the local router, which receives what arrives for this host.
    fn attach(&self, local: Weak<Router>);

    /// Carries `signal` towards the handlers or clients of its [`Route`]. Fails when nothing
    /// serves that route or its mailbox is full, giving the signal back so the router can
    /// answer the sender. A broadcast says how many subscribers took it and how many refused
    /// it (those copies are dead-lettered); it fails only if the dead-letter store could not
    /// have taken every refusal, and then no subscriber got it.
    fn publish(&self, signal: Signal) -> Result<Accepted, Undelivered>;
}

/// The embedded transport: every address is served in this process.
#[derive(Default)]
pub struct InProcess {
    local: OnceLock<Weak<Router>>,
}

impl Transport for InProcess {
    fn attach(&self, local: Weak<Router>) {
        let _ = self.local.set(local);
    }

    fn publish(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        match self.local.get().and_then(Weak::upgrade) {
            Some(router) => router.deliver_local(signal),
            None => Err(Undelivered::shutting_down(signal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_share_one_address() {
        assert_eq!(address_of("agent:alice"), "agents");
        assert_eq!(address_of("echo"), "echo");
        assert_eq!(address_of("user:bob"), "user:bob");
    }
}
