//! Keyed state end to end: an agent's state outlives its instances (hot swap, rollback,
//! restart); a failed turn has no effects (writes and pushes); size limits answer 507 and
//! change nothing; concurrent turns of a service lose no update.

use std::sync::Arc;

use serde_json::{Value, json};
use switchboard::db::Db;
use switchboard::runtime::{HandlerKind, VersionSpec};
use switchboard::{Body, Failure, Host, HostConfig, Limits};
use switchboard_tests::{TempDir, call, guest, host_on, host_with, metric, next, reopen_store};

/// Agent `id` of the counter deployed as `counter`.
fn agent(id: &str) -> String {
    format!("agent:counter/{id}")
}

/// The count of counter agent `id`.
async fn count(host: &Host, id: &str) -> Value {
    call(host, &agent(id), "Get", json!({})).await.unwrap()["count"].clone()
}

/// Adds `by` to counter agent `id`; the new count.
async fn increment(host: &Host, id: &str, by: i64) -> Value {
    call(host, &agent(id), "Increment", json!({ "by": by }))
        .await
        .unwrap()["count"]
        .clone()
}

/// Which build of the counter answers.
async fn version(host: &Host) -> Value {
    call(host, &agent("alice"), "Version", json!({}))
        .await
        .unwrap()
}

/// Proves an agent's state lives in the host's store, not in an instance: counts are kept
/// across a hot swap to a build that answers differently (`Version` 2), a swap back to the
/// first build (the rollback: `Version` 1), and a restart of the host on the same store file.
#[tokio::test]
async fn counter_state_survives_swap_rollback_and_restart() {
    let dir = TempDir::new("state-restart");
    let path = dir.path().join(switchboard::db::FILE_NAME);
    let db = Db::open(&path).unwrap();
    let host = host_on(switchboard_tests::config(), db.clone());
    host.deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    assert_eq!(increment(&host, "alice", 2).await, 2);
    assert_eq!(increment(&host, "bob", 5).await, 5);
    assert_eq!(version(&host).await, 1);

    let swap = host
        .deploy("counter", guest("counter_next"), None)
        .await
        .unwrap();
    assert!(swap.swapped);
    assert_eq!(version(&host).await, 2, "the new build answers");
    assert_eq!(count(&host, "alice").await, 2, "kept across the swap");
    assert_eq!(increment(&host, "alice", 1).await, 3);

    let rollback = host
        .deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    assert!(rollback.swapped);
    assert_eq!(version(&host).await, 1, "the first build answers again");
    assert_eq!(count(&host, "alice").await, 3, "kept across the rollback");
    assert_eq!(count(&host, "bob").await, 5);

    let closing = Arc::downgrade(&db);
    drop((host, db));
    let host = host_on(
        switchboard_tests::config(),
        reopen_store(&path, closing).await,
    );
    host.deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    assert_eq!(count(&host, "alice").await, 3, "kept across the restart");
    assert_eq!(count(&host, "bob").await, 5);
    assert_eq!(increment(&host, "alice", 1).await, 4);
}

/// Proves a trap discards the turn's writes and what it pushed: `Explode` increments and
/// pushes, then panics; the sender gets 500, the count is unchanged and the watching client
/// gets nothing. `Notify`, the same without the panic, is the positive control: its count
/// and push arrive, and are the first and only thing the client gets.
#[tokio::test]
async fn a_trap_rolls_back_the_turns_writes_and_sends() {
    let host = host_with(&["counter"]).await;
    let mut watch = host.connect("user:watch");
    assert_eq!(increment(&host, "alice", 1).await, 1);

    let exploded = call(
        &host,
        &agent("alice"),
        "Explode",
        json!({"by": 10, "user": "watch"}),
    )
    .await
    .unwrap_err();
    assert_eq!(exploded.code, 500, "{exploded:?}");
    assert_eq!(count(&host, "alice").await, 1, "the trapped write is gone");

    let notified = call(
        &host,
        &agent("alice"),
        "Notify",
        json!({"by": 2, "user": "user:watch"}),
    )
    .await
    .unwrap();
    assert_eq!(notified["count"], 3);
    // The trapped turn ended before this one began, so a push it let out would be first.
    match next(&mut watch).await.body {
        Body::Message(message) => {
            assert_eq!(message.message_type, "Counted");
            assert_eq!(message.to, "user:watch");
            assert_eq!(
                message.payload.to_value(),
                json!({"agent": agent("alice"), "count": 3})
            );
        }
        other => panic!("expected the push of Notify, got {other:?}"),
    }
    assert!(watch.try_recv().is_err(), "nothing else was pushed");
}

/// Fills counter agent `id`: one more count and a blob of `bytes` bytes, in one turn.
async fn fill(host: &Host, id: &str, bytes: u32) -> Result<Value, Failure> {
    call(host, &agent(id), "Fill", json!({ "bytes": bytes })).await
}

/// Proves both state size limits answer 507 naming the setting, and that the refused turn
/// changes nothing, not even its writes under the limit: a value past `state_value_bytes`
/// (refused when set), and a handler's total past `state_handler_bytes` (refused when the
/// turn commits), while the agents already stored keep their state.
#[tokio::test]
async fn a_state_quota_gives_507_and_changes_nothing() {
    let config = HostConfig {
        state_value_bytes: 128,
        // Each filled agent stores `count` (5 + 1 bytes) and `blob` (4 + 102): two fit.
        state_handler_bytes: 300,
        ..switchboard_tests::config()
    };
    let host = Host::new(config).unwrap();
    host.deploy("counter", guest("counter"), None)
        .await
        .unwrap();
    assert_eq!(increment(&host, "ann", 5).await, 5);

    let too_big = fill(&host, "ann", 200).await.unwrap_err();
    assert_eq!(too_big.code, 507, "{too_big:?}");
    assert!(
        too_big.description.contains("state_value_bytes"),
        "{too_big:?}"
    );
    assert_eq!(
        count(&host, "ann").await,
        5,
        "the turn's increment is gone too"
    );

    assert_eq!(fill(&host, "ann", 100).await.unwrap()["count"], 6);
    assert_eq!(fill(&host, "bob", 100).await.unwrap()["count"], 1);
    let full = fill(&host, "cid", 100).await.unwrap_err();
    assert_eq!(full.code, 507, "{full:?}");
    assert!(full.description.contains("state_handler_bytes"), "{full:?}");
    assert_eq!(count(&host, "cid").await, 0, "nothing of the refused turn");
    assert_eq!(count(&host, "ann").await, 6);
    assert_eq!(count(&host, "bob").await, 1);
    assert_eq!(
        metric(
            &host,
            r#"switchboard_state_quota_refused_total{handler="counter"}"#
        ),
        1.0,
        "the refusal at commit is counted"
    );
}

/// Deploys the counter as service `tally` with `concurrency` instances at once.
async fn tally(host: &Host, concurrency: u32) {
    let spec = VersionSpec {
        kind: Some(HandlerKind::Service),
        limits: Limits {
            concurrency,
            ..Limits::default()
        },
        ..VersionSpec::default()
    };
    let version = host.runtime().load(guest("counter"), spec).await.unwrap();
    host.install("tally", version).unwrap();
}

/// Re-runs of `tally` turns whose state changed under them.
fn conflicts(host: &Host) -> f64 {
    metric(
        host,
        r#"switchboard_state_conflicts_total{handler="tally"}"#,
    )
}

/// Proves two turns of a service that read the same count before either writes both count:
/// the `Bump`s wait at a barrier between reading and writing, so both read 0; the later
/// commit finds the key changed, its turn is handled again (the barrier now passes at once)
/// and counts on top. Without the check both would write 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_service_turns_reading_one_key_both_count() {
    let host = host_with(&["deferred"]).await;
    tally(&host, 2).await;
    let bump =
        json!({"by": 1, "barrier": {"group": "race", "k": 2, "once": true, "timeout_ms": 10_000}});
    let (a, b) = tokio::join!(
        call(&host, "tally", "Bump", bump.clone()),
        call(&host, "tally", "Bump", bump)
    );
    let mut counts = [a.unwrap()["count"].clone(), b.unwrap()["count"].clone()];
    counts.sort_by_key(|c| c.as_i64());
    assert_eq!(counts, [json!(1), json!(2)]);
    let total = call(&host, "tally", "Get", json!({})).await.unwrap();
    assert_eq!(total["count"], 2);
    assert!(conflicts(&host) >= 1.0, "the later turn was handled again");
}

/// Proves no update of a service at concurrency 8 is lost or applied twice: of 200
/// concurrent increments each is answered with a new count or 409 (still conflicting after
/// every re-run), the answered counts are exactly 1..=n, and the final count is n.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_service_turns_lose_no_update() {
    const REQUESTS: usize = 200;
    let host = Host::new(switchboard_tests::config()).unwrap();
    tally(&host, 8).await;
    let calls: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { call(&host, "tally", "Increment", json!({"by": 1})).await })
        })
        .collect();
    let mut counted = Vec::new();
    let mut refused = 0;
    for answer in calls {
        match answer.await.unwrap() {
            Ok(reply) => counted.push(reply["count"].as_i64().unwrap()),
            Err(failure) => {
                assert_eq!(failure.code, 409, "{failure:?}");
                refused += 1;
            }
        }
    }
    counted.sort_unstable();
    let n = counted.len() as i64;
    assert_eq!(counted, (1..=n).collect::<Vec<_>>(), "each count once");
    let total = call(&host, "tally", "Get", json!({})).await.unwrap();
    assert_eq!(total["count"], n);
    assert!(
        conflicts(&host) >= f64::from(refused * 5),
        "a 409 comes after five conflicting tries"
    );
}
