//! A transport joining two hosts in one process as a network would: each host keeps its own
//! store and clock, a signal for a route only the other host serves reaches it after a
//! delay, and its outcome comes back later ([`Publish::later`]). What each host serves is
//! what the router told its transport ([`Transport::serve`]), nothing more.

// A refused signal goes back by value, as the `Transport` interface hands it.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use switchboard::Signal;
use switchboard::address::Address;
use switchboard::signal::Body;
use switchboard::transport::{Accepted, Inbound, Publish, Reason, Route, Transport, Undelivered};

/// One of the two hosts, as the pair sees it.
#[derive(Default)]
struct Side {
    local: OnceLock<Weak<dyn Inbound>>,
    /// The routes its router serves, as `address <a>`, `event <t>`, `change <t>`.
    served: Mutex<BTreeSet<String>>,
}

impl Side {
    fn serves(&self, key: &str) -> bool {
        self.served.lock().unwrap().contains(key)
    }

    /// Delivers a signal from the other host.
    fn deliver(&self, signal: Signal) -> Result<Accepted, Reason> {
        match self.local.get().and_then(Weak::upgrade) {
            Some(local) => local.deliver(signal),
            None => Err(Reason::ShuttingDown),
        }
    }

    /// Delivers a signal sent on this host.
    fn deliver_here(&self, signal: Signal) -> Result<Accepted, Undelivered> {
        match self.local.get().and_then(Weak::upgrade) {
            Some(local) => local.deliver_here(signal),
            None => Err(Undelivered::shutting_down(signal)),
        }
    }
}

/// The two hosts' link.
struct Link {
    sides: [Side; 2],
    delay: Duration,
}

/// One host's end of a [`pair`].
pub struct End {
    link: Arc<Link>,
    me: usize,
    /// Its host's inbox: `inbox:0` or `inbox:1`.
    inbox: String,
}

/// A transport for each of two hosts, delivering between them after `delay`.
pub fn pair(delay: Duration) -> (Arc<End>, Arc<End>) {
    let link = Arc::new(Link {
        sides: [Side::default(), Side::default()],
        delay,
    });
    let end = |me| {
        Arc::new(End {
            link: link.clone(),
            me,
            inbox: Address::Inbox(&me.to_string()).to_string(),
        })
    };
    (end(0), end(1))
}

fn key(route: &Route<'_>) -> String {
    match route {
        Route::Address(address) => format!("address {address}"),
        Route::Event(event_type) => format!("event {event_type}"),
        Route::DataChange(object_type) => format!("change {object_type}"),
    }
}

/// The served route a signal goes to: an agent's handler's own address for an agent (the
/// short form goes wherever an agent handler is), its route otherwise.
fn wanted(signal: &Signal) -> String {
    let to = match &signal.body {
        Body::Message(m) => Some(m.to.as_str()),
        Body::Reply { to, .. } | Body::ErrorReply { to, .. } => Some(to.as_str()),
        _ => None,
    };
    match to.map(Address::parse) {
        Some(Ok(Address::Agent {
            handler: Some(handler),
            ..
        })) => key(&Route::Address(
            &Address::agent_handler(handler).to_string(),
        )),
        Some(Ok(Address::Agent { handler: None, .. })) => "address agent:".to_owned(),
        _ => key(&Route::of(signal)),
    }
}

impl End {
    fn mine(&self) -> &Side {
        &self.link.sides[self.me]
    }

    fn other(&self) -> &Side {
        &self.link.sides[1 - self.me]
    }

    /// Whether `side` serves what `signal` goes to.
    fn serves(side: &Side, wanted: &str) -> bool {
        if wanted == "address agent:" {
            return side
                .served
                .lock()
                .unwrap()
                .iter()
                .any(|k| k.starts_with("address agent:"));
        }
        side.serves(wanted)
    }

    /// Delivers `signal` to the other host after the delay; its outcome, later.
    fn across(&self, signal: Signal) -> Publish {
        let (promise, later) = Publish::later(&signal);
        let link = self.link.clone();
        let other = 1 - self.me;
        tokio::spawn(async move {
            tokio::time::sleep(link.delay).await;
            promise.keep(link.sides[other].deliver(signal));
        });
        later
    }
}

impl Transport for End {
    fn attach(&self, local: Weak<dyn Inbound>) {
        let _ = self.mine().local.set(local);
    }

    fn publish(&self, signal: Signal) -> Publish {
        let wanted = wanted(&signal);
        let other_inbox = format!("address inbox:{}", 1 - self.me);
        if wanted == format!("address {}", self.inbox) {
            return Publish::Now(self.mine().deliver_here(signal));
        }
        if wanted == other_inbox {
            return self.across(signal);
        }
        let broadcast = matches!(signal.body, Body::Event { .. } | Body::DataChange { .. });
        let here = Self::serves(self.mine(), &wanted);
        let there = Self::serves(self.other(), &wanted);
        match (broadcast, here, there) {
            // Each host delivers a broadcast to its own subscribers.
            (true, true, true) => {
                let copy = signal.clone();
                let local = self.mine().deliver_here(signal);
                let (promise, later) = Publish::later(&copy);
                let remote = self.across(copy);
                tokio::spawn(async move {
                    let outcome = match (local, remote.outcome().await) {
                        (Ok(a), Ok(b)) => Ok(Accepted {
                            delivered: a.delivered + b.delivered,
                            dead_lettered: a.dead_lettered + b.dead_lettered,
                            refused: a.refused + b.refused,
                        }),
                        (Ok(one), Err(_)) | (Err(_), Ok(one)) => Ok(one),
                        (Err(undelivered), Err(_)) => Err(undelivered.reason),
                    };
                    promise.keep(outcome);
                });
                later
            }
            (_, true, _) => Publish::Now(self.mine().deliver_here(signal)),
            (_, false, true) => self.across(signal),
            (true, false, false) => Publish::Now(Ok(Accepted::default())),
            (false, false, false) => Publish::Now(Err(Undelivered::new(signal, Reason::NoRoute))),
        }
    }

    fn serve(&self, route: Route<'_>) {
        self.mine().served.lock().unwrap().insert(key(&route));
    }

    fn unserve(&self, route: Route<'_>) {
        self.mine().served.lock().unwrap().remove(&key(&route));
    }

    fn inbox(&self) -> Option<&str> {
        Some(&self.inbox)
    }

    fn subscribers(&self, route: Route<'_>) -> Option<u32> {
        let count = |side: &Side| {
            side.local
                .get()
                .and_then(Weak::upgrade)
                .map_or(0, |local| local.subscribers(route.clone()))
        };
        Some(self.link.sides.iter().map(count).sum())
    }
}
