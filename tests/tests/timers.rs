//! Durable timers, through the `reminders` agent: a reminder fires once, a cancelled one
//! never does, one scheduled before a restart fires after it (late, never lost), and one
//! whose delivery a transport loses fires again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use switchboard::db::Db;
use switchboard::signal::{Body, Signal};
use switchboard::transport::{InProcess, Inbound, Publish, Transport};
use switchboard::{Backends, Host};
use switchboard_tests::{WAIT, call, guest, next};

/// A host keeping its store in `dir`, with `reminders` deployed.
async fn host_in(dir: &Path) -> Host {
    host_deploying_after(dir, Duration::ZERO).await
}

/// A host keeping its store in `dir`, with `reminders` deployed `delay` after it starts.
async fn host_deploying_after(dir: &Path, delay: Duration) -> Host {
    let db = Db::open(&dir.join("switchboard.redb")).expect("opening the store");
    let backends = Backends::new(Arc::new(InProcess::default()), db);
    let host = Host::open(switchboard_tests::config(), backends).expect("starting a host");
    tokio::time::sleep(delay).await;
    host.deploy("reminders", guest("reminders"), None)
        .await
        .expect("deploying reminders");
    host
}

/// A fresh directory for one test's store.
fn store_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchboard-timers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `agent`'s reminders until `done` holds, or panics after [`WAIT`].
async fn until(
    host: &Host,
    agent: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = call(host, agent, "Get", json!({})).await.unwrap();
        if done(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{agent} did not get there: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reminder fires once, is recorded in the agent's state and pushed to its user; a
/// cancelled one never fires.
#[tokio::test]
async fn a_reminder_fires_once_and_a_cancelled_one_never() {
    let dir = store_dir("fires");
    let host = host_in(&dir).await;
    let mut ann = host.connect("user:ann");
    let agent = "agent:reminders/ann";
    let kept = call(
        &host,
        agent,
        "Remind",
        json!({"text": "tea", "after_ms": 300}),
    )
    .await
    .unwrap();
    let dropped = call(
        &host,
        agent,
        "Remind",
        json!({"text": "nap", "after_ms": 200}),
    )
    .await
    .unwrap();
    let cancelled = call(&host, agent, "Cancel", json!({"id": dropped["id"]}))
        .await
        .unwrap();
    assert_eq!(cancelled, json!({"cancelled": true}));
    let seen = until(&host, agent, |s| {
        s["fired"].as_array().is_some_and(|f| !f.is_empty())
    })
    .await;
    let pushed = next(&mut ann).await;
    assert_eq!(pushed.envelope.from, agent);
    // A reminder due after the cancelled one's time fires next: timers fire in due order
    // and the agent takes its signals in order, so the cancelled one would have come first.
    call(
        &host,
        agent,
        "Remind",
        json!({"text": "later", "after_ms": 50}),
    )
    .await
    .unwrap();
    let seen_later = until(&host, agent, |s| {
        s["fired"].as_array().is_some_and(|f| f.len() >= 2)
    })
    .await;
    let texts: Vec<_> = seen_later["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].clone())
        .collect();
    assert_eq!(texts, [json!("tea"), json!("later")], "nothing else fired");
    let fired = seen["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{seen}");
    assert_eq!(
        (fired[0]["id"].clone(), fired[0]["text"].clone()),
        (kept["id"].clone(), json!("tea"))
    );
    assert_eq!(seen["pending"], json!({}));
    let metrics = host.router().render_metrics();
    assert!(
        metrics.contains(r#"switchboard_timers_fired_total{handler="reminders"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchboard_timers_cancelled_total{handler="reminders"} 1"#),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reminder scheduled before the host stops fires after it starts again, from the store,
/// even though it fell due while nothing served its agent (the new host starts its timers
/// at once, and deploys `reminders` a second later): it waits in the store until taken.
#[tokio::test]
async fn a_timer_scheduled_before_a_restart_fires_after_it() {
    let dir = store_dir("restart");
    let agent = "agent:reminders/bo";
    {
        let host = host_in(&dir).await;
        let scheduled = call(
            &host,
            agent,
            "Remind",
            json!({"text": "call", "after_ms": 400}),
        )
        .await
        .unwrap();
        assert!(scheduled["id"].is_string());
        let seen = call(&host, agent, "Get", json!({})).await.unwrap();
        assert_eq!(seen["fired"], json!([]));
        host.remove("reminders");
    }
    // The first host is gone before the timer is due; its store file is closed once every
    // task holding it has ended, so open the next one when it can be.
    let deadline = tokio::time::Instant::now() + WAIT;
    let host = loop {
        match Db::open(&dir.join("switchboard.redb")) {
            Ok(db) => {
                drop(db);
                break host_deploying_after(&dir, Duration::from_secs(1)).await;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the store stayed locked: {e}"),
        }
    };
    let seen = until(&host, agent, |s| {
        s["fired"].as_array().is_some_and(|f| !f.is_empty())
    })
    .await;
    assert_eq!(seen["fired"][0]["text"], "call", "{seen}");
    assert_eq!(seen["pending"], json!({}));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A timer whose address nothing has served for long past its time (here: due at the
/// epoch, for a handler never deployed) is not retried forever: it becomes a dead letter
/// of its handler, which an operator can list and replay.
#[tokio::test]
async fn a_timer_nothing_serves_for_long_becomes_a_dead_letter() {
    let dir = store_dir("unserved");
    let host = host_in(&dir).await;
    let agent = "agent:reminders/cy";
    let scheduled = call(
        &host,
        agent,
        "RemindAt",
        json!({"text": "lost?", "at_ms": 1, "to": "ghost"}),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let letters = loop {
        let letters = host
            .router()
            .dead_letters()
            .list(Some("reminders"), 0, 10)
            .unwrap();
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter for the timer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.signal.envelope.headers.get("switchboard-timer"),
        scheduled["id"].as_str().map(str::to_owned).as_ref()
    );
    let switchboard::Body::Message(m) = &letter.signal.body else {
        panic!("{letter:?}")
    };
    assert_eq!((m.to.as_str(), m.message_type.as_str()), ("ghost", "Fire"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host with `storm` and `echo` deployed, on `config`.
async fn storm_host(config: switchboard::HostConfig) -> Host {
    let host = Host::new(config).expect("starting a host");
    for name in ["storm", "echo"] {
        host.deploy(name, guest(name), None)
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    host
}

/// Waits until `storm` has handled `n` ticks; how long that took from `since`.
async fn ticks_reach(host: &Host, n: u64, since: tokio::time::Instant) -> Duration {
    let deadline = since + WAIT;
    loop {
        let ticks = call(host, "storm", "Ticks", json!({})).await.unwrap();
        if ticks.as_u64().unwrap_or(0) >= n {
            return since.elapsed();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "storm handled {ticks} ticks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A timer that schedules itself again at once is paced: a fired timer starts a fresh
/// causal chain, so the depth limit cannot end the loop, but any timer scheduled by a turn
/// descending from a fired timer (directly, or through a message to another turn) fires
/// no sooner than `timer_min_interval`. Six ticks take at least five intervals. (Unpaced,
/// such a loop ran 48,708 times in 60 s and never ended.)
#[tokio::test]
async fn a_loop_through_timers_is_paced() {
    for relay in [false, true] {
        let host = storm_host(switchboard::HostConfig {
            timer_min_interval: Duration::from_millis(200),
            ..switchboard_tests::config()
        })
        .await;
        let started = tokio::time::Instant::now();
        call(&host, "storm", "TimerLoop", json!({"n": 1, "relay": relay}))
            .await
            .unwrap();
        let took = ticks_reach(&host, 6, started).await;
        assert!(
            took >= Duration::from_millis(1000),
            "relay {relay}: six ticks in {took:?}"
        );
    }
}

/// A handler's timers fire at most `timer_fires_per_second` a second, so a hundred due at
/// once (each scheduling itself again) cannot take the host: 100 ticks at 20 a second span
/// at least three whole seconds, and a neighbour answers meanwhile.
#[tokio::test]
async fn a_handlers_timer_firings_are_capped_per_second() {
    let host = storm_host(switchboard::HostConfig {
        timer_fires_per_second: 20,
        timer_min_interval: Duration::from_millis(100),
        ..switchboard_tests::config()
    })
    .await;
    let started = tokio::time::Instant::now();
    call(&host, "storm", "TimerLoop", json!({"n": 100}))
        .await
        .unwrap();
    let echoed = call(&host, "echo", "Ping", json!({"during": "the attack"}))
        .await
        .unwrap();
    assert_eq!(echoed, json!({"during": "the attack"}));
    let took = ticks_reach(&host, 100, started).await;
    assert!(took >= Duration::from_secs(3), "100 ticks in {took:?}");
    let echoed = call(&host, "echo", "Ping", json!({"after": "the attack"}))
        .await
        .unwrap();
    assert_eq!(echoed, json!({"after": "the attack"}));
}

/// A transport that learns every timer's outcome later (as a network transport does), and
/// drops the promise of the first `lose` of them unkept with their signal: lost on the way.
/// Everything else goes through the in-process transport.
struct LosingTimers {
    inner: InProcess,
    lose: AtomicUsize,
    lost: AtomicUsize,
}

impl Transport for LosingTimers {
    fn attach(&self, local: Weak<dyn Inbound>) {
        self.inner.attach(local);
    }

    fn publish(&self, signal: Signal) -> Publish {
        let fired = matches!(&signal.body, Body::Message(m) if m.message_type == "Fire");
        if !fired {
            return self.inner.publish(signal);
        }
        let (promise, later) = Publish::later(&signal);
        let losing = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if losing {
            self.lost.fetch_add(1, Ordering::SeqCst);
            drop((promise, signal));
            return later;
        }
        let outcome = self.inner.publish(signal);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            promise.keep(outcome.outcome().await.map_err(|u| u.reason));
        });
        later
    }
}

/// A due timer whose delivery the transport loses (its promise dropped unkept) is not taken
/// for delivered: it stays stored and fires again, once. On the code before, the timer loop
/// removed a timer as soon as the transport took it, and a dropped promise read as
/// accepted, so the reminder never fired.
#[tokio::test]
async fn a_timer_lost_by_the_transport_fires_again() {
    let dir = store_dir("lost");
    let db = Db::open(&dir.join("switchboard.redb")).expect("opening the store");
    let transport = Arc::new(LosingTimers {
        inner: InProcess::default(),
        lose: AtomicUsize::new(1),
        lost: AtomicUsize::new(0),
    });
    let host = Host::open(
        switchboard_tests::config(),
        Backends::new(transport.clone(), db),
    )
    .expect("starting a host");
    host.deploy("reminders", guest("reminders"), None)
        .await
        .expect("deploying reminders");
    let agent = "agent:reminders/bo";
    let kept = call(
        &host,
        agent,
        "Remind",
        json!({"text": "tea", "after_ms": 100}),
    )
    .await
    .unwrap();
    let seen = until(&host, agent, |s| {
        s["fired"].as_array().is_some_and(|f| !f.is_empty())
    })
    .await;
    assert_eq!(
        transport.lost.load(Ordering::SeqCst),
        1,
        "the first firing was lost"
    );
    let fired = seen["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{seen}");
    assert_eq!(fired[0]["id"], kept["id"]);
    assert_eq!(seen["pending"], json!({}));
    let _ = std::fs::remove_dir_all(&dir);
}
