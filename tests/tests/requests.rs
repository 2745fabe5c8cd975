//! Request and reply end to end: a guest awaiting another guest, deadlines, and errors that
//! travel back through a nested request.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::signal::code;
use switchboard_tests::{WAIT, call, guest, host_with, json, metric, tight_limits};

/// A handler awaits a request to another handler and combines the result into its reply.
#[tokio::test]
async fn nested_request_combines_the_answer() {
    let host = host_with(&["orders", "inventory"]).await;
    let placed = host
        .request(
            "orders",
            "PlaceOrder",
            json(json!({"item": "apple", "quantity": 3})),
            WAIT,
        )
        .await
        .unwrap();
    let payload = placed.clone().into_outcome().unwrap().to_value();
    assert_eq!(payload["item"], "apple");
    assert_eq!(payload["quantity"], 3);
    assert_eq!(payload["remaining"], 7);
    assert!(payload["order_id"].is_string(), "{payload}");
    assert_eq!(placed.envelope.from, "orders");
}

/// An ErrorReply from the inner handler comes back through the outer one with its code.
#[tokio::test]
async fn nested_error_reply_passes_through() {
    let host = host_with(&["orders", "inventory"]).await;
    let failure = call(
        &host,
        "orders",
        "PlaceOrder",
        json!({"item": "pear", "quantity": 5}),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.code, 409);
    let failure = call(
        &host,
        "orders",
        "PlaceOrder",
        json!({"item": "kiwi", "quantity": 1}),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.code, 404);
}

/// A guest's `request` to an address nothing serves gets 404 back as its return value.
#[tokio::test]
async fn nested_request_to_nowhere_is_404() {
    let host = host_with(&["orders"]).await;
    let forward = json!({"to": "ghost", "message_type": "Boo", "payload": {}, "timeout_ms": 1000});
    let failure = call(&host, "orders", "Forward", forward).await.unwrap_err();
    assert_eq!(failure.code, code::NOT_FOUND);
    assert!(failure.description.contains("ghost"), "{failure}");
}

/// A guest's `request` that gets no reply before its deadline returns 504, while the guest
/// waiting on it is suspended rather than charged CPU time.
#[tokio::test]
async fn guest_request_times_out_with_504() {
    let host = host_with(&["orders"]).await;
    host.deploy("chaos", guest("chaos"), Some(tight_limits()))
        .await
        .unwrap();
    let forward = json!({"to": "chaos", "message_type": "Spin", "payload": {}, "timeout_ms": 100});
    let started = Instant::now();
    let failure = call(&host, "orders", "Forward", forward).await.unwrap_err();
    assert_eq!(failure.code, code::TIMEOUT, "{failure}");
    assert!(failure.description.contains("chaos"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // orders itself is fine and answers the next request.
    let forward = json!({"to": "chaos", "message_type": "Ping", "payload": {}, "timeout_ms": 5000});
    let pong = call(&host, "orders", "Forward", forward).await.unwrap();
    assert_eq!(pong, json!({"reply": {}}));
}

/// A request from outside that gets no reply in time is a 504 (its waiter's, or the host's
/// at the message's deadline: whichever comes first), and the handler's own answer that
/// follows is refused and counted instead of being delivered anywhere.
#[tokio::test]
async fn host_request_times_out_and_late_reply_is_dropped() {
    let host = host_with(&[]).await;
    host.deploy("chaos", guest("chaos"), Some(tight_limits()))
        .await
        .unwrap();
    let failure = host
        .call("chaos", "Spin", json(json!({})), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(failure.code, code::TIMEOUT);
    // The spin ends at the CPU limit with a 507 that nobody waits for any more.
    let refused = r#"switchboard_answers_refused_total{handler="chaos",reason="not_open"}"#;
    let deadline = Instant::now() + WAIT;
    while metric(&host, refused) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the late answer was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&host, refused), 1.0);
    assert_eq!(host.router().pending().waiting(), 0);
}
