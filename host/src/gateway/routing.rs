//! What the gateway needs of the host's router, and all it may use of it: the gateway talks
//! through this narrow interface as the runtime talks through its `Outbound`, so a router
//! spread over a cluster can serve it unchanged.

// An undelivered signal is handed back by value on the rare failure path, as everywhere the
// router answers a refusal (see `transport`).
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::keyed::StateStore;
use crate::metrics::GatewayMetrics;
use crate::signal::Signal;
use crate::transport::{Accepted, Undelivered};

/// Signals a connected client may have waiting to be sent; more are not queued for it.
pub const CLIENT_QUEUE: usize = 256;

/// A client connection as the router holds it: where its signals arrive.
pub struct ClientLink {
    /// Its number, to disconnect it alone ([`Routing::disconnect_client`]).
    pub id: u64,
    /// How many connections the client has now, this one included.
    pub open: usize,
    /// What is addressed to the client.
    pub inbox: mpsc::Receiver<Signal>,
    /// Bytes of the signals in the inbox: the taker subtracts each one's
    /// [`Signal::size`] when it takes it.
    pub queued: Arc<AtomicUsize>,
}

/// The router as the gateway sees it.
pub trait Routing: Send + Sync + 'static {
    /// The host's clock.
    fn clock(&self) -> &Clock;

    /// The gateway's metrics.
    fn gateway_metrics(&self) -> &GatewayMetrics;

    /// The largest signal the host takes, in bytes.
    fn max_message_bytes(&self) -> usize;

    /// The store that keeps pushes for users, if the host keeps state.
    fn state_store(&self) -> Option<Arc<StateStore>>;

    /// Connects a client at `address` with a queue of `queue` signals and at most
    /// `max_bytes`. `first` runs if this is the client's only connection now, while the
    /// router still holds the change, so that presence is recorded in the order connections
    /// really opened and closed.
    fn connect_client(
        &self,
        address: &str,
        queue: usize,
        max_bytes: usize,
        first: &mut dyn FnMut(),
    ) -> ClientLink;

    /// Disconnects connection `id` of the client at `address`; how many it has left. `last`
    /// runs if this was its last connection, while the router still holds the change.
    fn disconnect_client(&self, address: &str, id: u64, last: &mut dyn FnMut()) -> usize;

    /// Sends a client's signal on its way; never fails (what cannot be delivered is
    /// answered).
    fn route(&self, signal: Signal);

    /// Offers a client's event and says whether it was taken.
    fn offer<'a>(
        &'a self,
        signal: Signal,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, Undelivered>> + Send + 'a>>;

    /// Offers a signal nobody waits on (a presence event): refused at once only if the
    /// transport knows at once.
    fn offer_now(&self, signal: Signal) -> Result<(), Undelivered>;
}
