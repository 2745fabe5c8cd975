use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::*;

fn name(handler: &str) -> Arc<str> {
    Arc::from(handler)
}

/// Takes `n` slots for `handler`, panicking if the pool refuses one.
fn take(pool: &Arc<InstancePool>, handler: &str, n: u32) -> Vec<InstanceSlot> {
    (0..n)
        .map(|i| {
            pool.try_acquire(&name(handler), Gauge::default())
                .unwrap_or_else(|e| panic!("slot {i} of `{handler}`: {e}"))
        })
        .collect()
}

/// Proves a deployed handler gets its reserved slot however many shared slots a busy
/// neighbour took, and that the neighbour is held to `max - reserved` beyond its own.
#[test]
fn a_reservation_is_kept_from_busy_neighbours() {
    let pool = InstancePool::new(4);
    let _a = pool.reserve("a").unwrap();
    let _b = pool.reserve("b").unwrap();
    // a: its reserved slot plus the two shared ones (4 slots - 2 reserved).
    let held = take(&pool, "a", 3);
    let refused = pool.try_acquire(&name("a"), Gauge::default()).unwrap_err();
    assert!(
        matches!(refused, PoolFull::Instances { has: 3, .. }),
        "{refused}"
    );
    let b = pool.try_acquire(&name("b"), Gauge::default());
    assert!(b.is_ok(), "b's reserved slot is kept for it");
    let usage = pool.usage();
    assert_eq!((usage.in_use, usage.reserved, usage.shared), (4, 2, 2));
    drop(held);
}

/// Proves instances beyond a handler's first take shared slots, and a handler without a
/// reservation (deleted, still draining) takes only shared ones.
#[test]
fn instances_beyond_the_first_share_what_is_not_reserved() {
    let pool = InstancePool::new(5);
    let _a = pool.reserve("a").unwrap();
    let _b = pool.reserve("b").unwrap();
    let _c = pool.reserve("c").unwrap();
    // Two shared slots: whoever comes first.
    let _a_slots = take(&pool, "a", 2);
    let _gone = take(&pool, "gone", 1);
    assert!(pool.try_acquire(&name("gone"), Gauge::default()).is_err());
    assert!(pool.try_acquire(&name("a"), Gauge::default()).is_err());
    // b and c still have theirs.
    let _b_slots = take(&pool, "b", 1);
    let _c_slots = take(&pool, "c", 1);
    assert_eq!(pool.usage().in_use, 5);
}

/// Proves dropping a slot gives it back and moves the handler's gauge down; dropping a
/// reservation frees it for another handler.
#[test]
fn slots_and_reservations_are_released_on_drop() {
    let pool = InstancePool::new(2);
    let gauge = Gauge::default();
    let a = pool.reserve("a").unwrap();
    let one = pool.try_acquire(&name("a"), gauge.clone()).unwrap();
    let two = pool.try_acquire(&name("a"), gauge.clone()).unwrap();
    assert_eq!(gauge.get(), 2);
    drop(one);
    assert_eq!(gauge.get(), 1);
    drop(two);
    assert_eq!(gauge.get(), 0);
    assert_eq!(pool.usage().in_use, 0);

    let _b = pool.reserve("b").unwrap();
    assert!(pool.reserve("c").is_err(), "both slots reserved");
    drop(a);
    let _c = pool.reserve("c").expect("a's reservation was given back");
    assert_eq!(pool.usage().reserved, 2);
}

/// Proves the refusals name the limit, the setting and the current use, and say what to do.
#[test]
fn refusals_say_what_is_full_and_what_to_change() {
    let pool = InstancePool::new(2);
    let _a = pool.reserve("a").unwrap();
    let _held = take(&pool, "a", 2);
    let full = pool.try_acquire(&name("a"), Gauge::default()).unwrap_err();
    assert_eq!(
        full.to_string(),
        "the instance pool is full: 2 of 2 instances in use (set by --max-instances); handler `a` already has 2"
    );
    assert!(full.help().contains("--instance-idle"), "{}", full.help());

    let _b = pool.reserve("b").unwrap();
    let refused = pool.reserve("c").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "cannot deploy handler `c`: all 2 instance slots (set by --max-instances) are reserved, one for each deployed handler"
    );
    assert!(refused.help().contains("--max-instances"));
    assert_eq!(pool.check_room("c"), Err(refused));
    assert_eq!(
        pool.check_room("a"),
        Ok(()),
        "a deployed handler keeps its slot"
    );
}

/// Proves a reservation made while every slot is in use is paid: shared instances are told
/// to yield, no new shared slot is granted meanwhile, and the freed slot goes to the new
/// handler.
#[tokio::test]
async fn an_overcommitted_pool_takes_shared_slots_back() {
    let pool = InstancePool::new(3);
    let _a = pool.reserve("a").unwrap();
    let mut a_slots = take(&pool, "a", 3);
    assert!(!a_slots[2].should_yield());
    let _b = pool
        .reserve("b")
        .expect("a slot is free to reserve, though in use");
    assert!(a_slots.iter().all(InstanceSlot::should_yield));
    tokio::time::timeout(Duration::from_secs(10), a_slots[0].owed())
        .await
        .expect("an idle shared instance is told at once");
    assert!(
        pool.try_acquire(&name("b"), Gauge::default()).is_err(),
        "no slot is free until one is given back"
    );
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.acquire(&name("b"), Gauge::default(), Duration::from_secs(10))
                .await
        })
    };
    a_slots.pop();
    assert!(!a_slots[0].should_yield(), "paid: a keeps the rest");
    let b_slot = waiting.await.unwrap().expect("b gets the slot a gave back");
    assert!(!b_slot.should_yield());
    assert!(pool.try_acquire(&name("a"), Gauge::default()).is_err());
}

/// Proves acquiring waits for a freed slot, and gives up with the refusal after its wait.
#[tokio::test]
async fn acquire_waits_for_a_slot_then_gives_up() {
    let pool = InstancePool::new(1);
    let _a = pool.reserve("a").unwrap();
    let held = take(&pool, "a", 1);
    let started = std::time::Instant::now();
    let refused = pool
        .acquire(&name("a"), Gauge::default(), Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(matches!(
        refused,
        PoolFull::Instances {
            in_use: 1,
            max: 1,
            ..
        }
    ));

    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.acquire(&name("a"), Gauge::default(), Duration::from_secs(10))
                .await
        })
    };
    tokio::task::yield_now().await;
    drop(held);
    assert!(waiting.await.unwrap().is_ok());
}

/// Proves describe probes do not take handler slots, and at most [`PROBE_SLOTS`] run at once.
#[tokio::test]
async fn probes_have_slots_of_their_own() {
    let pool = InstancePool::new(1);
    let _a = pool.reserve("a").unwrap();
    let _held = take(&pool, "a", 1);
    let mut probes = Vec::new();
    for _ in 0..PROBE_SLOTS {
        probes.push(pool.probe().await);
    }
    assert_eq!(pool.usage().in_use, 1);
    let more = tokio::time::timeout(Duration::from_millis(30), pool.probe()).await;
    assert!(more.is_err(), "a fifth probe waits");
    probes.pop();
    tokio::time::timeout(Duration::from_secs(10), pool.probe())
        .await
        .expect("a probe slot was given back");
}
