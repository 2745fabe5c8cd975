//! Tests of the group committer: grouping, each batch validated on its own, size limits.

use std::sync::Arc;

use super::tests::{open, temp_path, value, wait_until, writes};
use super::*;
use crate::db::Db;

/// Commits `batches` at once while the committer is held after taking the first, so they
/// all queue, and returns the transactions the committer needed and every outcome.
pub(super) async fn commit_queued(
    store: &Arc<StateStore>,
    batches: Vec<Batch>,
) -> (u64, Vec<Result<Committed, CommitError>>) {
    let before = store.transactions();
    let n = batches.len();
    let gate = store.shared.gate.lock().unwrap();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(batch).await })
        })
        .collect();
    // The test's own thread: the spawned tasks run on the runtime's workers meanwhile.
    wait_until("all queued", || store.queued() == n);
    drop(gate);
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    (store.transactions() - before, outcomes)
}

/// Proves group commit groups: 64 turns queued at once commit in one transaction (on a
/// file, with its fsync), while a store that commits each batch alone takes 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions() {
    let batches = |n: usize| {
        (0..n)
            .map(|i| writes(&Scope::agent("h", i.to_string()), &[("k", Some(b"v"))]))
            .collect::<Vec<_>>()
    };
    let file = temp_path();
    let store = open(Db::open(&file.path).unwrap(), StateLimits::default());
    let (transactions, outcomes) = commit_queued(&store, batches(64)).await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(transactions, 1, "64 queued commits, one transaction");
    assert_eq!(store.agents("h", None, 100).unwrap().len(), 64);

    let metrics = Arc::new(Metrics::default());
    let alone =
        StateStore::open_grouping(Db::in_memory().unwrap(), StateLimits::default(), metrics, 1)
            .unwrap();
    let (transactions, _) = commit_queued(&alone, batches(64)).await;
    assert_eq!(
        transactions, 64,
        "without grouping, one transaction per batch"
    );
}

/// Proves each batch of a group is validated on its own: in one transaction, a batch past a
/// limit and one that conflicts with an earlier batch of the same group are left out with
/// their own errors, and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_does_not_hold_back_its_group() {
    let limits = StateLimits {
        value_bytes: 4,
        ..StateLimits::default()
    };
    let store = open(Db::in_memory().unwrap(), limits);
    let scope = Scope::handler("svc");
    let mut first = writes(&scope, &[("n", Some(b"1"))]);
    first.reads.insert("n".into(), 0);
    let too_big = writes(&scope, &[("big", Some(b"12345")), ("small", Some(b"1"))]);
    let mut conflicting = writes(&scope, &[("n", Some(b"2")), ("c", Some(b"1"))]);
    conflicting.reads.insert("n".into(), 0);
    let fine = writes(&scope, &[("fine", Some(b"1"))]);
    let (transactions, outcomes) =
        commit_queued(&store, vec![first, too_big, conflicting, fine]).await;
    assert_eq!(transactions, 1);
    // The committer takes batches in the order they were queued, which spawned tasks don't
    // fix: check each batch's outcome by its effect instead.
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2);
    assert_eq!(value(&store, &scope, "big"), None);
    assert_eq!(
        value(&store, &scope, "small"),
        None,
        "a refused batch writes nothing"
    );
    assert_eq!(value(&store, &scope, "fine"), Some(b"1".to_vec()));
    let n = value(&store, &scope, "n").unwrap();
    let c = value(&store, &scope, "c");
    assert!(
        (n == b"1" && c.is_none()) || (n == b"2" && c == Some(b"1".to_vec())),
        "exactly one of the two turns that read n at version 0 committed"
    );
    let errors: Vec<u16> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .map(CommitError::code)
        .collect();
    assert_eq!(errors.iter().filter(|c| **c == 507).count(), 1);
    assert_eq!(errors.iter().filter(|c| **c == 409).count(), 1);
}

/// Proves the size limits: a value past `value_bytes` and a key past the key limit are
/// refused (at `check_value` and at commit), a handler past `handler_bytes` is refused, each
/// changing nothing; deletes and shrinking writes always pass; usage counts keys and values.
#[tokio::test]
async fn quotas_refuse_and_change_nothing() {
    let limits = StateLimits {
        value_bytes: 50,
        handler_bytes: 100,
        ..StateLimits::default()
    };
    let store = open(Db::in_memory().unwrap(), limits.clone());
    let scope = Scope::agent("h", "a");
    assert!(store.check_value("k", 50).is_ok());
    assert!(matches!(
        store.check_value("k", 51),
        Err(CommitError::ValueTooLarge {
            bytes: 51,
            limit: 50,
            ..
        })
    ));
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(store.check_value(&long_key, 1).unwrap_err().code(), 413);

    store
        .commit(writes(&scope, &[("a", Some(&[0; 49]))]))
        .await
        .unwrap();
    assert_eq!(store.usage("h").unwrap(), 50);
    let before = store.get(&scope, "a").unwrap();
    let error = store
        .commit(writes(
            &scope,
            &[("a", Some(&[1; 10])), ("b", Some(&[0; 51]))],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommitError::ValueTooLarge { .. }),
        "{error}"
    );
    assert_eq!(error.code(), 507);
    assert!(error.to_string().contains("state_value_bytes"), "{error}");
    let error = store
        .commit(writes(&Scope::agent("h", "b"), &[("b", Some(&[0; 50]))]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CommitError::HandlerFull {
                would: 101,
                limit: 100,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), 507);
    assert!(error.to_string().contains("state_handler_bytes"), "{error}");
    assert_eq!(store.get(&scope, "a").unwrap(), before, "nothing changed");
    assert_eq!(store.usage("h").unwrap(), 50);
    assert!(store.agents("h", None, 10).unwrap() == ["a"]);

    let store_full = StateLimits {
        handler_bytes: 10,
        ..limits
    };
    let tight = open(store.shared.db.clone(), store_full);
    tight
        .commit(writes(&scope, &[("a", Some(&[0; 20]))]))
        .await
        .unwrap();
    assert_eq!(
        tight.usage("h").unwrap(),
        21,
        "shrinking passes even above the limit"
    );
    tight.commit(writes(&scope, &[("a", None)])).await.unwrap();
    assert_eq!(
        tight.usage("h").unwrap(),
        0,
        "a delete passes and frees its bytes"
    );
    let text = store.shared.metrics.encode();
    assert!(
        text.contains(r#"switchboard_state_quota_refused_total{handler="h"} 2"#),
        "{text}"
    );
}
