//! What keyed state costs per signal, through a real host and the `counter` agent, its
//! store a file in a temp directory (every committed write is durable, fsync included):
//! a signal that reads its agent's count (no commit), one that increments it (a committed
//! write) one at a time, and 64 increments in flight on 64 agents at concurrency 64, with
//! group commit and with one fsync per turn.
//!
//! Run with `cargo bench -p switchboard-tests --bench state`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use switchboard::db::Db;
use switchboard::{Host, HostConfig, Limits};
use switchboard_tests::{TempDir, WAIT, guest, host_on};
use tokio::task::JoinSet;

/// Turns in flight in the concurrent benchmark, each on its own agent.
const TURNS: usize = 64;

/// A host on a store file in `dir`, `counter` deployed at concurrency 64.
async fn counter_host(dir: &TempDir, max_group: usize) -> Host {
    let db = Db::open(&dir.path().join("switchboard.redb")).expect("opening the store");
    let config = HostConfig {
        state_max_group: max_group,
        ..switchboard_tests::config()
    };
    let host = host_on(config, db);
    let limits = Limits {
        concurrency: TURNS as u32,
        mailbox: 1024,
        ..Limits::default()
    };
    host.deploy("counter", guest("counter"), Some(limits))
        .await
        .expect("deploying counter");
    host
}

fn per_signal(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("bench-state");
    let host = rt.block_on(counter_host(&dir, switchboard::keyed::MAX_GROUP));
    let one = switchboard_tests::json(json!({"by": 1}));
    let none = switchboard_tests::json(json!({}));
    rt.block_on(host.call("agent:counter/a", "Increment", one.clone(), WAIT))
        .unwrap();

    let mut group = c.benchmark_group("state per signal");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("read (Get)", |b| {
        b.to_async(&rt).iter(|| async {
            host.call("agent:counter/a", "Get", none.clone(), WAIT)
                .await
                .unwrap()
        })
    });
    group.bench_function("committed write (Increment)", |b| {
        b.to_async(&rt).iter(|| async {
            host.call("agent:counter/a", "Increment", one.clone(), WAIT)
                .await
                .unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("state 64 concurrent turns");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(TURNS as u64));
    for (name, max_group) in [
        ("group commit", switchboard::keyed::MAX_GROUP),
        ("fsync per turn", 1),
    ] {
        let dir = TempDir::new("bench-state-group");
        let host = rt.block_on(counter_host(&dir, max_group));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| burst(&host)));
    }
    group.finish();
}

/// One increment on each of [`TURNS`] agents at once; waits for every answer.
async fn burst(host: &Host) {
    let mut tasks = JoinSet::new();
    for agent in 0..TURNS {
        let host = host.clone();
        tasks.spawn(async move {
            let one = switchboard_tests::json(json!({"by": 1}));
            host.call(&format!("agent:counter/a{agent}"), "Increment", one, WAIT)
                .await
        });
    }
    while let Some(answer) = tasks.join_next().await {
        answer.expect("a task").expect("an answer");
    }
}

criterion_group!(benches, per_signal);
criterion_main!(benches);
