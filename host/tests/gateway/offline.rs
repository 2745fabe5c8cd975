//! Pushes kept for a user until a client acknowledges them: delivered at once to a connected
//! user, kept in order for one who is not and delivered when they connect, and gone only
//! once acknowledged.

use serde_json::json;

use super::*;

/// Waits until `agent:reminders/<user>` has fired `n` reminders.
async fn fired(daemon: &Daemon, user: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, got) = daemon
            .call(&format!("agent:reminders/{user}"), "Get", json!({}))
            .await;
        if got["payload"]["fired"]
            .as_array()
            .is_some_and(|f| f.len() >= n)
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "fired: {got}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The text of a kept `Reminded` push, checking it is one.
fn reminded(frame: &Value) -> &str {
    assert_eq!(frame["signalType"], "MESSAGE", "{frame}");
    assert_eq!(frame["messageType"], "Reminded", "{frame}");
    assert!(
        frame["headers"]["switchboard-kept"].is_string(),
        "kept: {frame}"
    );
    frame["payload"]["text"].as_str().unwrap()
}

/// A reminder fires while its user is connected: the push arrives at once, marked as kept,
/// and the client's acknowledgement is confirmed and counted.
#[tokio::test]
async fn a_reminder_is_pushed_to_its_connected_user() {
    let daemon = daemon("gateway-reminder").await;
    let mut bo = open(&daemon, "t-bo").await;
    let remind = json!({"text": "stretch", "after_ms": 50});
    let (status, reply) = daemon.call("agent:reminders/bo", "Remind", remind).await;
    assert_eq!(status, 200, "{reply}");
    let pushed = next(&mut bo).await;
    assert_eq!(reminded(&pushed), "stretch");
    assert_eq!(pushed["to"], "user:bo");
    assert_eq!(pushed["from"], "agent:reminders/bo");
    let id = pushed["id"].as_str().unwrap();
    send(&mut bo, json!({"ack": id})).await;
    assert_eq!(next(&mut bo).await, json!({"acknowledged": id}));
    send(&mut bo, json!({"ack": id})).await;
    assert_eq!(refused(&next(&mut bo).await), 404, "acknowledged already");
    metric_reaches(&daemon, "switchboard_gateway_pushes_kept_total", 1.0).await;
    metric_reaches(
        &daemon,
        "switchboard_gateway_pushes_acknowledged_total",
        1.0,
    )
    .await;
}

/// Two reminders fire while their user is offline: at the next connection both arrive, in
/// the order they were kept; one acknowledged is gone at the connection after, the other is
/// delivered again until it is acknowledged too; a restart of the host loses neither.
#[tokio::test]
async fn pushes_for_an_offline_user_wait_for_its_acknowledgement() {
    let daemon = daemon("gateway-offline").await;
    for (text, after_ms) in [("first", 10), ("second", 200)] {
        let remind = json!({"text": text, "after_ms": after_ms});
        assert_eq!(
            daemon.call("agent:reminders/cy", "Remind", remind).await.0,
            200
        );
    }
    fired(&daemon, "cy", 2).await;

    let mut cy = open(&daemon, "t-cy").await;
    let first = next(&mut cy).await;
    let second = next(&mut cy).await;
    assert_eq!((reminded(&first), reminded(&second)), ("first", "second"));
    send(&mut cy, json!({"ack": first["id"]})).await;
    assert_eq!(next(&mut cy).await["acknowledged"], first["id"]);
    cy.close(None).await.unwrap();
    drop(cy);

    let mut cy = open(&daemon, "t-cy").await;
    let again = next(&mut cy).await;
    assert_eq!(reminded(&again), "second", "only the unacknowledged one");
    assert_eq!(again["id"], second["id"], "the same push, by id");
    send(&mut cy, json!({"ack": second["id"]})).await;
    assert_eq!(next(&mut cy).await["acknowledged"], second["id"]);
    cy.close(None).await.unwrap();
    drop(cy);

    let mut cy = open(&daemon, "t-cy").await;
    send(
        &mut cy,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(
        next(&mut cy).await["ack"].is_string(),
        "nothing kept is left"
    );
}

/// A push kept for an offline user survives a restart of the host (it is stored with the
/// turn that kept it) and is delivered after it.
#[tokio::test]
async fn a_kept_push_survives_a_restart() {
    let name = "gateway-kept-restart";
    let daemon = daemon(name).await;
    let remind = json!({"text": "after restart", "after_ms": 10});
    assert_eq!(
        daemon.call("agent:reminders/ann", "Remind", remind).await.0,
        200
    );
    fired(&daemon, "ann", 1).await;
    daemon.kill();
    drop(daemon);
    keep_data_dir(name);
    let daemon = daemon_restarted(name).await;
    let mut ann = open(&daemon, "t-ann").await;
    assert_eq!(reminded(&next(&mut ann).await), "after restart");
}
