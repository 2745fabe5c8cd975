//! Tests of durable timers: committed with their batch, ordered by due time, quota, removal
//! once fired, and the timer loop.

use std::sync::Arc;
use std::sync::Mutex;

use super::tests::{memory, open, wait_until};
use super::*;
use crate::db::Db;

fn timer(handler: &str, due_ms: u64) -> Timer {
    Timer {
        id: Timer::new_id(),
        handler: handler.into(),
        scope: Scope::handler(handler),
        due_ms,
        signal: format!("to fire at {due_ms}").into_bytes(),
    }
}

fn schedule(scope: &Scope, timers: &[&Timer]) -> Batch {
    Batch {
        scope: scope.clone(),
        schedule: timers.iter().map(|t| (*t).clone()).collect(),
        ..Batch::default()
    }
}

fn ids(timers: &[StoredTimer]) -> Vec<&str> {
    timers.iter().map(|t| t.id.as_str()).collect()
}

/// Proves timers are committed with their batch (a refused batch schedules nothing), listed
/// due in (due time, id) order up to a limit, and `next_due` is the earliest.
#[tokio::test]
async fn timers_commit_with_their_batch_in_due_order() {
    let store = open(
        Db::in_memory().unwrap(),
        StateLimits {
            value_bytes: 4,
            ..StateLimits::default()
        },
    );
    let scope = Scope::agent("h", "a");
    let (late, early, middle) = (timer("h", 30), timer("h", 10), timer("h", 20));
    assert_eq!(store.next_due(), None);
    store
        .commit(schedule(&scope, &[&late, &early]))
        .await
        .unwrap();
    let mut refused = schedule(&scope, &[&middle]);
    refused.writes.insert("k".into(), Some(vec![0; 5]));
    assert!(store.commit(refused).await.is_err());
    assert_eq!(
        store.due(u64::MAX, 10).unwrap(),
        [early.clone(), late.clone()],
        "the refused batch scheduled nothing"
    );
    store.commit(schedule(&scope, &[&middle])).await.unwrap();
    assert_eq!(store.next_due(), Some(10));
    assert_eq!(ids(&store.due(25, 10).unwrap()), [&early.id, &middle.id]);
    assert_eq!(
        ids(&store.due(u64::MAX, 2).unwrap()),
        [&early.id, &middle.id]
    );
    assert!(store.due(9, 10).unwrap().is_empty());
    assert_eq!(store.timers_of("h").unwrap(), 3);
}

/// Proves cancelling: a batch cancels its handler's pending timer (counted in `cancelled`),
/// cannot cancel another handler's, a timer cancelled in the batch that schedules it never
/// exists, and `cancel_now` works outside a turn.
#[tokio::test]
async fn cancel_only_own_timers() {
    let store = memory();
    let (mine, theirs, again) = (timer("h", 10), timer("g", 10), timer("h", 20));
    store
        .commit(schedule(&Scope::handler("h"), &[&mine]))
        .await
        .unwrap();
    store
        .commit(schedule(&Scope::handler("g"), &[&theirs]))
        .await
        .unwrap();
    let mut batch = schedule(&Scope::agent("h", "x"), &[&again]);
    batch.cancel = vec![
        mine.id.clone(),
        theirs.id.clone(),
        again.id.clone(),
        "nonsense\0".into(),
    ];
    let committed = store.commit(batch).await.unwrap();
    assert_eq!(committed.cancelled, 2);
    assert_eq!(ids(&store.due(u64::MAX, 10).unwrap()), [&theirs.id]);
    assert_eq!(store.timers_of("h").unwrap(), 0);
    assert!(!store.cancel_now("h", &theirs.id).unwrap(), "not h's timer");
    assert!(store.timer_exists("g", &theirs.id).unwrap());
    assert!(store.cancel_now("g", &theirs.id).unwrap());
    assert!(!store.cancel_now("g", &theirs.id).unwrap());
    let text = store.shared.metrics.encode();
    assert!(
        text.contains(r#"switchboard_timers_cancelled_total{handler="h"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"switchboard_timers_scheduled_total{handler="h"} 2"#),
        "{text}"
    );
}

/// Proves the per-handler timer quota: past it a batch is refused with 429 and changes
/// nothing, cancelling one makes room in the same batch, and firing frees room.
#[tokio::test]
async fn timer_quota_per_handler() {
    let store = open(
        Db::in_memory().unwrap(),
        StateLimits {
            timers_per_handler: 2,
            ..StateLimits::default()
        },
    );
    let scope = Scope::handler("h");
    let (a, b, c) = (timer("h", 1), timer("h", 2), timer("h", 3));
    store.commit(schedule(&scope, &[&a, &b])).await.unwrap();
    let mut over = schedule(&scope, &[&c]);
    over.writes.insert("k".into(), Some(b"v".to_vec()));
    let error = store.commit(over).await.unwrap_err();
    assert!(
        matches!(
            error,
            CommitError::TooManyTimers {
                would: 3,
                limit: 2,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), 429);
    assert!(error.to_string().contains("timers_per_handler"));
    assert_eq!(
        store.get(&scope, "k").unwrap().value,
        None,
        "nothing of the batch changed"
    );
    store
        .commit(schedule(&Scope::handler("other"), &[&timer("other", 1)]))
        .await
        .unwrap();
    let mut swap = schedule(&scope, &[&c]);
    swap.cancel.push(a.id.clone());
    store.commit(swap).await.unwrap();
    store.fired(&b.id).unwrap();
    store.fired(&b.id).unwrap();
    assert_eq!(store.timers_of("h").unwrap(), 1);
    store
        .commit(schedule(&scope, &[&timer("h", 4)]))
        .await
        .unwrap();
    let text = store.shared.metrics.encode();
    assert!(
        text.contains(r#"switchboard_timers_fired_total{handler="h"} 1"#),
        "{text}"
    );
}

/// What a test's `fire` callback saw.
#[derive(Default)]
struct Fired {
    ids: Mutex<Vec<String>>,
    refuse_first: Mutex<Option<String>>,
}

fn start_loop(store: &Arc<StateStore>, fired: &Arc<Fired>) -> tokio::task::JoinHandle<()> {
    let seen = fired.clone();
    spawn_timer_loop(
        Arc::downgrade(store),
        Arc::new(move |timer: StoredTimer| {
            seen.ids.lock().unwrap().push(timer.id.clone());
            let mut refuse = seen.refuse_first.lock().unwrap();
            let took = refuse.as_deref() != Some(&timer.id);
            if !took {
                *refuse = None;
            }
            Box::pin(std::future::ready(took))
        }),
    )
}

async fn wait_for(fired: &Arc<Fired>, n: usize) {
    let fired = fired.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("timers fired", || fired.ids.lock().unwrap().len() >= n)
    })
    .await
    .unwrap();
}

/// Proves the timer loop fires a timer already past due at start at once, removes it so it
/// fires once, wakes early when a commit schedules a timer due before the one it sleeps for
/// (a notification, not the hour-long sleep), and stops when the store is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_fires_past_due_and_newly_scheduled_timers() {
    let store = memory();
    let scope = Scope::handler("h");
    let now = store.limits().clock.now_millis();
    let (past, far) = (timer("h", now - 60_000), timer("h", now + 3_600_000));
    store
        .commit(schedule(&scope, &[&past, &far]))
        .await
        .unwrap();
    let fired = Arc::new(Fired::default());
    let task = start_loop(&store, &fired);
    wait_for(&fired, 1).await;
    let soon = timer("h", store.limits().clock.now_millis());
    store.commit(schedule(&scope, &[&soon])).await.unwrap();
    wait_for(&fired, 2).await;
    assert_eq!(
        *fired.ids.lock().unwrap(),
        [past.id.clone(), soon.id.clone()],
        "each fired once, in order"
    );
    let waiting = store.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("fired timers removed", || {
            waiting.timers_of("h").unwrap() == 1
        })
    })
    .await
    .unwrap();
    assert_eq!(ids(&store.due(u64::MAX, 10).unwrap()), [&far.id]);
    drop(store);
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the loop stops")
        .unwrap();
}

/// Proves a timer the host refuses (fire returned false) stays stored and is offered again,
/// while the loop keeps serving other timers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_timer_is_offered_again() {
    let store = memory();
    let (refused, other) = (timer("h", 1), timer("h", 2));
    store
        .commit(schedule(&Scope::handler("h"), &[&refused, &other]))
        .await
        .unwrap();
    let fired = Arc::new(Fired::default());
    *fired.refuse_first.lock().unwrap() = Some(refused.id.clone());
    let _task = start_loop(&store, &fired);
    wait_for(&fired, 3).await;
    assert_eq!(
        *fired.ids.lock().unwrap(),
        [refused.id.clone(), other.id.clone(), refused.id.clone()]
    );
    let waiting = store.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("both removed", || waiting.timers_of("h").unwrap() == 0)
    })
    .await
    .unwrap();
}
