//! The admin API's connection limits, against the real daemon: a cap on open connections
//! that sheds stalled ones first, a header-read timeout and an idle timeout.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test waits for the daemon to close a connection or reach a state.
const BOUND: Duration = Duration::from_secs(20);

/// Opens a connection that sends the first half of a request line and stalls.
async fn stalled(daemon: &Daemon) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.address()).await.unwrap();
    stream.write_all(b"GET /heal").await.unwrap();
    stream
}

/// Whether the daemon closes `stream` within `wait` (a read returns EOF or a reset).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "a stalled connection got an answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => false,
    }
}

/// Polls the metric line starting with `prefix` until `good` holds, within [`BOUND`].
async fn until_metric(daemon: &Daemon, prefix: &str, good: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + BOUND;
    loop {
        let value = daemon.metric(prefix).await.unwrap_or(f64::NAN);
        if good(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{prefix} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the cap at 50 and 60 connections stalled halfway through their request line, the
/// oldest stalled ones are shed (they read EOF), the newest are kept, and a new connection
/// for `/healthz` and an authenticated request to a handler still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_stalled_connections_are_shed_and_clients_get_through() {
    // A long header-read timeout: only the cap closes connections here.
    let flags = ["--max-connections", "50", "--header-read-timeout", "120s"];
    let daemon = Daemon::start_with(&data_dir("conn-cap"), &flags);
    assert_eq!(daemon.deploy("echo", guest("echo")).await.0, 201);

    let mut streams = Vec::new();
    for _ in 0..60 {
        streams.push(stalled(&daemon).await);
    }
    let healthz = daemon.anonymous(Method::GET, "/healthz").send().await;
    assert_eq!(healthz.expect("/healthz answers at the cap").status(), 200);
    let (status, reply) = daemon.call("echo", "Ping", json!({"n": 7})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["payload"], json!({"n": 7}), "{reply}");

    // 60 stalled over a cap of 50: ten went first, then one more for `/healthz` (and one
    // for each later client that came before the previous one's connection was gone). The
    // oldest go first by when they were accepted: a stalled connection's first byte does not
    // move its place (before it did, and on a busy machine a newer one the daemon had not
    // read yet was sometimes shed before older ones).
    let deadline = Instant::now() + BOUND;
    let shed = loop {
        let mut shed = 0.0;
        for reason in ["idle", "reading_headers"] {
            let line = format!(r#"switchboard_connections_shed_total{{reason="{reason}"}}"#);
            shed += daemon.metric(&line).await.unwrap_or(0.0);
        }
        if shed >= 11.0 {
            break shed;
        }
        assert!(
            Instant::now() < deadline,
            "only {shed} connections counted as shed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(shed <= 14.0, "only as many shed as needed: {shed}");
    let mut closed = Vec::new();
    for (n, stream) in streams.iter_mut().enumerate() {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed.push(n);
        }
    }
    assert_eq!(
        closed.len() as f64,
        shed,
        "the shed ones read EOF: {closed:?}"
    );
    assert!(
        closed.iter().all(|n| *n < 40),
        "the newest twenty are kept: {closed:?}"
    );
    until_metric(&daemon, "switchboard_connections ", |v| v <= 50.0).await;
}

/// A connection stalled halfway through its headers is closed after the header-read timeout,
/// and one that never sends a request after the idle timeout; a request that takes longer
/// than both is answered, because a busy connection has no such deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_time_out_but_busy_ones_do_not() {
    let flags = ["--header-read-timeout", "1s", "--idle-timeout", "2s"];
    let daemon = Daemon::start_with(&data_dir("conn-timeouts"), &flags);
    let deployed = daemon.put("/v1/handlers/chaos?cpu_ms=2500", guest("chaos"));
    assert_eq!(deployed.await.0, 201);

    let started = Instant::now();
    let mut half = TcpStream::connect(daemon.address()).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: switchboard\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(daemon.address()).await.unwrap();
    let slow = tokio::spawn({
        let url = daemon.url.clone();
        async move {
            // A request that runs to its 2.5 s CPU limit: busy longer than either timeout.
            let body = json!({ "to": "chaos", "messageType": "Spin", "payload": {} });
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/messages?wait=20s"))
                .bearer_auth(switchboard_tests::daemon::TOKEN)
                .json(&body)
                .send()
                .await
                .expect("a busy connection is not cut");
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    });

    assert!(
        closed_within(&mut half, BOUND).await,
        "the half-sent request is closed"
    );
    let half_closed = started.elapsed();
    assert!(
        half_closed >= Duration::from_millis(500),
        "not before the header-read timeout: {half_closed:?}"
    );
    assert!(
        closed_within(&mut silent, BOUND).await,
        "the idle connection is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the idle timeout: {:?}",
        started.elapsed()
    );

    let (status, reply) = slow.await.unwrap();
    assert_eq!(status, 507, "{reply}");
    assert_eq!(reply["code"], 507, "ran to its CPU limit: {reply}");
    let timed_out = r#"switchboard_connections_timed_out_total{reason="reading_headers"}"#;
    until_metric(&daemon, timed_out, |v| v >= 1.0).await;
    let idle = r#"switchboard_connections_timed_out_total{reason="idle"}"#;
    until_metric(&daemon, idle, |v| v >= 1.0).await;
    let (status, _) = daemon.get("/v1/handlers").await;
    assert_eq!(status, 200, "the API still answers");
}

/// A connection that starts its headers only after idling a while gets the header-read
/// timeout from when it started them: not the idle deadline it had before (the
/// connection's task is not woken when its state changes, so this checks it still sees the
/// change in time), and not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_started_late_get_the_header_read_timeout_from_their_start() {
    let flags = ["--header-read-timeout", "1s", "--idle-timeout", "20s"];
    let daemon = Daemon::start_with(&data_dir("conn-late-headers"), &flags);
    let mut late = TcpStream::connect(daemon.address()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: switchboard\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut late, Duration::from_secs(10)).await,
        "closed by the header-read timeout, long before the 20 s idle timeout"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(500),
        "not before the header-read timeout: {after:?}"
    );
    let timed_out = r#"switchboard_connections_timed_out_total{reason="reading_headers"}"#;
    until_metric(&daemon, timed_out, |v| v >= 1.0).await;
}
