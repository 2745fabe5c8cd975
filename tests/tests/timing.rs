//! CPU and wall time end to end: a guest is charged only for the time it runs, a signal has a
//! wall-clock deadline that also reaches a guest blocked in WASI, and deleting or moving a
//! handler frees the workers and instances its calls were holding. Each test ends with a
//! neighbour handler answering a follow-up signal.
//!
//! These tests run on tokio's single-threaded test runtime: every guest shares one thread, so
//! a busy neighbour takes a share of it by construction, whatever the machine's speed.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::signal::code;
use switchboard::{Failure, Host, Limits};
use switchboard_tests::{WAIT, call, guest, json};

/// How long a caller waits for a signal that only a delete or a deadline ends: longer than
/// any test, so the answer comes from the host's handling, never the caller's own timeout.
const LONG: Duration = Duration::from_secs(300);

/// A year, in milliseconds: a sleep nothing but the host can end.
const A_YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

/// A host with `echo` deployed as the neighbour that answers follow-up signals.
async fn host_with_echo() -> Host {
    let host = Host::new(switchboard_tests::config()).expect("a host");
    host.deploy("echo", guest("echo"), None)
        .await
        .expect("echo");
    host
}

/// Proves the neighbour still answers.
async fn neighbour_answers(host: &Host) {
    let echoed = call(host, "echo", "Ping", json!({"n": 7})).await;
    assert_eq!(echoed.expect("echo answers"), json!({"n": 7}));
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the `switchboard_instances` gauge for `handler`.
fn instances(host: &Host, handler: &str) -> Option<i64> {
    let metrics = host.router().render_metrics();
    let prefix = format!("switchboard_instances{{handler=\"{handler}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

/// Sends a `message_type` request to `to` from a task of its own, waiting up to `wait`.
fn spawn_call(
    host: &Host,
    to: &'static str,
    message_type: &'static str,
    payload: serde_json::Value,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<serde_json::Value, Failure>> {
    let host = host.clone();
    tokio::spawn(async move {
        host.call(to, message_type, json(payload), wait)
            .await
            .map(|reply| reply.to_value())
    })
}

/// The answer a spawned call gets; fails the test if it takes longer than [`WAIT`].
async fn answer(
    call: tokio::task::JoinHandle<Result<serde_json::Value, Failure>>,
) -> Result<serde_json::Value, Failure> {
    tokio::time::timeout(WAIT, call)
        .await
        .expect("an answer within the wait")
        .expect("the calling task")
}

/// Rounds of `Work` that take about `target` on this machine with nothing else running.
async fn calibrate(host: &Host, target: Duration) -> u64 {
    let mut rounds = 8u64;
    loop {
        let start = Instant::now();
        call(host, "worker", "Work", json!({"rounds": rounds}))
            .await
            .expect("calibrating");
        let took = start.elapsed();
        if took >= Duration::from_millis(50) {
            let scale = target.as_secs_f64() / took.as_secs_f64();
            return ((rounds as f64) * scale).max(1.0) as u64;
        }
        rounds *= 4;
    }
}

/// Proves a handler using a fifth of its CPU budget succeeds five times out of five beside
/// busy neighbours that stretch its wall time well past the budget: only the time its guest
/// runs is charged. (A meter of wall time gets 507 here: see the check at the end.)
#[tokio::test]
async fn a_busy_neighbour_does_not_use_up_a_handlers_cpu_budget() {
    let host = host_with_echo().await;
    let budget = Duration::from_secs(1);
    let worker = Limits {
        cpu_time: budget,
        ..Limits::default()
    };
    host.deploy("worker", guest("sleeper"), Some(worker))
        .await
        .unwrap();
    let burners = 12;
    let busy = Limits {
        cpu_time: Duration::from_secs(600),
        deadline: Duration::from_secs(600),
        concurrency: burners,
        ..Limits::default()
    };
    host.deploy("busy", guest("sleeper"), Some(busy))
        .await
        .unwrap();
    let rounds = calibrate(&host, budget / 5).await;

    let burning: Vec<_> = (0..burners)
        .map(|_| spawn_call(&host, "busy", "Burn", json!({"ms": 600_000}), LONG))
        .collect();
    until("every burner runs", || {
        instances(&host, "busy") == Some(burners.into())
    })
    .await;
    let mut walls = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let done = call(&host, "worker", "Work", json!({"rounds": rounds})).await;
        walls.push(start.elapsed());
        let done = done.expect("the worker stays within its CPU budget");
        assert_eq!(done["done"], rounds);
    }
    // The neighbours really were busy: each signal took longer in wall time than the whole
    // CPU budget, so charging wall time would have failed it.
    let slowest = walls.iter().max().unwrap();
    assert!(
        walls.iter().all(|wall| *wall > budget),
        "wall times {walls:?}"
    );
    eprintln!(
        "{rounds} rounds; wall times beside {burners} burners: {walls:?} (slowest {slowest:?})"
    );

    assert!(host.remove("busy"));
    for burner in burning {
        let failure = answer(burner).await.expect_err("a deleted burner");
        assert_eq!(failure.code, code::OVERLOADED, "{failure}");
    }
    neighbour_answers(&host).await;
}

/// Proves a guest asleep in WASI for a year is abandoned at its deadline with 504 naming
/// the deadline and its setting, its instance is discarded, and the handler serves the next
/// signal.
#[tokio::test]
async fn a_year_long_sleep_ends_at_the_deadline() {
    let host = host_with_echo().await;
    let limits = Limits {
        deadline: Duration::from_secs(1),
        ..Limits::default()
    };
    host.deploy("sleeper", guest("sleeper"), Some(limits))
        .await
        .unwrap();
    let start = Instant::now();
    let failure = call(&host, "sleeper", "Sleep", json!({"ms": A_YEAR_MS}))
        .await
        .expect_err("the sleep is cut");
    let took = start.elapsed();
    assert_eq!(failure.code, code::TIMEOUT, "{failure}");
    assert_eq!(
        failure.description,
        "handler `sleeper` did not finish within its deadline of 1000 ms per signal \
         (the `deadline_ms` deploy setting)"
    );
    assert!(took >= Duration::from_secs(1), "cut early, after {took:?}");

    let pong = call(&host, "sleeper", "Ping", json!({})).await.unwrap();
    assert_eq!(pong["version"], "sleeper");
    let info = host.handlers().into_iter().find(|h| h.name == "sleeper");
    assert_eq!(
        info.unwrap().traps,
        1,
        "the abandoned instance was discarded"
    );
    let metrics = host.router().render_metrics();
    assert!(
        metrics.contains(r#"switchboard_limit_hits_total{handler="sleeper"} 1"#),
        "{metrics}"
    );
    assert_eq!(instances(&host, "sleeper"), Some(1));
    neighbour_answers(&host).await;
}

/// Deploys `sleeper` as `x`, puts its only worker in a year-long sleep, then deploys `echo`
/// as `x` (`moved`: with another mailbox size, so the handler moves to a new mailbox) and
/// proves the new version answers once the deadline ends the sleep.
async fn swap_during_a_long_sleep(moved: bool) {
    let host = host_with_echo().await;
    let limits = Limits {
        deadline: Duration::from_secs(1),
        concurrency: 1,
        mailbox: 8,
        ..Limits::default()
    };
    host.deploy("x", guest("sleeper"), Some(limits))
        .await
        .unwrap();
    let sleeping = spawn_call(&host, "x", "Sleep", json!({"ms": A_YEAR_MS}), LONG);
    until("the sleep is in progress", || {
        instances(&host, "x") == Some(1)
    })
    .await;

    let next = Limits {
        mailbox: if moved { 16 } else { 8 },
        ..limits
    };
    let deployed = host.deploy("x", guest("echo"), Some(next)).await.unwrap();
    assert!(deployed.swapped);
    let pong = call(&host, "x", "Ping", json!({"n": 1})).await;
    assert_eq!(pong.expect("the new version answers"), json!({"n": 1}));
    let failure = answer(sleeping).await.expect_err("the sleep is cut");
    assert_eq!(failure.code, code::TIMEOUT, "{failure}");
    neighbour_answers(&host).await;
}

/// Proves a hot swap in place goes through while the handler's worker is in a year-long
/// sleep: the deadline ends the sleep and the new version answers the next signal.
#[tokio::test]
async fn a_swap_in_place_goes_through_a_long_sleep() {
    swap_during_a_long_sleep(false).await;
}

/// Proves a move to a new mailbox (whose workers wait for the old ones to exit) goes through
/// while the old worker is in a year-long sleep.
#[tokio::test]
async fn a_move_goes_through_a_long_sleep() {
    swap_during_a_long_sleep(true).await;
}

/// Proves deleting a handler whose workers sleep abandons both calls at once with 503, frees
/// their instances, still handles the signal that was queued behind them, and leaves the
/// neighbour serving.
#[tokio::test]
async fn deleting_a_sleeping_handler_frees_its_workers() {
    let host = host_with_echo().await;
    let limits = Limits {
        concurrency: 2,
        ..Limits::default()
    };
    host.deploy("x", guest("sleeper"), Some(limits))
        .await
        .unwrap();
    let sleeping: Vec<_> = (0..2)
        .map(|_| spawn_call(&host, "x", "Sleep", json!({"ms": A_YEAR_MS}), LONG))
        .collect();
    until("both sleeps are in progress", || {
        instances(&host, "x") == Some(2)
    })
    .await;
    let queued = spawn_call(&host, "x", "Ping", json!({}), WAIT);
    until("the ping is queued", || {
        host.handlers()
            .iter()
            .any(|h| h.name == "x" && h.queued == 1)
    })
    .await;

    let start = Instant::now();
    assert!(host.remove("x"));
    for sleep in sleeping {
        let failure = answer(sleep).await.expect_err("the sleep is abandoned");
        assert_eq!(failure.code, code::OVERLOADED, "{failure}");
        assert_eq!(
            failure.description,
            "handler `x` was deleted while handling this signal"
        );
    }
    // Well inside the default 60 s deadline: the delete, not the deadline, ended them.
    assert!(start.elapsed() < WAIT, "took {:?}", start.elapsed());
    eprintln!("the delete answered both sleeps in {:?}", start.elapsed());
    let pong = answer(queued).await.expect("the queued signal is handled");
    assert_eq!(pong["version"], "sleeper");
    until("the instances are released", || {
        instances(&host, "x") == Some(0)
    })
    .await;
    assert!(host.handlers().iter().all(|h| h.name != "x"));
    neighbour_answers(&host).await;
}
