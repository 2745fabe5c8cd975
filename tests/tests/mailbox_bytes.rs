//! Mailboxes bounded in bytes: a handler that stalls while large signals pile up for it is
//! refused more by its mailbox's byte bound long before its count bound, and the host's
//! budget of queued bytes is shared by every mailbox; nothing queued is lost, and replies
//! the mailbox promised room for are never refused.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::signal::code;
use switchboard::transport::{ByteBound, OverBytes, Reason};
use switchboard::{Body, Host, HostConfig, Limits, Signal};
use switchboard_tests::{WAIT, call, guest, json, next};

/// The size of each large payload: just under 1 MiB, so it fits the largest signal.
const PAD: usize = 1_000_000;

/// A host with `config`, `echo` as a neighbour, and `chaos` deployed under each of
/// `stallers` with a 1 s CPU limit, one signal at a time and a mailbox of 1024.
async fn host(config: HostConfig, stallers: &[&str]) -> Host {
    let host = Host::new(config).expect("starting a host");
    host.deploy("echo", guest("echo"), None).await.unwrap();
    let limits = Limits {
        cpu_time: Duration::from_secs(1),
        concurrency: 1,
        mailbox: 1024,
        ..Limits::default()
    };
    for name in stallers {
        host.deploy(name, guest("chaos"), Some(limits))
            .await
            .unwrap();
    }
    host
}

/// A 1 MB `Ping` to `to` from the client `user:tester`, stamped by `host`.
fn large(host: &Host, to: &str) -> Signal {
    let pad = "x".repeat(PAD);
    host.message("user:tester", to, "Ping", json(json!({ "pad": pad })))
}

/// Offers `count` large messages to `to`; returns how many were taken and the byte bound
/// each refused one passed (every refusal must be for its bytes).
async fn fill(host: &Host, to: &str, count: usize) -> (usize, Vec<OverBytes>) {
    let mut taken = 0;
    let mut refused = Vec::new();
    for _ in 0..count {
        match host.router().offer(large(host, to)).await {
            Ok(_) => taken += 1,
            Err(undelivered) => {
                assert_eq!(undelivered.reason, Reason::Overloaded);
                let over = undelivered.over.expect("refused for its bytes");
                refused.push(*over);
            }
        }
    }
    (taken, refused)
}

/// Receives `count` signals for the client and counts the Replies from each handler.
async fn replies(rx: &mut tokio::sync::mpsc::Receiver<Signal>, count: usize) -> Vec<String> {
    let mut from = Vec::new();
    for _ in 0..count {
        let signal = next(rx).await;
        assert!(
            matches!(signal.body, Body::Reply { .. }),
            "a queued message was handled: {signal:?}"
        );
        from.push(signal.envelope.from);
    }
    from
}

/// The value of the metric line starting with `prefix`.
fn metric(host: &Host, prefix: &str) -> f64 {
    let text = host.router().render_metrics();
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

/// With an 8 MiB byte bound and a mailbox of 1024, a stalled handler takes eight 1 MB
/// messages and refuses the rest with 503 naming the bound, its size and its setting,
/// counted as refused for `mailbox_bytes`; a neighbour answers meanwhile; after the stall
/// every queued message is handled (sent = handled + refused) and the bytes are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_mailbox_is_bounded_by_bytes_before_its_count() {
    let config = HostConfig {
        mailbox_bytes: 8 << 20,
        ..switchboard_tests::config()
    };
    let host = host(config, &["chaos"]).await;
    let mut rx = host.connect("user:tester");
    host.emit("Stall", json(json!({}))).await.unwrap();

    let sent = 20;
    let (taken, refused) = fill(&host, "chaos", sent).await;
    assert_eq!(taken, 8, "8 MiB holds eight 1 MB messages, far below 1024");
    assert_eq!(refused.len(), sent - taken);
    for over in &refused {
        assert_eq!(over.bound, ByteBound::Mailbox);
        assert_eq!(over.limit, 8 << 20);
    }
    let refused_metric = r#"switchboard_refused_total{kind="MESSAGE",reason="mailbox_bytes"}"#;
    assert_eq!(metric(&host, refused_metric), (sent - taken) as f64);
    assert!(metric(&host, "switchboard_queued_bytes ") >= (8 * PAD) as f64);

    // A sender waiting for an answer gets ErrorReply 503 saying which bound and why.
    let pad = "x".repeat(PAD);
    let failure = call(&host, "chaos", "Ping", json!({ "pad": pad }))
        .await
        .unwrap_err();
    assert_eq!(failure.code, code::OVERLOADED);
    for part in ["`chaos`", "8 MiB", "`mailbox_bytes`"] {
        assert!(failure.description.contains(part), "{part}: {failure}");
    }
    assert!(failure.help.is_some(), "{failure}");

    let neighbour = call(&host, "echo", "Ping", json!({"n": 1})).await;
    assert_eq!(neighbour.unwrap(), json!({"n": 1}), "the neighbour answers");

    // After the stall, every message taken is handled: none lost.
    let handled = replies(&mut rx, taken).await;
    assert!(handled.iter().all(|from| from == "chaos"), "{handled:?}");
    assert_eq!(sent, handled.len() + refused.len());
    assert!(host.drain(WAIT).await, "chaos caught up");
    assert_eq!(metric(&host, "switchboard_queued_bytes "), 0.0);
    let (taken, _) = fill(&host, "chaos", 1).await;
    assert_eq!(taken, 1, "the mailbox takes large messages again");
    replies(&mut rx, 1).await;
}

/// The host's budget of queued bytes is shared: with a 12 MiB budget and two stalled
/// handlers, the first takes eight 1 MB messages (its own 8 MiB bound), the second only the
/// four the budget has left, refused for `queue_budget`; a neighbour's small message still
/// fits; after the stalls, everything taken is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_budget_is_shared_by_every_mailbox() {
    let config = HostConfig {
        mailbox_bytes: 8 << 20,
        queue_budget_bytes: 12 << 20,
        ..switchboard_tests::config()
    };
    let host = host(config, &["stall-a", "stall-b"]).await;
    let mut rx = host.connect("user:tester");
    let stalled = host.emit("Stall", json(json!({}))).await.unwrap();
    assert_eq!(stalled.delivered, 2);

    let (taken_a, refused_a) = fill(&host, "stall-a", 10).await;
    assert_eq!(taken_a, 8);
    assert!(
        refused_a
            .iter()
            .all(|over| over.bound == ByteBound::Mailbox),
        "{refused_a:?}"
    );
    let (taken_b, refused_b) = fill(&host, "stall-b", 10).await;
    assert_eq!(
        taken_b, 4,
        "12 MiB less the first mailbox's 8 MB leaves room for four"
    );
    let Some(over) = refused_b.first() else {
        panic!("refused for bytes: {refused_b:?}")
    };
    assert_eq!((over.bound, over.limit), (ByteBound::Host, 12 << 20));
    assert!(
        over.describe("stall-b").contains("`queue_budget_bytes`"),
        "{}",
        over.describe("stall-b")
    );
    let budget_metric = r#"switchboard_refused_total{kind="MESSAGE",reason="queue_budget"}"#;
    assert_eq!(metric(&host, budget_metric), refused_b.len() as f64);

    let neighbour = call(&host, "echo", "Ping", json!({"n": 2})).await;
    assert_eq!(
        neighbour.unwrap(),
        json!({"n": 2}),
        "a small message still fits"
    );

    let handled = replies(&mut rx, taken_a + taken_b).await;
    let from_a = handled.iter().filter(|f| *f == "stall-a").count();
    assert_eq!((from_a, handled.len() - from_a), (taken_a, taken_b));
    assert_eq!(10 + 10, handled.len() + refused_a.len() + refused_b.len());
    assert!(host.drain(WAIT).await);
    assert_eq!(metric(&host, "switchboard_queued_bytes "), 0.0);
}

/// Replies to a handler's own sends keep their promised room when its mailbox is over its
/// byte bound: with every mailbox bounded at 64 bytes, `fanout` sends 200 messages to
/// `echo` and every one of the 200 answers reaches it (echo's Reply, or the host's
/// ErrorReply 503 of some 250 bytes when echo's own small mailbox was over its bound),
/// none dead-lettered, though other signals to `fanout` are refused while they wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_own_sends_are_never_refused_for_bytes() {
    let config = HostConfig {
        mailbox_bytes: 64,
        ..switchboard_tests::config()
    };
    let host = Host::new(config).expect("starting a host");
    for name in ["echo", "fanout"] {
        host.deploy(name, guest(name), None).await.unwrap();
    }
    let fanned = call(
        &host,
        "fanout",
        "Fan",
        json!({"to": "echo", "message_type": "Ping", "count": 200}),
    )
    .await
    .unwrap();
    assert_eq!(fanned["sent"], 200, "{fanned}");

    let deadline = Instant::now() + WAIT;
    let mut refused_meanwhile = 0;
    loop {
        match call(&host, "fanout", "Tally", json!({})).await {
            Ok(tally)
                if tally["replies"].as_u64().unwrap() + tally["errors"].as_u64().unwrap()
                    == 200 =>
            {
                break;
            }
            Ok(_) => {}
            Err(failure) => {
                assert_eq!(failure.code, code::OVERLOADED, "{failure}");
                refused_meanwhile += 1;
            }
        }
        assert!(Instant::now() < deadline, "every reply came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dead = host.router().dead_letters().len();
    assert_eq!(dead, 0, "no reply was refused and dead-lettered");
    eprintln!("Tally refused {refused_meanwhile} times while replies held the room");
}
