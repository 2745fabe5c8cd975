//! One answer per message: a handler answers now, or later with the host's `reply`; the host
//! takes exactly one answer from the address a message was delivered to, refuses and
//! counts any other, and answers 504 a message left open past its deadline.

use std::time::Duration;

use serde_json::json;
use switchboard::clock::Clock;
use switchboard::{Body, Host, HostConfig, Signal};
use switchboard_tests::{WAIT, call, guest, json, next};

/// A host with `deferred` deployed under each of `names`, at concurrency 1 (it keeps held
/// messages in guest memory).
async fn host(config: HostConfig, names: &[&str]) -> Host {
    let host = Host::new(config).expect("starting a host");
    for name in names {
        host.deploy(name, guest("deferred"), None)
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    host
}

/// How many answers the host refused from `handler`, by reason.
fn refused(host: &Host, handler: &str, reason: &str) -> u64 {
    let text = host.router().render_metrics();
    let prefix =
        format!(r#"switchboard_answers_refused_total{{handler="{handler}",reason="{reason}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

/// Waits until `handler` has had `n` answers refused for `reason`.
async fn refused_reaches(host: &Host, handler: &str, reason: &str, n: u64) {
    let polled = tokio::time::timeout(WAIT, async {
        while refused(host, handler, reason) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "{handler}: {} answers refused as {reason}, expected {n}",
        refused(host, handler, reason)
    );
}

/// The payload of a Reply to message `id`, or a panic.
fn reply_to(signal: &Signal, id: &str) -> serde_json::Value {
    match &signal.body {
        Body::Reply {
            reply_to, payload, ..
        } if reply_to == id => payload.to_value(),
        other => panic!("expected a reply to {id}, got {other:?}"),
    }
}

/// Sends a message from client `from` without waiting; its id.
fn send(
    host: &Host,
    from: &str,
    to: &str,
    message_type: &str,
    payload: serde_json::Value,
) -> String {
    host.send(host.message(from, to, message_type, json(payload)))
}

/// A message answered `later` gets its answer once, when the handler replies from another
/// signal; answering it again is refused with 409 and counted, and reaches nobody.
#[tokio::test]
async fn a_deferred_answer_arrives_once_and_a_second_is_refused() {
    let host = host(switchboard_tests::config(), &["deferred"]).await;
    let mut ann = host.connect("user:ann");
    let held = send(&host, "user:ann", "deferred", "Hold", json!({}));
    // Held, not answered: the release below is what answers it.
    let outcome = call(&host, "deferred", "ReleaseTwice", json!({}))
        .await
        .unwrap();
    assert_eq!(outcome, json!({"answered": 1, "code": 409}));
    assert_eq!(reply_to(&next(&mut ann).await, &held), json!("first"));
    refused_reaches(&host, "deferred", "not_open", 1).await;
    assert!(
        ann.try_recv().is_err(),
        "a second answer reached the sender"
    );

    // Answering by `reply` and then returning: the return is the refused second answer.
    let answer = call(&host, "deferred", "ReplyThenReturn", json!({})).await;
    assert_eq!(answer.unwrap(), json!("by reply"));
    refused_reaches(&host, "deferred", "not_open", 2).await;
}

/// A handler that answers with `reply` and then traps: the answer is discarded with the
/// failed turn (an output gate), and the sender gets the trap's 500, once.
#[tokio::test]
async fn an_answer_given_in_a_turn_that_traps_is_discarded_with_it() {
    let host = host(switchboard_tests::config(), &["deferred"]).await;
    let mut ann = host.connect("user:ann");
    let id = send(&host, "user:ann", "deferred", "ReplyThenTrap", json!({}));
    let answer = next(&mut ann).await;
    match &answer.body {
        Body::ErrorReply {
            reply_to, error, ..
        } if *reply_to == id => assert_eq!(error.code, 500, "{error}"),
        other => panic!("expected the trap's 500, got {other:?}"),
    }
    // The host's answer went out after the discarded one was given back: nothing refused.
    assert_eq!(refused(&host, "deferred", "not_open"), 0);
    let after = call(&host, "deferred", "Envelope", json!({})).await;
    assert!(after.is_ok(), "the handler still answers: {after:?}");
    assert!(
        ann.try_recv().is_err(),
        "a second answer reached the sender"
    );
}

/// A handler that names a message it was never sent cannot answer it: the forgery fails
/// with 409, is counted, and never reaches the sender, who later gets the real answer.
#[tokio::test]
async fn a_forged_answer_never_reaches_the_sender() {
    let host = host(switchboard_tests::config(), &["deferred", "forger"]).await;
    let mut ann = host.connect("user:ann");
    let held = send(&host, "user:ann", "deferred", "Hold", json!({}));
    let forged = call(&host, "forger", "Forge", json!({"message_id": held})).await;
    assert_eq!(forged.unwrap(), json!({"answered": 0, "code": 409}));
    assert_eq!(refused(&host, "forger", "not_addressee"), 1);
    // Nor can anyone answer a message that does not exist.
    let invented = call(&host, "forger", "Forge", json!({"message_id": "0-0-0"})).await;
    assert_eq!(invented.unwrap(), json!({"answered": 0, "code": 409}));
    assert!(ann.try_recv().is_err(), "the forged answer arrived");

    let released = call(&host, "deferred", "Release", json!({"payload": "real"})).await;
    assert_eq!(released.unwrap(), json!({"answered": 1, "code": 0}));
    assert_eq!(reply_to(&next(&mut ann).await, &held), json!("real"));
}

/// A message left open past its deadline is answered 504 by the host, once; the handler's
/// answer after that is refused.
#[tokio::test]
async fn an_open_message_gets_504_at_its_deadline() {
    let config = HostConfig {
        message_deadline: Duration::from_millis(300),
        ..switchboard_tests::config()
    };
    let host = host(config, &["deferred"]).await;
    let mut ann = host.connect("user:ann");
    let held = send(&host, "user:ann", "deferred", "Hold", json!({}));
    let answer = next(&mut ann).await;
    match &answer.body {
        Body::ErrorReply {
            reply_to, error, ..
        } if *reply_to == held => {
            assert_eq!(error.code, 504, "{error}");
            assert_eq!(answer.envelope.from, "host");
        }
        other => panic!("expected a 504 for {held}, got {other:?}"),
    }
    let released = call(&host, "deferred", "Release", json!({"payload": "late"})).await;
    assert_eq!(
        released.unwrap_err().code,
        409,
        "the late answer is refused"
    );
    assert!(ann.try_recv().is_err());
}

/// A host reads one clock, the one its configuration gives: with it a day ahead of the
/// system's, a message's deadline, its answer's timestamp and the expiry of an open message
/// all follow it (the cluster's tests give each host its own).
#[tokio::test]
async fn a_host_keeps_time_by_the_clock_it_is_given() {
    const DAY: u64 = 86_400_000;
    let clock = Clock::skewed(DAY as i64);
    let config = HostConfig {
        clock: clock.clone(),
        message_deadline: Duration::from_secs(3_600),
        ..switchboard_tests::config()
    };
    let host = host(config, &["deferred"]).await;
    let system = Clock::system();
    let before = system.now_millis();
    let message = host.message("user:ann", "deferred", "Envelope", json(json!({})));
    assert!(message.envelope.timestamp >= before + DAY, "{message:?}");
    let answer = host.router().request(message, WAIT).await.unwrap();
    assert!(answer.envelope.timestamp >= before + DAY, "{answer:?}");
    let seen = answer.into_outcome().unwrap().to_value();
    let deadline = seen["deadline"].as_u64().expect("a deadline");
    assert!(deadline >= before + DAY + WAIT.as_millis() as u64, "{seen}");

    // Held for an hour by the host's default; two hours later by its clock, it is answered.
    let mut ann = host.connect("user:ann");
    let held = send(&host, "user:ann", "deferred", "Hold", json!({}));
    clock.advance(2 * 3_600_000);
    let answer = next(&mut ann).await;
    assert!(
        matches!(&answer.body, Body::ErrorReply { reply_to, error, .. }
            if *reply_to == held && error.code == 504),
        "{answer:?}"
    );
}

/// A message's deadline travels with it: an awaited one carries its sender's timeout, one
/// sent without waiting the host's default.
#[tokio::test]
async fn a_message_carries_its_deadline() {
    let config = HostConfig {
        message_deadline: Duration::from_secs(77),
        ..switchboard_tests::config()
    };
    let host = host(config, &["deferred"]).await;
    let before = host.router().clock().now_millis();
    let message = host.message("user:ann", "deferred", "Envelope", json(json!({})));
    let answer = host.router().request(message, Duration::from_secs(9)).await;
    let after = host.router().clock().now_millis();
    let seen = answer.unwrap().into_outcome().unwrap().to_value();
    let deadline = seen["deadline"].as_u64().expect("a deadline");
    assert!(
        (before + 9_000..=after + 9_000).contains(&deadline),
        "{deadline} not 9 s after {before}..{after}"
    );
    assert_eq!(seen["depth"], 0);

    let mut ann = host.connect("user:ann");
    let id = send(&host, "user:ann", "deferred", "Envelope", json!({}));
    let seen = reply_to(&next(&mut ann).await, &id);
    let deadline = seen["deadline"].as_u64().expect("a deadline");
    assert!(deadline >= before + 77_000 && deadline <= host.router().clock().now_millis() + 77_000);
}

/// `emit` tells the handler how many subscribers its event is offered to, and they all get
/// it once the turn commits.
#[tokio::test]
async fn emit_says_how_many_subscribers_take_the_event() {
    let host = host(switchboard_tests::config(), &["deferred"]).await;
    for name in ["audit", "welcome"] {
        host.deploy(name, guest(name), None).await.unwrap();
    }
    let user = json!({"user_id": "u9", "name": "Nia"});
    let told = call(
        &host,
        "deferred",
        "Announce",
        json!({"event_type": "UserRegistered", "payload": user}),
    )
    .await
    .unwrap();
    assert_eq!(told["subscribers"], 2, "{told}");
    let nobody = call(
        &host,
        "deferred",
        "Announce",
        json!({"event_type": "NobodyListens", "payload": {}}),
    )
    .await
    .unwrap();
    assert_eq!(nobody["subscribers"], 0, "{nobody}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let audit = call(&host, "audit", "GetAudit", json!({})).await.unwrap();
        if audit.to_string().contains("u9") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit never got it: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
