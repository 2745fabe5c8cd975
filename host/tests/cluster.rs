//! Hosts joined over NATS, end to end: `switchboard serve --nats` daemons and a
//! `nats-server` of the test's own, all on loopback.

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;
use switchboard_tests::nats::NatsServer;

/// A daemon joined to `server` as host `id` of cluster `t`.
fn join(server: &NatsServer, id: &str) -> Daemon {
    let dir = data_dir(&format!("cluster-{id}"));
    let flags = [
        "--nats",
        &server.url,
        "--cluster-name",
        "t",
        "--host-id",
        id,
    ];
    Daemon::start_with(&dir, &flags)
}

/// Proves a request made over HTTP on host A is answered by a handler only host B runs,
/// uploaded to B alone; an address no host serves is answered 404 at once (no responders),
/// not 504 at the deadline; and a host in a cluster refuses what the cluster does not keep
/// yet with 409: an agent handler at deploy, keyed state in a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_one_host_is_answered_by_a_handler_another_runs() {
    let server = NatsServer::start();
    let (a, b) = (join(&server, "a"), join(&server, "b"));
    let (status, deployed) = b.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{deployed}");

    for n in 0..5 {
        let (status, reply) = a.call("echo", "Ping", json!({ "n": n })).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["from"], "echo");
        assert_eq!(reply["payload"], json!({ "n": n }));
    }
    let handled = r#"switchboard_signals_total{handler="echo",kind="MESSAGE",outcome="ok"}"#;
    assert_eq!(b.metric(handled).await, Some(5.0), "B handled all five");

    let (status, error) = a.call("nobody", "Ping", json!({})).await;
    assert_eq!(status, 404, "{error}");

    let (status, refused) = b.deploy("counter", guest("counter")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("--nats"), "{refused}");
    assert_eq!(b.deploy("chaos", guest("chaos")).await.0, 201);
    let (status, refused) = a.call("chaos", "BigState", json!({ "bytes": 10 })).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("cluster"), "{refused}");
}

/// Proves `serve` refuses the client gateway beside `--nats`, at start, saying why.
#[test]
fn the_gateway_is_refused_beside_nats() {
    let dir = data_dir("cluster-gateway");
    let output = switchboard_tests::daemon::cli(&[
        "serve",
        "--admin-token",
        "t",
        "--data-dir",
        dir.to_str().unwrap(),
        "--nats",
        "nats://127.0.0.1:1",
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-tokens",
        "tokens.toml",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--gateway-listen") && stderr.contains("--nats"),
        "{stderr}"
    );
}
