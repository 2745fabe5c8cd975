//! The routing table: deployed handlers by address, the subscription indexes, and installing
//! and removing handlers, telling the transport which routes this host serves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::clients::ClientConnection;
use super::{Entry, FastMap, InstallError, Router, Slot};
use crate::address::{Address, Kind};
use crate::metrics::Metrics;
use crate::runtime::{HandlerKind, Reservation, Version};
use crate::transport::{Route, Subscriptions};

#[derive(Default)]
pub(super) struct Table {
    /// Handlers by the address they serve.
    pub(super) handlers: FastMap<String, Entry>,
    /// The addresses of the agent handlers (`agent:<name>/*`), for the short `agent:<id>`.
    pub(super) agents: Vec<String>,
    /// Subscribers by event type (shared, so a broadcast takes the list without copying).
    pub(super) events: FastMap<String, Arc<[String]>>,
    /// Subscribers by object type.
    pub(super) changes: FastMap<String, Arc<[String]>>,
    /// Connected clients (`user:<id>`): every connection of each.
    pub(super) clients: FastMap<String, Vec<ClientConnection>>,
    /// The number of the last client connection.
    pub(super) next_client: u64,
    /// The instance slot each deployed handler is guaranteed, by handler name: taken when
    /// it is first installed, kept across swaps and moves, given back when it is removed.
    pub(super) reservations: FastMap<String, Reservation>,
}

/// A route the handlers of a table serve, owned and ordered, to tell the transport what
/// changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Served {
    Address(String),
    Event(String),
    DataChange(String),
}

impl Served {
    fn route(&self) -> Route<'_> {
        match self {
            Self::Address(address) => Route::Address(address),
            Self::Event(event_type) => Route::Event(event_type),
            Self::DataChange(object_type) => Route::DataChange(object_type),
        }
    }
}

/// What a table's handlers serve, to tell the transport what changed.
pub(super) struct ServedNow {
    routes: BTreeSet<Served>,
    /// Each subscribing handler's subscriptions, by handler name.
    subscribers: BTreeMap<String, Subscriptions>,
}

impl Table {
    /// The routes its handlers serve: their addresses and subscriptions (clients are told
    /// apart, as they connect), and who subscribes to what.
    fn served(&self) -> ServedNow {
        let addresses = self.handlers.keys().cloned().map(Served::Address);
        let events = self.events.keys().cloned().map(Served::Event);
        let changes = self.changes.keys().cloned().map(Served::DataChange);
        let mut subscribers = BTreeMap::new();
        for entry in self.handlers.values() {
            let version = entry.slot.current();
            let subscriptions = Subscriptions {
                events: version.description.events.iter().cloned().collect(),
                changes: version.description.data_changes.iter().cloned().collect(),
            };
            if !subscriptions.is_empty() {
                subscribers.insert(entry.slot.name.to_string(), subscriptions);
            }
        }
        ServedNow {
            routes: addresses.chain(events).chain(changes).collect(),
            subscribers,
        }
    }

    /// The handler deployed under `name`.
    pub(super) fn handler_named(&self, name: &str) -> Option<&super::Entry> {
        match self.handlers.get(name) {
            Some(entry) if &*entry.slot.name == name => Some(entry),
            _ => self
                .handlers
                .values()
                .find(|entry| &*entry.slot.name == name),
        }
    }

    /// Rebuilds the subscription indexes from the handlers' current descriptions.
    fn reindex(&mut self) {
        let mut events: FastMap<String, Vec<String>> = FastMap::default();
        let mut changes: FastMap<String, Vec<String>> = FastMap::default();
        for (address, entry) in &self.handlers {
            let version = entry.slot.current();
            for event in &version.description.events {
                events
                    .entry(event.clone())
                    .or_default()
                    .push(address.clone());
            }
            for object in &version.description.data_changes {
                changes
                    .entry(object.clone())
                    .or_default()
                    .push(address.clone());
            }
        }
        let shared = |index: FastMap<String, Vec<String>>| {
            index.into_iter().map(|(k, v)| (k, Arc::from(v))).collect()
        };
        self.events = shared(events);
        self.changes = shared(changes);
        self.agents = self
            .handlers
            .keys()
            .filter(|address| Address::kind_of(address) == Kind::Agent)
            .cloned()
            .collect();
    }

    /// The address of the agent handler serving agent address `to`, and `to` in full,
    /// `agent:<handler>/<id>`. The short `agent:<id>` resolves only while exactly one agent
    /// handler is deployed.
    pub(super) fn resolve_agent(&self, to: &str) -> Option<(String, String)> {
        let Ok(Address::Agent { handler, id }) = Address::parse(to) else {
            return None;
        };
        match handler {
            Some(handler) => {
                let home = Address::agent_handler(handler).to_string();
                self.handlers
                    .contains_key(&home)
                    .then(|| (home, to.to_owned()))
            }
            None => match self.agents.as_slice() {
                [only] => {
                    let Ok(Address::Agent {
                        handler: Some(handler),
                        ..
                    }) = Address::parse(only)
                    else {
                        return None;
                    };
                    let full = Address::Agent {
                        handler: Some(handler),
                        id,
                    };
                    Some((only.clone(), full.to_string()))
                }
                _ => None,
            },
        }
    }
}

impl Router {
    /// Makes `version` the current version of handler `name`, starting it if it is new.
    /// Returns whether it replaced a running version.
    pub fn install(&self, name: &str, version: Arc<Version>) -> Result<bool, InstallError> {
        if version.description.kind == HandlerKind::Agent && self.runtime.config().clustered {
            return Err(InstallError::AgentInCluster {
                handler: name.to_owned(),
            });
        }
        let address = match version.description.kind {
            HandlerKind::Service => name.to_owned(),
            HandlerKind::Agent => Address::agent_handler(name).to_string(),
        };
        let mut table = self.write();
        let served = table.served();
        if let Some(entry) = table.handlers.get(&address)
            && &*entry.slot.name != name
        {
            return Err(InstallError::AddressTaken {
                address,
                holder: entry.slot.name.to_string(),
            });
        }
        if !table.reservations.contains_key(name) {
            let reservation = self.runtime.pool().reserve(name)?;
            table.reservations.insert(name.to_owned(), reservation);
        }
        // The handler's running entry, wherever it is (a new kind moves it to a new address).
        let running = table
            .handlers
            .iter()
            .find(|(_, entry)| &*entry.slot.name == name)
            .map(|(address, _)| address.clone());
        let old = running.and_then(|at| table.handlers.remove(&at));
        let swapped = old.is_some();
        let entry = match old {
            // Same address and mailbox shape: swap in place; queued signals go to the new version.
            Some(entry) if entry.slot.address == address && entry.fits(&version.limits) => {
                entry.swap(version);
                entry
            }
            // Otherwise a fresh mailbox behind the old one: the old queue goes to the new
            // version, and the new workers start only once the old ones have all exited.
            old => {
                if let Some(old) = &old {
                    old.swap(version.clone());
                }
                Entry::open(
                    name,
                    address.clone(),
                    version,
                    old,
                    &self.budget,
                    self.runtime.clone(),
                    self.me.clone(),
                    self.metrics.clone(),
                )
            }
        };
        if swapped {
            self.metrics
                .swaps
                .get_or_create(&Metrics::handler(name))
                .inc();
        }
        table.handlers.insert(address, entry);
        self.reindex(&mut table, &served);
        Ok(swapped)
    }

    /// Rebuilds the table's indexes after its handlers changed, and tells the transport which
    /// routes this host started and stopped serving since it served `before`.
    fn reindex(&self, table: &mut Table, before: &ServedNow) {
        table.reindex();
        let after = table.served();
        for gone in before.routes.difference(&after.routes) {
            self.transport.unserve(gone.route());
        }
        for new in after.routes.difference(&before.routes) {
            self.transport.serve(new.route());
        }
        for handler in before.subscribers.keys() {
            if !after.subscribers.contains_key(handler) {
                self.transport.unsubscribe(handler);
            }
        }
        for (handler, subscriptions) in &after.subscribers {
            if before.subscribers.get(handler) != Some(subscriptions) {
                self.transport.subscribe(handler, subscriptions);
            }
        }
    }

    /// Stops a handler: calls in progress are abandoned (their senders get 503) and their
    /// instances dropped; the mailbox closes, and signals already queued are still handled.
    pub fn remove(&self, address: &str) -> bool {
        let mut table = self.write();
        let served = table.served();
        let removed = table.handlers.remove(address);
        if let Some(entry) = &removed {
            table.reservations.remove(&*entry.slot.name);
        }
        self.reindex(&mut table, &served);
        drop(table);
        removed.inspect(Entry::stop).is_some()
    }

    /// The deployed handlers' slots, by address, with the signals queued for each (counting
    /// a mailbox it moved from that is still draining).
    pub fn slots(&self) -> Vec<(Arc<Slot>, usize)> {
        self.read()
            .handlers
            .values()
            .map(|entry| (entry.slot.clone(), entry.queued()))
            .collect()
    }
}
