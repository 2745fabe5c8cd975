//! Dead letters over the admin API and the CLI, on a real daemon: `POST /v1/events` says
//! where each copy went, and an operator lists, replays, deletes and purges what a slow
//! subscriber refused; dead letters survive a restart.

use serde_json::{Value, json};
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// Runs the CLI against `daemon` and returns its stdout; panics if it failed.
fn cli(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.cli(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A slow subscriber with a one-signal mailbox refuses a burst; every copy is accounted for
/// in the answers, the listing and the metrics, and an operator can replay, delete and purge.
#[tokio::test]
async fn a_slow_subscribers_refusals_are_kept_and_managed() {
    let dir = data_dir("dead-letters");
    let daemon = Daemon::start(&dir);
    // Each Stall keeps chaos busy for a second; its mailbox holds one more.
    let (status, _) = daemon
        .put("/v1/handlers/chaos?mailbox=1&cpu_ms=1000", guest("chaos"))
        .await;
    assert_eq!(status, 201);

    const BURST: u64 = 5;
    let (mut delivered, mut dead) = (0, 0);
    for _ in 0..BURST {
        let (status, body) = daemon
            .post("/v1/events", json!({ "eventType": "Stall", "payload": {} }))
            .await;
        assert_eq!(status, 202, "{body}");
        delivered += body["delivered"].as_u64().unwrap();
        dead += body["deadLettered"].as_u64().unwrap();
    }
    assert_eq!(delivered + dead, BURST);
    assert!(
        dead >= BURST - 2,
        "at most one running and one queued: {dead} dead"
    );

    let (status, list) = daemon.get("/v1/dead-letters?handler=chaos").await;
    assert_eq!(status, 200);
    let letters = list["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len() as u64, dead);
    assert_eq!(list["stored"].as_u64(), Some(dead));
    assert_eq!(letters[0]["reason"], "mailbox_full");
    assert_eq!(letters[0]["signal"]["eventType"], "Stall");
    assert_eq!(
        daemon
            .metric("switchboard_dead_letters_total{handler=\"chaos\",kind=\"EVENT\",reason=\"mailbox_full\"}")
            .await,
        Some(dead as f64)
    );

    // The CLI shows the same.
    let listed = cli(&daemon, &["dead-letters", "list", "--handler", "chaos"]);
    assert!(
        listed.contains("mailbox_full") && listed.contains("Stall"),
        "{listed}"
    );
    let as_json: Value =
        serde_json::from_str(&cli(&daemon, &["dead-letters", "list", "--json"])).unwrap();
    assert_eq!(
        as_json["deadLetters"].as_array().unwrap().len() as u64,
        dead
    );

    // Dead letters survive a restart.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(&dir);
    let (_, list) = daemon.get("/v1/dead-letters").await;
    assert_eq!(list["stored"].as_u64(), Some(dead), "{list}");
    let first = list["deadLetters"][0]["id"].as_u64().unwrap();
    let second = list["deadLetters"][1]["id"].as_u64().unwrap();

    // Replay goes to chaos alone, and the letter leaves the store.
    let replayed = cli(&daemon, &["dead-letters", "replay", &first.to_string()]);
    assert!(
        replayed.contains("replayed") && replayed.contains("chaos"),
        "{replayed}"
    );
    let (status, _) = daemon.get(&format!("/v1/dead-letters/{first}")).await;
    assert_eq!(status, 404);
    let (status, shown) = daemon.get(&format!("/v1/dead-letters/{second}")).await;
    assert_eq!((status, shown["handler"].as_str()), (200, Some("chaos")));

    cli(&daemon, &["dead-letters", "delete", &second.to_string()]);
    let purged = cli(&daemon, &["dead-letters", "purge", "--handler", "chaos"]);
    assert!(purged.contains(&format!("purged {}", dead - 2)), "{purged}");
    let (_, list) = daemon.get("/v1/dead-letters").await;
    assert_eq!(list["stored"].as_u64(), Some(0));

    let (status, body) = daemon
        .post("/v1/dead-letters/999999/replay", json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
}
