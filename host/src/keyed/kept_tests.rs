//! Tests of pushes kept for users: order, the per-user limit, expiry, acknowledgement.

use super::tests::open;
use super::*;
use crate::db::Db;

fn push(user: &str, id: &str, expires_ms: u64) -> KeptPush {
    KeptPush {
        user: user.into(),
        id: id.into(),
        expires_ms,
        signal: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

/// A store in memory keeping at most `n` pushes per handler and user.
fn keeping_at_most(n: usize) -> Arc<StateStore> {
    let limits = StateLimits {
        kept_per_user: n,
        ..StateLimits::default()
    };
    open(Db::in_memory().unwrap(), limits)
}

fn keeping(pushes: Vec<KeptPush>) -> Batch {
    Batch {
        scope: Scope::handler("chat"),
        keep: pushes,
        ..Batch::default()
    }
}

fn ids(store: &StateStore, user: &str, now: u64) -> Vec<String> {
    store
        .kept(user, now, 100)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// Proves kept pushes come back in the order they were kept, per user, and that an
/// acknowledged one is gone while an unknown id changes nothing.
#[tokio::test]
async fn kept_pushes_are_ordered_and_gone_once_acknowledged() {
    let store = open(Db::in_memory().unwrap(), StateLimits::default());
    let later = u64::MAX;
    store
        .commit(keeping(vec![
            push("ann", "p1", later),
            push("bo", "q1", later),
        ]))
        .await
        .unwrap();
    store
        .commit(keeping(vec![
            push("ann", "p2", later),
            push("ann", "p3", later),
        ]))
        .await
        .unwrap();
    assert_eq!(ids(&store, "ann", 0), ["p1", "p2", "p3"]);
    assert_eq!(ids(&store, "bo", 0), ["q1"]);
    assert!(store.acknowledge("ann", "p2", 0).unwrap());
    assert!(
        !store.acknowledge("ann", "p2", 0).unwrap(),
        "acknowledged already"
    );
    assert!(
        !store.acknowledge("ann", "q1", 0).unwrap(),
        "another user's push"
    );
    assert_eq!(ids(&store, "ann", 0), ["p1", "p3"]);
    assert_eq!(store.kept_count("ann", "chat").unwrap(), 2);
    assert_eq!(ids(&store, "bo", 0), ["q1"]);
}

/// Proves the per-user limit refuses a batch (429) and keeps none of it, that expired
/// pushes are never delivered, and that they make room for new ones.
#[tokio::test]
async fn the_limit_is_per_user_and_expired_pushes_make_room() {
    let store = keeping_at_most(2);
    let now = store.limits().clock.now_millis();
    store
        .commit(keeping(vec![
            push("ann", "old", now - 1),
            push("ann", "p1", now + 60_000),
        ]))
        .await
        .unwrap();
    assert_eq!(
        ids(&store, "ann", now),
        ["p1"],
        "an expired push is not delivered"
    );
    let refused = store
        .commit(keeping(vec![
            push("ann", "p2", now + 60_000),
            push("ann", "p3", now + 60_000),
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CommitError::TooManyKept { .. }),
        "{refused}"
    );
    assert_eq!(refused.code(), 429);
    assert_eq!(
        ids(&store, "ann", now),
        ["p1"],
        "nothing of the refused batch"
    );
    store
        .commit(keeping(vec![push("ann", "p2", now + 60_000)]))
        .await
        .unwrap();
    assert_eq!(ids(&store, "ann", now), ["p1", "p2"]);
    assert_eq!(
        store.kept_count("ann", "chat").unwrap(),
        2,
        "the expired one was removed"
    );
    store
        .commit(keeping(vec![push("bo", "q1", now + 60_000)]))
        .await
        .unwrap();
    assert_eq!(
        ids(&store, "bo", now),
        ["q1"],
        "another user's limit is its own"
    );
}

/// Proves kept pushes count against the keeping handler's state bytes until they are gone
/// (acknowledged or swept at expiry), so a handler past its limit keeps nothing more (507).
#[tokio::test]
async fn kept_bytes_count_against_the_keeping_handler() {
    let limits = StateLimits {
        handler_bytes: 100,
        ..StateLimits::default()
    };
    let store = open(Db::in_memory().unwrap(), limits);
    let now = store.limits().clock.now_millis();
    let first = push("ann", "p1", now + 60_000);
    let bytes = (first.id.len() + first.signal.len()) as u64;
    store.commit(keeping(vec![first])).await.unwrap();
    assert_eq!(store.usage("chat").unwrap(), bytes);
    let many: Vec<_> = (0..10)
        .map(|i| push("bo", &format!("q{i}"), now + 1))
        .collect();
    let full = store.commit(keeping(many)).await.unwrap_err();
    assert!(matches!(full, CommitError::HandlerFull { .. }), "{full}");
    assert!(
        ids(&store, "bo", now).is_empty(),
        "nothing of the refused batch"
    );
    store
        .commit(keeping(vec![push("bo", "q1", now + 1)]))
        .await
        .unwrap();
    assert_eq!(store.usage("chat").unwrap(), 2 * bytes);
    assert!(store.acknowledge("ann", "p1", now).unwrap());
    assert_eq!(store.usage("chat").unwrap(), bytes);
    assert_eq!(store.sweep_kept(now + 2).unwrap(), 1, "bo's expired push");
    assert_eq!(store.usage("chat").unwrap(), 0);
    assert_eq!(store.kept_count("bo", "chat").unwrap(), 0);
    assert_eq!(store.sweep_kept(now + 2).unwrap(), 0);
}

/// Proves each kept push is charged to the handler that kept it (an acknowledgement gives
/// bytes back to that handler only), and that purging a handler removes what it kept, with
/// the users' counts, and nothing another handler kept.
#[tokio::test]
async fn kept_pushes_belong_to_their_handler_and_go_with_its_purge() {
    let store = open(Db::in_memory().unwrap(), StateLimits::default());
    let later = u64::MAX;
    store
        .commit(keeping(vec![
            push("ann", "c1", later),
            push("bo", "c2", later),
        ]))
        .await
        .unwrap();
    let by_other = Batch {
        scope: Scope::handler("reminders"),
        keep: vec![push("ann", "r1", later)],
        ..Batch::default()
    };
    store.commit(by_other).await.unwrap();
    let (chat, reminders) = (
        store.usage("chat").unwrap(),
        store.usage("reminders").unwrap(),
    );
    assert!(chat > 0 && reminders > 0);
    assert!(store.acknowledge("ann", "r1", 0).unwrap());
    assert_eq!(
        store.usage("chat").unwrap(),
        chat,
        "chat's bytes are its own"
    );
    assert_eq!(store.usage("reminders").unwrap(), 0);
    store
        .commit(Batch {
            scope: Scope::handler("reminders"),
            keep: vec![push("bo", "r2", later)],
            ..Batch::default()
        })
        .await
        .unwrap();
    store.purge("chat").unwrap();
    assert!(ids(&store, "ann", 0).is_empty(), "what chat kept is gone");
    assert_eq!(ids(&store, "bo", 0), ["r2"], "what reminders kept stays");
    assert_eq!(
        (
            store.kept_count("ann", "chat").unwrap(),
            store.kept_count("bo", "chat").unwrap(),
            store.kept_count("bo", "reminders").unwrap()
        ),
        (0, 0, 1)
    );
    assert!(!store.acknowledge("bo", "c2", 0).unwrap());
}

/// Proves the limit is per handler and user: a handler that keeps its limit for a user is
/// refused (429) while another handler still keeps for the same user, and a push the first
/// one's user acknowledges makes it room again.
#[tokio::test]
async fn one_handler_cannot_use_up_what_another_keeps_for_a_user() {
    let store = keeping_at_most(2);
    let later = u64::MAX;
    let by = |handler: &str, pushes| Batch {
        scope: Scope::handler(handler),
        keep: pushes,
        ..Batch::default()
    };
    let junk = vec![push("bo", "j1", later), push("bo", "j2", later)];
    store.commit(by("storm", junk)).await.unwrap();
    let refused = store
        .commit(by("storm", vec![push("bo", "j3", later)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, CommitError::TooManyKept { handler, .. } if handler == "storm"),
        "{refused}"
    );
    assert_eq!(refused.code(), 429);
    store
        .commit(keeping(vec![push("bo", "c1", later)]))
        .await
        .expect("chat keeps for bo beside storm's full share");
    assert_eq!(ids(&store, "bo", 0), ["j1", "j2", "c1"]);
    assert!(store.acknowledge("bo", "j1", 0).unwrap());
    store
        .commit(by("storm", vec![push("bo", "j3", later)]))
        .await
        .unwrap();
    assert_eq!(
        (
            store.kept_count("bo", "storm").unwrap(),
            store.kept_count("bo", "chat").unwrap()
        ),
        (2, 1)
    );
}

/// Proves a store written when pushes were counted per user opens with the pushes counted
/// per handler and user, and its per-user counts gone.
#[tokio::test]
async fn a_store_counting_per_user_is_counted_per_handler_when_it_opens() {
    let db = Db::in_memory().unwrap();
    {
        let tx = db.begin_durable().unwrap();
        let mut kept = tx.open_table(tables::KEPT).unwrap();
        let mut old = tx.open_table(tables::KEPT_PER_USER).unwrap();
        for (seq, id, handler) in [(1, "c1", "chat"), (2, "r1", "reminders"), (3, "c2", "chat")] {
            kept.insert(("ann", seq), (u64::MAX, id, handler, b"{}".as_slice()))
                .unwrap();
        }
        old.insert("ann", 3).unwrap();
        drop((kept, old));
        tx.commit().unwrap();
    }
    let store = open(db.clone(), StateLimits::default());
    assert_eq!(
        (
            store.kept_count("ann", "chat").unwrap(),
            store.kept_count("ann", "reminders").unwrap()
        ),
        (2, 1)
    );
    let tx = db.database().begin_read().unwrap();
    let names: Vec<String> = tx
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "kept_count"), "{names:?}");
    drop(tx);
    drop(store);
    let again = open(db, StateLimits::default());
    assert_eq!(again.kept_count("ann", "chat").unwrap(), 2, "counted once");
}
