//! Nothing is lost silently: every signal the host accepts is handled, answered, kept as a
//! dead letter, or (a reply) dropped and counted; and what the host cannot keep it refuses
//! at the source.

use serde_json::json;
use switchboard::dead_letters::DeadReason;
use switchboard::router::{CALLBACK_CAP, Reason};
use switchboard::signal::code;
use switchboard::{Host, HostConfig, Limits};
use switchboard_tests::{WAIT, call, guest, json};

/// A host with `audit` deployed with a mailbox of `mailbox` signals.
async fn audit_host(config: HostConfig, mailbox: u32) -> Host {
    let host = Host::new(config).unwrap();
    let limits = Limits {
        mailbox,
        ..Limits::default()
    };
    host.deploy("audit", guest("audit"), Some(limits))
        .await
        .unwrap();
    host
}

async fn audit_entries(host: &Host) -> usize {
    let log = call(host, "audit", "GetAudit", json!({})).await.unwrap();
    log["entries"].as_array().unwrap().len()
}

/// The value of the metric line starting with `prefix`, 0 when absent.
fn metric(host: &Host, prefix: &str) -> u64 {
    let text = host.router().render_metrics();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// An event flood at a small mailbox: delivered + dead-lettered = accepted, with zero
/// unaccounted; the handler saw exactly the delivered ones, and a replayed dead letter
/// reaches it once.
#[tokio::test]
async fn an_event_flood_is_fully_accounted_for() {
    const EVENTS: usize = 3000;
    let host = audit_host(switchboard_tests::config(), 8).await;
    let (mut delivered, mut dead) = (0, 0);
    // The in-process transport answers at once, so the await never yields: on this
    // single-threaded runtime the worker cannot drain the mailbox meanwhile, and most
    // events must be refused by it.
    for n in 0..EVENTS {
        let accepted = host
            .emit("UserRegistered", json(json!({ "n": n })))
            .await
            .expect("the dead-letter store has room");
        delivered += accepted.delivered;
        dead += accepted.dead_lettered;
    }
    assert_eq!(delivered + dead, EVENTS, "every event went somewhere");
    assert!(dead > 0, "the flood must have overflowed the mailbox");
    assert!(host.drain(WAIT).await);

    assert_eq!(
        audit_entries(&host).await,
        delivered,
        "audit saw exactly the delivered ones"
    );
    let store = host.router().dead_letters();
    assert_eq!(store.len(), dead);
    assert_eq!(
        metric(&host, "switchboard_accepted_total{kind=\"EVENT\"}"),
        EVENTS as u64
    );
    assert_eq!(
        metric(
            &host,
            "switchboard_dead_letters_total{handler=\"audit\",reason=\"mailbox_full\"}"
        ),
        dead as u64
    );
    assert_eq!(
        metric(
            &host,
            "switchboard_signals_total{handler=\"audit\",kind=\"EVENT\""
        ),
        delivered as u64
    );

    let letters = store.list(Some("audit"), 0, 10).unwrap();
    assert_eq!(letters.len(), 10);
    assert_eq!(letters[0].reason, DeadReason::MailboxFull);
    host.router().redeliver(&letters[0]).unwrap();
    assert!(store.remove(letters[0].id).unwrap());
    assert!(host.drain(WAIT).await);
    assert_eq!(
        audit_entries(&host).await,
        delivered + 1,
        "the replay reached audit once"
    );
    assert_eq!(store.len(), dead - 1);
    assert_eq!(store.purge(Some("audit")).unwrap(), dead - 1);
    assert!(store.is_empty());
}

/// When the dead-letter store cannot promise room for a full subscriber's copy, the event is
/// refused at its source and no subscriber gets it.
#[tokio::test]
async fn a_full_dead_letter_store_refuses_at_the_source() {
    let config = HostConfig {
        dead_letter_capacity: 5,
        ..switchboard_tests::config()
    };
    let host = audit_host(config, 2).await;
    let mut accepted = 0;
    let refusal = loop {
        match host.emit("UserRegistered", json(json!({}))).await {
            Ok(a) => accepted += a.total(),
            Err(undelivered) => break undelivered,
        }
        assert!(accepted < 100, "the store should have filled up");
    };
    assert_eq!(refusal.reason, Reason::DeadLettersFull);
    assert_eq!(accepted, 2 + 5, "two in the mailbox, five kept");
    assert!(host.drain(WAIT).await);
    assert_eq!(
        audit_entries(&host).await,
        2,
        "the refused event reached nobody"
    );
    assert_eq!(metric(&host, "switchboard_refused_total{kind=\"EVENT\""), 1);
}

/// A handler that sends more messages than its mailbox holds gets every reply back: the
/// mailbox keeps room for them, and sends past the cap fail with 429 instead.
#[tokio::test]
async fn replies_to_a_handlers_own_sends_are_never_refused() {
    let host = Host::new(switchboard_tests::config()).unwrap();
    host.deploy("echo", guest("echo"), None).await.unwrap();
    let tiny = Limits {
        mailbox: 4,
        ..Limits::default()
    };
    host.deploy("fanout", guest("fanout"), Some(tiny))
        .await
        .unwrap();
    let count = CALLBACK_CAP + 20;
    let fanned = call(
        &host,
        "fanout",
        "Fan",
        json!({ "to": "echo", "message_type": "Ping", "count": count }),
    )
    .await
    .unwrap();
    assert_eq!(fanned["sent"], CALLBACK_CAP);
    let refused = fanned["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 20);
    assert!(refused.iter().all(|c| c == code::TOO_MANY));

    assert!(host.drain(WAIT).await);
    let tally = call(&host, "fanout", "Tally", json!({})).await.unwrap();
    assert_eq!(tally, json!({ "replies": CALLBACK_CAP, "errors": 0 }));
    assert!(host.router().dead_letters().is_empty());
    assert_eq!(
        host.router().callbacks().open_for("fanout"),
        0,
        "every place was freed"
    );

    // With the places free again, the handler can send as many again.
    let again = call(
        &host,
        "fanout",
        "Fan",
        json!({ "to": "echo", "message_type": "Ping", "count": CALLBACK_CAP }),
    )
    .await
    .unwrap();
    assert_eq!(again["sent"], CALLBACK_CAP);
}

/// A reply for a client that has disconnected is kept as a dead letter for that client.
#[tokio::test]
async fn a_reply_to_a_gone_client_is_kept() {
    let host = Host::new(switchboard_tests::config()).unwrap();
    host.deploy("echo", guest("echo"), None).await.unwrap();
    let rx = host.connect("user:ann");
    drop(rx);
    let message = Host::message("user:ann", "echo", "Ping", json(json!({ "n": 1 })));
    let id = host.send(message);
    assert!(host.drain(WAIT).await);
    let letters = host.router().dead_letters().list(None, 0, 10).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].handler, "user:ann");
    assert_eq!(letters[0].reason, DeadReason::ClientGone);
    match &letters[0].signal.body {
        switchboard::Body::Reply { reply_to, .. } => assert_eq!(reply_to, &id),
        other => panic!("expected the reply, got {other:?}"),
    }
}
