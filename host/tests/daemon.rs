//! The daemon end to end: the real `switchboard serve` binary on a loopback port, driven over
//! HTTP only, as an operator would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;

/// Upload, list, inspect, send and await replies, emit, delete.
#[tokio::test]
async fn upload_list_send_and_delete() {
    let daemon = Daemon::start(&data_dir("basic"));
    let (status, deployed) = daemon.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{deployed}");
    assert_eq!(deployed["version"], 1);
    assert_eq!(deployed["swapped"], false);
    assert_eq!(deployed["module"].as_str().map(str::len), Some(64));

    let (status, list) = daemon.get("/v1/handlers").await;
    assert_eq!(status, 200);
    assert_eq!(list["handlers"][0]["name"], "echo");

    let (status, reply) = daemon.call("echo", "Ping", json!({"n": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(reply["signalType"], "REPLY");
    assert_eq!(reply["from"], "echo");
    assert_eq!(reply["payload"], json!({"n": 1}));

    let (status, error) = daemon.call("nobody", "Ping", json!({})).await;
    assert_eq!(status, 404, "an ErrorReply's code is the status");
    assert_eq!(error["code"], 404);
    assert_eq!(error["signal"]["signalType"], "ERROR_REPLY", "{error}");
    assert_eq!(error["signal"]["code"], 404);

    let sent = daemon.post("/v1/messages", json!({"to": "echo", "messageType": "Ping"}));
    assert_eq!(sent.await.0, 202);
    let nowhere = daemon.post(
        "/v1/messages",
        json!({"to": "nobody", "messageType": "Ping"}),
    );
    assert_eq!(
        nowhere.await.0,
        404,
        "fire-and-forget to nowhere fails at once"
    );
    let event = json!({"signalType": "EVENT", "eventType": "Nothing", "payload": 1});
    assert_eq!(daemon.post("/v1/events", event).await.0, 202);
    let unknown = json!({"to": "echo", "messageType": "Ping", "colour": "red"});
    let refused = daemon.post("/v1/messages", unknown).await;
    assert_eq!(refused.0, 400, "unknown fields are refused");

    let (status, shown) = daemon.get("/v1/handlers/echo").await;
    assert_eq!(status, 200);
    assert!(
        shown["counters"]["handled"].as_u64().unwrap() >= 2,
        "{shown}"
    );

    assert_eq!(daemon.delete("echo").await, 204);
    assert_eq!(daemon.get("/v1/handlers/echo").await.0, 404);
    assert_eq!(daemon.call("echo", "Ping", json!({})).await.1["code"], 404);
}

/// A missing or wrong token gets 401 and changes nothing; probes need no token.
/// An ErrorReply answering `POST /v1/messages?wait` is an error response of one shape for
/// every error (`code`, `error`, `help`, and the ErrorReply as `signal`): a code from 400 to
/// 599 is the HTTP status, a handler's own code outside it is 502 with the code kept whole
/// (it was truncated to 16 bits), and a script checking statuses can tell.
#[tokio::test]
async fn error_replies_map_to_http_statuses() {
    let daemon = Daemon::start(&data_dir("statuses"));
    assert_eq!(daemon.deploy("chaos", guest("chaos")).await.0, 201);
    for (code, status) in [
        (409u32, 409u16),
        (451, 451),
        (503, 503),
        (7, 502),
        (70_000, 502),
    ] {
        let (got, body) = daemon.call("chaos", "Fail", json!({"code": code})).await;
        assert_eq!(got, status, "code {code}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("on purpose")),
            "{body}"
        );
        assert_eq!(body["signal"]["signalType"], "ERROR_REPLY", "{body}");
        assert_eq!(body["signal"]["code"], code, "{body}");
    }
    let (status, reply) = daemon.call("chaos", "Ping", json!({})).await;
    assert_eq!((status, &reply["signalType"]), (200, &json!("REPLY")));
    let output = daemon.cli(&["request", "chaos", "Fail", r#"{"code":409}"#]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("error 409: failing with code 409"),
        "{stderr}"
    );
}

#[tokio::test]
async fn auth_failures_change_nothing() {
    let daemon = Daemon::start(&data_dir("auth"));
    let anonymous = daemon
        .anonymous(Method::PUT, "/v1/handlers/echo")
        .body(guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = daemon
        .anonymous(Method::PUT, "/v1/handlers/echo")
        .bearer_auth("not-the-token")
        .body(guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert_eq!(daemon.get("/v1/handlers").await.1["handlers"], json!([]));
    for probe in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = daemon.anonymous(Method::GET, probe).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
    // Every route the API documents under /v1, and a method none of them serves, gets 401
    // without the token, so no route is left outside the check.
    let document: serde_json::Value = daemon
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, methods) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let path = path
            .replace("{name}", "echo")
            .replace("{id}", "x")
            .replace("{handler}", "echo");
        let documented = methods.as_object().unwrap().keys();
        for method in documented.map(String::as_str).chain(["patch"]) {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = daemon
                .anonymous(method.clone(), &path)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routes checked");
}

/// Every kind of bad upload gets a 4xx that says what is wrong, and changes nothing.
#[tokio::test]
async fn bad_uploads_are_refused() {
    let daemon = Daemon::start(&data_dir("bad-uploads"));
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "junk",
            b"#!/bin/sh\necho hi".to_vec(),
            400,
            "not WebAssembly",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            400,
            "core WebAssembly module",
        ),
        ("other-world", empty_component, 400, "handler world"),
        ("broken", guest("broken"), 400, "describe"),
        ("huge", vec![0; (64 << 20) + 1], 413, "over the limit"),
        ("Bad Name", guest("echo"), 400, "invalid handler name"),
        ("agents", guest("echo"), 400, "reserved"),
    ];
    for (name, bytes, status, words) in cases {
        let path = format!("/v1/handlers/{}", name.replace(' ', "%20"));
        let (got, body) = daemon.put(&path, bytes).await;
        assert_eq!(got, status, "{name}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{name}: {body}");
    }
    let bad_limit = daemon.put("/v1/handlers/echo?concurrency=0", guest("echo"));
    assert_eq!(bad_limit.await.0, 400);
    assert_eq!(daemon.get("/v1/handlers").await.1["handlers"], json!([]));
}

/// Rollback makes the previous version live again; with none, 409.
#[tokio::test]
async fn rollback_restores_the_previous_version() {
    let daemon = Daemon::start(&data_dir("rollback"));
    assert_eq!(daemon.deploy("svc", guest("echo")).await.0, 201);
    let (status, swapped) = daemon.deploy("svc", guest("username")).await;
    assert_eq!(status, 200);
    assert_eq!(swapped["version"], 2);
    assert_eq!(swapped["swapped"], true);
    let (_, reply) = daemon
        .call("svc", "SetUsername", json!({"username": "ann"}))
        .await;
    assert_eq!(reply["payload"], json!({"username": "ann"}));
    assert_eq!(
        daemon.call("svc", "Ping", json!({"n": 2})).await.1["code"],
        404
    );

    let (status, back) = daemon.rollback("svc").await;
    assert_eq!(status, 200);
    assert_eq!(back["version"], 1);
    assert_eq!(
        daemon.call("svc", "Ping", json!({"n": 2})).await.1["payload"],
        json!({"n": 2})
    );

    assert_eq!(daemon.rollback("svc").await.0, 409);
    assert_eq!(daemon.rollback("nope").await.0, 404);
}

/// Redeploying with another kind or mailbox shape moves the handler; it never runs twice.
#[tokio::test]
async fn redeploy_with_new_kind_or_shape_replaces_the_handler() {
    let daemon = Daemon::start(&data_dir("reshape"));
    assert_eq!(daemon.deploy("svc", guest("echo")).await.0, 201);
    let moved = daemon.put(
        "/v1/handlers/svc?kind=agent&concurrency=2&mailbox=16",
        guest("echo"),
    );
    assert_eq!(moved.await.0, 200);
    let (_, list) = daemon.get("/v1/handlers").await;
    let handlers = list["handlers"].as_array().unwrap();
    assert_eq!(handlers.len(), 1, "{list}");
    assert_eq!(handlers[0]["address"], "agent:svc/*");
    assert_eq!(handlers[0]["limits"]["concurrency"], 2);
    assert_eq!(
        daemon.call("agent:x", "Ping", json!({"n": 1})).await.1["payload"],
        json!({"n": 1})
    );
    assert_eq!(daemon.call("svc", "Ping", json!({})).await.1["code"], 404);
    assert_eq!(daemon.delete("svc").await, 204);
    assert_eq!(
        daemon.call("agent:x", "Ping", json!({})).await.1["code"],
        404
    );
}

/// A steady stream of requests keeps running across several swaps and rollbacks: every
/// request gets exactly one correct reply (zero lost, zero failed), and the handler counted
/// each signal once (zero duplicated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_nothing() {
    let daemon = Arc::new(Daemon::start(&data_dir("swap")));
    assert_eq!(daemon.deploy("svc", guest("echo")).await.0, 201);
    let echo = guest("echo");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (daemon, stop, sent) = (daemon.clone(), stop.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5_000 {
                let tag = client * 1_000_000 + n;
                sent.fetch_add(1, Ordering::Relaxed);
                let (status, reply) = daemon.call("svc", "Ping", json!({"tag": tag})).await;
                if status != 200 || reply["payload"] != json!({"tag": tag}) {
                    failures.push(format!("{status} {reply}"));
                }
                n += 1;
            }
            failures
        }));
    }
    let mut swaps = 0;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (status, body) = daemon.deploy("svc", echo.clone()).await;
        assert_eq!(status, 200, "{body}");
        swaps += 1;
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(daemon.rollback("svc").await.0, 200);
            swaps += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent > 100, "only {sent} requests ran across the swaps");
    let handled = daemon
        .metric(r#"switchboard_signals_total{handler="svc",kind="MESSAGE",outcome="ok"}"#)
        .await;
    assert_eq!(
        handled,
        Some(sent as f64),
        "each request handled exactly once"
    );
    assert_eq!(
        daemon
            .metric(r#"switchboard_swaps_total{handler="svc"}"#)
            .await,
        Some(swaps as f64)
    );
    eprintln!("{sent} requests across {swaps} swaps and rollbacks: 0 lost, 0 failed, 0 duplicated");
}

/// SIGTERM stops taking requests but answers the signal in flight before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_signals_in_flight() {
    let daemon = Arc::new(Daemon::start(&data_dir("drain")));
    let deployed = daemon.put("/v1/handlers/chaos?cpu_ms=400", guest("chaos"));
    assert_eq!(deployed.await.0, 201);
    let in_flight = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.call("chaos", "Spin", json!({})).await }
    });
    // Terminated only once the spin is being handled: it is in flight, not queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.get("/v1/handlers/chaos").await.1["counters"]["handled"] != 1 {
        assert!(Instant::now() < deadline, "the spin never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.terminate();
    let (status, reply) = in_flight.await.unwrap();
    assert_eq!(status, 507, "{reply}");
    assert_eq!(
        reply["code"], 507,
        "the spin ran to its CPU limit and was answered"
    );
    let daemon = Arc::into_inner(daemon).expect("the caller is done");
    let exit = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A restarted daemon serves every handler again, from cached artifacts (no compilation),
/// before it answers ready; and a kill -9 during deploys leaves a registry that loads.
#[tokio::test]
async fn restart_keeps_registry_and_handlers() {
    let dir = data_dir("restart");
    let daemon = Daemon::start(&dir);
    for name in ["echo", "orders", "inventory"] {
        let started = Instant::now();
        assert_eq!(daemon.deploy(name, guest(name)).await.0, 201);
        eprintln!("upload to serving, {name}: {:?}", started.elapsed());
    }
    assert_eq!(daemon.deploy("echo", guest("echo")).await.1["version"], 2);
    assert!(daemon.stop().success(), "a clean SIGTERM shutdown");

    let daemon = Daemon::start(&dir);
    eprintln!(
        "process start to ready with 3 handlers cached: {:?}",
        daemon.startup
    );
    assert_eq!(
        daemon
            .anonymous(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        daemon.metric("switchboard_compilations").await,
        Some(0.0),
        "restored from the cache"
    );
    let (_, list) = daemon.get("/v1/handlers").await;
    let names: Vec<_> = list["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("echo"), json!("inventory"), json!("orders")]
    );
    assert_eq!(list["handlers"][0]["version"], 2);
    let (status, placed) = daemon
        .call(
            "orders",
            "PlaceOrder",
            json!({"item": "apple", "quantity": 1}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(placed["payload"]["remaining"], 9);

    // Crash in the middle of a stream of deploys, then restart.
    let daemon = Arc::new(daemon);
    let deployer = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                if daemon
                    .request(Method::PUT, "/v1/handlers/echo")
                    .body(guest("echo"))
                    .send()
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill();
    deployer.await.unwrap();
    let daemon = Daemon::start(&dir);
    let (status, list) = daemon.get("/v1/handlers").await;
    assert_eq!(status, 200);
    assert_eq!(list["handlers"].as_array().unwrap().len(), 3);
    assert_eq!(
        daemon.call("echo", "Ping", json!({"ok": true})).await.1["payload"],
        json!({"ok": true})
    );
}

/// The HTTP edge applies the wire rules: endpoints imply the kind, and a client's envelope
/// fields, another kind's fields and empty names are refused with 400 naming the field.
#[tokio::test]
async fn the_http_edge_checks_the_wire_format() {
    let daemon = Daemon::start(&data_dir("wire"));
    let bare_event = json!({"eventType": "UserRegistered", "payload": {"id": "u1"}});
    let (status, body) = daemon.post("/v1/events", bare_event).await;
    assert_eq!(
        status, 202,
        "an event needs no signalType at /v1/events: {body}"
    );
    let bare_change =
        json!({"objectType": "User", "changeType": "CREATED", "object": {"id": "u1"}});
    let (status, body) = daemon.post("/v1/events", bare_change).await;
    assert_eq!(status, 202, "nor does a data change: {body}");

    let refusals = [
        (
            "/v1/messages",
            json!({"to": "echo", "messageType": "Ping", "from": "me"}),
            "`from`",
        ),
        (
            "/v1/messages",
            json!({"to": "echo", "messageType": "Ping", "eventType": "E"}),
            "`eventType`",
        ),
        (
            "/v1/messages",
            json!({"to": "echo", "messageType": ""}),
            "`messageType`",
        ),
        (
            "/v1/messages",
            json!({"signalType": "EVENT", "eventType": "E"}),
            "EVENT",
        ),
        (
            "/v1/events",
            json!({"signalType": "MESSAGE", "to": "echo", "messageType": "Ping"}),
            "MESSAGE",
        ),
    ];
    for (path, body, named) in refusals {
        let (status, answer) = daemon.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{path} {body}: {answer}");
    }
}
