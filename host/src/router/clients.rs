//! Connected clients (`user:<id>`): their connections, what is queued for them, and whether
//! they are online. Every connection of a client gets what is addressed to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::table::Table;
use super::{CLIENT_QUEUE, ClientLink, Router};
use crate::signal::Signal;
use crate::transport::{Reason, Route, Undelivered};

/// One connection of a client, as the router holds it.
pub(super) struct ClientConnection {
    /// Its number.
    pub(super) id: u64,
    /// Its bounded queue of signals to send.
    pub(super) queue: mpsc::Sender<Signal>,
    /// Bytes of signals in the queue, and the most it may hold.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) max_bytes: usize,
}

impl Router {
    /// Hands a signal to every connection of the client at `address`: taken if at least one
    /// took it; refused as overloaded if every open one is full, as gone if none is open. A
    /// full queue is the client's to drain (it is closed only if it stops reading): the
    /// signal is not sent to that connection, and counted as undelivered.
    pub(super) fn to_client(
        &self,
        table: &Table,
        address: &str,
        signal: Signal,
    ) -> Result<(), Undelivered> {
        let fail = |signal, reason| Err(Undelivered::new(signal, reason));
        let Some(connections) = table.clients.get(address) else {
            return fail(signal, Reason::NoRoute);
        };
        let (mut taken, mut full) = (false, false);
        let size = signal.size();
        let undelivered = &self.metrics.gateway.undelivered;
        for connection in connections {
            // Counted before it is queued, so the taker never subtracts what is not added.
            let queued = connection.queued.fetch_add(size, Ordering::Relaxed);
            // An empty queue takes any signal, however large.
            if queued > 0 && queued.saturating_add(size) > connection.max_bytes {
                connection.queued.fetch_sub(size, Ordering::Relaxed);
                full = true;
                undelivered.inc();
                continue;
            }
            match connection.queue.try_send(signal.clone()) {
                Ok(()) => taken = true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    connection.queued.fetch_sub(size, Ordering::Relaxed);
                    full = true;
                    undelivered.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    connection.queued.fetch_sub(size, Ordering::Relaxed);
                }
            }
        }
        match (taken, full) {
            (true, _) => Ok(()),
            (false, true) => fail(signal, Reason::Overloaded),
            (false, false) => fail(signal, Reason::ClientGone),
        }
    }

    /// Connects a client at `address` (e.g. `user:alice`); signals addressed to it arrive on
    /// the returned receiver, and on every other connection it has open.
    pub fn connect(&self, address: &str) -> mpsc::Receiver<Signal> {
        self.connect_client(address, CLIENT_QUEUE, usize::MAX, || {})
            .inbox
    }

    /// Like [`Router::connect`], with a queue of `queue` signals and at most `max_bytes`
    /// (an empty queue takes any signal): a signal that finds it full is not queued, and
    /// counted as undelivered. `first` runs if this is the client's only connection now, while the router
    /// still holds the change, so that what it records (presence) is in the order
    /// connections really opened and closed.
    pub fn connect_client(
        &self,
        address: &str,
        queue: usize,
        max_bytes: usize,
        first: impl FnOnce(),
    ) -> ClientLink {
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, inbox) = mpsc::channel(queue.max(1));
        let mut table = self.write();
        table.next_client += 1;
        let id = table.next_client;
        if !table.clients.contains_key(address) {
            self.transport.serve(Route::Address(address));
        }
        let connections = table.clients.entry(address.to_owned()).or_default();
        connections.retain(|c| !c.queue.is_closed());
        connections.push(ClientConnection {
            id,
            queue: tx,
            queued: queued.clone(),
            max_bytes,
        });
        let open = connections.len();
        if open == 1 {
            first();
        }
        ClientLink {
            id,
            open,
            inbox,
            queued,
        }
    }

    /// Whether a client is connected at `address` (on any connection).
    pub fn is_online(&self, address: &str) -> bool {
        self.read()
            .clients
            .get(address)
            .is_some_and(|connections| connections.iter().any(|c| !c.queue.is_closed()))
    }

    /// Disconnects every connection of the client at `address` (an embedded client, such as
    /// the fuzzing harness's, ends this way).
    pub fn disconnect(&self, address: &str) {
        let mut table = self.write();
        if table.clients.remove(address).is_some() {
            self.transport.unserve(Route::Address(address));
        }
    }

    /// Disconnects connection `id` of the client at `address`; the others stay. How many
    /// it has left. `last` runs if this was its last connection, while the router still
    /// holds the change (see [`Router::connect_client`]).
    pub fn disconnect_client(&self, address: &str, id: u64, last: impl FnOnce()) -> usize {
        let mut table = self.write();
        let Some(connections) = table.clients.get_mut(address) else {
            return 0;
        };
        let before = connections.len();
        connections.retain(|c| c.id != id);
        let removed = connections.len() < before;
        let left = connections.len();
        if left == 0 {
            table.clients.remove(address);
            self.transport.unserve(Route::Address(address));
            if removed {
                last();
            }
        }
        left
    }
}
