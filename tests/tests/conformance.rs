//! The start of the conformance suite: signal semantics that must hold the same on one
//! in-process host and on two hosts joined by the two-router test transport
//! (`switchboard_tests::pair`, each host with its own store; deliveries between them take
//! 5 ms and report their outcome later), where the core's single-process assumptions meet
//! what a network transport will.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use switchboard::clock::Clock;
use switchboard::db::Db;
use switchboard::nats::{Nats, NatsOptions};
use switchboard::router::{AnswerRefused, Answers, Open, OpenMessages};
use switchboard::signal::Body;
use switchboard::signal::code;
use switchboard::transport::Accepted;
use switchboard::transport::Reason;
use switchboard::{Backends, Host, HostConfig, Limits};
use switchboard_tests::nats::NatsServer;
use switchboard_tests::{WAIT, guest, json};

/// Each case runs twice ([`on_both!`]): on one in-process host serving both sides' handlers
/// (`a` and `b` are the same host), and on two hosts joined by the pair. The semantics must
/// not tell them apart.
/// An optional fourth argument gives both hosts' settings.
macro_rules! on_both {
    ($case:ident, $a:expr, $b:expr) => {
        on_both!($case, $a, $b, switchboard_tests::config());
    };
    ($case:ident, $a:expr, $b:expr, $config:expr) => {
        mod $case {
            #[tokio::test]
            async fn in_process() {
                let (a, b) = super::one_host($config, $a, $b).await;
                super::$case(a, b).await;
            }

            #[tokio::test]
            async fn two_hosts() {
                let (a, b) = super::hosts_with($config, $config, $a, $b).await;
                super::$case(a, b).await;
            }
        }
    };
}

/// [`on_both!`], and on two hosts joined through a `nats-server` of the test's own: for the
/// cases whose traffic the NATS transport carries so far (services, answers, pushes to
/// users, events; agents stay on their host until a later part of the cluster).
macro_rules! on_all {
    ($case:ident, $a:expr, $b:expr) => {
        on_all!($case, $a, $b, switchboard_tests::config());
    };
    ($case:ident, $a:expr, $b:expr, $config:expr) => {
        mod $case {
            #[tokio::test]
            async fn in_process() {
                let (a, b) = super::one_host($config, $a, $b).await;
                super::$case(a, b).await;
            }

            #[tokio::test]
            async fn two_hosts() {
                let (a, b) = super::hosts_with($config, $config, $a, $b).await;
                super::$case(a, b).await;
            }

            #[tokio::test]
            async fn over_nats() {
                let (a, b, _server) = super::over_nats_with($config, $a, $b).await;
                super::$case(a, b).await;
            }
        }
    };
}

/// Two hosts joined through a `nats-server` of their own, with `a` or `b` deployed; the
/// server stops when the last value is dropped.
async fn over_nats(a: &[&str], b: &[&str]) -> (Host, Host, NatsServer) {
    over_nats_with(switchboard_tests::config(), a, b).await
}

/// [`over_nats`] with both hosts' settings.
async fn over_nats_with(config: HostConfig, a: &[&str], b: &[&str]) -> (Host, Host, NatsServer) {
    let server = NatsServer::start();
    let (host_a, nats_a) = server.joined(config.clone(), "a").await;
    let (host_b, nats_b) = server.joined(config, "b").await;
    deploy_each(&host_a, a, &host_b, b).await;
    // Each host learns of the other's subscribers within milliseconds of their deploy; the
    // cases start once both know the same.
    until("both hosts know every subscriber", || async {
        nats_a.subscribers_known() == nats_b.subscribers_known()
    })
    .await;
    (host_a, host_b, server)
}

/// A host joined to `server` as `id`, with the test settings and its join options changed by
/// `tune`.
async fn joined_tuned(
    server: &NatsServer,
    id: &str,
    tune: impl Fn(&mut NatsOptions),
) -> (Host, Arc<Nats>) {
    let mut options = server.options(id);
    tune(&mut options);
    server
        .joined_with(switchboard_tests::config(), &options)
        .await
}

/// Deploys `a` on host `host_a` and `b` on `host_b`.
async fn deploy_each(host_a: &Host, a: &[&str], host_b: &Host, b: &[&str]) {
    for (host, names) in [(host_a, a), (host_b, b)] {
        for name in names {
            host.deploy(name, guest(name), None)
                .await
                .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        }
    }
}

/// One in-process host with the handlers of both sides, as both sides.
async fn one_host(config: HostConfig, a: &[&str], b: &[&str]) -> (Host, Host) {
    let host = Host::new(config).expect("starting a host");
    for name in a.iter().chain(b) {
        host.deploy(name, guest(name), None)
            .await
            .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
    }
    (host.clone(), host)
}

/// Polls `holds` every 10 ms until it is true; fails the test naming `what` after [`WAIT`].
async fn until<F: Future<Output = bool>>(what: &str, mut holds: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !holds().await {
        assert!(tokio::time::Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `handler` on `host` has handled a message without error.
async fn handled_one(host: &Host, handler: &str) {
    let line =
        format!(r#"switchboard_signals_total{{handler="{handler}",kind="MESSAGE",outcome="ok"}}"#);
    until(&format!("{handler} handled a message"), || async {
        switchboard_tests::metric(host, &line) >= 1.0
    })
    .await;
}

/// Waits until `audit` on `host` has recorded an event.
async fn audit_saw_an_event(host: &Host) {
    until("audit recorded an event", || async {
        let log = switchboard_tests::call(host, "audit", "GetAudit", json!({})).await;
        log.unwrap()["entries"]
            .as_array()
            .is_some_and(|entries| !entries.is_empty())
    })
    .await;
}

/// Two hosts on one pair, each with its own settings (and so its clock) and `a` or `b`
/// deployed.
async fn hosts_with(
    config_a: HostConfig,
    config_b: HostConfig,
    a: &[&str],
    b: &[&str],
) -> (Host, Host) {
    let (end_a, end_b) = switchboard_tests::pair::pair(Duration::from_millis(5));
    let open = |config, end| {
        let backends = Backends::new(end, Db::in_memory().unwrap());
        Host::open(config, backends).expect("starting a host")
    };
    let (host_a, host_b) = (open(config_a, end_a), open(config_b, end_b));
    deploy_each(&host_a, a, &host_b, b).await;
    (host_a, host_b)
}

/// Proves a guest's awaited request reaches a handler on the other host and its reply comes
/// back to the guest waiting for it: `orders` on A forwards to `echo` on B. Before a reply
/// arriving from the transport went to the waiter, it was offered to `orders`' mailbox as a
/// callback reply, and the request timed out.
async fn a_guests_request_is_answered_across_hosts(a: Host, _b: Host) {
    let forward = json(json!({
        "to": "echo", "message_type": "Ping", "payload": {"n": 7}, "timeout_ms": 5000
    }));
    let reply = a
        .call("orders", "Forward", forward, WAIT)
        .await
        .expect("orders' forwarded request is answered");
    assert_eq!(
        reply.to_value()["reply"],
        json!({"n": 7}),
        "{}",
        reply.as_str()
    );
}

/// Proves a caller outside any guest (HTTP `?wait`, `Host::request`) gets the answer a
/// handler on the other host gives: the message carries the caller's host's inbox, and the
/// answer comes back there to its waiter. Before, the answer went to `host`, which names no
/// host, and the caller got 504.
async fn a_hosts_request_is_answered_across_hosts(a: Host, _b: Host) {
    let reply = a
        .request("echo", "Ping", json(json!({"n": 3})), WAIT)
        .await
        .expect("echo on B answers a caller on A");
    assert_eq!(reply.into_outcome().unwrap().to_value(), json!({"n": 3}));
}

/// Proves a message nothing serves on either host is answered 404 at once, and one to a
/// handler only the other host serves is delivered there.
async fn routes_are_found_on_either_host_or_refused(a: Host, b: Host) {
    let missing = a
        .call("nobody", "Ping", json(json!({})), WAIT)
        .await
        .expect_err("nothing serves `nobody`");
    assert_eq!(missing.code, 404, "{missing}");
    let id = a.send(a.message("host", "echo", "Ping", json(json!({"n": 1}))));
    assert!(!id.is_empty());
    handled_one(&b, "echo").await;
}

/// Proves an event emitted on one host reaches a subscriber on the other, and the emitter
/// learns (later) that it was taken.
async fn an_event_reaches_a_subscriber_on_the_other_host(a: Host, b: Host) {
    let accepted = a
        .emit("UserRegistered", json(json!({"user_id": "u1"})))
        .await
        .expect("the event is taken");
    assert_eq!(accepted.total(), 1, "{accepted:?}");
    audit_saw_an_event(&b).await;
}

/// Has `fanout` (reached through `host`) send `count` pings to `echo`, all taken.
async fn fan_out_to_echo(host: &Host, count: usize) {
    let fanned = switchboard_tests::call(
        host,
        "fanout",
        "Fan",
        json!({ "to": "echo", "message_type": "Ping", "count": count }),
    )
    .await
    .unwrap();
    assert_eq!(fanned["sent"], count, "{fanned}");
}

/// Proves a handler's `send` to a handler on the other host gets every reply back to its
/// `handle_reply`, and the room kept for those replies is all given back: `fanout` on A
/// sends as many as it may to `echo` on B, twice.
async fn callback_replies_come_back_across_hosts_and_free_their_room(a: Host, _b: Host) {
    let cap = switchboard::router::CALLBACK_CAP;
    for round in 1..=2 {
        fan_out_to_echo(&a, cap).await;
        let tally = || async {
            let tally = switchboard_tests::call(&a, "fanout", "Tally", json!({})).await;
            tally.unwrap()
        };
        until("every reply came back", || async {
            tally().await["replies"] == json!(cap * round)
        })
        .await;
        assert_eq!(tally().await["errors"], 0, "round {round}");
        assert_eq!(
            a.router().callbacks().open_for("fanout"),
            0,
            "round {round}"
        );
    }
}

/// Proves a handler on one host cannot answer a message open on the other (409, and it
/// reaches nobody), and the message still gets its one real answer.
async fn an_answer_forged_on_the_other_host_never_reaches_the_sender(a: Host, b: Host) {
    b.deploy("forger", guest("deferred"), None).await.unwrap();
    let mut ann = a.connect("user:ann");
    let held = a.send(a.message("user:ann", "deferred", "Hold", json(json!({}))));
    // Sent without waiting, the hold may take its time (over NATS, through a queue): it is
    // held before the forger and the release try to answer it.
    until("deferred holds the message", || async {
        (a.handlers().into_iter()).any(|h| h.name == "deferred" && h.handled == 1)
    })
    .await;
    let forged = switchboard_tests::call(&b, "forger", "Forge", json!({ "message_id": held }))
        .await
        .unwrap();
    assert_eq!(forged, json!({"answered": 0, "code": 409}));
    let released = switchboard_tests::call(&a, "deferred", "Release", json!({"payload": "real"}))
        .await
        .unwrap();
    assert_eq!(released, json!({"answered": 1, "code": 0}));
    let answer = switchboard_tests::next(&mut ann).await;
    match &answer.body {
        switchboard::signal::Body::Reply {
            reply_to, payload, ..
        } => {
            assert_eq!(reply_to, &held);
            assert_eq!(payload.to_value(), json!("real"));
        }
        other => panic!("expected the real answer, got {other:?}"),
    }
    assert!(
        ann.try_recv().is_err(),
        "a second answer reached the sender"
    );
}

/// Proves a host whose clock runs 1.2 s ahead of the caller's keeps a message the caller
/// awaits for 1 s until it is answered 300 ms later: the remote side keeps it until its
/// deadline plus 1 s by its own clock, while the caller answers 504 at the deadline by its
/// own. Before, the remote host found the message past its deadline as it arrived and its
/// expiry sweep answered 504 within 100 ms: early, by the caller's clock.
#[tokio::test]
async fn a_remote_clock_ahead_does_not_cut_a_request_early() {
    let ahead = HostConfig {
        clock: Clock::skewed(1_200),
        ..switchboard_tests::config()
    };
    let (a, b) = hosts_with(switchboard_tests::config(), ahead, &[], &["deferred"]).await;
    let asked = tokio::spawn(async move {
        a.request("deferred", "Hold", json(json!({})), Duration::from_secs(1))
            .await
    });
    handled_one(&b, "deferred").await;
    // The handler takes its time: the answer comes 300 ms later, within the caller's 1 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = switchboard_tests::call(&b, "deferred", "Release", json!({"payload": "late"}))
        .await
        .unwrap();
    assert_eq!(released, json!({"answered": 1, "code": 0}));
    let reply = asked
        .await
        .unwrap()
        .expect("the caller gets the answer, not an early 504");
    assert_eq!(reply.into_outcome().unwrap().to_value(), json!("late"));
}

/// Proves a mailbox's byte bound stays on the host that enforces it: `chaos` on B, stalled,
/// with B's mailboxes bounded at 1 MiB, takes one 600 kB message from A and refuses the
/// next. A's sender learns the mailbox is full and to retry later, not B's settings and
/// sizes, which it cannot act on (on one host, `mailbox_bytes.rs` shows the sender gets
/// them). Before, B's bound, sizes and setting crossed in the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_bound_on_the_other_host_stays_there() {
    let bounded = HostConfig {
        mailbox_bytes: 1 << 20,
        ..switchboard_tests::config()
    };
    let (a, b) = hosts_with(switchboard_tests::config(), bounded, &[], &[]).await;
    let stalls = Limits {
        cpu_time: Duration::from_secs(1),
        concurrency: 1,
        ..Limits::default()
    };
    b.deploy("chaos", guest("chaos"), Some(stalls))
        .await
        .unwrap();
    b.emit("Stall", json(json!({}))).await.unwrap();

    let large = || {
        let pad = "x".repeat(600_000);
        a.message("user:tester", "chaos", "Ping", json(json!({ "pad": pad })))
    };
    a.router().offer(large()).await.expect("the first fits");
    let refused = a.router().offer(large()).await.unwrap_err();
    assert_eq!(refused.reason, Reason::Overloaded);
    assert!(refused.over.is_none(), "{:?}", refused.over);
    let failure = refused.failure();
    assert_eq!(failure.code, code::OVERLOADED);
    assert!(failure.description.contains("`chaos` is full"), "{failure}");
    assert!(!failure.description.contains("mailbox_bytes"), "{failure}");
    assert_eq!(failure.help.as_deref(), Some("retry later"));
    let refused_metric = r#"switchboard_refused_total{kind="MESSAGE",reason="overloaded"}"#;
    assert_eq!(switchboard_tests::metric(&a, refused_metric), 1.0);
}

/// Open messages in memory, counting what the router asks of them.
#[derive(Default)]
struct Counted {
    inner: Answers,
    opened: AtomicUsize,
    claimed: AtomicUsize,
}

impl OpenMessages for Counted {
    fn open(&self, open: Open) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.inner.open(open);
    }
    fn defer(&self, id: &str, handler: &str, cap: usize) -> bool {
        self.inner.defer(id, handler, cap)
    }
    fn claim(&self, id: &str, answerer: &str) -> Result<Open, AnswerRefused> {
        self.claimed.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(id, answerer)
    }
    fn claim_any(&self, id: &str) -> Result<Open, AnswerRefused> {
        self.claimed.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_any(id)
    }
    fn hold(&self, open: Open) {
        self.inner.hold(open);
    }
    fn settle(&self, id: &str) {
        self.inner.settle(id);
    }
    fn reopen(&self, id: &str) {
        self.inner.reopen(id);
    }
    fn expire(&self, now: u64) -> Vec<Open> {
        self.inner.expire(now)
    }
    fn is_open(&self, id: &str) -> bool {
        self.inner.is_open(id)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// Proves a host keeps its open messages where its backends say: B's are a table of the
/// test's own, which sees `echo`'s message opened as it is delivered and claimed by its
/// answer, and holds nothing after; A's (in memory) never saw it. A table the router did
/// not go through would count nothing.
#[tokio::test]
async fn open_messages_are_kept_where_the_backends_say() {
    let (end_a, end_b) = switchboard_tests::pair::pair(Duration::from_millis(5));
    let counted = Arc::new(Counted::default());
    let a = Host::open(
        switchboard_tests::config(),
        Backends::new(end_a, Db::in_memory().unwrap()),
    )
    .unwrap();
    let backends_b = Backends {
        open_messages: counted.clone(),
        ..Backends::new(end_b, Db::in_memory().unwrap())
    };
    let b = Host::open(switchboard_tests::config(), backends_b).unwrap();
    b.deploy("echo", guest("echo"), None).await.unwrap();
    let answer = switchboard_tests::call(&a, "echo", "Ping", json!({"n": 3})).await;
    assert_eq!(answer.unwrap(), json!({"n": 3}));
    assert_eq!(counted.opened.load(Ordering::SeqCst), 1);
    assert_eq!(counted.claimed.load(Ordering::SeqCst), 1);
    assert!(counted.is_empty());
    let open_on_a = switchboard_tests::metric(&a, "switchboard_open_messages");
    assert_eq!(open_on_a, 0.0);
}

/// Proves the reply to a handler's send comes back to the host that sent it, where the room
/// for it is kept, though another host runs the same handler: `fanout` on A and on B, `echo`
/// on B; one `Fan` of as many sends as a handler may have open. Every reply is handled (the
/// two hosts' `fanout` handle the cap between them) and neither host keeps room open. Before,
/// NATS gave each reply to either host, and the sender's room stayed taken for each reply the
/// other host handled (for 10 minutes, past which its `send` is 429).
#[tokio::test]
async fn callback_replies_return_to_the_sending_host_over_nats() {
    let (a, b, _server) = over_nats(&["fanout"], &["fanout", "echo"]).await;
    let cap = switchboard::router::CALLBACK_CAP;
    fan_out_to_echo(&a, cap).await;
    let replies = |host: &Host| {
        let line = r#"switchboard_signals_total{handler="fanout",kind="REPLY",outcome="ok"}"#;
        switchboard_tests::metric(host, line)
    };
    until("every reply was handled", || async {
        replies(&a) + replies(&b) == cap as f64
    })
    .await;
    let open = |host: &Host| host.router().callbacks().open_for("fanout");
    assert_eq!(
        (open(&a), open(&b)),
        (0, 0),
        "room kept for replies handled elsewhere"
    );
}

/// Proves what arrives over NATS is checked like any input from outside: from a plain NATS
/// client, text that is no signal is refused with `not_accepted` and a signal over the
/// host's largest with `too_large`, each counted by reason and never delivered; a message
/// whose caller would wait past the end of time is taken like any other; a well-formed signal is
/// delivered, and the host goes on answering.
#[tokio::test]
async fn what_arrives_over_nats_is_checked_like_any_input() {
    let small = HostConfig {
        max_message_bytes: 16 << 10,
        ..switchboard_tests::config()
    };
    let (a, b, server) = over_nats_with(small, &[], &["echo"]).await;
    let outsider = async_nats::connect(server.url.as_str()).await.unwrap();
    let ask = |payload: Vec<u8>| {
        let outsider = outsider.clone();
        async move {
            let answer = outsider
                .request("sb.test.svc.echo", payload.into())
                .await
                .expect("the host answers");
            serde_json::from_slice::<serde_json::Value>(&answer.payload).unwrap()
        }
    };
    assert_eq!(
        ask(b"not a signal".to_vec()).await,
        json!({"reason": "not_accepted"})
    );
    let pad = "x".repeat(32 << 10);
    let large = a.message("user:ann", "echo", "Ping", json(json!({ "pad": pad })));
    let large = serde_json::to_vec(&large).unwrap();
    assert_eq!(ask(large).await, json!({"reason": "too_large"}));
    let refused = |reason: &str| {
        let line = format!(r#"switchboard_foreign_refused_total{{reason="{reason}"}}"#);
        switchboard_tests::metric(&b, &line)
    };
    assert_eq!((refused("undecodable"), refused("too_large")), (1.0, 1.0));
    // A caller said to wait past the end of time changes nothing either.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sb-Awaited", "forever");
    headers.insert("Sb-Awaited-Until", u64::MAX.to_string().as_str());
    let forever = a.message("user:ann", "echo", "Ping", json(json!({"n": 0})));
    let forever = serde_json::to_vec(&forever).unwrap();
    let reply = outsider.new_inbox();
    (outsider.publish_with_reply_and_headers("sb.test.svc.echo", reply, headers, forever.into()))
        .await
        .unwrap();
    outsider.flush().await.unwrap();
    let fine = a.message("user:ann", "echo", "Ping", json(json!({"n": 1})));
    let taken = ask(serde_json::to_vec(&fine).unwrap()).await;
    assert_eq!(taken["delivered"], 1, "{taken}");
    handled_one(&b, "echo").await;
    let answer = switchboard_tests::call(&a, "echo", "Ping", json!({"n": 2})).await;
    assert_eq!(answer.unwrap(), json!({"n": 2}));
}

/// Proves a message someone awaits crosses in one NATS round trip: the host that takes it
/// responds with the answer itself, and nothing is sent to the waiting host's inbox. A
/// plain NATS client listening on A's inbox hears nothing while A's request to `echo` on B
/// is answered, and a refused message (`deferred` does not accept `Nope`) is still
/// answered 404 at once.
/// Before, the answer went to the inbox as a request of its own.
#[tokio::test]
async fn an_awaited_answer_is_the_response_over_nats() {
    let (a, _b, server) = over_nats(&[], &["echo", "deferred"]).await;
    let listener = async_nats::connect(server.url.as_str()).await.unwrap();
    let mut inbox = listener.subscribe("sb.test.inbox.a").await.unwrap();
    listener.flush().await.unwrap();
    for n in 0..3 {
        let answer = switchboard_tests::call(&a, "echo", "Ping", json!({ "n": n })).await;
        assert_eq!(answer.unwrap(), json!({ "n": n }));
    }
    let refused = a.call("deferred", "Nope", json(json!({})), WAIT).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code, 404, "{refused}");
    let heard = tokio::time::timeout(Duration::from_millis(200), inbox.next()).await;
    assert!(heard.is_err(), "A's inbox heard {heard:?}");
}

/// Proves a request NATS hands back to the host it came from is answered there like any
/// other, and leaves nothing waiting: `echo` on A and on B, 20 requests on A, so some reach
/// A's own `echo` through its queue group. Each is answered, and neither host holds a note
/// of an awaited message after. Before, A noted its own requests as awaited elsewhere; their
/// answers went straight to the waiter, so the notes (and the requests' waits on NATS) stayed
/// until the deadline, which then answered them a second time.
#[tokio::test]
async fn requests_to_a_service_on_both_hosts_leave_nothing_waiting() {
    let server = NatsServer::start();
    let (a, nats_a) = server.joined(switchboard_tests::config(), "a").await;
    let (b, nats_b) = server.joined(switchboard_tests::config(), "b").await;
    deploy_each(&a, &["echo"], &b, &["echo"]).await;
    for n in 0..20 {
        let answer = switchboard_tests::call(&a, "echo", "Ping", json!({ "n": n })).await;
        assert_eq!(answer.unwrap(), json!({ "n": n }));
    }
    let handled = |host: &Host| {
        let line = r#"switchboard_signals_total{handler="echo",kind="MESSAGE",outcome="ok"}"#;
        switchboard_tests::metric(host, line)
    };
    assert!(handled(&a) > 0.0 && handled(&b) > 0.0, "both took some");
    assert_eq!((nats_a.awaited(), nats_b.awaited()), (0, 0));
}

/// Proves the mark of an awaited message is only a hint the signal must bear out: a plain
/// NATS client's request for `echo` on B marked as awaited under another message's id is
/// delivered and answered with its outcome at once, and B notes nothing to answer later.
/// Before, B noted the marked id (any id), and the requester got no response.
#[tokio::test]
async fn a_forged_await_mark_notes_nothing() {
    let server = NatsServer::start();
    let (a, _nats_a) = server.joined(switchboard_tests::config(), "a").await;
    let (b, nats_b) = server.joined(switchboard_tests::config(), "b").await;
    deploy_each(&a, &[], &b, &["echo"]).await;
    let mut message = a.message("user:ann", "echo", "Ping", json(json!({})));
    if let Body::Message(m) = &mut message.body {
        m.return_address = Some("inbox:a".to_owned());
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sb-Awaited", "some-other-message");
    let outsider = async_nats::connect(server.url.as_str()).await.unwrap();
    let payload = serde_json::to_vec(&message).unwrap();
    let asked = outsider.request_with_headers("sb.test.svc.echo", headers, payload.into());
    let outcome = tokio::time::timeout(Duration::from_secs(2), asked).await;
    let outcome = outcome.expect("an outcome at once").unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&outcome.payload).unwrap();
    assert_eq!(outcome["delivered"], 1, "{outcome}");
    assert_eq!(nats_b.awaited(), 0);
}

/// Proves a host that leaves the cluster (as it does first when it shuts down) takes no new
/// signals for its services at once, while answers to its own callers still reach it: once
/// B has left, A's request for `echo`, which only B runs, is 404 (no responders, so nothing
/// is given to a host about to stop), and B's request for `mirror` on A is still answered.
#[tokio::test]
async fn a_host_that_leaves_takes_nothing_new_but_its_answers() {
    let (a, b, _server) = over_nats(&[], &["echo"]).await;
    a.deploy("mirror", guest("echo"), None).await.unwrap();
    let answer = switchboard_tests::call(&a, "echo", "Ping", json!({"n": 1})).await;
    assert_eq!(answer.unwrap(), json!({"n": 1}));
    b.router().leave_cluster().await;
    let gone = a.call("echo", "Ping", json(json!({})), WAIT).await;
    assert_eq!(gone.unwrap_err().code, 404);
    let answer = switchboard_tests::call(&b, "mirror", "Ping", json!({"n": 2})).await;
    assert_eq!(answer.unwrap(), json!({"n": 2}));
}

/// Events `handler` on `host` has handled without error.
fn events_handled(host: &Host, handler: &str) -> u64 {
    let line =
        format!(r#"switchboard_signals_total{{handler="{handler}",kind="EVENT",outcome="ok"}}"#);
    switchboard_tests::metric(host, &line) as u64
}

/// Hosts A and B joined to `server` with `tune`d options, `audit` deployed on B, once A
/// knows it subscribes.
async fn audit_on_b(
    server: &NatsServer,
    tune: impl Fn(&mut NatsOptions) + Copy,
) -> (Host, Arc<Nats>, Host) {
    let (a, nats_a) = joined_tuned(server, "a", tune).await;
    let (b, _) = joined_tuned(server, "b", tune).await;
    b.deploy("audit", guest("audit"), None).await.unwrap();
    until("A knows audit", || async {
        nats_a.subscribers_known().contains_key("audit")
    })
    .await;
    (a, nats_a, b)
}

/// Whether the stream holds nothing for `handler` that no host has taken or acknowledged.
async fn settled(nats: &Nats, handler: &str) -> bool {
    let backlog = nats.backlog(handler).await;
    backlog.is_some_and(|b| b.pending == 0 && b.unacknowledged == 0)
}

/// Proves each event is handled once per subscribed handler across the cluster, not once
/// per host: `audit` runs on A and B, `audit2` (the same module under another name) on A
/// alone; of 20 `UserRegistered` emitted on A and B by turns, each counted for both
/// handlers, `audit` handles 20 between its two hosts and `audit2` 20, read once the stream
/// holds nothing pending or unacknowledged for either. Events kept on their host would give
/// `audit2` 10; copies for every host running `audit`, 40 for it.
#[tokio::test]
async fn each_event_is_handled_once_per_subscribed_handler_over_nats() {
    let server = NatsServer::start();
    let (a, nats_a) = server.joined(switchboard_tests::config(), "a").await;
    let (b, nats_b) = server.joined(switchboard_tests::config(), "b").await;
    b.deploy("audit", guest("audit"), None).await.unwrap();
    a.deploy("audit", guest("audit"), None).await.unwrap();
    a.deploy("audit2", guest("audit"), None).await.unwrap();
    until("both hosts know every subscriber", || async {
        nats_a.subscribers_known() == nats_b.subscribers_known()
    })
    .await;
    for n in 0..20 {
        let host = if n % 2 == 0 { &a } else { &b };
        let payload = json(json!({ "user_id": format!("u{n}") }));
        let accepted = host.emit("UserRegistered", payload).await.unwrap();
        assert_eq!(accepted.delivered, 2, "{accepted:?}");
    }
    let audit = || events_handled(&a, "audit") + events_handled(&b, "audit");
    until("every copy handled and acknowledged", || async {
        settled(&nats_a, "audit").await
            && settled(&nats_a, "audit2").await
            && audit() >= 20
            && events_handled(&a, "audit2") >= 20
    })
    .await;
    assert_eq!(audit(), 20);
    assert_eq!(events_handled(&a, "audit2"), 20);
}

/// Messages `handler` on `host` has handled without error.
fn messages_handled(host: &Host, handler: &str) -> u64 {
    let line =
        format!(r#"switchboard_signals_total{{handler="{handler}",kind="MESSAGE",outcome="ok"}}"#);
    switchboard_tests::metric(host, &line) as u64
}

/// Proves a message nobody awaits goes through its service's queue, handled once, and waits
/// there while no host serves the service: `echo` runs on B; 10 pings sent from A without
/// waiting are each taken and handled once on B. B then leaves (as it does when it stops),
/// and a forged announcement makes A forget that `echo` has a queue; 5 more sent from A are
/// still taken (A asks the stream), and wait in the queue until C joins running `echo`,
/// which handles those 5. Over core request/reply alone, the 5 would have been refused
/// (no host took them).
#[tokio::test]
async fn messages_nobody_awaits_wait_in_their_services_queue() {
    let server = NatsServer::start();
    let (a, nats_a) = server.joined(switchboard_tests::config(), "a").await;
    let b = server.host(switchboard_tests::config(), "b").await;
    b.deploy("echo", guest("echo"), None).await.unwrap();
    until("A knows echo's queue", || async {
        nats_a.queues_known().contains("echo")
    })
    .await;
    let ping = |n: u32| a.message("host", "echo", "Ping", json(json!({ "n": n })));
    for n in 0..10 {
        let taken = a.router().offer(ping(n)).await.expect("taken");
        assert_eq!(taken, Accepted::ONE);
    }
    until("B handled the 10", || async {
        messages_handled(&b, "echo") == 10
    })
    .await;
    b.router().leave_cluster().await;
    let forger = async_nats::connect(&server.url).await.unwrap();
    let gone = json!({"handler": "echo", "service": true, "gone": true}).to_string();
    forger
        .publish("sb.test.subscribers", gone.into())
        .await
        .unwrap();
    until("A forgot echo's queue", || async {
        !nats_a.queues_known().contains("echo")
    })
    .await;
    for n in 10..15 {
        let taken = a
            .router()
            .offer(ping(n))
            .await
            .expect("taken while nothing pulls");
        assert_eq!(taken, Accepted::ONE);
    }
    let waiting = nats_a.queue_backlog("echo").await.unwrap();
    assert_eq!(waiting.pending, 5, "{waiting:?}");
    let c = server.host(switchboard_tests::config(), "c").await;
    c.deploy("echo", guest("echo"), None).await.unwrap();
    until("C handled the 5 that waited", || async {
        messages_handled(&c, "echo") == 5
    })
    .await;
    until("the queue is empty", || async {
        (nats_a.queue_backlog("echo").await)
            .is_some_and(|b| b.pending == 0 && b.unacknowledged == 0)
    })
    .await;
    assert_eq!(messages_handled(&b, "echo"), 10);
}

/// Proves a full stream refuses new signals rather than dropping those it keeps, says so, and
/// loses none it took: each stream holds at most 5 signals; `audit` is deployed on B, which
/// then leaves (its consumer stays; nobody pulls). 5 events emitted on A are taken, the 6th
/// is refused with 503 (`no_space`, counted) and A says it is not ready, naming the full
/// stream. C joins running `audit` and handles exactly the 5; then the stream takes events
/// again and A is ready.
#[tokio::test]
async fn a_full_stream_refuses_new_signals_and_loses_none() {
    let server = NatsServer::start();
    let bounded = |options: &mut NatsOptions| options.streams.max_messages = 5;
    let (a, nats_a, b) = audit_on_b(&server, bounded).await;
    b.router().leave_cluster().await;
    let event = |n: u32| json(json!({ "user_id": format!("u{n}") }));
    for n in 0..5 {
        let taken = a.emit("UserRegistered", event(n)).await.unwrap();
        assert_eq!(taken.delivered, 1, "{taken:?}");
    }
    assert_eq!(
        a.router().unreachable(),
        None,
        "ready while the stream has room"
    );
    let refused = a.emit("UserRegistered", event(5)).await.unwrap_err();
    assert_eq!(refused.reason, Reason::NoSpace);
    assert_eq!(refused.failure().code, code::OVERLOADED);
    let line = r#"switchboard_cluster_events_total{reason="no_space"}"#;
    assert_eq!(switchboard_tests::metric(&a, line), 1.0);
    let why = a.router().unreachable().expect("not ready while full");
    assert!(why.contains("for space"), "{why}");

    let c = joined_tuned(&server, "c", bounded).await.0;
    c.deploy("audit", guest("audit"), None).await.unwrap();
    until("C handled the 5 the stream kept", || async {
        events_handled(&c, "audit") == 5 && settled(&nats_a, "audit").await
    })
    .await;
    let taken = a.emit("UserRegistered", event(6)).await.unwrap();
    assert_eq!(taken.delivered, 1, "{taken:?}");
    assert_eq!(
        a.router().unreachable(),
        None,
        "ready once the stream takes again"
    );
    until("C handled the one taken after", || async {
        events_handled(&c, "audit") == 6
    })
    .await;
}

/// Proves the shipped least-privilege configuration (`examples/nats/accounts.conf`) gives
/// hosts all they need and a NATS user outside it nothing of the cluster: two hosts joined as
/// `host` answer a request across hosts, carry an event to its subscriber and queue a message
/// nobody awaits; a client joined as `outsider` can neither use JetStream's API for the
/// cluster's streams nor publish a signal into them (the stream's last sequence stays where
/// it was, checked once the server has everything the outsider sent), nor write a record
/// into the cluster's registry of handlers.
#[tokio::test]
async fn the_shipped_account_keeps_outsiders_out_of_the_cluster() {
    let server = NatsServer::start_with_accounts();
    let as_host = |options: &mut NatsOptions| {
        options.cluster = "switchboard".into();
        options.user = Some(("host".into(), "host-secret".into()));
    };
    let (a, nats_a) = joined_tuned(&server, "a", as_host).await;
    let (b, _) = joined_tuned(&server, "b", as_host).await;
    for handler in ["echo", "audit"] {
        b.deploy(handler, guest(handler), None).await.unwrap();
    }
    until("A knows B's feeds", || async {
        nats_a.subscribers_known().contains_key("audit") && nats_a.queues_known().contains("echo")
    })
    .await;
    let answer = switchboard_tests::call(&a, "echo", "Ping", json!({"n": 1})).await;
    assert_eq!(answer.unwrap(), json!({"n": 1}));
    let taken = a
        .emit("UserRegistered", json(json!({"user_id": "u1"})))
        .await;
    assert_eq!(taken.unwrap().delivered, 1);
    let queued = a.message("host", "echo", "Ping", json(json!({"n": 2})));
    assert_eq!(a.router().offer(queued).await.unwrap(), Accepted::ONE);
    until("B handled the event and both messages", || async {
        events_handled(&b, "audit") == 1 && messages_handled(&b, "echo") == 2
    })
    .await;

    let last = || async {
        let host =
            async_nats::ConnectOptions::with_user_and_password("host".into(), "host-secret".into())
                .connect(&server.url)
                .await
                .unwrap();
        let js = async_nats::jetstream::new(host);
        let mut stream = js.get_stream("sb-switchboard-broadcasts").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    };
    let before = last().await;
    let outsider = async_nats::ConnectOptions::with_user_and_password(
        "outsider".into(),
        "outsider-secret".into(),
    )
    .connect(&server.url)
    .await
    .unwrap();
    // Refused requests go unanswered: a short timeout is the refusal.
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(outsider.clone());
    assert!(js.get_stream("sb-switchboard-broadcasts").await.is_err());
    let forged = switchboard::signal::Signal {
        envelope: switchboard::signal::Envelope::new("audit", Default::default(), &Clock::system()),
        body: Body::Event {
            event_type: "UserRegistered".into(),
            payload: json(json!({"user_id": "forged"})),
        },
    };
    let payload = serde_json::to_vec(&forged).unwrap();
    let _ = outsider
        .publish("sb.switchboard.evt.UserRegistered", payload.into())
        .await;
    let record = json!({"versions": [], "current": 1}).to_string();
    let _ = outsider
        .publish("$KV.sb-switchboard-registry.echo", record.into())
        .await;
    // Its own subject comes back once the server has taken all it sent before.
    let mut probe = outsider.subscribe("outsider.probe").await.unwrap();
    outsider.publish("outsider.probe", "".into()).await.unwrap();
    probe.next().await.unwrap();
    assert_eq!(
        last().await,
        before,
        "the outsider's event reached the stream"
    );
    assert_eq!(
        nats_a.record("echo").await.unwrap(),
        None,
        "the outsider wrote the cluster's registry"
    );
    assert_eq!(events_handled(&b, "audit"), 1);
}

/// Proves nothing the stream acknowledged is lost when `nats-server` is killed and started
/// again under load: A emits events 2 ms apart to `audit` on B; once B has handled 30 the
/// server is killed, and started again on its port and store once A has seen it go; A goes
/// on until 20 more are taken after the restart (the hosts reconnect by themselves). Every
/// event the stream acknowledged is handled at least once; beyond those, B handles only emits whose fate A could not know (`lost`) and signals the stream
/// offered it again (counted `redelivered`). Emits refused while the server was away
/// (`unreachable`) were never taken. (A server killed can forget acknowledgements it took
/// and offer handled events again as new: 4 runs in 40 under load handled one event twice
/// before B remembered the ids it handled.)
#[tokio::test]
async fn nothing_taken_is_lost_when_nats_restarts_under_load() {
    let mut server = NatsServer::start();
    let (a, nats_a, b) = audit_on_b(&server, |_| {}).await;
    let restarted = Arc::new(AtomicBool::new(false));
    let emitter = tokio::spawn({
        let (a, restarted) = (a.clone(), restarted.clone());
        async move {
            let (mut taken, mut lost, mut refused, mut after) = (0, 0, 0, 0);
            for n in 0..5000 {
                let payload = json(json!({ "user_id": format!("u{n}") }));
                match a.emit("UserRegistered", payload).await {
                    Ok(accepted) => {
                        assert_eq!(accepted.delivered, 1, "{accepted:?}");
                        taken += 1;
                        if restarted.load(Ordering::Relaxed) {
                            after += 1;
                        }
                    }
                    Err(undelivered) if undelivered.reason == Reason::Lost => lost += 1,
                    Err(undelivered) => {
                        assert_eq!(undelivered.reason, Reason::Unreachable);
                        refused += 1;
                    }
                }
                if after == 20 {
                    return (taken, lost, refused);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("A took no 20 events after the restart: {taken} taken, {refused} refused");
        }
    });
    until("B handled 30", || async {
        events_handled(&b, "audit") >= 30
    })
    .await;
    server.kill();
    until("A saw the server go", || async {
        a.router().unreachable().is_some()
    })
    .await;
    server.start_again();
    restarted.store(true, Ordering::Relaxed);
    // Emits while the server was away were refused (`refused`), or waited for it and were
    // taken once it was back.
    let (taken, lost, refused) = emitter.await.unwrap();
    until("every event the stream took was handled", || async {
        events_handled(&b, "audit") >= taken && settled(&nats_a, "audit").await
    })
    .await;
    let handled = events_handled(&b, "audit");
    let line = r#"switchboard_cluster_events_total{reason="redelivered"}"#;
    let redelivered = switchboard_tests::metric(&b, line) as u64;
    assert!(
        handled <= taken + lost + redelivered,
        "handled {handled}, taken {taken}, lost {lost}, redelivered {redelivered}, refused {refused}"
    );
}

/// Proves a signal handled on a host is not handled again there when the stream offers it
/// again as new, as a server killed before it kept the acknowledgement does: an event is
/// published to the stream as a host publishes it (its `Nats-Msg-Id` the signal's id), and
/// once B has handled it and the stream's duplicate window has been shortened and has
/// passed, the same message is published again. The stream takes it, B
/// acknowledges it without a turn and counts a duplicate; without the feed's memory of
/// handled ids, `audit` handles the event twice.
#[tokio::test]
async fn a_handled_signal_offered_again_as_new_is_not_handled_twice() {
    let server = NatsServer::start();
    let (a, nats_a, b) = audit_on_b(&server, |_| {}).await;
    drop(a);
    // The event as a host publishes it: the signal, its id as the message id.
    let event = switchboard::signal::Signal {
        envelope: switchboard::signal::Envelope::new("a", Default::default(), &Clock::system()),
        body: Body::Event {
            event_type: "UserRegistered".into(),
            payload: json(json!({"user_id": "u1"})),
        },
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.envelope.id.as_str());
    let payload = serde_json::to_vec(&event).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(&server.url).await.unwrap());
    let publish = || async {
        let subject = "sb.test.evt.UserRegistered";
        let ack = js.publish_with_headers(subject, headers.clone(), payload.clone().into());
        ack.await.unwrap().await.unwrap()
    };
    assert!(!publish().await.duplicate);
    until("B handled the event", || async {
        events_handled(&b, "audit") == 1 && settled(&nats_a, "audit").await
    })
    .await;

    let mut stream = js.get_stream("sb-test-broadcasts").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.duplicate_window = Duration::from_millis(100);
    js.update_stream(&config).await.unwrap();
    // Until the window has passed, the stream drops the publish as a duplicate.
    until("the stream took the same message again", || async {
        !publish().await.duplicate
    })
    .await;
    let line = r#"switchboard_cluster_events_total{reason="duplicate"}"#;
    until("B acknowledged the copy offered again", || async {
        switchboard_tests::metric(&b, line) == 1.0 && settled(&nats_a, "audit").await
    })
    .await;
    assert_eq!(events_handled(&b, "audit"), 1, "handled once");
}

/// Proves a turn that runs longer than the stream's ack wait is not offered again while it
/// runs: the host says it is still at work. `chaos` runs on A and B (3 s of CPU time, more
/// than the 1 s ack wait); one `Stall` spins to its limit and is handled once in all. Without
/// the in-progress acknowledgements the other host would start it again after 1 s.
#[tokio::test]
async fn a_long_turn_is_not_offered_again_while_it_runs() {
    let server = NatsServer::start();
    let short_wait = |options: &mut NatsOptions| options.streams.ack_wait = Duration::from_secs(1);
    let (a, nats_a) = joined_tuned(&server, "a", short_wait).await;
    let (b, _nats_b) = joined_tuned(&server, "b", short_wait).await;
    let slow = Limits {
        cpu_time: Duration::from_secs(3),
        ..Limits::default()
    };
    for host in [&a, &b] {
        host.deploy("chaos", guest("chaos"), Some(slow))
            .await
            .unwrap();
    }
    a.emit("Stall", json(json!({}))).await.unwrap();
    let handled = |host: &Host| {
        host.handlers()
            .into_iter()
            .find(|h| h.name == "chaos")
            .map_or(0, |h| h.handled)
    };
    let limited = |host: &Host| {
        let line = r#"switchboard_signals_total{handler="chaos",kind="EVENT",outcome="limit"}"#;
        switchboard_tests::metric(host, line) as u64
    };
    until(
        "the stall ran to its limit and was acknowledged",
        || async { limited(&a) + limited(&b) >= 1 && settled(&nats_a, "chaos").await },
    )
    .await;
    assert_eq!(handled(&a) + handled(&b), 1);
    let backlog = nats_a.backlog("chaos").await.unwrap();
    assert_eq!(backlog.redelivered, 0, "{backlog:?}");
}

/// Proves a guest's `emit` says how many handlers subscribe across the hosts, not on its
/// own alone: `deferred` on A announces `UserRegistered`, which `audit` on B subscribes to.
/// Before, the count came from A's table: 0.
async fn an_emit_counts_subscribers_on_every_host(a: Host, b: Host) {
    let announced = switchboard_tests::call(
        &a,
        "deferred",
        "Announce",
        json!({"event_type": "UserRegistered", "payload": {"user_id": "u2"}}),
    )
    .await
    .unwrap();
    assert_eq!(announced["subscribers"], 1, "{announced}");
    audit_saw_an_event(&b).await;
}

/// Proves agents on the other host take their turns one at a time and keep their state:
/// ten increments from A, five at a time, to one `counter` agent on B (its full address
/// and its short form), then its count. Increments that overlapped would lose some.
async fn an_agent_counts_every_increment(a: Host, _b: Host) {
    let increments = (0..10).map(|n| {
        let a = a.clone();
        let to = if n % 2 == 0 {
            "agent:counter/c1"
        } else {
            "agent:c1"
        };
        async move {
            switchboard_tests::call(&a, to, "Increment", json!({"by": 1}))
                .await
                .unwrap()
        }
    });
    let mut increments = increments.collect::<Vec<_>>();
    while !increments.is_empty() {
        let batch: Vec<_> = increments.drain(..increments.len().min(5)).collect();
        let mut tasks = Vec::new();
        for increment in batch {
            tasks.push(tokio::spawn(increment));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let got = switchboard_tests::call(&a, "agent:counter/c1", "Get", json!({}))
        .await
        .unwrap();
    assert_eq!(got["count"], 10, "{got}");
}

/// Proves a hot swap on the host serving an agent loses no signal sent from the other: A
/// keeps sending increments to one `counter` agent on B, four at a time, from before B
/// swaps in `counter_next` (which says it is version 2) until after; every one is answered,
/// the count equals the increments sent, and the swapped version answers.
async fn a_hot_swap_loses_nothing_sent_from_the_other_host(a: Host, b: Host) {
    let swapped = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (a, swapped) = (a.clone(), swapped.clone());
        async move {
            let mut sent = 0;
            let mut after = 0;
            while after < 5 {
                if swapped.load(Ordering::SeqCst) {
                    after += 1;
                }
                let batch: Vec<_> = (0..4)
                    .map(|_| {
                        let a = a.clone();
                        tokio::spawn(async move {
                            let to = "agent:counter/s1";
                            switchboard_tests::call(&a, to, "Increment", json!({"by": 1})).await
                        })
                    })
                    .collect();
                for increment in batch {
                    increment
                        .await
                        .unwrap()
                        .expect("every increment is answered");
                    sent += 1;
                }
            }
            sent
        }
    });
    b.deploy("counter", guest("counter_next"), None)
        .await
        .expect("swapping in counter_next");
    swapped.store(true, Ordering::SeqCst);
    let sent = sender.await.unwrap();
    let got = switchboard_tests::call(&a, "agent:counter/s1", "Get", json!({}))
        .await
        .unwrap();
    assert_eq!(got["count"], sent, "{got}");
    let version = switchboard_tests::call(&a, "agent:counter/s1", "Version", json!({}))
        .await
        .unwrap();
    assert_eq!(version, 2, "{version}");
}

/// Proves an answer goes to the message's return address when it has one, and to its sender
/// only when it has none: `user:ann` on A sends `echo` on B a message whose return address
/// is `user:bob`, also on A; bob gets echo's answer and ann nothing, then ann's own message
/// without one is answered to her.
async fn an_answer_goes_to_the_return_address(a: Host, _b: Host) {
    let mut ann = a.connect("user:ann");
    let mut bob = a.connect("user:bob");
    // Over a network, once their addresses can be reached from the other host.
    a.router().transport_ready().await;
    let mut message = a.message("user:ann", "echo", "Ping", json(json!({"for": "bob"})));
    if let Body::Message(m) = &mut message.body {
        m.return_address = Some("user:bob".to_owned());
    }
    let id = a.send(message);
    let answer = switchboard_tests::next(&mut bob).await;
    let Body::Reply {
        reply_to, payload, ..
    } = &answer.body
    else {
        panic!("bob expected echo's answer, got {answer:?}")
    };
    assert_eq!((reply_to, payload.to_value()), (&id, json!({"for": "bob"})));
    assert_eq!(answer.envelope.from, "echo");

    let own = a.send(a.message("user:ann", "echo", "Ping", json(json!({"for": "ann"}))));
    let answer = switchboard_tests::next(&mut ann).await;
    assert!(
        matches!(&answer.body, Body::Reply { reply_to, .. } if *reply_to == own),
        "ann gets her own answer and only it: {answer:?}"
    );
    assert!(bob.try_recv().is_err(), "bob got ann's answer too");
}

/// Proves a message whose handler never answers gets exactly one answer, the host's 504 at
/// its deadline, and an answer tried after that is refused at its source (409) and reaches
/// nobody: `user:ann` on A sends `deferred` on B a `Hold` with a 300 ms deadline.
async fn a_message_past_its_deadline_takes_no_later_answer(a: Host, b: Host) {
    let mut ann = a.connect("user:ann");
    a.router().transport_ready().await;
    let mut message = a.message("user:ann", "deferred", "Hold", json(json!({})));
    message.envelope.deadline = Some(a.router().clock().after(Duration::from_millis(300)));
    let id = a.send(message);
    let answer = switchboard_tests::next(&mut ann).await;
    let Body::ErrorReply {
        reply_to,
        error: failure,
        ..
    } = &answer.body
    else {
        panic!("expected the host's 504, got {answer:?}")
    };
    assert_eq!((reply_to, failure.code), (&id, code::TIMEOUT), "{failure}");
    let released = switchboard_tests::call(&b, "deferred", "Release", json!({"payload": "late"}))
        .await
        .expect_err("the held message is no longer open");
    assert_eq!(released.code, code::CONFLICT, "{released}");
    let refused = r#"switchboard_answers_refused_total{handler="deferred",reason="not_open"}"#;
    assert_eq!(switchboard_tests::metric(&b, refused), 1.0);
    // Nothing more for ann: the next thing she gets is the answer to a marker sent after.
    let marker = a.send(a.message("user:ann", "deferred", "Nope", json(json!({}))));
    let next = switchboard_tests::next(&mut ann).await;
    assert!(
        matches!(&next.body, Body::ErrorReply { reply_to, .. } if *reply_to == marker),
        "a second answer reached ann: {next:?}"
    );
}

/// Proves a broadcast's copy that a full mailbox refuses is kept as a dead letter, on the
/// host of the handler that refused it: `chaos` on B (one signal at a time, a mailbox of
/// one) stalls on its first `Stall`; of three more emitted on A, every one is handled or
/// kept on B (handled + kept = 4, at least one kept), and B's store holds each kept copy,
/// for `chaos`. (The emitter is not told of the keeping: over NATS, a stream takes the
/// event, and B refuses its copy later.)
async fn a_refused_copy_is_a_dead_letter_where_it_was_refused(a: Host, b: Host) {
    let small = Limits {
        cpu_time: Duration::from_secs(1),
        concurrency: 1,
        mailbox: 1,
        ..Limits::default()
    };
    b.deploy("chaos", guest("chaos"), Some(small))
        .await
        .unwrap();
    let first = a.emit("Stall", json(json!({}))).await.unwrap();
    assert_eq!(first.total(), 1, "{first:?}");
    let handled = || {
        b.handlers()
            .into_iter()
            .find(|h| h.name == "chaos")
            .map_or(0, |h| h.handled as usize)
    };
    until("chaos stalls on the first", || async { handled() == 1 }).await;
    for _ in 0..3 {
        let accepted = a.emit("Stall", json(json!({}))).await.unwrap();
        assert_eq!(accepted.total(), 1, "{accepted:?}");
    }
    let kept = || b.router().dead_letters().list(None, 0, 100).unwrap();
    until("every copy was handled or kept", || async {
        handled() + kept().len() == 4
    })
    .await;
    let kept = kept();
    assert!(!kept.is_empty(), "the stalled mailbox kept none");
    assert!(
        kept.iter().all(|letter| letter.handler == "chaos"),
        "{kept:?}"
    );
}

/// Proves the causal depth limit holds across hosts: `storm-a` on A and `storm-b` on B each
/// re-emit every `Storm` they get, so each emit reaches both. With the limit at 4, each
/// handles one `Storm` from the host at depth 0 and 2^d at depth d (31 in all), and each of
/// its 16 emits at depth 4 is refused (508). A host that lost an event's depth on the way
/// would let the storm run on.
async fn the_depth_limit_holds_across_hosts(a: Host, b: Host) {
    // B's first: a host's deploy is ready once it knows the subscribers deployed before.
    b.deploy("storm-b", guest("storm"), None).await.unwrap();
    a.deploy("storm-a", guest("storm"), None).await.unwrap();
    let accepted = a.emit("Storm", json(json!({}))).await.unwrap();
    assert_eq!(accepted.delivered, 2, "{accepted:?}");
    let handled = |host: &Host, name: &str| {
        host.handlers()
            .into_iter()
            .find(|h| h.name == name)
            .map_or(0, |h| h.handled)
    };
    let refused = |host: &Host, name: &str| {
        let labels = switchboard::metrics::Metrics::handler(name);
        host.router()
            .metrics()
            .depth_refused
            .get_or_create(&labels)
            .get()
    };
    until("both storms reached the limit", || async {
        refused(&a, "storm-a") + refused(&b, "storm-b") == 32
    })
    .await;
    assert!(
        a.drain(WAIT).await && b.drain(WAIT).await,
        "the storm ended"
    );
    assert_eq!((handled(&a, "storm-a"), handled(&b, "storm-b")), (31, 31));
    assert_eq!((refused(&a, "storm-a"), refused(&b, "storm-b")), (16, 16));
}

on_all!(an_answer_goes_to_the_return_address, &[], &["echo"]);
on_all!(
    a_message_past_its_deadline_takes_no_later_answer,
    &[],
    &["deferred"]
);
on_all!(
    a_refused_copy_is_a_dead_letter_where_it_was_refused,
    &[],
    &[]
);
on_all!(
    the_depth_limit_holds_across_hosts,
    &[],
    &[],
    switchboard::HostConfig {
        max_causal_depth: 4,
        ..switchboard_tests::config()
    }
);
on_all!(
    a_guests_request_is_answered_across_hosts,
    &["orders"],
    &["echo"]
);
on_all!(a_hosts_request_is_answered_across_hosts, &[], &["echo"]);
on_all!(routes_are_found_on_either_host_or_refused, &[], &["echo"]);
on_all!(
    an_event_reaches_a_subscriber_on_the_other_host,
    &[],
    &["audit"]
);
on_all!(
    callback_replies_come_back_across_hosts_and_free_their_room,
    &["fanout"],
    &["echo"]
);
on_all!(
    an_answer_forged_on_the_other_host_never_reaches_the_sender,
    &["deferred"],
    &[]
);
on_all!(
    an_emit_counts_subscribers_on_every_host,
    &["deferred"],
    &["audit"]
);
on_both!(an_agent_counts_every_increment, &[], &["counter"]);
on_both!(
    a_hot_swap_loses_nothing_sent_from_the_other_host,
    &[],
    &["counter"]
);
