//! The router as the runtime's [`Outbound`]: where the signals a running guest sends go.

use std::sync::Arc;
use std::time::Duration;

use super::Router;
use crate::runtime::{Answer, Outbound};
use crate::signal::{Failure, Json, Signal, code};

impl Outbound for Router {
    fn send(&self, signal: Signal, owner: &Arc<str>) -> Result<(), Failure> {
        self.send_from(signal, owner)
    }

    fn request(&self, signal: Signal, timeout: Duration) -> Answer {
        let me = self.me.upgrade();
        Box::pin(async move {
            match me {
                Some(router) => router.request(signal, timeout).await,
                None => Err(Failure::new(code::OVERLOADED, "the host is shutting down")),
            }
        })
    }

    fn broadcast(&self, signal: Signal) -> Result<u32, Failure> {
        self.offer_now(signal).map_err(|undelivered| {
            Failure::new(
                code::OVERLOADED,
                format!(
                    "the {} was refused: {}",
                    undelivered.signal.kind().to_lowercase(),
                    undelivered.reason.as_str().replace('_', " ")
                ),
            )
            .with_help("a subscriber is overloaded; retry later")
        })
    }

    fn answer(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<String, Failure> {
        Router::answer(self, id, answerer, outcome)
    }

    fn is_online(&self, address: &str) -> bool {
        Router::is_online(self, address)
    }

    fn push(&self, signal: Signal) {
        self.push_to_client(signal);
    }
}
