//! Whether the version that handles a signal takes it. The router checks a message's type
//! when it queues it, against the version current then; after a hot swap the version that
//! takes the signal out of the mailbox may accept, serve or subscribe to less, and its word
//! is the one that counts.

use crate::address::{Address, Kind};
use crate::runtime::{Description, HandlerKind};
use crate::signal::{Body, Failure, Signal, code};

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
    /// Applies a version's description to a signal: the message types it accepts (from
    /// clients, those it opens to them, or all if the operator `opened` it to clients), the
    /// address its kind serves, the broadcasts it subscribes to.
    pub(super) fn of(description: &Description, name: &str, opened: bool, signal: &Signal) -> Self {
        match &signal.body {
            Body::Message(m) => {
                if !description.accepts.takes(&m.message_type) {
                    return Self::Refuse(Failure::new(
                        code::NOT_FOUND,
                        format!(
                            "the handler at `{}` does not accept messages of type `{}`",
                            m.to, m.message_type
                        ),
                    ));
                }
                if Address::kind_of(&signal.envelope.from) == Kind::User
                    && !opened
                    && !description.clients.takes(&m.message_type)
                {
                    return Self::Refuse(
                        Failure::new(
                            code::FORBIDDEN,
                            format!(
                                "the handler at `{}` does not take messages of type `{}` from clients",
                                m.to, m.message_type
                            ),
                        )
                        .with_help("a handler opens message types to clients in its description; an operator can open a handler to clients with `--open-to-clients`"),
                    );
                }
                let serves = match description.kind {
                    HandlerKind::Service => m.to == name,
                    HandlerKind::Agent => {
                        matches!(Address::parse(&m.to), Ok(Address::Agent { handler, .. }) if handler == Some(name))
                    }
                };
                if !serves {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::signal::{Envelope, Headers, Json};

    fn service(message_types: &[&str], events: &[&str]) -> Description {
        Description {
            name: "x".into(),
            kind: HandlerKind::Service,
            clients: crate::runtime::Accepts::Only(vec!["Ping".into()]),
            accepts: match message_types {
                [] => crate::runtime::Accepts::Any,
                types => {
                    crate::runtime::Accepts::Only(types.iter().map(|t| t.to_string()).collect())
                }
            },
            events: events.iter().map(|t| t.to_string()).collect(),
            data_changes: Vec::new(),
        }
    }

    fn message(from: &str, to: &str, message_type: &str, payload: Json) -> Signal {
        Signal {
            envelope: Envelope::new(from, Headers::new(), &Clock::system()),
            body: Body::Message(crate::signal::Message {
                message_type: message_type.into(),
                to: to.into(),
                return_address: None,
                payload,
            }),
        }
    }

    fn event(event_type: &str) -> Signal {
        Signal {
            envelope: Envelope::new("host", Headers::new(), &Clock::system()),
            body: Body::Event {
                event_type: event_type.into(),
                payload: Json::null(),
            },
        }
    }

    /// Proves a message type outside a non-empty list is refused with 404, and any type is
    /// taken when the list is empty.
    #[test]
    fn message_types_are_those_of_the_handling_version() {
        let ping = message("host", "x", "Ping", Json::null());
        let refused = Admission::of(&service(&["Other"], &[]), "x", false, &ping);
        assert!(matches!(refused, Admission::Refuse(f) if f.code == code::NOT_FOUND));
        let any = Admission::of(&service(&[], &[]), "x", false, &ping);
        assert!(matches!(any, Admission::Handle));
    }

    /// Proves a client (`user:`) may send only the types the description opens to clients
    /// (403 otherwise) unless the operator opened the handler; handlers are not affected.
    #[test]
    fn clients_send_only_what_is_opened_to_them() {
        let described = service(&[], &[]);
        let from_client = |t: &str| message("user:ann", "x", t, Json::null());
        assert!(matches!(
            Admission::of(&described, "x", false, &from_client("Ping")),
            Admission::Handle
        ));
        let refused = Admission::of(&described, "x", false, &from_client("Admin"));
        assert!(matches!(refused, Admission::Refuse(f) if f.code == code::FORBIDDEN));
        assert!(matches!(
            Admission::of(&described, "x", true, &from_client("Admin")),
            Admission::Handle
        ));
        let from_handler = message("billing", "x", "Admin", Json::null());
        assert!(matches!(
            Admission::of(&described, "x", false, &from_handler),
            Admission::Handle
        ));
    }

    /// Proves a message to a service address is refused once the version is an agent.
    #[test]
    fn a_kind_change_stops_serving_the_old_address() {
        let ping = message("host", "x", "Ping", Json::null());
        let agent = Description {
            kind: HandlerKind::Agent,
            ..service(&[], &[])
        };
        assert!(matches!(
            Admission::of(&agent, "x", false, &ping),
            Admission::Refuse(_)
        ));
    }

    /// Proves an event is handed on only while the version subscribes to its type.
    #[test]
    fn subscriptions_are_those_of_the_handling_version() {
        let subscribed = service(&[], &["Joined"]);
        assert!(matches!(
            Admission::of(&subscribed, "x", false, &event("Joined")),
            Admission::Handle
        ));
        assert!(matches!(
            Admission::of(&subscribed, "x", false, &event("Left")),
            Admission::Unsubscribed
        ));
    }
}
