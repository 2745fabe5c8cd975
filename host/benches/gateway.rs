//! The client gateway under 1,000 concurrently connected clients chatting through the
//! `chat` example handler on one host (the release daemon, on loopback):
//!
//! - the host's memory per idle connection: its resident set before and after the clients
//!   connect, divided by their number;
//! - the chat message rate and delivery latency (p50, p99, max), from a client sending `Say`
//!   until the recipient's client has the `Chat` push: first with every client saying
//!   something once a second (an offered load of 1,000 messages a second), then with every
//!   client keeping one message in flight (closed loop: the most the host takes).
//!
//! `cargo bench -p switchboard --bench gateway` (about a minute; `CLIENTS`, `SECONDS` and
//! `CONCURRENCY` in the environment change the client count, the measured time and the
//! chat handler's concurrency).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_tests::daemon::{Daemon, data_dir};
use switchboard_tests::guest;
use tokio::sync::Barrier;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The daemon's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

async fn connect(url: &str, token: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("{token} connects: {e}"))
        .0
}

/// What one client saw while chatting.
#[derive(Default)]
struct Seen {
    sent: u64,
    /// Delivery latencies of the chats it received, in microseconds.
    latencies: Vec<u64>,
}

/// How a client chats.
#[derive(Clone, Copy)]
enum Pace {
    /// A message every this long, answered or not (an offered load).
    Every(Duration),
    /// The next message as soon as the last is answered (one in flight: the most it takes).
    Closed,
}

/// Client `me` of `clients`: says the time to the next client round the ring, at `pace`,
/// from `start` until `until`; records how long each chat it receives took.
async fn chat(
    socket: &mut Socket,
    me: u64,
    clients: u64,
    pace: Pace,
    base: Instant,
    (start, until): (Instant, Instant),
) -> Seen {
    let to = format!("u{}", (me + 1) % clients);
    let mut seen = Seen::default();
    let say = || {
        let text = format!("{}", base.elapsed().as_micros());
        let frame =
            json!({"to": "chat", "messageType": "Say", "payload": {"to": to, "text": text}});
        Message::text(frame.to_string())
    };
    // Paced clients spread over the interval, not all at once.
    let first = match pace {
        Pace::Every(every) => start + every.mul_f64(me as f64 / clients as f64),
        Pace::Closed => start,
    };
    let mut tick = tokio::time::interval_at(
        first.into(),
        match pace {
            Pace::Every(every) => every,
            Pace::Closed => Duration::from_secs(3600),
        },
    );
    if let Pace::Closed = pace {
        tokio::time::sleep_until(start.into()).await;
        socket.send(say()).await.unwrap();
        seen.sent += 1;
    }
    let (mut answered, mut received_after) = (0, None);
    loop {
        let frame = tokio::select! {
            _ = tick.tick(), if matches!(pace, Pace::Every(_)) && Instant::now() < until => {
                socket.send(say()).await.unwrap();
                seen.sent += 1;
                continue;
            }
            frame = tokio::time::timeout(Duration::from_millis(100), socket.next()) => frame,
        };
        let Ok(Some(Ok(Message::Text(text)))) = frame else {
            // Quiet: done once sending has stopped and every answer came back.
            let quiet_since = received_after.get_or_insert_with(Instant::now);
            if Instant::now() > until + Duration::from_millis(500)
                && answered >= seen.sent
                && quiet_since.elapsed() > Duration::from_millis(300)
            {
                break;
            }
            continue;
        };
        received_after = None;
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["messageType"] == "Chat" {
            let sent: u64 = frame["payload"]["text"].as_str().unwrap().parse().unwrap();
            seen.latencies
                .push(base.elapsed().as_micros() as u64 - sent);
        } else if frame["signalType"] == "REPLY" {
            answered += 1;
            if let Pace::Closed = pace
                && Instant::now() < until
            {
                socket.send(say()).await.unwrap();
                seen.sent += 1;
            }
        } else if frame["ack"].is_null() {
            panic!("client {me} got {frame}");
        }
        if Instant::now() > until + Duration::from_secs(30) {
            break;
        }
    }
    seen
}

/// Runs every client at `pace` for `seconds` and prints what they saw.
async fn phase(sockets: Vec<Socket>, pace: Pace, seconds: u64, label: &str) -> Vec<Socket> {
    let clients = sockets.len() as u64;
    let base = Instant::now();
    let start = base + Duration::from_millis(200);
    let until = start + Duration::from_secs(seconds);
    let ready = Arc::new(Barrier::new(clients as usize));
    let mut tasks = Vec::new();
    for (i, mut socket) in sockets.into_iter().enumerate() {
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            ready.wait().await;
            let seen = chat(&mut socket, i as u64, clients, pace, base, (start, until)).await;
            (socket, seen)
        }));
    }
    let (mut sent, mut latencies, mut sockets) = (0, Vec::new(), Vec::new());
    for task in tasks {
        let (socket, seen) = task.await.unwrap();
        sent += seen.sent;
        latencies.extend(seen.latencies);
        sockets.push(socket);
    }
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    println!("gateway: {clients} clients chatting for {seconds} s, {label}");
    println!(
        "  sent {sent}, delivered {delivered} ({:.0} messages/s)",
        delivered as f64 / seconds as f64
    );
    println!(
        "  delivery latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    assert_eq!(delivered, sent, "every message said was delivered");
    sockets
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    switchboard::serve::open_files::raise_limit();
    let clients = setting("CLIENTS", 1000);
    let seconds = setting("SECONDS", 10);
    let concurrency = setting("CONCURRENCY", 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = data_dir("bench-gateway");
        std::fs::create_dir_all(&dir).unwrap();
        let tokens: String = (0..clients)
            .map(|i| format!("\"t{i}\" = \"u{i}\"\n"))
            .collect();
        let tokens_file = dir.join("tokens.toml");
        std::fs::write(&tokens_file, tokens).unwrap();
        let daemon = Daemon::start_with(
            &dir,
            &[
                "--gateway-listen",
                "127.0.0.1:0",
                "--gateway-tokens",
                tokens_file.to_str().unwrap(),
                "--gateway-frames-per-second",
                "1000",
            ],
        );
        let (status, body) = daemon
            .put(
                &format!("/v1/handlers/chat?concurrency={concurrency}"),
                guest("chat"),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let url = daemon.gateway_url().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss(daemon.pid());

        let mut sockets = Vec::new();
        for i in 0..clients {
            sockets.push(connect(&url, &format!("t{i}")).await);
        }
        // Every presence event handled: the chat handler sees everyone online.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, who) = daemon.call("chat", "Who", json!({})).await;
            if who["payload"]["online"].as_array().map(Vec::len) == Some(clients as usize) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chat sees {} online",
                who["payload"]["online"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss(daemon.pid());
        let per_connection = idle.saturating_sub(before) / clients;
        println!("gateway: {clients} idle connections");
        println!(
            "  host resident memory: {:.1} MiB before, {:.1} MiB connected",
            before as f64 / 1048576.0,
            idle as f64 / 1048576.0
        );
        println!(
            "  memory per idle connection: {:.1} KiB",
            per_connection as f64 / 1024.0
        );

        let sockets = phase(
            sockets,
            Pace::Every(Duration::from_secs(1)),
            seconds,
            "a message a second each (an offered 1,000/s)",
        )
        .await;
        let label = format!(
            "one message in flight each (the most it takes), chat concurrency {concurrency}"
        );
        phase(sockets, Pace::Closed, seconds, &label).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
