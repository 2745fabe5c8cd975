//! Warm signal round trips through a real host: a message from outside to a guest and its
//! Reply back, and a guest awaiting another guest (two round trips per signal), beside the
//! floor: the same echo call on one warm instance with wasmtime alone
//! (`switchboard_tests::raw`); and the same echo round trip pipelined, many requests in
//! flight at once, at concurrency 1 and 8.
//!
//! Run with `cargo bench -p switchboard-tests`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use switchboard::{Host, Limits};
use switchboard_tests::raw::RawEcho;
use switchboard_tests::{WAIT, guest, host_with};
use tokio::task::JoinSet;

/// Requests kept in flight by the pipelined benchmark.
const IN_FLIGHT: usize = 256;

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = rt.block_on(host_with(&["echo", "orders", "inventory"]));
    let ping = switchboard_tests::json(json!({"n": 1}));
    let forward = switchboard_tests::json(json!({
        "to": "echo", "message_type": "Ping", "payload": {"n": 1}, "timeout_ms": 5000
    }));

    let mut group = c.benchmark_group("warm");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("host->echo->host", |b| {
        b.to_async(&rt)
            .iter(|| async { host.call("echo", "Ping", ping.clone(), WAIT).await.unwrap() })
    });
    group.bench_function("host->orders->echo->orders->host", |b| {
        b.to_async(&rt).iter(|| async {
            host.call("orders", "Forward", forward.clone(), WAIT)
                .await
                .unwrap()
        })
    });
    let raw = rt.block_on(RawEcho::new(&switchboard_tests::config(), &guest("echo")));
    let raw = Arc::new(tokio::sync::Mutex::new(raw));
    group.bench_function("floor: raw wasmtime call of echo", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            async move {
                let mut raw = raw.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    raw.call().await;
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

/// `IN_FLIGHT` echo requests at once, each a task, through a handler with `concurrency`
/// workers; reported per request.
fn pipelined(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = rt.block_on(host_with(&[]));
    let mut group = c.benchmark_group("pipelined");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for concurrency in [1, 8] {
        let name = format!("echo-c{concurrency}");
        let limits = Limits {
            concurrency,
            mailbox: IN_FLIGHT as u32,
            ..Limits::default()
        };
        rt.block_on(host.deploy(&name, guest("echo"), Some(limits)))
            .expect("deploying echo");
        group.bench_function(
            format!("{IN_FLIGHT} in flight, concurrency {concurrency}"),
            |b| b.to_async(&rt).iter(|| burst(&host, &name)),
        );
    }
    group.finish();
}

/// Sends `IN_FLIGHT` requests to `name` at once and waits for every reply.
async fn burst(host: &Host, name: &str) {
    let mut tasks = JoinSet::new();
    for n in 0..IN_FLIGHT {
        let host = host.clone();
        let name = name.to_owned();
        tasks.spawn(async move {
            let ping = switchboard_tests::json(json!({ "n": n }));
            host.call(&name, "Ping", ping, WAIT).await
        });
    }
    while let Some(reply) = tasks.join_next().await {
        reply.expect("a request task").expect("a reply");
    }
}

criterion_group!(benches, roundtrip, pipelined);
criterion_main!(benches);
