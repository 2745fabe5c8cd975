//! The router as the gateway's [`Routing`]: the few things a client connection asks of it.

// An undelivered signal is handed back by value on the rare failure path, as everywhere the
// router answers a refusal (see `transport`).
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Router;
use crate::clock::Clock;
use crate::gateway::{ClientLink, Routing};
use crate::keyed::StateStore;
use crate::metrics::GatewayMetrics;
use crate::signal::Signal;
use crate::transport::{Accepted, Undelivered};

impl Routing for Router {
    fn clock(&self) -> &Clock {
        Router::clock(self)
    }

    fn gateway_metrics(&self) -> &GatewayMetrics {
        &self.metrics().gateway
    }

    fn max_message_bytes(&self) -> usize {
        Router::max_message_bytes(self)
    }

    fn state_store(&self) -> Option<Arc<StateStore>> {
        Router::state_store(self)
    }

    fn connect_client(
        &self,
        address: &str,
        queue: usize,
        max_bytes: usize,
        first: &mut dyn FnMut(),
    ) -> ClientLink {
        Router::connect_client(self, address, queue, max_bytes, first)
    }

    fn disconnect_client(&self, address: &str, id: u64, last: &mut dyn FnMut()) -> usize {
        Router::disconnect_client(self, address, id, last)
    }

    fn route(&self, signal: Signal) {
        Router::route(self, signal);
    }

    fn offer<'a>(
        &'a self,
        signal: Signal,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, Undelivered>> + Send + 'a>> {
        Box::pin(Router::offer(self, signal))
    }

    fn offer_now(&self, signal: Signal) -> Result<(), Undelivered> {
        Router::offer_now(self, signal)
    }
}
