//! What a host serves reaches its transport: a network transport subscribes per route, so it
//! is told each route a host starts serving (a handler's address, an event or object type
//! its handlers subscribe to, a connected client) once, and each it stops serving once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use switchboard::db::Db;
use switchboard::signal::Signal;
use switchboard::transport::{InProcess, Inbound, Publish, Route, Transport};
use switchboard::{Backends, Host};
use switchboard_tests::guest;

/// The in-process transport, keeping the set of routes it was told are served here.
#[derive(Default)]
struct Recording {
    inner: InProcess,
    served: Mutex<BTreeSet<String>>,
}

fn key(route: Route<'_>) -> String {
    match route {
        Route::Address(address) => format!("address {address}"),
        Route::Event(event_type) => format!("event {event_type}"),
        Route::DataChange(object_type) => format!("change {object_type}"),
    }
}

impl Transport for Recording {
    fn attach(&self, local: Weak<dyn Inbound>) {
        self.inner.attach(local);
    }

    fn publish(&self, signal: Signal) -> Publish {
        self.inner.publish(signal)
    }

    fn serve(&self, route: Route<'_>) {
        let key = key(route);
        assert!(
            self.served.lock().unwrap().insert(key.clone()),
            "{key} served twice"
        );
    }

    fn unserve(&self, route: Route<'_>) {
        let key = key(route);
        assert!(
            self.served.lock().unwrap().remove(&key),
            "{key} unserved but not served"
        );
    }
}

impl Recording {
    fn served(&self) -> BTreeSet<String> {
        self.served.lock().unwrap().clone()
    }
}

/// The routes the deployed handlers serve, from their listed descriptions, plus `clients`.
fn expected(host: &Host, clients: &[&str]) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for handler in host.handlers() {
        routes.insert(format!("address {}", handler.address));
        for event in &handler.description.events {
            routes.insert(format!("event {event}"));
        }
        for object in &handler.description.data_changes {
            routes.insert(format!("change {object}"));
        }
    }
    routes.extend(clients.iter().map(|c| format!("address {c}")));
    routes
}

/// Proves deploys, swaps, removals and client connections tell the transport exactly the
/// routes served: a route two handlers share stays until the last goes, a swap changes
/// nothing, a client is served from its first connection to its last.
#[tokio::test]
async fn the_transport_is_told_each_route_served_once() {
    let transport = Arc::new(Recording::default());
    let backends = Backends::new(transport.clone(), Db::in_memory().unwrap());
    let host = Host::open(switchboard_tests::config(), backends).expect("starting a host");
    assert!(transport.served().is_empty());

    for name in ["echo", "audit", "welcome", "counter"] {
        host.deploy(name, guest(name), None)
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        assert_eq!(transport.served(), expected(&host, &[]), "after {name}");
    }
    let served = transport.served();
    for route in [
        "address echo",
        "address agent:counter/*",
        "event UserRegistered",
        "change User",
    ] {
        assert!(served.contains(route), "{route} in {served:?}");
    }

    // A swap to a version at the same address serves nothing new.
    host.deploy("echo", guest("echo"), None).await.unwrap();
    assert_eq!(transport.served(), served);

    // `welcome` also subscribes to `UserRegistered`: it stays served after `audit` goes.
    assert!(host.remove("audit"));
    let now = transport.served();
    assert_eq!(now, expected(&host, &[]));
    assert!(!now.contains("address audit") && now.contains("event UserRegistered"));
    assert!(host.remove("welcome"));
    assert!(!transport.served().contains("event UserRegistered"));

    let router = host.router();
    let first = router.connect_client("user:ann", 8, usize::MAX, || {});
    let second = router.connect_client("user:ann", 8, usize::MAX, || {});
    assert_eq!(transport.served(), expected(&host, &["user:ann"]));
    router.disconnect_client("user:ann", first.id, || {});
    assert_eq!(transport.served(), expected(&host, &["user:ann"]));
    router.disconnect_client("user:ann", second.id, || {});
    assert_eq!(transport.served(), expected(&host, &[]));

    assert!(host.remove("echo") && host.remove("counter"));
    assert!(transport.served().is_empty(), "{:?}", transport.served());
}
