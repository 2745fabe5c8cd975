//! Nothing is lost silently: every signal the host accepts is handled, answered, kept as a
//! dead letter, or (a reply) dropped and counted; and what the host cannot keep it refuses
//! at the source.

use serde_json::json;
use switchboard::dead_letters::DeadReason;
use switchboard::router::{Accepted, CALLBACK_CAP};
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
            "switchboard_dead_letters_total{handler=\"audit\",kind=\"EVENT\",reason=\"mailbox_full\"}"
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

/// When the dead-letter store has no room for a full subscriber's copy, that copy is
/// refused at its source and counted, never accepted and then lost: every event is still
/// emitted, and accepted + refused copies = events sent.
#[tokio::test]
async fn a_full_dead_letter_store_refuses_copies_at_the_source() {
    const EVENTS: usize = 20;
    let config = HostConfig {
        dead_letter_capacity: 5,
        ..switchboard_tests::config()
    };
    let host = audit_host(config, 2).await;
    let mut seen = Accepted::default();
    for _ in 0..EVENTS {
        let accepted = host
            .emit("UserRegistered", json(json!({})))
            .await
            .expect("an event is never refused whole for a subscriber's failures");
        seen.delivered += accepted.delivered;
        seen.dead_lettered += accepted.dead_lettered;
        seen.refused += accepted.refused;
    }
    assert_eq!(
        (seen.delivered, seen.dead_lettered, seen.refused),
        (2, 5, EVENTS - 7),
        "two in the mailbox, five kept, the rest refused"
    );
    assert!(host.drain(WAIT).await);
    assert_eq!(
        audit_entries(&host).await,
        2,
        "refused copies reached nobody"
    );
    assert_eq!(
        metric(&host, "switchboard_refused_total{kind=\"EVENT\""),
        (EVENTS - 7) as u64
    );
    assert_eq!(
        metric(&host, "switchboard_accepted_total{kind=\"EVENT\"}"),
        7
    );
}

/// One stuck subscriber never takes the dead-letter store from anyone else. An event storm
/// at `audit` (mailbox 2, stuck behind it) fills its share of the store (5); from then on
/// its copies alone are refused at the source and counted, while `welcome`, subscribed to
/// the same event, gets every one, an unrelated presence event still reaches `lobby`, and
/// delivered + dead-lettered + refused = subscribers x events. (With one store-wide bound,
/// the stuck subscriber's letters filled it and every event on the host was refused.)
#[tokio::test]
async fn one_stuck_subscriber_never_costs_another_handler_its_events() {
    const EVENTS: usize = 300;
    let config = HostConfig {
        dead_letter_capacity: 20,
        dead_letter_handler_capacity: 5,
        ..switchboard_tests::config()
    };
    let host = audit_host(config, 2).await;
    for other in ["welcome", "lobby"] {
        host.deploy(other, guest(other), None).await.unwrap();
    }
    let mut seen = Accepted::default();
    for n in 0..EVENTS {
        let accepted = host
            .emit(
                "UserRegistered",
                json(json!({"user_id": format!("u{n}"), "name": "N"})),
            )
            .await
            .expect("a stuck subscriber never gets an event refused whole");
        seen.delivered += accepted.delivered;
        seen.dead_lettered += accepted.dead_lettered;
        seen.refused += accepted.refused;
    }
    assert_eq!(seen.dead_lettered, 5, "audit's share, and no more");
    assert_eq!(
        seen.delivered + seen.dead_lettered + seen.refused,
        2 * EVENTS,
        "every copy is delivered, kept or refused"
    );
    assert_eq!(
        metric(
            &host,
            "switchboard_dead_letters_refused_total{handler=\"audit\"}"
        ),
        seen.refused as u64
    );
    let online = host
        .emit("UserOnline", json(json!({"user": "ann"})))
        .await
        .expect("a presence event is never refused for another handler's failures");
    assert_eq!(online.delivered, 1, "lobby took it");
    assert!(host.drain(WAIT).await);
    assert_eq!(
        metric(
            &host,
            "switchboard_signals_total{handler=\"welcome\",kind=\"EVENT\""
        ),
        EVENTS as u64,
        "the other subscriber got every event"
    );
    let who = call(&host, "lobby", "Who", json!({})).await.unwrap();
    assert!(who.to_string().contains("ann"), "{who}");
    let store = host.router().dead_letters();
    assert_eq!(store.used_by("audit"), 5);
    assert_eq!(store.len(), 5);
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
    let message = host.message("user:ann", "echo", "Ping", json(json!({ "n": 1 })));
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
