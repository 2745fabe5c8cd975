//! Signal storms against the real daemon, driven over HTTP: a storm started by a client's
//! event stops by itself, and a handler flooding events and log lines cannot make the
//! daemon write more than a little log. Each test ends with a neighbour answering.
//!
//! Log volume is what the fixture read from the daemon's stderr. The daemon blocks once the
//! pipe (64 KiB) is full, so it can never be far ahead of what has been counted.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// Most bytes of log a storm may cost the daemon: generous, and far below what an
/// unbounded storm writes (tens of megabytes in a few seconds).
const LOG_BOUND: u64 = 2 << 20;

/// Longest a storm may take to stop by itself.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A daemon with `storm` (with `query` on its upload) and its neighbour `echo` deployed.
async fn storm_daemon(name: &str, query: &str) -> Daemon {
    let daemon = Daemon::start(&data_dir(name));
    let (status, body) = daemon
        .put(&format!("/v1/handlers/storm{query}"), guest("storm"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = daemon.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{body}");
    daemon
}

/// Signals handled by `storm` so far.
async fn storm_handled(daemon: &Daemon) -> u64 {
    let (status, shown) = daemon.get("/v1/handlers/storm").await;
    assert_eq!(status, 200, "{shown}");
    shown["counters"]["handled"]
        .as_u64()
        .expect("a handled count")
}

/// Polls until `storm` has handled exactly `expected` signals and its queue is empty.
async fn storm_settles_at(daemon: &Daemon, expected: u64) {
    let deadline = Instant::now() + STOP_WITHIN;
    loop {
        let (_, shown) = daemon.get("/v1/handlers/storm").await;
        let handled = shown["counters"]["handled"].as_u64().unwrap_or(0);
        let queued = shown["counters"]["queued"].as_u64().unwrap_or(u64::MAX);
        if handled == expected && queued == 0 {
            return;
        }
        assert!(
            handled <= expected,
            "the storm went past the depth limit: {shown}"
        );
        assert!(
            Instant::now() < deadline,
            "the storm did not stop by itself: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The neighbour answers.
async fn neighbour_answers(daemon: &Daemon) {
    let (status, reply) = daemon.call("echo", "Ping", json!({"after": "storm"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["signalType"], "REPLY", "{reply}");
    assert_eq!(reply["payload"], json!({"after": "storm"}));
}

/// Twenty event storms started through `POST /v1/events` each stop at the default depth
/// limit (33 deliveries: depths 0 to 32), each counted as a refused loop; the daemon's log
/// grows by little; the neighbour answers.
#[tokio::test]
async fn event_storms_from_the_api_stop_by_themselves() {
    let daemon = storm_daemon("storms-events", "").await;
    let before = daemon.log_bytes();
    let storms = 20;
    for _ in 0..storms {
        let (status, body) = daemon
            .post("/v1/events", json!({"eventType": "Storm", "payload": {}}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    storm_settles_at(&daemon, storms * 33).await;
    let refused = daemon
        .metric(r#"switchboard_depth_refused_total{handler="storm"}"#)
        .await;
    assert_eq!(refused, Some(storms as f64));
    neighbour_answers(&daemon).await;
    assert_eq!(
        storm_handled(&daemon).await,
        storms * 33,
        "nothing ran after the storms stopped"
    );
    let logged = daemon.log_bytes() - before;
    assert!(logged < LOG_BOUND, "{logged} bytes of log");
}

/// One signal emitting far more events than it may into its own mailbox, and signals
/// logging far more lines than they may: each host call past the cap fails with 429, the
/// log lines are capped per signal and rate-limited per handler, suppressed lines are
/// counted, and the daemon's log stays small. The neighbour answers.
#[tokio::test]
async fn floods_and_chatter_keep_the_log_small() {
    // The default mailbox holds a whole capped flood. (A full mailbox dead-letters each
    // refused copy with a durable write inside `emit`, too slow for a test's wait on disk;
    // tests/tests/storms.rs covers that path in memory.) The CPU limit, which still counts
    // wall time, is raised so a loaded test machine cannot turn the 429 into a 507.
    let daemon = storm_daemon("storms-floods", "?cpu_ms=60000").await;
    let before = daemon.log_bytes();
    for _ in 0..3 {
        let (status, reply) = daemon.call("storm", "Flood", json!({"n": 1_000_000})).await;
        assert_eq!(status, 429, "{reply}");
        assert_eq!(reply["code"], 429, "{reply}");
        let description = reply["error"].as_str().unwrap_or_default();
        assert!(description.contains("max_emits_per_signal"), "{reply}");
    }
    let caps = daemon
        .metric(r#"switchboard_send_caps_hit_total{handler="storm",kind="emit"}"#)
        .await;
    assert_eq!(caps, Some(3.0));
    for _ in 0..20 {
        let (status, reply) = daemon.call("storm", "Chatty", json!({"n": 20_000})).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["payload"], json!({"done": 20_000}), "{reply}");
    }
    let suppressed = daemon
        .metric(r#"switchboard_log_suppressed_total{handler="storm"}"#)
        .await
        .unwrap_or(0.0);
    assert!(
        suppressed >= 20.0 * 19_900.0,
        "lines past the per-signal cap are counted: {suppressed}"
    );
    neighbour_answers(&daemon).await;
    let logged = daemon.log_bytes() - before;
    assert!(logged < LOG_BOUND, "{logged} bytes of log");
}
