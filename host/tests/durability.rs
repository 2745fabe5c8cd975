//! Keyed state in the real daemon: operators read it over the API and the CLI, deleting a
//! handler keeps it unless purged, and every acknowledged increment survives repeated
//! kill -9 under load, none applied twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// The count the API shows for `agent:counter/<id>`, 0 if it has none.
async fn stored_count(daemon: &Daemon, id: &str) -> i64 {
    let (status, view) = daemon.get(&format!("/v1/state/counter?agent={id}")).await;
    assert_eq!(status, 200, "{view}");
    view["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "count")
        .map_or(0, |e| e["json"].as_i64().unwrap())
}

/// State is read over the API and the CLI, kept across a hot swap to a build that answers
/// differently and a rollback; a plain delete keeps it for the next deploy under that name;
/// `--purge` removes it.
#[tokio::test]
async fn state_is_shown_kept_across_a_delete_and_purged_on_request() {
    let daemon = Daemon::start(&data_dir("state-api"));
    assert_eq!(daemon.deploy("counter", guest("counter")).await.0, 201);
    for _ in 0..3 {
        let (status, reply) = daemon
            .call("agent:counter/alice", "Increment", json!({"by": 2}))
            .await;
        assert_eq!(
            (status, reply["signalType"].as_str()),
            (200, Some("REPLY")),
            "{reply}"
        );
    }
    assert_eq!(stored_count(&daemon, "alice").await, 6);
    let (_, own) = daemon.get("/v1/state/counter").await;
    assert_eq!(own["agents"], json!(["alice"]), "{own}");
    assert!(own["usage"].as_u64().unwrap() > 0);
    let (status, wrong) = daemon
        .get("/v1/state/counter?agent=agent:tally/alice")
        .await;
    assert_eq!(status, 400, "{wrong}");

    let shown = daemon.cli(&["state", "counter", "agent:counter/alice"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(text.contains("count = 6"), "{text}");
    let json_out = daemon.cli(&["state", "counter", "alice", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(parsed["entries"][0]["key"], "count");

    // A hot swap to a build that answers differently, and a rollback: the count is kept.
    assert_eq!(daemon.deploy("counter", guest("counter_next")).await.0, 200);
    let (_, version) = daemon
        .call("agent:counter/alice", "Version", json!({}))
        .await;
    assert_eq!(version["payload"], 2, "{version}");
    let (_, reply) = daemon
        .call("agent:counter/alice", "Increment", json!({"by": 1}))
        .await;
    assert_eq!(
        reply["payload"]["count"], 7,
        "kept across the swap: {reply}"
    );
    assert_eq!(daemon.rollback("counter").await.0, 200);
    let (_, version) = daemon
        .call("agent:counter/alice", "Version", json!({}))
        .await;
    assert_eq!(version["payload"], 1, "{version}");
    let (_, reply) = daemon
        .call("agent:counter/alice", "Increment", json!({"by": -1}))
        .await;
    assert_eq!(
        reply["payload"]["count"], 6,
        "kept across the rollback: {reply}"
    );

    assert_eq!(daemon.delete("counter").await, 204);
    assert_eq!(
        stored_count(&daemon, "alice").await,
        6,
        "kept after a delete"
    );
    assert_eq!(daemon.deploy("counter", guest("counter")).await.0, 201);
    let (_, reply) = daemon
        .call("agent:counter/alice", "Increment", json!({"by": 1}))
        .await;
    assert_eq!(reply["payload"]["count"], 7, "{reply}");

    let purged = daemon.cli(&["delete", "counter", "--purge"]);
    assert!(purged.status.success(), "{purged:?}");
    assert_eq!(stored_count(&daemon, "alice").await, 0, "purged");
    let (_, own) = daemon.get("/v1/state/counter").await;
    assert_eq!(own["agents"], json!([]), "{own}");

    // State left by a handler deleted earlier is purged by name too.
    assert_eq!(daemon.deploy("counter", guest("counter")).await.0, 201);
    daemon
        .call("agent:counter/bo", "Increment", json!({"by": 5}))
        .await;
    assert_eq!(daemon.delete("counter").await, 204);
    assert_eq!(stored_count(&daemon, "bo").await, 5);
    assert_eq!(daemon.delete("counter").await, 404, "nothing deployed");
    let purged = daemon.cli(&["delete", "counter", "--purge"]);
    assert!(purged.status.success(), "{purged:?}");
    assert_eq!(
        stored_count(&daemon, "bo").await,
        0,
        "purged after the delete"
    );
}

/// Clients, one per agent, increment in a loop while the daemon is killed with SIGKILL,
/// three times over. After each restart every agent's count is at least what was
/// acknowledged (nothing acknowledged is lost) and at most one more (the increment in flight
/// when the process died, applied or not, never twice). Each kill is shown to land with
/// increments in flight (requests cut off by it).
#[tokio::test]
async fn acknowledged_increments_survive_repeated_kill_9_under_load() {
    const AGENTS: usize = 12;
    let dir = data_dir("kill9");
    let mut daemon = Daemon::start_with(&dir, &[]);
    let deployed = daemon.put("/v1/handlers/counter?concurrency=8", guest("counter"));
    assert_eq!(deployed.await.0, 201);
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..AGENTS).map(|_| AtomicU64::new(0)).collect());
    let mut total_acked = 0;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::new();
        let mut clients = Vec::new();
        for agent in 0..AGENTS {
            let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
            let url = format!("{}/v1/messages?wait=5s", daemon.url);
            clients.push(tokio::spawn(async move {
                let body = json!({"to": format!("agent:counter/c{agent}"), "messageType": "Increment", "payload": {"by": 1}});
                // Whether the kill cut one of this client's increments off mid-request.
                while !stop.load(Ordering::Relaxed) {
                    let sent = client
                        .post(&url)
                        .bearer_auth(switchboard_tests::daemon::TOKEN)
                        .json(&body)
                        .send()
                        .await;
                    let response = match sent {
                        Ok(response) => response,
                        // Refused: sent after the daemon died, so nothing was cut off.
                        Err(error) => return !error.is_connect(),
                    };
                    let Ok(reply) = response.json::<serde_json::Value>().await else {
                        return true;
                    };
                    if reply["signalType"] == "REPLY" {
                        acked[agent].fetch_add(1, Ordering::Relaxed);
                    } else {
                        return true;
                    }
                }
                false
            }));
        }
        // Let increments flow, then crash with requests in flight.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>() < total_acked + 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: too few increments"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Killed from another thread, while the clients go on sending.
        let daemon_killed = tokio::task::spawn_blocking(move || {
            daemon.kill();
            daemon
        });
        let killed = daemon_killed.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut cut_off = 0;
        for client in clients {
            cut_off += usize::from(client.await.unwrap());
        }
        // The kill came with increments in flight, not between two of them.
        assert!(
            cut_off > 0,
            "round {round}: no increment was in flight at the kill"
        );
        drop(killed);
        daemon = Daemon::start_with(&dir, &[]);
        total_acked = 0;
        for (agent, count) in acked.iter().enumerate() {
            let acked = count.load(Ordering::Relaxed);
            let stored = stored_count(&daemon, &format!("c{agent}")).await as u64;
            assert!(
                (acked..=acked + 1).contains(&stored),
                "round {round}, agent c{agent}: {acked} acknowledged, {stored} stored"
            );
            // What the next round's acknowledgements add to.
            count.store(stored, Ordering::Relaxed);
            total_acked += stored;
        }
    }
}
