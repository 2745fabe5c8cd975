//! The `users` interface: presence and one-way pushes to connected clients (`user:<id>`).

use super::bindings::{guest_json, switchboard::signal::users, wit};
use super::budget::Spend;
use super::state::HostState;
use crate::signal::{Body, Failure, Headers, Message, USER_PREFIX, code};

impl users::Host for HostState {
    fn is_online(&mut self, id: String) -> wasmtime::Result<bool> {
        let Ok(outbound) = self.outbound() else {
            return Ok(false);
        };
        Ok(!id.is_empty() && outbound.is_online(&format!("{USER_PREFIX}{id}")))
    }

    fn push(
        &mut self,
        id: String,
        event_type: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), wit::Failure>> {
        let pushed = (|| {
            if id.is_empty() || event_type.is_empty() {
                return Err(Failure::new(
                    code::BAD_REQUEST,
                    "a push needs a non-empty user id and event type",
                ));
            }
            let body = Body::Message(Message {
                message_type: event_type,
                to: format!("{USER_PREFIX}{id}"),
                return_address: None,
                payload: guest_json(payload, "pushed payload")?,
            });
            let depth = self.spend(Spend::Send)?;
            let signal = self.stamp(body, Headers::new(), depth)?;
            self.turn.make_room(signal.size(), self.max_held_bytes)?;
            self.turn.hold(super::outbound::Output::Push(signal));
            Ok(())
        })();
        Ok(pushed.map_err(Into::into))
    }
}
