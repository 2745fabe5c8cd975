//! Request/reply across two hosts over NATS beside its floor, measured in one run: a
//! `nats-server` of its own (the one `tests/nats/setup.sh` installs), then rounds that
//! alternate
//! - `raw`: a plain async-nats client requesting a plain async-nats responder that answers
//!   each request with its payload (no Switchboard), and
//! - `hosts`: host A requesting `echo`, which only host B runs, both hosts in this process
//!   and joined through the server (A → NATS → B's mailbox and echo → NATS → A's waiter),
//!
//! each with 64 requests in flight for SECS seconds. Prints each round's rate and the ratio
//! of the medians (the goal: hosts at least 0.5 of raw). Not part of the test command:
//! `cargo run --release -p switchboard-tests --example nats_rr -- SECS ROUNDS`.

#[path = "support/rounds.rs"]
mod rounds;

use rounds::Rounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use switchboard_tests::nats::NatsServer;
use switchboard_tests::{config, guest};

const IN_FLIGHT: usize = 64;
const WAIT: Duration = Duration::from_secs(10);

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(3.0, |s| s.parse().expect("SECS"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("ROUNDS"));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let server = NatsServer::start();
        let raw = raw_client(&server.url).await;
        let a = server.host(config(), "a").await;
        let b = server.host(config(), "b").await;
        b.deploy("echo", guest("echo"), None)
            .await
            .expect("deploying echo");
        let period = Duration::from_secs_f64(secs);
        let mut results = Rounds::default();
        for round in 1..=rounds {
            let r = rate(period, {
                let raw = raw.clone();
                move || {
                    let raw = raw.clone();
                    async move {
                        let answer = raw.request("bench.echo", "{\"n\":1}".into()).await;
                        answer.is_ok()
                    }
                }
            })
            .await;
            let h = rate(period, {
                let a = a.clone();
                move || {
                    let a = a.clone();
                    async move {
                        let payload = switchboard_tests::json(json!({"n": 1}));
                        a.request("echo", "Ping", payload, WAIT).await.is_ok()
                    }
                }
            })
            .await;
            results.record(round, r, h);
        }
        results.report();
    });
}

/// A client whose responder on `bench.echo` answers each request with its payload.
async fn raw_client(url: &str) -> async_nats::Client {
    let responder = async_nats::connect(url).await.expect("connecting");
    let mut requests = responder
        .queue_subscribe("bench.echo", "bench".to_owned())
        .await
        .expect("subscribing");
    let answering = responder.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = answering.publish(reply, request.payload).await;
            }
        }
    });
    responder.flush().await.expect("flushing");
    let client = async_nats::connect(url).await.expect("connecting");
    // The responder's subscription is on the server once one request is answered.
    while client.request("bench.echo", "{}".into()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
}

/// Completed calls per second with [`IN_FLIGHT`] callers for `period` (after 0.5 s of
/// warm-up); a failed call stops the run.
async fn rate<F, Fut>(period: Duration, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (call, done, counting, stop) =
                (call.clone(), done.clone(), counting.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    assert!(call().await, "a call failed");
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(period).await;
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("a caller");
    }
    counted as f64 / elapsed.as_secs_f64()
}
