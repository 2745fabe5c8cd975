//! The instance pool's serve settings end to end: `switchboard serve --max-instances N
//! --instance-idle D`, driven over HTTP like an operator would.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// The `switchboard_instances` line of handler `name`.
fn instances_of(name: &str) -> String {
    format!("switchboard_instances{{handler=\"{name}\"}}")
}

/// Proves `--max-instances` and `--instance-idle` are taken and shown: the pool's size in
/// the metrics, a third handler refused with 507 before it is compiled, a warm instance
/// released after the idle time (the gauge back to 0), and a deleted handler's slot free
/// for another.
#[tokio::test]
async fn pool_size_and_idle_time_are_serve_flags() {
    let flags = ["--max-instances", "2", "--instance-idle", "3s"];
    let daemon = Daemon::start_with(&data_dir("pool"), &flags);
    let max = daemon.metric(r#"switchboard_instance_slots{state="max"}"#);
    assert_eq!(max.await, Some(2.0));
    for name in ["a", "b"] {
        let (status, body) = daemon.deploy(name, guest("echo")).await;
        assert_eq!(status, 201, "{body}");
    }

    let compiled = daemon.metric("switchboard_compilations").await;
    let (status, body) = daemon.deploy("c", guest("welcome")).await;
    assert_eq!(status, 507, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("all 2 instance slots (set by --max-instances) are reserved"),
        "{body}"
    );
    assert!(
        body["help"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-instances")
    );
    let after = daemon.metric("switchboard_compilations").await;
    assert_eq!(after, compiled, "refused before compiling");

    let called = Instant::now();
    let (status, reply) = daemon.call("a", "Ping", json!({"n": 1})).await;
    assert_eq!((status, &reply["payload"]), (200, &json!({"n": 1})));
    let warm = daemon.metric(&instances_of("a")).await;
    assert_eq!(warm, Some(1.0), "warm right after the call");
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.metric(&instances_of("a")).await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the idle instance was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        called.elapsed() >= Duration::from_secs(3),
        "released only once idle for 3 s"
    );

    assert_eq!(daemon.delete("b").await, 204);
    let (status, body) = daemon.deploy("c", guest("welcome")).await;
    assert_eq!(status, 201, "b's slot is free: {body}");
    let (status, reply) = daemon.call("a", "Ping", json!({"n": 2})).await;
    assert_eq!((status, &reply["payload"]), (200, &json!({"n": 2})));
}
