//! What a client sends and receives: messages acknowledged and answered, refusals as
//! ERROR_REPLY frames on a connection that stays up, only the handlers opened to clients
//! reachable, and everything addressed to a user on each of its connections.

use serde_json::json;

use super::*;

/// A client sends a message: it is acknowledged with the id the host gave it, and the reply
/// refers to that id. A malformed frame, a forged `from`, a binary frame and a message to an
/// agent are each refused with an ERROR_REPLY, and the connection stays up.
#[tokio::test]
async fn a_client_message_is_acknowledged_and_answered() {
    let daemon = daemon("gateway-messages").await;
    let mut ann = open(&daemon, "t-ann").await;
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {"n": 1}}),
    )
    .await;
    let ack = next(&mut ann).await;
    let id = ack["ack"]
        .as_str()
        .expect("an ack with the message's id")
        .to_owned();
    let reply = next(&mut ann).await;
    assert_eq!(reply["signalType"], "REPLY", "{reply}");
    assert_eq!(reply["replyTo"], id.as_str());
    assert_eq!(reply["to"], "user:ann");
    assert_eq!(reply["payload"], json!({"n": 1}));

    ann.send(Message::text("{not json")).await.unwrap();
    assert_eq!(refused(&next(&mut ann).await), 400);
    let forged = json!({"to": "echo", "messageType": "Ping", "from": "user:bo", "payload": {}});
    send(&mut ann, forged).await;
    assert_eq!(
        refused(&next(&mut ann).await),
        400,
        "a client does not set `from`"
    );
    ann.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(refused(&next(&mut ann).await), 400);
    send(
        &mut ann,
        json!({"to": "agent:reminders/bo", "messageType": "Get", "payload": {}}),
    )
    .await;
    assert_eq!(refused(&next(&mut ann).await), 403);
    send(
        &mut ann,
        json!({"to": "user:bo", "messageType": "Hi", "payload": {}}),
    )
    .await;
    assert_eq!(refused(&next(&mut ann).await), 403);
    let elsewhere =
        json!({"to": "echo", "messageType": "Ping", "payload": {}, "returnAddress": "user:bo"});
    send(&mut ann, elsewhere).await;
    let refusal = next(&mut ann).await;
    assert_eq!(refused(&refusal), 403, "replies go back to the client only");
    assert_eq!(refusal["headers"]["switchboard-refused-frame"], "true");
    let timer = json!({"to": "echo", "messageType": "Ping", "payload": {},
                       "headers": {"Switchboard-Timer": "x"}});
    send(&mut ann, timer).await;
    assert_eq!(
        refused(&next(&mut ann).await),
        400,
        "the host's headers are the host's"
    );
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {"n": 2}}),
    )
    .await;
    assert!(
        next(&mut ann).await["ack"].is_string(),
        "still up after refusals"
    );
    assert_eq!(next(&mut ann).await["payload"], json!({"n": 2}));
    assert!(daemon.metric("switchboard_gateway_frames_in_total").await >= Some(9.0));
    assert!(daemon.metric("switchboard_gateway_frames_out_total").await >= Some(11.0));
}

/// A handler that opens no message type to clients (and is not opened by the operator)
/// refuses a client's message with 403, after the ack; the same message from the admin API
/// is handled.
#[tokio::test]
async fn a_client_cannot_message_a_handler_not_open_to_clients() {
    let daemon = daemon("gateway-closed-handler").await;
    assert_eq!(daemon.deploy("lobby", guest("lobby")).await.0, 201);
    let mut ann = open(&daemon, "t-ann").await;
    send(
        &mut ann,
        json!({"to": "lobby", "messageType": "Who", "payload": {}}),
    )
    .await;
    let id = next(&mut ann).await["ack"].as_str().unwrap().to_owned();
    let answer = next(&mut ann).await;
    assert_eq!(answer["signalType"], "ERROR_REPLY", "{answer}");
    assert_eq!(answer["replyTo"], id.as_str());
    assert_eq!(answer["code"], 403, "{answer}");
    let (status, _) = daemon.call("lobby", "Who", json!({})).await;
    assert_eq!(status, 200, "the admin API may");
}

/// The same user on two connections (two tabs) gets both copies of what is addressed to it;
/// when one closes, the other still gets everything.
#[tokio::test]
async fn a_user_on_two_connections_gets_both_copies() {
    let daemon = daemon("gateway-tabs").await;
    let mut first = open(&daemon, "t-ann").await;
    let mut second = open(&daemon, "t-ann").await;
    let remind = |text: &str| json!({"text": text, "after_ms": 20});
    let (status, _) = daemon
        .call("agent:reminders/ann", "Remind", remind("both"))
        .await;
    assert_eq!(status, 200);
    for tab in [&mut first, &mut second] {
        assert_eq!(next(tab).await["payload"], json!({"text": "both"}));
    }
    first.close(None).await.unwrap();
    drop(first);
    daemon
        .call("agent:reminders/ann", "Remind", remind("second only"))
        .await;
    assert_eq!(
        next(&mut second).await["payload"],
        json!({"text": "second only"})
    );
}

/// Presence: a user's first connection opening and its last one closing reach a handler
/// subscribed to the presence events (`lobby`), which sees the user online while either of
/// two tabs is open and offline once both are closed.
#[tokio::test]
async fn presence_is_seen_by_a_subscribed_handler() {
    let daemon = daemon("gateway-presence").await;
    assert_eq!(daemon.deploy("lobby", guest("lobby")).await.0, 201);
    let who = async || daemon.call("lobby", "Who", json!({})).await.1["payload"]["online"].clone();
    let until = async |want: Value| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = who().await;
            if seen == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "online: {seen}, wanted {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    until(json!([])).await;
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let (_, forged) = daemon
        .call("storm", "ForgeOnline", json!({"user": "ceo"}))
        .await;
    assert_eq!(
        forged["code"], 403,
        "only the host emits presence: {forged}"
    );
    let mut first = open(&daemon, "t-ann").await;
    until(json!(["ann"])).await;
    let mut second = open(&daemon, "t-ann").await;
    first.close(None).await.unwrap();
    drop(first);
    // Presence is published in order: once bo's coming online is seen, a wrong "ann is
    // offline" from the first tab's close would have been seen before it.
    let bo = open(&daemon, "t-bo").await;
    until(json!(["ann", "bo"])).await;
    drop(bo);
    until(json!(["ann"])).await;
    second.close(None).await.unwrap();
    drop(second);
    until(json!([])).await;
}

/// Clients emit no events unless the operator lets them emit a type
/// (`--clients-may-emit`): an allowed one is acknowledged and reaches its subscriber as from
/// the client; another type, a data change, or the host's presence events (even if listed)
/// are refused with 403.
#[tokio::test]
async fn clients_emit_only_what_the_operator_allows() {
    let flags = ["--clients-may-emit", "UserRegistered,UserOnline"];
    let daemon = daemon_with("gateway-client-events", &flags).await;
    assert_eq!(daemon.deploy("audit", guest("audit")).await.0, 201);
    let mut ann = open(&daemon, "t-ann").await;
    let allowed = json!({"eventType": "UserRegistered", "payload": {"who": "ann"}});
    send(&mut ann, allowed).await;
    let id = next(&mut ann).await["ack"]
        .as_str()
        .expect("acknowledged")
        .to_owned();
    for refused_event in [
        json!({"eventType": "OrderPlaced", "payload": {}}),
        json!({"eventType": "UserOnline", "payload": {"user": "ceo"}}),
        json!({"signalType": "DATA_CHANGE_EVENT", "changeType": "CREATED", "objectType": "User", "object": {}}),
    ] {
        send(&mut ann, refused_event.clone()).await;
        assert_eq!(refused(&next(&mut ann).await), 403, "{refused_event}");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, log) = daemon.call("audit", "GetAudit", json!({})).await;
        let entries = log["payload"]["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(entry) = entries.first() {
            assert_eq!(entries.len(), 1, "only the allowed event: {log}");
            assert_eq!(entry["id"], id.as_str());
            assert_eq!(entry["from"], "user:ann");
            assert_eq!(entry["payload"], json!({"who": "ann"}));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit saw nothing: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A field given twice is refused (400) by the gateway as by the admin API, never settled
/// by which came last: a frame naming `to` twice reaches neither handler, and neither does
/// an acknowledgement naming `ack` twice; the connection stays up.
#[tokio::test]
async fn a_field_given_twice_is_refused_at_every_edge() {
    let daemon = daemon("gateway-duplicate-keys").await;
    let twice = r#"{"to": "reminders", "to": "echo", "messageType": "Ping", "payload": {}}"#;
    let mut ann = open(&daemon, "t-ann").await;
    ann.send(Message::text(twice)).await.unwrap();
    let refusal = next(&mut ann).await;
    assert_eq!(refused(&refusal), 400);
    let description = refusal["description"].as_str().unwrap();
    assert!(description.contains("duplicate field `to`"), "{refusal}");
    ann.send(Message::text(r#"{"ack": "a", "ack": "b"}"#))
        .await
        .unwrap();
    assert_eq!(refused(&next(&mut ann).await), 400);

    let admin = daemon
        .request(reqwest::Method::POST, "/v1/messages")
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 400, "the admin API's rule");
    send(
        &mut ann,
        json!({"to": "echo", "messageType": "Ping", "payload": {}}),
    )
    .await;
    assert!(next(&mut ann).await["ack"].is_string(), "still served");
}
