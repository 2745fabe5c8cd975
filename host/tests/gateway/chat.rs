//! The `chat` example end to end: two users chatting through it, and a message for a user
//! who is not connected kept until that user connects and acknowledges it.

use serde_json::json;

use super::*;

/// Says `text` to `to` through `chat`: the ack, then chat's answer, whose payload is
/// returned.
async fn say(socket: &mut Socket, to: &str, text: &str) -> Value {
    send(
        socket,
        json!({"to": "chat", "messageType": "Say", "payload": {"to": to, "text": text}}),
    )
    .await;
    let id = next(socket).await["ack"]
        .as_str()
        .expect("an ack")
        .to_owned();
    let answer = next(socket).await;
    assert_eq!(answer["signalType"], "REPLY", "{answer}");
    assert_eq!(answer["replyTo"], id.as_str());
    answer["payload"].clone()
}

/// Waits until `chat` sees exactly the users `want` online.
async fn chat_sees(daemon: &Daemon, want: Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let online = daemon.call("chat", "Who", json!({})).await.1["payload"]["online"].clone();
        if online == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "chat sees {online}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `Chat` a user receives: `(from, text)`.
async fn heard(socket: &mut Socket) -> (String, String) {
    let frame = next(socket).await;
    assert_eq!(frame["messageType"], "Chat", "{frame}");
    assert_eq!(frame["from"], "chat", "{frame}");
    let from = frame["payload"]["from"].as_str().unwrap().to_owned();
    (from, frame["payload"]["text"].as_str().unwrap().to_owned())
}

/// Ann and Bo, both connected, chat through `chat` (no operator flag: it opens `Say` and
/// `Who` to clients itself): each message is delivered now, and the sender is told so. A
/// message for a user never seen is refused (404); 40 for Cy, who has been here but is not
/// connected, are kept; Cy gets them on connecting, in order, acknowledges them in one
/// frame, and they are not delivered again.
#[tokio::test]
async fn two_users_chat_and_an_offline_one_catches_up() {
    let daemon = daemon("gateway-chat").await;
    assert_eq!(daemon.deploy("chat", guest("chat")).await.0, 201);
    let mut ann = open(&daemon, "t-ann").await;
    let mut bo = open(&daemon, "t-bo").await;
    chat_sees(&daemon, json!(["ann", "bo"])).await;

    assert_eq!(
        say(&mut ann, "bo", "hi Bo").await,
        json!({"delivered": "now"})
    );
    assert_eq!(heard(&mut bo).await, ("ann".into(), "hi Bo".into()));
    assert_eq!(
        say(&mut bo, "ann", "hi Ann").await,
        json!({"delivered": "now"})
    );
    assert_eq!(heard(&mut ann).await, ("bo".into(), "hi Ann".into()));

    let unknown = json!({"to": "chat", "messageType": "Say", "payload": {"to": "cy", "text": "x"}});
    send(&mut ann, unknown).await;
    assert!(next(&mut ann).await["ack"].is_string());
    assert_eq!(
        next(&mut ann).await["code"],
        404,
        "nothing is kept for a user never seen"
    );
    let cy = open(&daemon, "t-cy").await;
    chat_sees(&daemon, json!(["ann", "bo", "cy"])).await;
    drop(cy);
    chat_sees(&daemon, json!(["ann", "bo"])).await;

    let later = json!({"delivered": "later"});
    assert_eq!(say(&mut ann, "cy", "see you").await, later);
    assert_eq!(say(&mut bo, "cy", "me too").await, later);
    // More than one page of the backlog (32), to see it come whole and in order.
    for n in 0..38 {
        assert_eq!(say(&mut ann, "cy", &format!("n{n}")).await, later);
    }
    let mut cy = open(&daemon, "t-cy").await;
    let kept = next(&mut cy).await;
    assert_eq!(kept["payload"]["text"], "see you", "{kept}");
    assert!(kept["headers"]["switchboard-kept"].is_string(), "{kept}");
    let also = next(&mut cy).await;
    assert_eq!(
        also["payload"]["text"], "me too",
        "in the order kept: {also}"
    );
    let mut ids = vec![kept["id"].clone(), also["id"].clone()];
    for n in 0..38 {
        let frame = next(&mut cy).await;
        assert_eq!(
            frame["payload"]["text"],
            format!("n{n}"),
            "in the order kept"
        );
        ids.push(frame["id"].clone());
    }
    let mut acks = ids.clone();
    acks.push(json!("never-kept"));
    send(&mut cy, json!({ "ack": acks })).await;
    assert_eq!(
        next(&mut cy).await["acknowledged"],
        json!(ids),
        "all acknowledged in one frame"
    );
    drop(cy);
    let mut cy = open(&daemon, "t-cy").await;
    send(
        &mut cy,
        json!({"to": "chat", "messageType": "Who", "payload": {}}),
    )
    .await;
    assert!(
        next(&mut cy).await["ack"].is_string(),
        "the kept messages are gone"
    );

    let empty = json!({"to": "chat", "messageType": "Say", "payload": {"to": "bo", "text": ""}});
    send(&mut ann, empty).await;
    assert!(next(&mut ann).await["ack"].is_string());
    assert_eq!(next(&mut ann).await["code"], 400, "an empty text");
}

/// The pushes kept for a user are capped per handler (5 here), so one handler cannot use
/// up another's: after `storm` keeps its 5 for Bo, who is offline, `chat` still keeps Ann's
/// message for him, while `storm`'s next keep fails with 429. Bo gets all six on connecting.
#[tokio::test]
async fn another_handler_cannot_use_up_what_chat_keeps_for_a_user() {
    let daemon = daemon_with("gateway-kept-per-handler", &["--kept-per-user", "5"]).await;
    assert_eq!(daemon.deploy("chat", guest("chat")).await.0, 201);
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let bo = open(&daemon, "t-bo").await;
    chat_sees(&daemon, json!(["bo"])).await;
    drop(bo);
    chat_sees(&daemon, json!([])).await;

    let junk = json!({"user": "bo", "n": 5});
    let (_, kept) = daemon.call("storm", "KeepStorm", junk).await;
    assert_eq!(kept["payload"], json!({"done": 5}), "{kept}");
    let mut ann = open(&daemon, "t-ann").await;
    assert_eq!(
        say(&mut ann, "bo", "still there?").await,
        json!({"delivered": "later"})
    );
    let (_, refused) = daemon
        .call("storm", "KeepStorm", json!({"user": "bo", "n": 1}))
        .await;
    assert_eq!(refused["code"], 429, "{refused}");
    let description = refused["error"].as_str().unwrap_or_default();
    assert!(description.contains("`storm`"), "{refused}");

    let mut bo = open(&daemon, "t-bo").await;
    for i in 0..5 {
        let frame = next(&mut bo).await;
        assert_eq!(frame["payload"]["i"], i, "storm's, in order: {frame}");
    }
    assert_eq!(heard(&mut bo).await, ("ann".into(), "still there?".into()));
}
