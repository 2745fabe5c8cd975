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
    let online =
        async || daemon.call("chat", "Who", json!({})).await.1["payload"]["online"].clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while online().await != json!(["ann", "bo"]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chat sees {}",
            online().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

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
    let until = async |want: Value| {
        let deadline = tokio::time::Instant::now() + WAIT;
        while online().await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chat sees {}",
                online().await
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let cy = open(&daemon, "t-cy").await;
    until(json!(["ann", "bo", "cy"])).await;
    drop(cy);
    until(json!(["ann", "bo"])).await;

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
