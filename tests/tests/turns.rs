//! One turn at a time per agent, in arrival order, while distinct agents overlap: shown with
//! a barrier (the `deferred` service's `Arrive`) that only opens when several agents' turns
//! are in progress at once, not with a speed-up.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard::{Body, Failure, Host, HostConfig, Limits, Signal};
use switchboard_tests::{call, guest, json, next};
use tokio::sync::mpsc::Receiver;

/// Agents driven at once.
const AGENTS: usize = 100;
/// Signals per agent.
const STEPS: u32 = 5;

/// A host with `deferred` (the barrier, at concurrency 1) and the counter agent handler at
/// `concurrency`.
async fn host(concurrency: u32) -> Host {
    let host = Host::new(switchboard_tests::config()).expect("starting a host");
    host.deploy("deferred", guest("deferred"), None)
        .await
        .unwrap();
    let limits = Limits {
        concurrency,
        mailbox: 1024,
        ..Limits::default()
    };
    host.deploy("counter", guest("counter"), Some(limits))
        .await
        .unwrap();
    host
}

/// Sends `Step {i, barrier}` to counter agent `id` from client `user:<id>`, without waiting;
/// its message id.
fn step(host: &Host, id: &str, i: u32, barrier: Option<Value>) -> String {
    let payload = json!({ "i": i, "barrier": barrier });
    host.send(host.message(
        &format!("user:{id}"),
        &format!("agent:counter/{id}"),
        "Step",
        json(payload),
    ))
}

/// The next `n` answers a client gets, by the id of the message each answers.
async fn answers(
    client: &mut Receiver<Signal>,
    n: usize,
) -> HashMap<String, Result<Value, Failure>> {
    let mut answers = HashMap::new();
    for _ in 0..n {
        let (id, outcome) = match next(client).await.body {
            Body::Reply {
                reply_to, payload, ..
            } => (reply_to, Ok(payload.to_value())),
            Body::ErrorReply {
                reply_to, error, ..
            } => (reply_to, Err(error)),
            other => panic!("expected an answer, got {other:?}"),
        };
        answers.insert(id, outcome);
    }
    answers
}

/// The answer a client gets next, which must be to message `id`.
async fn answer(client: &mut Receiver<Signal>, id: &str) -> Result<Value, Failure> {
    answers(client, 1)
        .await
        .remove(id)
        .unwrap_or_else(|| panic!("expected the answer to {id}"))
}

/// Proves an agent's signals are handled one at a time in arrival order while distinct
/// agents' turns overlap: 100 agents get 5 steps each, all sent before any answer is read.
/// Every step 0 waits at a barrier that opens only when 4 turns wait at it at once (so with
/// agents serialized per handler it would answer 504); every step `i` answers `i - 1` (the
/// agent's previous step was done before it began), and every agent's list ends `[0..5)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_their_own_signals_in_order_while_distinct_agents_overlap() {
    let host = host(16).await;
    let ids: Vec<String> = (0..AGENTS).map(|a| format!("a{a}")).collect();
    let mut clients: Vec<_> = ids
        .iter()
        .map(|id| host.connect(&format!("user:{id}")))
        .collect();
    let barrier = json!({"group": "steps", "k": 4, "timeout_ms": 10_000});
    // Each agent's steps one after another: while its step 0 waits at the barrier, its
    // next steps are next in the mailbox, and only the agent's turn keeps them waiting.
    let sent: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            (0..STEPS)
                .map(|i| step(&host, id, i, (i == 0).then(|| barrier.clone())))
                .collect()
        })
        .collect();
    for (a, client) in clients.iter_mut().enumerate() {
        let mut answers = answers(client, sent[a].len()).await;
        for (i, message) in sent[a].iter().enumerate() {
            let previous = answers
                .remove(message)
                .unwrap_or_else(|| panic!("agent {a} step {i} was not answered"))
                .unwrap_or_else(|e| panic!("agent {a} step {i}: {e:?}"));
            let expected = if i == 0 { json!(null) } else { json!(i - 1) };
            assert_eq!(previous, expected, "agent {a} step {i}");
        }
    }
    for id in &ids {
        let steps = call(&host, &format!("agent:counter/{id}"), "Steps", json!({}))
            .await
            .unwrap();
        assert_eq!(steps, json!([0, 1, 2, 3, 4]), "{id}");
    }
}

/// By default an agent handler runs 32 agents' turns at once (so their commits share
/// fsyncs; at most an eighth of the instance pool), while a service runs one signal at a time: deployed without limits, 32 agents
/// all pass a barrier that opens only when 32 turns wait at it together; the listing shows
/// the concurrency each kind got. An explicit concurrency is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_handler_runs_many_agents_at_once_by_default() {
    let host = Host::new(switchboard_tests::config()).expect("starting a host");
    for name in ["deferred", "counter"] {
        host.deploy(name, guest(name), None).await.unwrap();
    }
    let explicit = Limits {
        concurrency: 3,
        ..Limits::default()
    };
    host.deploy("counter3", guest("counter"), Some(explicit))
        .await
        .unwrap();
    let concurrency: HashMap<String, u32> = host
        .handlers()
        .into_iter()
        .map(|h| (h.name, h.limits.concurrency))
        .collect();
    let expected = [("counter", 32), ("counter3", 3), ("deferred", 1)];
    assert_eq!(concurrency, expected.map(|(n, c)| (n.to_owned(), c)).into());
    // On a small pool, the default is an eighth of it: idle workers never take it all.
    let small = Host::new(HostConfig {
        max_instances: 16,
        ..switchboard_tests::config()
    })
    .expect("starting a host");
    small
        .deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    assert_eq!(small.handlers()[0].limits.concurrency, 2);

    let barrier = json!({"group": "all", "k": 32, "timeout_ms": 10_000});
    let ids: Vec<String> = (0..32).map(|a| format!("b{a}")).collect();
    let mut clients: Vec<_> = ids
        .iter()
        .map(|id| host.connect(&format!("user:{id}")))
        .collect();
    let sent: Vec<String> = ids
        .iter()
        .map(|id| step(&host, id, 0, Some(barrier.clone())))
        .collect();
    for (client, id) in clients.iter_mut().zip(&sent) {
        assert_eq!(answer(client, id).await.unwrap(), json!(null));
    }
}

/// Proves the barrier needs overlapping turns: with the same two agents and a barrier for
/// two, the first agent's step answers 504 when the counter runs one turn at a time (the
/// second agent's turn cannot start while the first waits), and both pass at concurrency 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_barrier_opens_only_for_overlapping_turns() {
    let barrier = json!({"group": "pair", "k": 2, "timeout_ms": 500});
    for concurrency in [1, 2] {
        let host = host(concurrency).await;
        let mut ann = host.connect("user:ann");
        let mut bob = host.connect("user:bob");
        let first = step(&host, "ann", 0, Some(barrier.clone()));
        let second = step(&host, "bob", 0, Some(barrier.clone()));
        let first = answer(&mut ann, &first).await;
        if concurrency == 1 {
            assert_eq!(first.unwrap_err().code, 504, "alone at the barrier");
        } else {
            assert_eq!(first.unwrap(), json!(null));
            assert_eq!(answer(&mut bob, &second).await.unwrap(), json!(null));
        }
    }
}

/// A message whose deadline passes while it waits behind its agent's turn is answered 504
/// by the host and then not handled at all: the sender's answer stands, and the increment
/// it carried never happens.
#[tokio::test]
async fn a_message_that_expires_in_its_agents_line_is_not_handled() {
    let config = HostConfig {
        message_deadline: std::time::Duration::from_millis(300),
        ..switchboard_tests::config()
    };
    let host = Host::new(config).expect("starting a host");
    host.deploy("deferred", guest("deferred"), None)
        .await
        .unwrap();
    host.deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    let mut watcher = host.connect("user:watcher");
    // A turn of agent x held at a barrier of two, awaited with a long timeout of its own.
    let barrier = json!({"group": "hold", "k": 2, "timeout_ms": 10_000});
    let held = host.message(
        "user:holder",
        "agent:counter/x",
        "Bump",
        json(json!({"by": 1, "barrier": barrier})),
    );
    let router = host.router().clone();
    let bump = tokio::spawn(async move {
        router
            .request(held, std::time::Duration::from_secs(10))
            .await
    });
    // Once that turn has started, queue another signal for x behind it, sent without
    // waiting: its deadline is 300 ms away.
    let started = tokio::time::Instant::now() + switchboard_tests::WAIT;
    while host
        .handlers()
        .iter()
        .find(|h| h.name == "counter")
        .is_none_or(|h| h.handled == 0)
    {
        assert!(
            tokio::time::Instant::now() < started,
            "the held turn never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let queued = host.send(host.message(
        "user:watcher",
        "agent:counter/x",
        "Increment",
        json(json!({"by": 100})),
    ));
    match next(&mut watcher).await.body {
        Body::ErrorReply {
            reply_to, error, ..
        } if reply_to == queued => {
            assert_eq!(error.code, 504, "{error}")
        }
        other => panic!("expected a 504 for the queued message, got {other:?}"),
    }
    // Let the held turn go: it commits its bump, and the expired message stays unhandled.
    let arrived = call(
        &host,
        "deferred",
        "Arrive",
        json!({"group": "hold", "k": 2}),
    )
    .await;
    assert!(arrived.is_ok(), "{arrived:?}");
    let bumped = bump
        .await
        .unwrap()
        .unwrap()
        .into_outcome()
        .unwrap()
        .to_value();
    assert_eq!(bumped["count"], 1, "{bumped}");
    let now = call(&host, "agent:counter/x", "Get", json!({}))
        .await
        .unwrap();
    assert_eq!(
        now["count"], 1,
        "the expired increment was not applied: {now}"
    );
    assert!(watcher.try_recv().is_err(), "one answer only");
}

/// What turns hold before they commit is bounded host-wide, not only per turn: with a
/// `turn_write_budget` of 8 MiB, four agents' turns each writing 3.2 MB and then waiting
/// together at a barrier cannot all hold their writes at once. At most two fit; the others
/// fail with 507 naming the setting at once, and keep nothing. (Writes are charged one key
/// at a time, so when two turns' writes interleave both can be refused at the same
/// moment: then only one holds.) Once the holders are done (their barrier never opens, so
/// they fail too), the budget is whole again and a neighbour answers. (Without the budget, all four held 12.8 MB; 8 such turns took a daemon from
/// 267 to 1,503 MiB.)
#[tokio::test]
async fn turns_in_flight_share_one_write_budget() {
    let config = HostConfig {
        turn_write_budget: 8 << 20,
        ..switchboard_tests::config()
    };
    let host = Host::new(config).expect("starting a host");
    host.deploy("deferred", guest("deferred"), None)
        .await
        .unwrap();
    let limits = Limits {
        concurrency: 4,
        ..Limits::default()
    };
    host.deploy("counter", guest("counter"), Some(limits))
        .await
        .unwrap();
    host.deploy("echo", guest("echo"), None).await.unwrap();
    let hoard = |id: &'static str, k: u32| {
        let host = host.clone();
        async move {
            let barrier = json!({"group": format!("hoard-{k}"), "k": k, "timeout_ms": 2_000});
            let payload = json!({"keys": 16, "bytes": 200_000, "barrier": barrier});
            call(&host, &format!("agent:counter/{id}"), "Hoard", payload).await
        }
    };
    let (a, b, c, d) = tokio::join!(hoard("a", 4), hoard("b", 4), hoard("c", 4), hoard("d", 4));
    let failures: Vec<Failure> = [a, b, c, d]
        .into_iter()
        .map(|outcome| outcome.expect_err("every hoard fails"))
        .collect();
    let over: Vec<_> = failures.iter().filter(|f| f.code == 507).collect();
    let held: Vec<_> = failures.iter().filter(|f| f.code == 504).collect();
    assert!(
        (2..=3).contains(&over.len()),
        "at most two fit in the budget: {failures:?}"
    );
    assert_eq!(
        held.len() + over.len(),
        4,
        "the rest held their writes and waited at the barrier until it timed out: {failures:?}"
    );
    for failure in &over {
        assert!(
            failure.description.contains("turn_write_budget"),
            "{failure:?}"
        );
    }
    // The budget came back: one more such turn holds its writes (its barrier of one opens
    // at once), and fails only on purpose.
    let alone = hoard("e", 1).await.expect_err("it fails on purpose");
    assert_eq!(alone.code, 500, "{alone:?}");
    assert!(alone.description.contains("on purpose"), "{alone:?}");
    let echoed = call(&host, "echo", "Ping", json!({"n": 1})).await.unwrap();
    assert_eq!(echoed, json!({"n": 1}));
}
