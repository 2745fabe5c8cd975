//! Whether the version that handles a signal takes it. The router checks a message's type
//! when it queues it, against the version current then; after a hot swap the version that
//! takes the signal out of the mailbox may accept, serve or subscribe to less, and its word
//! is the one that counts.

use crate::runtime::{Description, HandlerKind};
use crate::signal::{AGENTS_ADDRESS, Body, Failure, Signal, code};
use crate::transport::address_of;

/// What the version handling a signal does with it.
pub(super) enum Admission {
    /// Hands it to the guest.
    Handle,
    /// Answers the message with this failure without calling the guest.
    Refuse(Failure),
    /// Drops a broadcast it does not subscribe to.
    Unsubscribed,
}

impl Admission {
    /// Applies a version's description to a signal: the message types it accepts (empty
    /// means any), the address its kind serves, the broadcasts it subscribes to.
    pub(super) fn of(description: &Description, name: &str, signal: &Signal) -> Self {
        match &signal.body {
            Body::Message(m) => {
                let accepts = &description.message_types;
                if !accepts.is_empty() && !accepts.contains(&m.message_type) {
                    return Self::Refuse(Failure::new(
                        code::NOT_FOUND,
                        format!(
                            "the handler at `{}` does not accept messages of type `{}`",
                            m.to, m.message_type
                        ),
                    ));
                }
                let serves = match description.kind {
                    HandlerKind::Service => name,
                    HandlerKind::Agent => AGENTS_ADDRESS,
                };
                if address_of(&m.to) != serves {
                    return Self::Refuse(
                        Failure::new(
                            code::NOT_FOUND,
                            format!("nothing serves the address `{}`", m.to),
                        )
                        .with_help("the handler there changed its kind; check the address"),
                    );
                }
                Self::Handle
            }
            Body::Event { event_type, .. } if !description.events.contains(event_type) => {
                Self::Unsubscribed
            }
            Body::DataChange { object_type, .. }
                if !description.data_changes.contains(object_type) =>
            {
                Self::Unsubscribed
            }
            _ => Self::Handle,
        }
    }
}
