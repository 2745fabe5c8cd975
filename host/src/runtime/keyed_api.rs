//! The `state` and `timers` interfaces: keyed state and durable timers, held in the
//! current signal's [`Turn`](super::turn::Turn) until it commits.

use std::sync::Arc;

use super::bindings::switchboard::signal::{host::OutgoingMessage, state, timers};
use super::bindings::{guest_json, headers, wit};
use super::budget::Spend;
use super::state::HostState;
use crate::keyed::{StateStore, Timer};
use crate::signal::{Body, Failure, Message, code};

type Answer<T> = wasmtime::Result<Result<T, wit::Failure>>;

/// The header a timer's message carries: the timer's id.
pub const TIMER_HEADER: &str = "switchboard-timer";

impl HostState {
    fn keyed(&self) -> Result<Arc<StateStore>, Failure> {
        if self.clustered {
            return Err(super::state::not_in_cluster("keyed state and timers are"));
        }
        self.store
            .clone()
            .ok_or_else(|| Failure::new(code::OVERLOADED, "this host keeps no keyed state"))
    }

    fn with_turn<T>(
        &mut self,
        act: impl FnOnce(&mut super::turn::Turn, &StateStore) -> Result<T, Failure>,
    ) -> Answer<T> {
        let done = self.keyed().and_then(|store| act(&mut self.turn, &store));
        Ok(done.map_err(Into::into))
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> Answer<Option<Vec<u8>>> {
        self.with_turn(|turn, store| turn.get(store, &key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Answer<()> {
        self.with_turn(|turn, store| turn.set(store, key, value))
    }

    fn delete(&mut self, key: String) -> Answer<bool> {
        self.with_turn(|turn, store| turn.delete(store, key))
    }

    fn keys(&mut self, prefix: String) -> Answer<Vec<String>> {
        self.with_turn(|turn, store| turn.keys(store, &prefix))
    }
}

impl timers::Host for HostState {
    fn schedule(&mut self, msg: OutgoingMessage, at: timers::When) -> Answer<String> {
        let scheduled = (|| {
            let store = self.keyed()?;
            let quota = store.limits().timers_per_handler;
            if self.turn.scheduled() >= quota {
                return Err(Failure::new(
                    code::TOO_MANY,
                    format!(
                        "one signal may schedule at most {quota} timers (the host setting `timers_per_handler`)"
                    ),
                ));
            }
            if msg.to.is_empty() || msg.message_type.is_empty() {
                return Err(Failure::new(
                    code::BAD_REQUEST,
                    "a timer's message needs a non-empty `to` and `message-type`",
                ));
            }
            let id = Timer::new_id();
            let headers = headers(msg.headers);
            let body = Body::Message(Message {
                message_type: msg.message_type,
                to: msg.to,
                return_address: None,
                payload: guest_json(msg.payload, "timer's message payload")?,
            });
            let depth = self.spend(Spend::Send)?;
            let mut signal = self.stamp(body, headers, depth)?;
            signal
                .envelope
                .headers
                .insert(TIMER_HEADER.to_owned(), id.clone());
            let now = self.clock.now_millis();
            let mut due_ms = match at {
                timers::When::AfterMs(ms) => now.saturating_add(ms),
                timers::When::AtMs(ms) => ms,
            };
            if self.budget.paced() {
                // A chain through timers is paced: it cannot loop faster than this.
                let least = store.limits().timer_min_interval.as_millis() as u64;
                due_ms = due_ms.max(now.saturating_add(least));
            }
            let bytes = serde_json::to_vec(&signal).map_err(|e| {
                Failure::new(
                    code::TRAPPED,
                    format!("could not keep the timer's message: {e}"),
                )
            })?;
            self.turn.make_room(bytes.len(), self.max_held_bytes)?;
            let scope = self.scope_at(&self.identity.address);
            self.turn.schedule(Timer {
                id: id.clone(),
                handler: self.identity.handler.to_string(),
                scope,
                due_ms,
                signal: bytes,
            });
            Ok(id)
        })();
        Ok(scheduled.map_err(Into::into))
    }

    fn cancel(&mut self, id: String) -> Answer<bool> {
        let handler = self.identity.handler.clone();
        self.with_turn(|turn, store| turn.cancel(store, &handler, &id))
    }
}
