//! The [`Handler`] trait a handler implements, the glue that adapts it to the WIT exports,
//! and [`export_handler!`](crate::export_handler), which wires the two together.

use crate::broadcast::{DataChange, IncomingEvent};
use crate::description::Description;
use crate::failure::Failure;
use crate::message::IncomingMessage;
use crate::reply::{IncomingReply, Reply};
use crate::wit;

/// A signal handler. Implement `describe` and `handle_message`; the other entry points
/// default to accepting and ignoring the signal. Keep what must last in keyed state
/// ([`state`](crate::state())): it survives swaps, traps and restarts, and commits with the
/// signal. Guest memory (a `static`) lasts only until the instance is replaced.
pub trait Handler {
    /// The handler's name, kind and subscriptions, read once at deploy time.
    fn describe() -> Description;

    /// A message addressed to this handler: `Ok` becomes a Reply, `Err` an ErrorReply, and
    /// `Ok(Reply::later())` answers nothing yet (answer with `msg.defer().reply(..)`).
    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure>;

    /// An event this handler subscribed to. An `Err` is logged and counted by the host.
    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        let _ = event;
        Ok(())
    }

    /// A data change this handler subscribed to. An `Err` is logged and counted by the host.
    fn handle_data_change(change: DataChange) -> Result<(), Failure> {
        let _ = change;
        Ok(())
    }

    /// A reply to a message this handler sent with `send` and no return address.
    fn handle_reply(reply: IncomingReply) -> Result<(), Failure> {
        let _ = reply;
        Ok(())
    }
}

/// Adapters from the WIT exports to [`Handler`]; called by the code `export_handler!` expands
/// to, not meant to be called by hand.
#[doc(hidden)]
pub mod glue {
    use super::*;

    pub fn describe<H: Handler>() -> wit::Description {
        H::describe().into()
    }

    pub fn handle_message<H: Handler>(msg: wit::Message) -> wit::Answer {
        match H::handle_message(msg.into()).map(Reply::into_json) {
            Ok(Some(json)) => wit::Answer::Reply(json),
            Ok(None) => wit::Answer::Later,
            Err(failure) => wit::Answer::Error(failure.into()),
        }
    }

    pub fn handle_event<H: Handler>(event: wit::Event) -> Result<(), wit::Failure> {
        H::handle_event(event.into()).map_err(Into::into)
    }

    pub fn handle_data_change<H: Handler>(
        change: wit::DataChangeEvent,
    ) -> Result<(), wit::Failure> {
        H::handle_data_change(change.into()).map_err(Into::into)
    }

    pub fn handle_reply<H: Handler>(reply: wit::IncomingReply) -> Result<(), wit::Failure> {
        H::handle_reply(reply.into()).map_err(Into::into)
    }
}

/// Exports a [`Handler`] as this component's `handler` world. Call it once per crate:
/// `switchboard_sdk::export_handler!(Echo);`
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        #[doc(hidden)]
        struct __SwitchboardExports;

        impl $crate::bindings::Guest for __SwitchboardExports {
            fn describe() -> $crate::bindings::Description {
                $crate::handler::glue::describe::<$handler>()
            }
            fn handle_message(msg: $crate::bindings::Message) -> $crate::bindings::Answer {
                $crate::handler::glue::handle_message::<$handler>(msg)
            }
            fn handle_event(event: $crate::bindings::Event) -> ::core::result::Result<(), $crate::bindings::Failure> {
                $crate::handler::glue::handle_event::<$handler>(event)
            }
            fn handle_data_change(change: $crate::bindings::DataChangeEvent) -> ::core::result::Result<(), $crate::bindings::Failure> {
                $crate::handler::glue::handle_data_change::<$handler>(change)
            }
            fn handle_reply(reply: $crate::bindings::IncomingReply) -> ::core::result::Result<(), $crate::bindings::Failure> {
                $crate::handler::glue::handle_reply::<$handler>(reply)
            }
        }

        $crate::bindings::__export_handler_world!(__SwitchboardExports with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::broadcast::tests::{wit_change, wit_event};
    use crate::message::tests::wit_message;
    use crate::reply::ok;
    use crate::reply::tests::{wit_error_reply, wit_reply};
    use crate::typed::Message;

    #[derive(Serialize, Deserialize)]
    struct Ping {
        text: String,
    }
    impl Message for Ping {}

    /// Uses only the required methods, so the defaults are exercised.
    struct Echo;
    impl Handler for Echo {
        fn describe() -> Description {
            Description::service("echo").accepts::<Ping>()
        }
        fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
            let ping: Ping = msg.decode()?;
            if ping.text.is_empty() {
                return Err(Failure::bad_request("empty").with_help("say something"));
            }
            ok(&ping)
        }
    }

    /// Overrides everything and fails, so errors are seen to cross the glue.
    struct Grumpy;
    impl Handler for Grumpy {
        fn describe() -> Description {
            Description::agent("grumpy")
        }
        fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
            Err(msg.unsupported())
        }
        fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
            Err(Failure::new(422, event.event_type()))
        }
        fn handle_data_change(change: DataChange) -> Result<(), Failure> {
            Err(Failure::new(422, change.object_type()))
        }
        fn handle_reply(reply: IncomingReply) -> Result<(), Failure> {
            reply.decode::<Ping>().map(drop)
        }
    }

    thread_local! {
        /// The handles [`Later`] kept, as a handler would keep them in state.
        static KEPT: std::cell::RefCell<Vec<crate::Deferred>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Answers every message later: keeps the handle and returns `Reply::later()`.
    struct Later;
    impl Handler for Later {
        fn describe() -> Description {
            Description::service("later").accepts_none()
        }
        fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
            KEPT.with(|kept| kept.borrow_mut().push(msg.defer()));
            Ok(Reply::later())
        }
    }

    /// `describe` reaches the host as the WIT record: name, kind and accepted types.
    #[test]
    fn describe_becomes_the_wit_description() {
        let d = glue::describe::<Echo>();
        assert_eq!(
            (d.name.as_str(), d.kind, d.accepts),
            (
                "echo",
                wit::HandlerKind::Service,
                wit::Accepts::Only(vec!["Ping".to_owned()])
            )
        );
        assert_eq!(glue::describe::<Grumpy>().kind, wit::HandlerKind::Agent);
        assert_eq!(glue::describe::<Grumpy>().accepts, wit::Accepts::Any);
        assert_eq!(glue::describe::<Later>().accepts, wit::Accepts::None);
    }

    /// The failure an answer carries; `None` for a reply or `later`.
    fn failure(answer: wit::Answer) -> Option<wit::Failure> {
        match answer {
            wit::Answer::Error(failure) => Some(failure),
            _ => None,
        }
    }

    /// `Ok` becomes a reply, `Err` an error with its code and help.
    #[test]
    fn messages_become_replies_or_failures() {
        let reply = glue::handle_message::<Echo>(wit_message("Ping", r#"{"text":"hi"}"#));
        assert_eq!(reply, wit::Answer::Reply(r#"{"text":"hi"}"#.into()));
        assert_eq!(failure(reply), None);
        assert_eq!(
            failure(glue::handle_message::<Echo>(wit_message(
                "Ping",
                r#"{"text":""}"#
            ))),
            Some(wit::Failure {
                code: 400,
                description: "empty".into(),
                help: Some("say something".into()),
            })
        );
        let undecodable = failure(glue::handle_message::<Echo>(wit_message("Ping", "{}")));
        assert_eq!(undecodable.map(|f| f.code), Some(400));
        let unsupported = failure(glue::handle_message::<Grumpy>(wit_message("Ping", "{}")));
        assert_eq!(unsupported.map(|f| f.code), Some(404));
    }

    /// `Ok(Reply::later())` answers nothing now (`later`, not an empty reply), and the handle
    /// the handler kept names the message it delivered.
    #[test]
    fn reply_later_answers_nothing_yet_and_keeps_a_handle() {
        let answer = glue::handle_message::<Later>(wit_message("Ping", "{}"));
        assert_eq!(answer, wit::Answer::Later);
        let kept = KEPT.with(|kept| kept.borrow_mut().pop());
        assert_eq!(kept.as_ref().map(|d| d.message_id()), Some("msg-1"));
    }

    /// Entry points a handler does not override accept the signal.
    #[test]
    fn other_signals_default_to_ok() {
        assert!(glue::handle_event::<Echo>(wit_event("Tick", "{}")).is_ok());
        assert!(
            glue::handle_data_change::<Echo>(wit_change(wit::ChangeType::Created, "User", "{}"))
                .is_ok()
        );
        assert!(glue::handle_reply::<Echo>(wit_reply("{}")).is_ok());
    }

    /// Failures of overridden entry points reach the host with their code and words.
    #[test]
    fn overridden_entry_points_pass_failures_through() {
        assert_eq!(
            glue::handle_event::<Grumpy>(wit_event("Tick", "{}"))
                .unwrap_err()
                .description,
            "Tick"
        );
        let change = wit_change(wit::ChangeType::Deleted, "User", "{}");
        assert_eq!(
            glue::handle_data_change::<Grumpy>(change)
                .unwrap_err()
                .description,
            "User"
        );
        assert_eq!(
            glue::handle_reply::<Grumpy>(wit_error_reply(504))
                .unwrap_err()
                .code,
            504
        );
        assert!(glue::handle_reply::<Grumpy>(wit_reply(r#"{"text":"x"}"#)).is_ok());
    }
}
