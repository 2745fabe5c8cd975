//! A handler written in Python proves the contract language-neutral: the `greeter` example
//! (`examples/python/greeter`), built with componentize-py against `wit/` by
//! `tests/python/setup.sh`, deployed into a real host and exercised as a client would.

use serde_json::{Value, json};
use switchboard::Host;
use switchboard::signal::code;
use switchboard_tests::{call, target_dir};

/// The Python greeter component that `tests/python/setup.sh` builds.
fn greeter() -> Vec<u8> {
    let path = target_dir().join("python").join("greeter.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading the Python example handler {}: {e}\n\
             build it first with `bash tests/python/setup.sh` (the README's test command runs it)",
            path.display()
        )
    })
}

/// A host with the Python greeter deployed as `greeter`.
async fn host_with_greeter() -> Host {
    let host = Host::new(switchboard_tests::config()).expect("starting a host");
    host.deploy("greeter", greeter(), None)
        .await
        .unwrap_or_else(|e| panic!("deploying the Python greeter: {e}"));
    host
}

/// Greets `name` and returns the reply payload.
async fn greet(host: &Host, name: &str) -> Value {
    call(host, "greeter", "Greet", json!({ "name": name }))
        .await
        .unwrap_or_else(|e| panic!("greeting {name}: {e}"))
}

/// The Python handler deploys (its imports are WASI 0.2 and this contract only) and answers:
/// a Greet without a name gets its own ErrorReply 400, and a message type it does not
/// accept gets 404. None of this touches keyed state.
#[tokio::test]
async fn python_greeter_deploys_and_refuses() {
    let host = host_with_greeter().await;

    let bad = call(&host, "greeter", "Greet", json!({ "who": "Ann" }))
        .await
        .unwrap_err();
    assert_eq!(bad.code, 400, "{bad}");
    assert!(bad.description.contains("name"), "{bad}");

    let unknown = call(&host, "greeter", "Wave", json!({})).await.unwrap_err();
    assert_eq!(unknown.code, code::NOT_FOUND, "{unknown}");
}

/// The Python handler greets, keeping its counts in the host's keyed state: each name counts
/// on its own, and the count outlives the instance (a hot swap to a fresh copy keeps
/// counting, where a Python global would start again).
#[tokio::test]
async fn python_greeter_greets_and_counts_in_keyed_state() {
    let host = host_with_greeter().await;

    let first = greet(&host, "Ann").await;
    assert_eq!(first, json!({ "greeting": "Hello, Ann!", "count": 1 }));
    assert_eq!(greet(&host, "Ann").await["count"], 2);
    assert_eq!(greet(&host, "Bo").await["count"], 1);

    host.deploy("greeter", greeter(), None)
        .await
        .unwrap_or_else(|e| panic!("swapping the Python greeter: {e}"));
    let after_swap = greet(&host, "Ann").await;
    assert_eq!(after_swap, json!({ "greeting": "Hello, Ann!", "count": 3 }));
}
