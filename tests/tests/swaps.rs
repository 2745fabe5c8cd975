//! Hot swaps under traffic: the version that takes a queued signal out of the mailbox is the
//! one whose message types and subscriptions apply, and a move to a mailbox of another shape
//! never runs the old and the new mailbox side by side.
//!
//! A worker is held busy by `orders` forwarding a request to a connected test client (the
//! gate), which answers only when the test lets it: signals queue behind it for certain.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use switchboard::runtime::VersionSpec;
use switchboard::{Body, ChangeType, Host, Limits, Signal};
use switchboard_tests::{WAIT, guest, json, next};
use tokio::sync::mpsc::Receiver;

/// How long the test watches for a signal that must not arrive yet.
const QUIET: Duration = Duration::from_millis(300);

/// Limits of a one-at-a-time handler with a mailbox of `mailbox` signals.
fn one_at_a_time(mailbox: u32) -> Limits {
    Limits {
        concurrency: 1,
        mailbox,
        ..Limits::default()
    }
}

/// Sends `x` a `Forward` of `message_type` to `to` from the client `user:results`, which gets
/// the answer; returns the message's id.
fn forward(host: &Host, to: &str, message_type: &str) -> String {
    let payload = json!({
        "to": to, "message_type": message_type, "payload": {"n": 1}, "timeout_ms": 10_000
    });
    host.send(host.message("user:results", "x", "Forward", json(payload)))
}

/// Answers the request a gate client is holding, which lets the handler go on.
fn release(host: &Host, held: &Signal, gate: &str) {
    let open = json(json!({"released": true}));
    host.send(Signal::answer(
        held,
        gate,
        Ok(open),
        None,
        host.router().clock(),
    ));
}

/// The answers `results` receives to the messages `ids`, by id, in arrival order.
async fn answers(results: &mut Receiver<Signal>, ids: &[String]) -> Vec<(String, Signal)> {
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let answer = next(results).await;
        let (Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. }) = &answer.body
        else {
            panic!("expected an answer, got {answer:?}");
        };
        assert!(ids.contains(reply_to), "an answer to an unknown message");
        got.push((reply_to.clone(), answer));
    }
    let unique: HashSet<_> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), ids.len(), "a message was answered twice");
    got
}

/// Proves that messages queued before a swap get 404 from the host, without reaching the
/// guest, when the new version no longer accepts their type, while the one in flight
/// finishes on the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_of_a_type_the_new_version_refuses_get_404() {
    let host = Host::new(switchboard_tests::config()).expect("a host");
    host.deploy("x", guest("orders"), Some(one_at_a_time(64)))
        .await
        .expect("orders as x");
    let mut gate = host.connect("user:gate");
    let mut results = host.connect("user:results");

    let in_flight = forward(&host, "user:gate", "Hold");
    let held = next(&mut gate).await;
    let queued: Vec<_> = (0..5).map(|_| forward(&host, "echo", "Ping")).collect();
    // `inventory` accepts only `Reserve`.
    let deployed = host
        .deploy("x", guest("inventory"), Some(one_at_a_time(64)))
        .await
        .expect("inventory as x");
    assert!(deployed.swapped);
    release(&host, &held, "user:gate");

    let mut ids = vec![in_flight.clone()];
    ids.extend(queued);
    for (id, answer) in answers(&mut results, &ids).await {
        let outcome = answer.into_outcome();
        if id == in_flight {
            let reply = outcome.expect("the old version answers the message in flight");
            assert_eq!(reply.to_value(), json!({"reply": {"released": true}}));
            continue;
        }
        let failure = outcome.expect_err("a queued Forward is refused");
        assert_eq!(failure.code, 404, "{failure}");
        assert_eq!(
            failure.description,
            "the handler at `x` does not accept messages of type `Forward`"
        );
    }
}

/// Proves that events and data changes queued before a swap are not handed to a version
/// that no longer subscribes to them, and that each is counted in the metrics.
#[tokio::test]
async fn queued_broadcasts_the_new_version_does_not_subscribe_to_are_counted() {
    let host = Host::new(switchboard_tests::config()).expect("a host");
    host.deploy("x", guest("audit"), Some(one_at_a_time(64)))
        .await
        .expect("audit as x");
    let spec = VersionSpec {
        limits: one_at_a_time(64),
        ..VersionSpec::default()
    };
    let orders = host.runtime().load(guest("orders"), spec).await.unwrap();

    // On this single-threaded runtime no worker runs until the test awaits something that
    // is not ready (the in-process emit is): the broadcasts are all queued for `audit` when `orders` (no subscriptions) takes over.
    for n in 0..3 {
        let taken = host
            .emit("UserRegistered", json(json!({"user_id": n})))
            .await;
        assert_eq!(taken.unwrap().delivered, 1);
    }
    for n in 0..2 {
        let taken = host
            .emit_data_change(ChangeType::Created, "User", json(json!({"id": n})))
            .await;
        assert_eq!(taken.unwrap().delivered, 1);
    }
    assert_eq!(host.handlers()[0].queued, 5);
    host.install("x", orders).expect("orders as x");

    assert!(host.drain(WAIT).await, "the queue drains");
    let metrics = host.router().render_metrics();
    assert!(
        metrics.contains(r#"switchboard_unsubscribed_total{handler="x"} 5"#),
        "{metrics}"
    );
    // The guest handled none of them.
    assert!(
        !metrics.contains(r#"switchboard_signals_total{handler="x",kind="EVENT""#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"switchboard_signals_total{handler="x",kind="DATA_CHANGE_EVENT""#),
        "{metrics}"
    );
}

/// Proves that a concurrency-1 handler moved to a mailbox of another size under load never
/// handles two signals at once: the new mailbox waits until the old one has drained, the old
/// one's queue counts in the listing meanwhile, and every message is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_new_mailbox_never_runs_both_at_once() {
    let host = switchboard_tests::host_with(&["echo"]).await;
    host.deploy("x", guest("orders"), Some(one_at_a_time(64)))
        .await
        .expect("orders as x");
    let mut gate = host.connect("user:gate");
    let mut second_gate = host.connect("user:second-gate");
    let mut results = host.connect("user:results");

    let mut ids = vec![forward(&host, "user:gate", "Hold")];
    let held = next(&mut gate).await;
    ids.extend((0..10).map(|_| forward(&host, "echo", "Ping")));
    let deployed = host
        .deploy("x", guest("orders"), Some(one_at_a_time(128)))
        .await
        .expect("x with a bigger mailbox");
    assert!(deployed.swapped);
    ids.push(forward(&host, "user:second-gate", "Hold"));
    ids.extend((0..10).map(|_| forward(&host, "echo", "Ping")));

    let early = tokio::time::timeout(QUIET, second_gate.recv()).await;
    assert!(
        early.is_err(),
        "the new mailbox ran while the old one was busy"
    );
    let listed = host.handlers().into_iter().find(|h| h.name == "x").unwrap();
    assert_eq!(listed.queued, 21, "both mailboxes' queues are listed");

    release(&host, &held, "user:gate");
    let second = next(&mut second_gate).await;
    release(&host, &second, "user:second-gate");
    for (_, answer) in answers(&mut results, &ids).await {
        answer.into_outcome().expect("every message is handled");
    }

    let (slot, _) = host
        .router()
        .slots()
        .into_iter()
        .find(|(slot, _)| &*slot.name == "x")
        .unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(slot.counters.peak_active.load(Relaxed), 1);
    assert_eq!(slot.counters.handled.load(Relaxed), ids.len() as u64);
    let metrics = host.router().render_metrics();
    assert!(
        metrics.contains(r#"switchboard_peak_active{handler="x"} 1"#),
        "{metrics}"
    );
}
