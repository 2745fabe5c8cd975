//! The `state` and `timers` interfaces.

use super::bindings::switchboard::signal::{host::OutgoingMessage, state, timers};
use super::bindings::wit;
use super::state::HostState;
use crate::signal::{Failure, code};

type Answer<T> = wasmtime::Result<Result<T, wit::Failure>>;

fn unavailable<T>() -> Answer<T> {
    Ok(Err(Failure::new(
        code::OVERLOADED,
        "keyed state and timers are not available on this host yet",
    )
    .into()))
}

impl state::Host for HostState {
    fn get(&mut self, _key: String) -> Answer<Option<Vec<u8>>> {
        unavailable()
    }

    fn set(&mut self, _key: String, _value: Vec<u8>) -> Answer<()> {
        unavailable()
    }

    fn delete(&mut self, _key: String) -> Answer<bool> {
        unavailable()
    }

    fn keys(&mut self, _prefix: String) -> Answer<Vec<String>> {
        unavailable()
    }
}

impl timers::Host for HostState {
    fn schedule(&mut self, _msg: OutgoingMessage, _at: timers::When) -> Answer<String> {
        unavailable()
    }

    fn cancel(&mut self, _id: String) -> Answer<bool> {
        unavailable()
    }
}
