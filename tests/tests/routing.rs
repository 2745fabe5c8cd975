//! Routing end to end: every signal kind and addressing rule, against a real host running
//! the real example guests.

use serde_json::json;
use switchboard::signal::code;
use switchboard::{Body, ChangeType, Host, Signal};
use switchboard_tests::{WAIT, call, guest, host_with, json, next};

/// A message reaches the handler at its `to`, and the Reply carries the host-set envelope.
#[tokio::test]
async fn message_gets_a_reply_with_host_set_envelope() {
    let host = host_with(&["echo"]).await;
    let request = host.message("host", "echo", "Ping", json(json!({"n": 1})));
    let id = request.envelope.id.clone();
    let reply = host.router().request(request, WAIT).await.unwrap();
    let Body::Reply {
        reply_to,
        payload,
        to,
    } = &reply.body
    else {
        panic!("expected a reply, got {reply:?}")
    };
    assert_eq!(reply_to, &id);
    assert_eq!(to, "host");
    assert_eq!(payload.to_value(), json!({"n": 1}));
    assert_eq!(reply.envelope.from, "echo");
    assert_eq!(uuid_version(&reply.envelope.id), 7);
    assert!(reply.envelope.timestamp >= request_time(&id));
}

fn uuid_version(id: &str) -> u8 {
    // The 13th hex digit of a UUID is its version.
    id.chars()
        .filter(|c| *c != '-')
        .nth(12)
        .and_then(|c| c.to_digit(16))
        .unwrap() as u8
}

fn request_time(id: &str) -> u64 {
    // A UUID v7 starts with its 48-bit millisecond timestamp.
    u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap()
}

/// A message to an address nothing serves fails at once with ErrorReply 404.
#[tokio::test]
async fn unknown_address_is_404() {
    let host = host_with(&["echo"]).await;
    let failure = call(&host, "nobody", "Ping", json!({})).await.unwrap_err();
    assert_eq!(failure.code, code::NOT_FOUND);
    assert!(failure.description.contains("nobody"), "{failure}");
}

/// The seed's username flow: SetUsername answers UsernameSet, or ErrorReply 409 when taken.
#[tokio::test]
async fn username_set_or_taken() {
    let host = host_with(&["username"]).await;
    let set = call(
        &host,
        "username",
        "SetUsername",
        json!({"username": "alice"}),
    )
    .await;
    assert_eq!(set.unwrap(), json!({"username": "alice"}));

    let taken = call(
        &host,
        "username",
        "SetUsername",
        json!({"username": "alice"}),
    )
    .await;
    let failure = taken.unwrap_err();
    assert_eq!(failure.code, 409);
    assert!(failure.description.contains("alice"), "{failure}");

    let reserved = call(
        &host,
        "username",
        "SetUsername",
        json!({"username": "admin"}),
    )
    .await;
    assert_eq!(reserved.unwrap_err().code, 409);
}

/// A handler that declares its message types gets no others: the host answers 404.
#[tokio::test]
async fn undeclared_message_type_is_404() {
    let host = host_with(&["username"]).await;
    let failure = call(&host, "username", "DropTables", json!({}))
        .await
        .unwrap_err();
    assert_eq!(failure.code, code::NOT_FOUND);
    assert!(failure.description.contains("DropTables"), "{failure}");
}

/// A payload that does not decode into the handler's type is a 400 from the SDK.
#[tokio::test]
async fn undecodable_payload_is_400() {
    let host = host_with(&["username"]).await;
    let failure = call(&host, "username", "SetUsername", json!({"name": 3}))
        .await
        .unwrap_err();
    assert_eq!(failure.code, code::BAD_REQUEST);
}

/// Registration emits an event and a data change; every subscriber gets each exactly once,
/// and the welcome handler messages the new user's client address.
#[tokio::test]
async fn event_and_data_change_fan_out_exactly_once() {
    let host = host_with(&["registration", "welcome", "audit"]).await;
    let mut u1 = host.connect("user:u1");
    let mut u2 = host.connect("user:u2");

    for (id, name) in [("u1", "Ann"), ("u2", "Bo")] {
        let reply = call(
            &host,
            "registration",
            "Register",
            json!({"user_id": id, "name": name}),
        );
        assert_eq!(reply.await.unwrap(), json!({"user_id": id}));
    }

    for (client, name, to) in [(&mut u1, "Ann", "user:u1"), (&mut u2, "Bo", "user:u2")] {
        let welcome = next(client).await;
        assert_eq!(welcome.envelope.from, "welcome");
        let Body::Message(message) = &welcome.body else {
            panic!("{welcome:?}")
        };
        assert_eq!(message.to, to);
        assert_eq!(message.message_type, "Welcome");
        let text = message.payload.to_value()["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains(name), "{text}");
    }

    let entries = audit_entries(&host, 4).await;
    let events: Vec<_> = entries.iter().filter(|e| e["kind"] == "event").collect();
    let changes: Vec<_> = entries.iter().filter(|e| e["kind"] == "change").collect();
    assert_eq!(events.len(), 2, "{entries:#?}");
    assert_eq!(changes.len(), 2, "{entries:#?}");
    assert!(events.iter().all(|e| e["type"] == "UserRegistered"));
    assert!(
        changes
            .iter()
            .all(|e| e["object_type"] == "User" && e["change"] == "created")
    );
    assert_eq!(changes[0]["object"]["id"], "u1");
    let ids: std::collections::HashSet<_> = entries.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids.len(), 4, "each signal recorded once: {entries:#?}");
}

/// Data changes are routed by object type: a subscriber gets User changes and nothing else.
#[tokio::test]
async fn data_changes_route_by_object_type() {
    let host = host_with(&["audit"]).await;
    host.emit_data_change(ChangeType::Deleted, "Invoice", json(json!({"id": 9})))
        .await
        .unwrap();
    host.emit_data_change(
        ChangeType::Updated,
        "User",
        json(json!({"id": "u7", "name": "Cy"})),
    )
    .await
    .unwrap();
    host.emit("SomethingElse", json(json!({}))).await.unwrap();
    let entries = audit_entries(&host, 1).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["change"], "updated");
    assert_eq!(entries[0]["object"]["name"], "Cy");
}

/// Polls the audit handler until it holds `n` entries (broadcasts are asynchronous), then
/// emits a sentinel event and waits for it too: audit takes its signals in order, so a stray
/// duplicate already on its way would show up before the sentinel. The entries before it.
async fn audit_entries(host: &Host, n: usize) -> Vec<serde_json::Value> {
    let entries = || async {
        let log = call(host, "audit", "GetAudit", json!({})).await.unwrap();
        log["entries"].as_array().cloned().unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while entries().await.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit has fewer than {n} entries"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sentinel = json!({"sentinel": true});
    host.emit("UserRegistered", json(sentinel.clone()))
        .await
        .unwrap();
    loop {
        let seen = entries().await;
        if let Some(at) = seen.iter().position(|e| e["payload"] == sentinel) {
            return seen[..at].to_vec();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sentinel never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Reply addressing: the message's return address wins over its sender; without one the
/// reply goes back to the sender.
#[tokio::test]
async fn replies_follow_return_address_then_sender() {
    let host = host_with(&["echo"]).await;
    let mut bob = host.connect("user:bob");
    let mut carol = host.connect("user:carol");

    let mut to_bob = host.message("user:carol", "echo", "Ping", json(json!({"for": "bob"})));
    let Body::Message(m) = &mut to_bob.body else {
        unreachable!()
    };
    m.return_address = Some("user:bob".into());
    let id = host.send(to_bob);
    let reply = next(&mut bob).await;
    assert_reply(&reply, &id, "user:bob", json!({"for": "bob"}));

    let id = host.send(host.message("user:carol", "echo", "Ping", json(json!({"for": "carol"}))));
    let reply = next(&mut carol).await;
    assert_reply(&reply, &id, "user:carol", json!({"for": "carol"}));
    assert!(bob.try_recv().is_err(), "bob got carol's reply");
}

/// The return address wins over the sender: the handler names only the message it answers,
/// and the host sends the answer where the sender asked.
#[tokio::test]
async fn the_return_address_wins_over_the_sender() {
    let host = host_with(&["echo"]).await;
    let mut sender = host.connect("user:sender");
    let mut returns = host.connect("user:returns");

    let mut message = host.message("user:sender", "echo", "Ping", json(json!({"n": 7})));
    let Body::Message(m) = &mut message.body else {
        unreachable!()
    };
    m.return_address = Some("user:returns".into());
    let id = host.send(message);

    assert_reply(
        &next(&mut returns).await,
        &id,
        "user:returns",
        json!({"n": 7}),
    );
    assert!(
        sender.try_recv().is_err(),
        "the sender got a reply despite the return address"
    );
}

fn assert_reply(reply: &Signal, id: &str, address: &str, payload: serde_json::Value) {
    let Body::Reply {
        reply_to,
        to,
        payload: got,
    } = &reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!(reply_to, id);
    assert_eq!(to, address);
    assert_eq!(got.to_value(), payload);
}

/// Agents share the `agents` address; `to` carries the agent id and state is per agent.
/// With one agent handler deployed, `agent:<id>` is short for `agent:<handler>/<id>`.
#[tokio::test]
async fn agents_keep_state_per_agent_id() {
    let host = host_with(&["counter"]).await;
    let info = host.handlers();
    assert_eq!(info[0].address, "agent:counter/*");

    call(&host, "agent:alice", "Increment", json!({"by": 2}))
        .await
        .unwrap();
    call(&host, "agent:bob", "Increment", json!({"by": 5}))
        .await
        .unwrap();
    let alice = call(&host, "agent:alice", "Increment", json!({"by": 1}))
        .await
        .unwrap();
    assert_eq!(alice["count"], 3);
    assert_eq!(alice["agent"], "agent:counter/alice");
    let bob = call(&host, "agent:counter/bob", "Get", json!({}))
        .await
        .unwrap();
    assert_eq!(bob["count"], 5);
}

/// Two agent handlers side by side: each has its own agents, `agent:<handler>/<id>`; the
/// short `agent:<id>` is ambiguous then and gets 404, and works again once one is left.
#[tokio::test]
async fn two_agent_handlers_side_by_side() {
    let host = host_with(&["counter"]).await;
    host.deploy("tally", guest("counter"), None).await.unwrap();
    call(&host, "agent:counter/alice", "Increment", json!({"by": 2}))
        .await
        .unwrap();
    let tally = call(&host, "agent:tally/alice", "Increment", json!({"by": 40}))
        .await
        .unwrap();
    assert_eq!(
        (tally["agent"].as_str(), tally["count"].as_i64()),
        (Some("agent:tally/alice"), Some(40))
    );
    let counter = call(&host, "agent:counter/alice", "Get", json!({}))
        .await
        .unwrap();
    assert_eq!(counter["count"], 2);
    let ambiguous = call(&host, "agent:alice", "Get", json!({})).await;
    assert_eq!(ambiguous.unwrap_err().code, 404);
    assert_eq!(
        call(&host, "agent:nobody/alice", "Get", json!({}))
            .await
            .unwrap_err()
            .code,
        404
    );
    assert!(host.remove("tally"));
    let short = call(&host, "agent:alice", "Get", json!({})).await.unwrap();
    assert_eq!(short["count"], 2);
}

/// Callback style: an agent sends without waiting; the Reply arrives later at its
/// `handle-reply`, addressed to that agent.
#[tokio::test]
async fn callback_reply_reaches_handle_reply() {
    let host = host_with(&["counter", "echo"]).await;
    let asked = call(&host, "agent:dora", "AskEcho", json!({"text": "hi"}))
        .await
        .unwrap();
    assert!(asked["message_id"].is_string(), "{asked}");

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = call(&host, "agent:dora", "Get", json!({})).await.unwrap();
        if !state["last_reply"].is_null() {
            assert_eq!(state["last_reply"], json!({"text": "hi"}));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply reached the agent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let other = call(&host, "agent:eve", "Get", json!({})).await.unwrap();
    assert!(
        other["last_reply"].is_null(),
        "the reply went to the wrong agent: {other}"
    );
}
