//! The per-signal deadline through the daemon: set at deploy time with `deadline_ms`, shown
//! by the API, kept across a restart, and enforced on a guest asleep in WASI.

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// Proves `deadline_ms` round-trips from the deploy query to `GET /v1/handlers/{name}` and
/// through a restart, that out-of-range values are refused with 400, that the default is
/// shown when none is given, and that a year-long sleep gets 504 while the neighbour answers.
#[tokio::test]
async fn deadline_is_a_deploy_setting() {
    let dir = data_dir("deadline");
    let daemon = Daemon::start(&dir);
    for bad in ["0", "900001", "soon"] {
        let path = format!("/v1/handlers/sleeper?deadline_ms={bad}");
        let (status, body) = daemon.put(&path, guest("sleeper")).await;
        assert_eq!(status, 400, "deadline_ms={bad}: {body}");
    }
    let (status, body) = daemon
        .put("/v1/handlers/sleeper?deadline_ms=1000", guest("sleeper"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(daemon.deploy("echo", guest("echo")).await.0, 201);
    let (status, shown) = daemon.get("/v1/handlers/sleeper").await;
    assert_eq!(status, 200);
    assert_eq!(shown["limits"]["deadline_ms"], 1000, "{shown}");
    let (_, echo) = daemon.get("/v1/handlers/echo").await;
    assert_eq!(echo["limits"]["deadline_ms"], 60_000, "the default: {echo}");

    let year = 365u64 * 24 * 3600 * 1000;
    let (status, reply) = daemon.call("sleeper", "Sleep", json!({"ms": year})).await;
    assert_eq!(status, 504, "an ErrorReply's code is the status");
    assert_eq!(reply["code"], 504, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|d| d.contains("deadline_ms")),
        "{reply}"
    );
    let (_, pong) = daemon.call("sleeper", "Ping", json!({})).await;
    assert_eq!(pong["payload"]["version"], "sleeper", "{pong}");

    daemon.stop();
    let daemon = Daemon::start(&dir);
    let (_, shown) = daemon.get("/v1/handlers/sleeper").await;
    assert_eq!(
        shown["limits"]["deadline_ms"], 1000,
        "after a restart: {shown}"
    );
    let (_, echoed) = daemon.call("echo", "Ping", json!({"n": 1})).await;
    assert_eq!(echoed["payload"], json!({"n": 1}));
}
