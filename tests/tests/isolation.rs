//! Sandboxing end to end: each misbehaving guest gets its ErrorReply, and the host, that
//! handler and every other handler keep serving, checked by a follow-up signal.

use std::time::Duration;

use serde_json::json;
use switchboard::signal::code;
use switchboard::{Failure, Host, Limits};
use switchboard_tests::{call, guest, tight_limits};

async fn chaos_host(limits: Limits) -> Host {
    let host = Host::new(switchboard_tests::config()).unwrap();
    host.deploy("chaos", guest("chaos"), Some(limits))
        .await
        .unwrap();
    host.deploy("echo", guest("echo"), None).await.unwrap();
    host
}

/// Proves `chaos` itself and its neighbour `echo` both answer a follow-up.
async fn both_still_answer(host: &Host) {
    assert_eq!(
        call(host, "chaos", "Ping", json!({})).await.unwrap(),
        json!({})
    );
    assert_eq!(
        call(host, "echo", "Ping", json!({"ok": 1})).await.unwrap(),
        json!({"ok": 1})
    );
}

/// Waits until `chaos` has been handed `n` signals (counted as each one starts).
async fn until_handling(host: &Host, n: u64) {
    let deadline = tokio::time::Instant::now() + switchboard_tests::WAIT;
    loop {
        let handled = host
            .handlers()
            .into_iter()
            .find(|h| h.name == "chaos")
            .map_or(0, |h| h.handled);
        if handled >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chaos was handed {handled} signals"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends one misbehaving message, returns its failure, and proves both handlers still work.
async fn misbehave(message_type: &str, payload: serde_json::Value) -> Failure {
    let host = chaos_host(tight_limits()).await;
    let failure = call(&host, "chaos", message_type, payload)
        .await
        .unwrap_err();
    both_still_answer(&host).await;
    let info = host
        .handlers()
        .into_iter()
        .find(|h| h.name == "chaos")
        .unwrap();
    assert_eq!(info.handled, 2);
    failure
}

/// An endless loop is stopped at the CPU limit: 507.
#[tokio::test]
async fn infinite_loop_hits_cpu_limit() {
    let failure = misbehave("Spin", json!({})).await;
    assert_eq!(failure.code, code::LIMIT, "{failure}");
    assert!(failure.description.contains("CPU"), "{failure}");
}

/// Unbounded allocation is stopped at the memory limit: 507.
#[tokio::test]
async fn memory_hog_hits_memory_limit() {
    let failure = misbehave("Hog", json!({})).await;
    assert_eq!(failure.code, code::LIMIT, "{failure}");
    assert!(failure.description.contains("memory"), "{failure}");
}

/// A panic traps the instance: 500, and a fresh instance serves the next signal.
#[tokio::test]
async fn panic_is_500() {
    let failure = misbehave("Panic", json!({})).await;
    assert_eq!(failure.code, code::TRAPPED, "{failure}");
    // The help speaks to authors of any language, not only Rust.
    let help = failure.help.unwrap_or_default();
    assert!(help.contains("uncaught exception"), "{help}");
}

/// Unbounded recursion overflows the stack (a Rust guest's stack lives in its linear memory,
/// so this shows as an out-of-bounds access): 500, not a host crash.
#[tokio::test]
async fn deep_recursion_is_500() {
    let failure = misbehave("Recurse", json!({"depth": 100_000_000u64})).await;
    assert_eq!(failure.code, code::TRAPPED, "{failure}");
    assert!(failure.description.contains("trapped"), "{failure}");
}

/// A reply over the maximum message size is refused: 413.
#[tokio::test]
async fn oversized_reply_is_413() {
    let failure = misbehave("Bloat", json!({"bytes": 2u64 << 20})).await;
    assert_eq!(failure.code, code::TOO_LARGE, "{failure}");
    let host = chaos_host(tight_limits()).await;
    let small = call(&host, "chaos", "Bloat", json!({"bytes": 10}))
        .await
        .unwrap();
    assert_eq!(small.as_str().map(str::len), Some(10));
}

/// Guest data past what one host call takes (twice the maximum message size) is refused
/// with 413 naming the size limits, not 500 with wasmtime's words: a 3 MiB reply, a 4 MiB
/// state value, a message with 100,000 headers. Both handlers answer after each.
#[tokio::test]
async fn oversized_guest_data_is_413() {
    for (message_type, payload) in [
        ("Bloat", json!({"bytes": 3u64 << 20})),
        ("BigState", json!({"bytes": 4u64 << 20})),
        ("Headers", json!({"n": 100_000})),
    ] {
        let failure = misbehave(message_type, payload).await;
        assert_eq!(failure.code, code::TOO_LARGE, "{message_type}: {failure}");
        assert!(
            failure.description.contains("size limits"),
            "{message_type}: {failure}"
        );
    }
}

/// While one handler spins, other handlers answer: a stuck guest holds only its own worker.
#[tokio::test]
async fn a_spinning_handler_does_not_stall_others() {
    let limits = Limits {
        cpu_time: Duration::from_secs(2),
        ..Limits::default()
    };
    let host = chaos_host(limits).await;
    let spin = tokio::spawn({
        let host = host.clone();
        async move { call(&host, "chaos", "Spin", json!({})).await }
    });
    until_handling(&host, 1).await;
    for n in 0..20 {
        assert_eq!(
            call(&host, "echo", "Ping", json!({"n": n})).await.unwrap(),
            json!({"n": n})
        );
    }
    assert!(!spin.is_finished(), "the spin ended before echo was tested");
    assert_eq!(spin.await.unwrap().unwrap_err().code, code::LIMIT);
}

/// A full mailbox answers 503 at once rather than queueing without bound.
#[tokio::test]
async fn full_mailbox_is_503() {
    let limits = Limits {
        mailbox: 1,
        ..tight_limits()
    };
    let host = chaos_host(limits).await;
    let spawn = |kind: &'static str| {
        let host = host.clone();
        tokio::spawn(async move { call(&host, "chaos", kind, json!({})).await })
    };
    let spin = spawn("Spin");
    until_handling(&host, 1).await;
    let pings: Vec<_> = (0..4).map(|_| spawn("Ping")).collect();
    let mut overloaded = 0;
    let mut answered = 0;
    for ping in pings {
        match ping.await.unwrap() {
            Err(failure) if failure.code == code::OVERLOADED => overloaded += 1,
            Ok(_) => answered += 1,
            Err(failure) => panic!("unexpected {failure}"),
        }
    }
    // The spin is in flight and the mailbox holds one: that ping waits, three are refused.
    assert_eq!((answered, overloaded), (1, 3));
    assert_eq!(spin.await.unwrap().unwrap_err().code, code::LIMIT);
    assert_eq!(
        call(&host, "chaos", "Ping", json!({})).await.unwrap(),
        json!({})
    );
}

/// A guest that is not a component, or a component of another world, never goes live.
#[tokio::test]
async fn bad_components_are_refused_and_change_nothing() {
    let host = Host::new(switchboard_tests::config()).unwrap();
    let err = host
        .deploy("junk", b"not wasm".to_vec(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not WebAssembly"), "{err}");
    let err = host
        .deploy("Bad Name", guest("echo"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid handler name"), "{err}");
    assert!(host.handlers().is_empty());
}

/// What a guest prints to stderr reaches the host's log, through the per-handler rate limit:
/// 300 lines in one signal pass the burst of 100 and the rest are counted as suppressed
/// (with stdio discarded, nothing would be counted), and both handlers go on serving.
#[tokio::test]
async fn printed_lines_reach_the_log_rate_limited() {
    let host = chaos_host(Limits::default()).await;
    let printed = call(&host, "chaos", "Print", json!({"n": 300})).await;
    assert_eq!(printed.unwrap(), json!(300));
    let suppressed = || {
        let metrics = host.router().metrics();
        let labels = switchboard::metrics::Metrics::handler("chaos");
        metrics.log_suppressed.get_or_create(&labels).get()
    };
    // The guest's stream is written by a background task: wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while suppressed() < 150 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count = suppressed();
    assert!(
        (150..=200).contains(&count),
        "suppressed {count} of 300 lines"
    );
    both_still_answer(&host).await;
}
