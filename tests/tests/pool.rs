//! The instance pool: warm instances track traffic, not deployed handlers. Every deployed
//! handler is guaranteed an instance slot, instances beyond a handler's first share what is
//! not reserved, idle instances are released, and a deploy that cannot be given a slot is
//! refused up front with a message naming the limit and its setting.
//!
//! Instances are held busy by `orders` forwarding a request to a connected test client (the
//! gate), which answers only when the test lets it: each held request keeps one worker, and
//! so one instance, busy for certain.

use std::time::Duration;

use serde_json::json;
use switchboard::metrics::Metrics;
use switchboard::runtime::VersionSpec;
use switchboard::{Body, DeployError, Host, HostConfig, Limits, Signal};
use switchboard_tests::{WAIT, call, guest, json, next};
use tokio::sync::mpsc::Receiver;

/// The pool size of these tests.
const MAX: u32 = 12;
/// The idle time of these tests.
const IDLE: Duration = Duration::from_millis(200);

/// A host with a pool of [`MAX`] slots and a short idle time.
fn small_pool() -> Host {
    Host::new(HostConfig {
        max_instances: MAX,
        instance_idle: IDLE,
        ..switchboard_tests::config()
    })
    .expect("a host")
}

fn concurrency(n: u32) -> Option<Limits> {
    Some(Limits {
        concurrency: n,
        ..Limits::default()
    })
}

/// Sends `to` (an `orders` handler) a `Forward` to the gate, from `user:results`, which gets
/// the answer; returns the message's id.
fn hold(host: &Host, to: &str) -> String {
    let payload = json!({
        "to": "user:gate", "message_type": "Hold", "payload": {}, "timeout_ms": 20_000
    });
    host.send(host.message("user:results", to, "Forward", json(payload)))
}

/// Holds `n` instances of `to` busy; returns the requests the gate holds.
async fn hold_n(host: &Host, gate: &mut Receiver<Signal>, to: &str, n: usize) -> Vec<Signal> {
    for _ in 0..n {
        hold(host, to);
    }
    held_at(gate, to, n).await
}

/// Waits for `n` requests from `from` at the gate.
async fn held_at(gate: &mut Receiver<Signal>, from: &str, n: usize) -> Vec<Signal> {
    let mut held = Vec::new();
    for _ in 0..n {
        let request = next(gate).await;
        assert_eq!(request.envelope.from, from, "held in order");
        held.push(request);
    }
    held
}

/// Answers the requests the gate holds, which lets their handlers go on.
fn release(host: &Host, held: &[Signal]) {
    for request in held {
        let open = json(json!({"released": true}));
        host.send(Signal::answer(
            request,
            "user:gate",
            Ok(open),
            None,
            host.router().clock(),
        ));
    }
}

/// Waits for `n` answers at `user:results`; returns them (reply-to id, outcome).
async fn answers(
    results: &mut Receiver<Signal>,
    n: usize,
) -> Vec<(String, Result<switchboard::Json, switchboard::Failure>)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let answer = next(results).await;
        let (Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. }) = &answer.body
        else {
            panic!("expected an answer, got {answer:?}");
        };
        got.push((reply_to.clone(), answer.into_outcome()));
    }
    got
}

/// The `switchboard_instances` gauge of `handler`.
fn instances(host: &Host, handler: &str) -> i64 {
    let metrics = host.router().metrics();
    metrics
        .instances
        .get_or_create(&Metrics::handler(handler))
        .get()
}

/// Polls until every named handler's instances gauge is 0 and no slot is in use.
async fn wait_until_idle(host: &Host, handlers: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let live: Vec<_> = handlers.iter().map(|h| instances(host, h)).collect();
        let in_use = host.runtime().pool().usage().in_use;
        if live.iter().all(|n| *n == 0) && in_use == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instances still warm after {WAIT:?}: {live:?}, {in_use} slots in use"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proves the old failure mode is gone: busy handlers whose instances fill the pool do not
/// stop the next deploy, and the new handler gets an instance at once (a shared one is
/// given back), while its neighbours' instances are still warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_filled_the_pool_leave_room_for_the_next_deploy() {
    let host = Host::new(HostConfig {
        max_instances: MAX,
        ..switchboard_tests::config()
    })
    .expect("a host");
    let mut gate = host.connect("user:gate");
    let mut results = host.connect("user:results");
    let names = ["o1", "o2", "o3"];
    let mut held = Vec::new();
    for name in names {
        host.deploy(name, guest("orders"), concurrency(4))
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        held.extend(hold_n(&host, &mut gate, name, 4).await);
    }
    let warm: i64 = names.iter().map(|name| instances(&host, name)).sum();
    assert_eq!(warm, i64::from(MAX), "the pool is full");
    release(&host, &held);
    for (_, outcome) in answers(&mut results, held.len()).await {
        outcome.expect("every held request is answered");
    }

    // Twelve warm instances, idle for 30 s: before the pool, this deploy failed with
    // "maximum concurrent limit of 12 for component instances reached".
    host.deploy("echo", guest("echo"), None)
        .await
        .expect("a deploy beside a full pool");
    let echoed = call(&host, "echo", "Ping", json!({"n": 1})).await;
    assert_eq!(echoed.expect("echo gets its slot"), json!({"n": 1}));
    for name in names {
        let forward = json!({
            "to": "echo", "message_type": "Ping", "payload": {"from": name}, "timeout_ms": 5_000
        });
        let reply = call(&host, name, "Forward", forward).await;
        assert_eq!(reply.expect(name), json!({"reply": {"from": name}}));
    }
}

/// Proves a new handler is refused before its component is even read when every slot is
/// reserved, with a message naming the limit and its setting; a redeploy of a deployed
/// handler still works, a delete gives its slot back, and every handler still answers.
#[tokio::test]
async fn a_deploy_past_the_reserved_total_is_refused_up_front() {
    let host = small_pool();
    let component = host.runtime().compile(guest("echo")).await.unwrap();
    let names: Vec<String> = (0..MAX).map(|n| format!("echo{n}")).collect();
    for name in &names {
        let version = host.runtime().prepare(&component, VersionSpec::default());
        host.install(name, version.await.unwrap()).expect(name);
    }
    assert_eq!(host.runtime().pool().usage().reserved, MAX);

    // Not even WebAssembly: refused for want of a slot, so it was never looked at.
    let refused = host
        .deploy("late", b"junk".to_vec(), None)
        .await
        .unwrap_err();
    let DeployError::PoolFull(full) = &refused else {
        panic!("expected a pool refusal, got {refused}");
    };
    assert_eq!(
        refused.to_string(),
        "cannot deploy handler `late`: all 12 instance slots (set by --max-instances) are reserved, one for each deployed handler"
    );
    assert!(full.help().contains("--max-instances"));
    let version = host.runtime().prepare(&component, VersionSpec::default());
    let raced = host.install("late", version.await.unwrap()).unwrap_err();
    assert!(matches!(raced, DeployError::PoolFull(_)), "{raced}");

    let swapped = host.deploy("echo0", guest("echo"), None).await.unwrap();
    assert!(swapped.swapped, "a redeploy keeps its handler's slot");
    assert!(host.remove("echo1"));
    host.deploy("late", guest("echo"), None)
        .await
        .expect("the deleted handler's slot is free");
    let mut serving: Vec<&str> = names.iter().map(String::as_str).collect();
    serving.retain(|n| *n != "echo1");
    serving.push("late");
    for name in serving {
        let reply = call(&host, name, "Ping", json!({"to": name})).await;
        assert_eq!(reply.expect(name), json!({"to": name}));
    }
}

/// Proves busy handlers take shared slots up to what is not reserved, a handler with none
/// free is told why (503 naming the limit, the setting and its use), a deploy still succeeds
/// while every slot is in use and gets a slot a neighbour gives back, idle instances are all
/// released, and every handler still answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_handlers_share_what_is_not_reserved_and_idle_instances_go() {
    let host = small_pool();
    let mut gate = host.connect("user:gate");
    let mut results = host.connect("user:results");
    for (name, n) in [("a", 16), ("b", 16), ("c", 2)] {
        host.deploy(name, guest("orders"), concurrency(n))
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    // Three reserved slots, nine shared: `a` takes seven of them, `b` the other two.
    let held_a = hold_n(&host, &mut gate, "a", 8).await;
    let held_b = hold_n(&host, &mut gate, "b", 3).await;
    let held_c = hold_n(&host, &mut gate, "c", 1).await;
    assert_eq!((instances(&host, "a"), instances(&host, "b")), (8, 3));
    let metrics = host.router().render_metrics();
    for line in [
        r#"switchboard_instance_slots{state="in_use"} 12"#,
        r#"switchboard_instance_slots{state="reserved"} 3"#,
        r#"switchboard_instance_slots{state="shared"} 9"#,
        r#"switchboard_instances{handler="c"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    let refused_id = hold(&host, "b");
    let (id, outcome) = answers(&mut results, 1).await.remove(0);
    assert_eq!(id, refused_id);
    let failure = outcome.expect_err("no slot for a fourth instance of b");
    assert_eq!(failure.code, 503);
    assert_eq!(
        failure.description,
        "the instance pool is full: 12 of 12 instances in use (set by --max-instances); handler `b` already has 3"
    );
    assert!(failure.help.unwrap_or_default().contains("--instance-idle"));
    let metrics = host.router().render_metrics();
    assert!(
        metrics.contains(r#"switchboard_instance_slot_refusals_total{handler="b"} 1"#),
        "{metrics}"
    );

    host.deploy("d", guest("echo"), None)
        .await
        .expect("a deploy while every slot is in use but not every slot is reserved");
    release(&host, &held_a);
    for (_, outcome) in answers(&mut results, held_a.len()).await {
        outcome.expect("a's held requests are answered");
    }
    let echoed = call(&host, "d", "Ping", json!({"n": 2})).await;
    assert_eq!(
        echoed.expect("d gets the slot a gave back"),
        json!({"n": 2})
    );
    assert!(instances(&host, "a") < 8, "a gave a shared slot back");

    release(&host, &held_b);
    release(&host, &held_c);
    for (_, outcome) in answers(&mut results, 4).await {
        outcome.expect("b's and c's held requests are answered");
    }
    wait_until_idle(&host, &["a", "b", "c", "d"]).await;

    for name in ["a", "b", "c"] {
        let forward = json!({
            "to": "d", "message_type": "Ping", "payload": {"from": name}, "timeout_ms": 5_000
        });
        let reply = call(&host, name, "Forward", forward).await;
        assert_eq!(reply.expect(name), json!({"reply": {"from": name}}));
    }
}

/// Proves the instances gauge goes down when an instance goes away for any reason, with the
/// idle release far off: a trap discards it, a swap replaces it, a delete stops it.
#[tokio::test]
async fn the_instances_gauge_follows_instances_that_go_away() {
    let host = Host::new(switchboard_tests::config()).expect("a host");
    host.deploy("chaos", guest("chaos"), None).await.unwrap();
    call(&host, "chaos", "Ping", json!({})).await.unwrap();
    assert_eq!(instances(&host, "chaos"), 1);
    let trapped = call(&host, "chaos", "Panic", json!({})).await.unwrap_err();
    assert_eq!(trapped.code, 500);
    assert_eq!(instances(&host, "chaos"), 0, "the trapped instance is gone");

    call(&host, "chaos", "Ping", json!({})).await.unwrap();
    let swapped = host.deploy("chaos", guest("chaos"), None).await.unwrap();
    assert!(swapped.swapped);
    call(&host, "chaos", "Ping", json!({})).await.unwrap();
    assert_eq!(
        instances(&host, "chaos"),
        1,
        "the old version's instance is gone"
    );

    assert!(host.remove("chaos"));
    wait_until_idle(&host, &["chaos"]).await;
    let usage = host.runtime().pool().usage();
    assert_eq!((usage.reserved, usage.in_use), (0, 0));
}

/// Proves a neighbour kept busy by a queue gives a shared slot back after its signal when a
/// new handler is owed one, rather than holding it for the next queued signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_neighbour_gives_a_shared_slot_back_after_its_signal() {
    let host = Host::new(HostConfig {
        max_instances: 3,
        ..switchboard_tests::config()
    })
    .expect("a host");
    let mut gate = host.connect("user:gate");
    let mut results = host.connect("user:results");
    host.deploy("a", guest("orders"), concurrency(3))
        .await
        .unwrap();
    let held = hold_n(&host, &mut gate, "a", 3).await;
    for _ in 0..3 {
        hold(&host, "a");
    }
    host.deploy("d", guest("echo"), None)
        .await
        .expect("a deploy while every slot is in use");
    release(&host, &held);
    let echoed = call(&host, "d", "Ping", json!({"n": 3})).await;
    assert_eq!(
        echoed.expect("d gets the slot a gave back"),
        json!({"n": 3})
    );

    // `a` keeps its reserved slot and one shared one: two queued requests reach the gate,
    // the third finds no slot free.
    let more = held_at(&mut gate, "a", 2).await;
    release(&host, &more);
    let outcomes = answers(&mut results, 6).await;
    let refused: Vec<_> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().err())
        .collect();
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    assert_eq!(refused[0].code, 503);
    assert!(
        refused[0].description.contains("handler `a` already has 2"),
        "{refused:?}"
    );
}
