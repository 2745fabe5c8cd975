//! Events through JetStream across two hosts beside their floor, measured in one run: a
//! `nats-server` of its own (the one `tests/nats/setup.sh` installs), then rounds that
//! alternate
//! - `raw`: N events of a signal's size published with message ids to a stream of their own
//!   (64 publishes awaiting their acknowledgement at a time) and consumed by one durable pull
//!   consumer that acknowledges each (no Switchboard); the rate is N over the time until the
//!   last is acknowledged;
//! - `hosts`: host A emits N `UserRegistered` (64 at a time, each awaiting the stream's
//!   acknowledgement), which `audit`, on host B alone, subscribes to; the rate is N over the
//!   time until B has handled the last (each acknowledged once its turn is over).
//!
//! Prints each round's rates and the ratio of the medians (the issue's goal: hosts at least
//! 0.5 of raw). Not part of the test command:
//! `cargo run --release -p switchboard-tests --example nats_events -- N ROUNDS`.

#[path = "support/rounds.rs"]
mod rounds;

use rounds::Rounds;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde_json::json;
use switchboard_tests::nats::NatsServer;
use switchboard_tests::{config, guest};

const IN_FLIGHT: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(5000, |s| s.parse().expect("N"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("ROUNDS"));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let server = NatsServer::start();
        let client = async_nats::connect(&server.url).await.expect("connecting");
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: "bench".into(),
            subjects: vec!["bench.evt".into()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await
        .expect("a stream");
        let a = server.host(config(), "a").await;
        let b = server.host(config(), "b").await;
        b.deploy("audit", guest("audit"), None)
            .await
            .expect("deploying audit");
        let mut results = Rounds::default();
        for round in 1..=rounds {
            let r = raw(&js, n, round).await;
            let h = through_hosts(&a, &b, n).await;
            results.record(round, r, h);
        }
        results.report();
    });
}

/// Raw JetStream: `n` published and consumed, per second.
async fn raw(js: &jetstream::Context, n: usize, round: usize) -> f64 {
    let stream = js.get_stream("bench").await.expect("the stream");
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "bench",
            consumer::pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("a consumer");
    let consumed = tokio::spawn(async move {
        let mut messages = consumer.messages().await.expect("pulling");
        for _ in 0..n {
            let message = messages
                .next()
                .await
                .expect("a message")
                .expect("a message");
            message.ack().await.expect("acknowledging");
        }
    });
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let js = js.clone();
            async move {
                // About the size of an event signal as the hosts send it.
                let message = jetstream::message::PublishMessage::build()
                    .payload(vec![b'x'; 320].into())
                    .message_id(format!("{round}-{i}"));
                let ack = js
                    .send_publish("bench.evt", message)
                    .await
                    .expect("publishing");
                ack.await.expect("stored");
            }
        })
        .await;
    consumed.await.expect("consuming");
    n as f64 / started.elapsed().as_secs_f64()
}

/// Through the hosts: `n` emitted on A and handled on B, per second.
async fn through_hosts(a: &switchboard::Host, b: &switchboard::Host, n: usize) -> f64 {
    let line = r#"switchboard_signals_total{handler="audit",kind="EVENT",outcome="ok"}"#;
    let before = switchboard_tests::metric(b, line) as usize;
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(IN_FLIGHT, |i| async move {
            let payload = switchboard_tests::json(json!({ "user_id": i }));
            let taken = a.emit("UserRegistered", payload).await.expect("emitting");
            assert_eq!(taken.delivered, 1, "{taken:?}");
        })
        .await;
    while (switchboard_tests::metric(b, line) as usize) < before + n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}
