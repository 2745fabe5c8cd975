//! Warm signal round trips through a real host: a message from outside to a guest and its
//! Reply back, and a guest awaiting another guest (two round trips per signal).
//!
//! Run with `cargo bench -p switchboard-tests`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchboard_tests::{WAIT, host_with};

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
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
