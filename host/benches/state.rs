//! The cost of keyed state per signal, on a store file with real fsyncs: a read, a committed
//! write per turn one turn at a time, and 64 concurrent turns each committing a write, with
//! and without group commit.
//!
//! `cargo bench -p switchboard --bench state -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::db::Db;
use switchboard::keyed::{Batch, MAX_GROUP, Scope, StateLimits, StateStore};
use switchboard::metrics::Metrics;

/// Concurrent turns in the grouped and ungrouped benchmarks.
const TURNS: usize = 64;

fn store_file(max_group: usize) -> (Arc<StateStore>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sb-bench-state-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let db = Db::open(&dir.join("state.redb")).expect("the store file opens");
    let store = StateStore::open_grouping(
        db,
        StateLimits::default(),
        Arc::new(Metrics::default()),
        max_group,
    )
    .expect("the state tables open");
    (store, dir)
}

/// One turn's batch: one 64-byte value for agent `agent`.
fn turn(agent: usize) -> Batch {
    Batch {
        scope: Scope::agent("bench", agent.to_string()),
        writes: BTreeMap::from([("count".to_owned(), Some(vec![7; 64]))]),
        ..Batch::default()
    }
}

fn concurrent(c: &mut Criterion, name: &str, max_group: usize, rt: &tokio::runtime::Runtime) {
    let (store, dir) = store_file(max_group);
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(TURNS as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..TURNS)
                    .map(|agent| {
                        let store = store.clone();
                        tokio::spawn(async move { store.commit(turn(agent)).await })
                    })
                    .collect();
                for task in tasks {
                    task.await
                        .expect("the turn ran")
                        .expect("the turn committed");
                }
            })
        })
    });
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

fn state(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (store, dir) = store_file(MAX_GROUP);
    rt.block_on(store.commit(turn(0))).expect("the first write");
    let scope = turn(0).scope;
    c.bench_function("state/read", |b| {
        b.iter(|| black_box(store.get(&scope, "count").expect("a read")))
    });
    c.bench_function("state/commit_one_turn_at_a_time", |b| {
        b.iter(|| {
            rt.block_on(store.commit(turn(1)))
                .expect("the turn committed")
        })
    });
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    concurrent(c, "commit_64_concurrent_grouped", MAX_GROUP, &rt);
    concurrent(c, "commit_64_concurrent_one_fsync_each", 1, &rt);
}

criterion_group!(benches, state);
criterion_main!(benches);
