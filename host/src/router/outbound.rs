//! The router as the runtime's [`Outbound`]: where the signals a running guest sends go.

use std::sync::Arc;
use std::time::Duration;

use super::Router;
use crate::runtime::{Answer, Outbound};
use crate::signal::{Failure, Signal, code};

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

    fn broadcast(&self, signal: Signal) -> Result<(), Failure> {
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

    fn reply(&self, signal: Signal) {
        self.route(signal);
    }
}
