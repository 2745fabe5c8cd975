//! The Switchboard guest SDK: write a signal handler as a plain Rust type and export it as a
//! WebAssembly component with one macro.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use switchboard_sdk::prelude::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { text: String }
//! impl Message for Ping {}
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn describe() -> Description { Description::service("echo").accepts::<Ping>() }
//!     fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
//!         let ping: Ping = msg.decode()?;
//!         ok(&ping)
//!     }
//! }
//! switchboard_sdk::export_handler!(Echo);
//! ```
//!
//! Layout: [`typed`] names Rust types on the wire; [`envelope`], [`message`], [`broadcast`]
//! and [`reply`](mod@reply) wrap the signals a handler receives; [`description`] says what it handles;
//! [`outgoing`] and [`host`] send, request and emit; [`deferred`] answers a message later;
//! [`state`](mod@state) is keyed state, [`timers`] durable timers, [`users`] presence and
//! push; [`handler`] is the trait and the export glue; [`failure`] the error type. Only [`host`] calls into the host: everything else
//! is plain code, tested on the native target.

pub mod broadcast;
pub mod deferred;
pub mod description;
pub mod envelope;
pub mod failure;
pub mod handler;
pub mod host;
pub mod log;
pub mod message;
pub mod outgoing;
pub mod reply;
pub mod state;
pub mod timers;
pub mod type_name;
pub mod typed;
pub mod users;

/// The raw bindings generated from `wit/signal.wit`. Handler code should not need them; they
/// are public because [`export_handler!`] expands to code in the handler's crate.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        pub_export_macro: true,
        default_bindings_module: "switchboard_sdk::bindings",
        export_macro_name: "__export_handler_world",
        additional_derives: [PartialEq, Eq],
    });
}

pub(crate) use bindings::switchboard::signal::host as wit_host;
pub(crate) use bindings::switchboard::signal::state as wit_state;
pub(crate) use bindings::switchboard::signal::timers as wit_timers;
pub(crate) use bindings::switchboard::signal::types as wit;
pub(crate) use bindings::switchboard::signal::users as wit_users;

pub use broadcast::{ChangeType, DataChange, Emitted, IncomingEvent};
pub use deferred::Deferred;
pub use description::{Accepts, Description, HandlerKind};
pub use envelope::{Envelope, Signal};
pub use failure::Failure;
pub use handler::Handler;
pub use host::{
    created, data_change, deleted, emit, emit_untyped, log, request, request_untyped, request_with,
    send, send_untyped, send_with, updated,
};
pub use log::LogLevel;
pub use message::IncomingMessage;
pub use outgoing::SendOptions;
pub use reply::{IncomingReply, Reply, ok};
pub use state::{State, state};
pub use type_name::short_type_name;
pub use typed::{DataObject, Event, Message};

/// The README's handler example, compiled as a doctest so it never goes stale.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Everything a handler usually needs: `use switchboard_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ChangeType, DataChange, DataObject, Deferred, Description, Event, Failure, Handler,
        IncomingEvent, IncomingMessage, IncomingReply, Message, Reply, SendOptions, Signal, ok,
        state,
    };
}
