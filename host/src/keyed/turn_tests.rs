//! Tests of a turn's overlay on the store.

use super::tests::{memory, open, value, writes};
use super::*;
use crate::db::Db;

/// Proves a turn reads its own writes and deletes before the store, nothing reaches the
/// store before the commit, and a dropped turn leaves no trace.
#[tokio::test]
async fn a_turn_reads_its_own_writes_and_commits_them_together() {
    let store = memory();
    let scope = Scope::agent("h", "a");
    store
        .commit(writes(&scope, &[("old", Some(b"1")), ("gone", Some(b"2"))]))
        .await
        .unwrap();
    let mut turn = TurnState::new(store.clone(), scope.clone());
    assert_eq!(turn.get("old").unwrap(), Some(b"1".to_vec()));
    turn.set("old", b"10".to_vec()).unwrap();
    turn.set("new", b"3".to_vec()).unwrap();
    assert!(turn.delete("gone").unwrap());
    assert!(!turn.delete("never").unwrap());
    assert_eq!(turn.get("old").unwrap(), Some(b"10".to_vec()));
    assert_eq!(turn.get("gone").unwrap(), None);
    assert_eq!(
        value(&store, &scope, "old"),
        Some(b"1".to_vec()),
        "not before the commit"
    );
    let mut dropped = TurnState::new(store.clone(), scope.clone());
    dropped.set("old", b"lost".to_vec()).unwrap();
    drop(dropped);
    turn.commit().await.unwrap().expect("it changed something");
    assert_eq!(value(&store, &scope, "old"), Some(b"10".to_vec()));
    assert_eq!(value(&store, &scope, "new"), Some(b"3".to_vec()));
    assert_eq!(value(&store, &scope, "gone"), None);
    let idle = TurnState::new(store.clone(), scope.clone());
    assert!(idle.is_empty() && idle.commit().await.unwrap().is_none());
}

/// Proves `keys` merges the turn's sets and deletes into the committed keys, in order.
#[tokio::test]
async fn keys_merge_the_overlay() {
    let store = memory();
    let scope = Scope::handler("svc");
    store
        .commit(writes(
            &scope,
            &[("a/1", Some(b"")), ("a/2", Some(b"")), ("b", Some(b""))],
        ))
        .await
        .unwrap();
    let mut turn = TurnState::new(store, scope);
    turn.set("a/0", Vec::new()).unwrap();
    turn.delete("a/2").unwrap();
    turn.set("c", Vec::new()).unwrap();
    assert_eq!(turn.keys("a/").unwrap(), ["a/0", "a/1"]);
    assert_eq!(turn.keys("").unwrap(), ["a/0", "a/1", "b", "c"]);
}

/// Proves a turn records the version it first read, so two turns of a service that
/// read-modify-write one key cannot both commit: the later one conflicts and, run again,
/// keeps both increments. A blind write (no read) records nothing.
#[tokio::test]
async fn concurrent_turns_do_not_lose_an_update() {
    let store = memory();
    let scope = Scope::handler("svc");
    let increment = |turn: &mut TurnState| {
        let n = turn.get("n").unwrap().map_or(0, |v| v[0]);
        turn.set("n", vec![n + 1]).unwrap();
    };
    let (mut first, mut second) = (
        TurnState::new(store.clone(), scope.clone()),
        TurnState::new(store.clone(), scope.clone()),
    );
    increment(&mut first);
    increment(&mut second);
    first.commit().await.unwrap();
    let error = second.commit().await.unwrap_err();
    assert!(matches!(error, CommitError::Conflict { .. }), "{error}");
    let mut again = TurnState::new(store.clone(), scope.clone());
    increment(&mut again);
    again.commit().await.unwrap();
    assert_eq!(value(&store, &scope, "n"), Some(vec![2]));
    let mut blind = TurnState::new(store.clone(), scope.clone());
    blind.set("n", vec![9]).unwrap();
    assert_eq!(blind.get("n").unwrap(), Some(vec![9]));
    assert!(blind.into_batch().reads.is_empty());

    // A turn copies n to m; n changes meanwhile; reading n again does not hide that the copy
    // was made from the older value.
    let mut copy = TurnState::new(store.clone(), scope.clone());
    let n = copy.get("n").unwrap().unwrap();
    copy.set("m", n).unwrap();
    store
        .commit(writes(&scope, &[("n", Some(&[7]))]))
        .await
        .unwrap();
    assert_eq!(copy.get("n").unwrap(), Some(vec![7]));
    assert!(matches!(
        copy.commit().await,
        Err(CommitError::Conflict { .. })
    ));
    assert_eq!(value(&store, &scope, "m"), None);
}

/// Proves the size limits apply as the handler writes: a value past the limit is refused at
/// `set`, and one turn cannot hold more than the handler may store.
#[tokio::test]
async fn limits_apply_at_set() {
    let limits = StateLimits {
        value_bytes: 10,
        handler_bytes: 25,
        ..StateLimits::default()
    };
    let store = open(Db::in_memory().unwrap(), limits);
    let mut turn = TurnState::new(store, Scope::handler("h"));
    assert_eq!(turn.set("k", vec![0; 11]).unwrap_err().code(), 507);
    turn.set("a", vec![0; 10]).unwrap();
    turn.set("b", vec![0; 10]).unwrap();
    turn.set("a", vec![0; 1]).unwrap();
    turn.set("c", vec![0; 9]).unwrap();
    assert!(matches!(
        turn.set("d", vec![0; 9]),
        Err(CommitError::HandlerFull { .. })
    ));
    assert_eq!(turn.into_batch().writes.len(), 3);
}

/// Proves a turn's timers: scheduled ones commit with it from its scope, cancelling one it
/// scheduled drops it, cancelling a committed one of its handler takes effect at commit, and
/// another handler's timer cannot be cancelled; the quota applies at `schedule`.
#[tokio::test]
async fn a_turn_schedules_and_cancels_timers() {
    let store = open(
        Db::in_memory().unwrap(),
        StateLimits {
            timers_per_handler: 2,
            ..StateLimits::default()
        },
    );
    let scope = Scope::agent("h", "a");
    let mut turn = TurnState::new(store.clone(), scope.clone());
    let kept = turn.schedule(100, b"kept".to_vec()).unwrap();
    let dropped = turn.schedule(200, b"dropped".to_vec()).unwrap();
    assert_eq!(turn.schedule(300, Vec::new()).unwrap_err().code(), 429);
    assert!(turn.cancel(&dropped).unwrap());
    assert!(!turn.cancel("no such timer").unwrap());
    turn.commit().await.unwrap();
    let due = store.due(u64::MAX, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].id.as_str(), &due[0].scope, due[0].signal.as_slice()),
        (kept.as_str(), &scope, &b"kept"[..])
    );
    let mut other = TurnState::new(store.clone(), Scope::handler("g"));
    assert!(!other.cancel(&kept).unwrap(), "not g's timer");
    let mut turn = TurnState::new(store.clone(), Scope::agent("h", "b"));
    assert!(turn.cancel(&kept).unwrap());
    assert!(!turn.cancel(&kept).unwrap(), "cancelled once");
    assert_eq!(
        store.due(u64::MAX, 10).unwrap().len(),
        1,
        "not before the commit"
    );
    turn.commit().await.unwrap();
    assert!(store.due(u64::MAX, 10).unwrap().is_empty());
}
