//! Arbitrary sequences of signals through an embedded host running real guests: awaited
//! requests, messages from a client, events and data changes, hot swaps and removals of
//! handlers, and pauses between them. Whatever the sequence, nothing panics, every message
//! gets exactly one answer, every wait ends within its bound, and the host goes quiet
//! afterwards.
//!
//! One host serves every input of a process (compiling the guests takes seconds), so an
//! input may meet what an earlier one left (a counter's count, a held message); each input
//! has a client address of its own, and waits for the host to be idle before it ends.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::Choices;
use crate::config::{HostConfig, Limits};
use crate::host::Host;
use crate::runtime::{Version, VersionSpec};
use crate::signal::{Body, ChangeType, Envelope, Failure, Headers, Json, Message, Signal};
use crate::wire::{SignalType, WireSignal};

/// The guests deployed, by file name (`<name>.wasm`) and the name each serves under:
/// `counter_next` is the counter's second version, swapped in and out.
pub const GUESTS: &[(&str, &str)] = &[
    ("echo", "echo"),
    ("counter", "counter"),
    ("counter_next", "counter"),
    ("storm", "storm"),
    ("audit", "audit"),
    ("chaos", "chaos"),
    ("deferred", "deferred"),
    ("fanout", "fanout"),
];

/// How long a message from a client stays open: past it the host answers 504.
const MESSAGE_DEADLINE: Duration = Duration::from_millis(100);
/// Longest an awaited request may ask to wait.
const MAX_REQUEST_WAIT_MS: u64 = 200;
/// How much later than its deadline an answer may come and still count (the host checks
/// deadlines every 100 ms; the machine may be busy).
const LATENESS: Duration = Duration::from_secs(10);
/// How long the host may stay busy after an input's last signal.
const QUIET_WITHIN: Duration = Duration::from_secs(30);
/// Most operations read from one input.
const MAX_OPS: usize = 48;

/// Where messages go, with the message types each takes; any type may be tried too.
const ROUTES: &[(&str, &[&str])] = &[
    ("echo", &["Ping"]),
    (
        "agent:counter/a",
        &[
            "Increment",
            "Get",
            "AskEcho",
            "Version",
            "Notify",
            "Explode",
            "Fill",
            "Bump",
            "Step",
            "Steps",
        ],
    ),
    ("agent:counter/b", &["Increment", "Get", "Explode", "Fill"]),
    ("agent:c", &["Increment", "Get"]),
    (
        "storm",
        &[
            "Double",
            "SelfRequest",
            "Flood",
            "Chatty",
            "PushStorm",
            "ForgeOnline",
        ],
    ),
    ("audit", &["GetAudit"]),
    (
        "chaos",
        &["Spin", "Hog", "Panic", "Recurse", "Bloat", "Ping", "Print"],
    ),
    (
        "deferred",
        &[
            "Hold",
            "Release",
            "ReleaseTwice",
            "Forge",
            "ReplyThenTrap",
            "ReplyThenReturn",
            "Envelope",
            "Announce",
            "Arrive",
        ],
    ),
    ("fanout", &["Fan", "Tally"]),
    ("nobody", &["Ping"]),
    ("user:someone", &["Pushed"]),
];

/// Event types the guests subscribe to or refuse, and object types of data changes.
const EVENTS: &[&str] = &["Storm", "Flood", "UserRegistered", "Stall", "UserOnline"];
const OBJECTS: &[&str] = &["User", "Order"];

/// Set when any thread panics, so that a panic in a host task (which tokio catches) still
/// fails the input.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// A host with the [`GUESTS`] deployed, for running inputs through.
pub struct EmbeddedHost {
    runtime: tokio::runtime::Runtime,
    host: Host,
    /// Every guest's compiled version, by the name it serves under.
    versions: Vec<(&'static str, Arc<Version>)>,
    /// The version each name serves now.
    live: Mutex<HashMap<&'static str, Arc<Version>>>,
    next_client: AtomicU64,
}

/// The host's settings: tight, so that storms end and waits are short.
fn config() -> HostConfig {
    HostConfig {
        open_to_clients: vec!["*".into()],
        message_deadline: MESSAGE_DEADLINE,
        max_causal_depth: 3,
        max_sends_per_signal: 16,
        max_emits_per_signal: 16,
        max_requests_per_signal: 4,
        max_log_lines_per_signal: 4,
        max_instances: 32,
        max_message_bytes: 64 << 10,
        dead_letter_capacity: 10_000,
        state_value_bytes: 16 << 10,
        state_handler_bytes: 4 << 20,
        kept_per_user: 16,
        ..HostConfig::default()
    }
}

/// Every guest's limits: a runaway one is stopped in a tenth of a second, and no turn
/// (one waiting for its own request, say) takes more than 250 ms, so that an input
/// that makes a chain of them still ends within about a second.
fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        cpu_time: Duration::from_millis(100),
        deadline: Duration::from_millis(250),
        concurrency: 1,
        mailbox: 64,
    }
}

impl EmbeddedHost {
    /// Compiles the [`GUESTS`] found in `dir` (`target/wasm32-wasip2/release`) and deploys
    /// each under its name.
    pub fn new(dir: &Path) -> Self {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICKED.store(true, Ordering::SeqCst);
                previous(info);
            }));
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fuzz-host")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (host, versions) = runtime.block_on(async {
            let host = Host::new(config()).expect("a host");
            let spec = VersionSpec {
                limits: limits(),
                ..VersionSpec::default()
            };
            let mut versions = Vec::new();
            for (file, name) in GUESTS {
                let path = dir.join(format!("{file}.wasm"));
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("the guest {}: {e}", path.display()));
                let version = host.runtime().load(bytes, spec.clone()).await;
                let version = version.unwrap_or_else(|e| panic!("compiling {file}: {e}"));
                versions.push((*name, version));
            }
            (host, versions)
        });
        let mut live = HashMap::new();
        for (name, version) in &versions {
            live.entry(*name).or_insert_with(|| version.clone());
        }
        {
            // A handler's workers are tasks of this runtime.
            let _entered = runtime.enter();
            for (name, version) in &live {
                host.install(name, version.clone())
                    .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
            }
        }
        Self {
            runtime,
            host,
            versions,
            live: Mutex::new(live),
            next_client: AtomicU64::new(0),
        }
    }

    /// Runs the operations `data` spells, then checks the invariants.
    pub fn run(&self, data: &[u8]) {
        let client = format!(
            "user:fuzz-{}",
            self.next_client.fetch_add(1, Ordering::Relaxed)
        );
        self.runtime.block_on(self.run_async(&client, data));
        assert!(
            !PANICKED.load(Ordering::SeqCst),
            "a thread panicked (see above)"
        );
    }

    async fn run_async(&self, client: &str, data: &[u8]) {
        let mut inbox = self.host.connect(client);
        let (tx, mut answers) = mpsc::unbounded_channel();
        let collector = tokio::spawn(async move {
            while let Some(signal) = inbox.recv().await {
                let _ = tx.send(signal);
            }
        });
        let mut choices = Choices::new(data);
        let mut waits = JoinSet::new();
        let mut sent = Sent::default();
        let mut removed = HashSet::new();
        for _ in 0..MAX_OPS {
            if choices.is_empty() {
                break;
            }
            match choices.byte() % 8 {
                0 => self.request(&mut choices, &mut waits),
                1 => {
                    let message = structured(&mut choices);
                    self.send(client, message, &mut sent);
                }
                2 => {
                    let frame = choices.text(255);
                    if let Some(message) = from_frame(&frame) {
                        self.send(client, message, &mut sent);
                    }
                }
                3 => {
                    let event_type = name(&mut choices, EVENTS);
                    let emitted = self.host.emit(&event_type, payload(&mut choices));
                    bounded(LATENESS, "an emit", emitted).await.ok();
                }
                4 => {
                    let change = *choices.pick(&[
                        ChangeType::Created,
                        ChangeType::Updated,
                        ChangeType::Deleted,
                    ]);
                    let object_type = name(&mut choices, OBJECTS);
                    let object = payload(&mut choices);
                    let emitted = self.host.emit_data_change(change, &object_type, object);
                    bounded(LATENESS, "a data change", emitted).await.ok();
                }
                5 => {
                    let (name, version) = choices.pick(&self.versions);
                    removed.remove(name);
                    self.install(name, version.clone());
                }
                6 => {
                    let (name, _) = choices.pick(&self.versions);
                    self.host.remove(name);
                    removed.insert(*name);
                }
                _ => {
                    let pause = Duration::from_millis(u64::from(choices.byte() % 20));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        for name in removed {
            let version = self.live.lock().expect("live versions")[name].clone();
            self.install(name, version);
        }
        while let Some(waited) = waits.join_next().await {
            if let Err(error) = waited {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        sent.expect_one_answer_each(&mut answers).await;
        self.host.router().disconnect(client);
        let collected = bounded(LATENESS, "the client's disconnection", collector).await;
        collected.expect("the collector ends");
        assert!(
            self.host.drain(QUIET_WITHIN).await,
            "the host was still busy {QUIET_WITHIN:?} after the input"
        );
    }

    /// Makes `version` the one `name` serves (a hot swap if it serves one); this host has
    /// room for every guest, so it never fails.
    fn install(&self, name: &'static str, version: Arc<Version>) {
        if let Err(error) = self.host.install(name, version.clone()) {
            panic!("{name} could not be deployed again: {error}");
        }
        let mut live = self.live.lock().expect("live versions");
        live.insert(name, version);
    }

    /// An awaited request, in the background: it must end within its timeout (and the
    /// lateness allowed), answered by a reply or an error reply.
    fn request(&self, choices: &mut Choices, waits: &mut JoinSet<()>) {
        let (to, message_type) = route(choices);
        let payload = payload(choices);
        let wait = Duration::from_millis(u64::from(choices.byte()) * MAX_REQUEST_WAIT_MS / 255);
        let host = self.host.clone();
        waits.spawn(async move {
            let asked = host.request(&to, &message_type, payload, wait);
            match bounded(wait + LATENESS, "a request", asked).await {
                Ok(answer) => assert!(
                    matches!(answer.body, Body::Reply { .. } | Body::ErrorReply { .. }),
                    "a request answered by {answer:?}"
                ),
                Err(Failure { code, .. }) => assert!(code >= 400, "failed with {code}"),
            }
        });
    }

    /// Sends `message` from `client`, noting what answer the client is to get.
    fn send(&self, client: &str, message: Message, sent: &mut Sent) {
        let push = crate::address::Address::kind_of(&message.to) == crate::address::Kind::User;
        let answered_here = message
            .return_address
            .as_deref()
            .is_none_or(|a| a == client);
        let signal = Signal {
            envelope: Envelope::new(client, Headers::new(), self.host.router().clock()),
            body: Body::Message(message),
        };
        let id = self.host.send(signal);
        if push {
            sent.pushes.insert(id);
        } else if answered_here {
            sent.expected.insert(id);
        }
    }
}

/// Awaits `future` for at most `limit`; past it, `what` hung.
async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not end within {limit:?}"),
    }
}

/// The messages an input's client sent, by id, and the answers it got.
#[derive(Default)]
struct Sent {
    /// Messages whose answer comes to the client: each exactly once.
    expected: HashSet<String>,
    /// One-way pushes to users: answered at most once (404 if the user is not connected).
    pushes: HashSet<String>,
    /// Messages answered so far.
    answered: HashSet<String>,
}

impl Sent {
    /// Reads the client's signals until every message expected is answered, by its deadline
    /// (and the lateness allowed), checking each answer.
    async fn expect_one_answer_each(&mut self, answers: &mut mpsc::UnboundedReceiver<Signal>) {
        let by = tokio::time::Instant::now() + MESSAGE_DEADLINE + LATENESS;
        while !self.expected.is_empty() {
            let Ok(Some(signal)) = tokio::time::timeout_at(by, answers.recv()).await else {
                let left = &self.expected;
                panic!("{} messages never answered: {left:?}", left.len());
            };
            self.note(&signal);
        }
        while let Ok(signal) = answers.try_recv() {
            self.note(&signal);
        }
    }

    /// Checks a signal the client got: an answer is to a message it sent, and the first.
    fn note(&mut self, signal: &Signal) {
        let (Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. }) = &signal.body
        else {
            return; // A push (from `storm` or `fanout`), not an answer.
        };
        assert!(
            self.answered.insert(reply_to.clone()),
            "message {reply_to} answered twice, again by {signal:?}"
        );
        assert!(
            self.expected.remove(reply_to) || self.pushes.remove(reply_to),
            "an answer to a message never sent: {signal:?}"
        );
    }
}

/// A route and a message type: one it takes, or any text.
fn route(choices: &mut Choices) -> (String, String) {
    let (to, types) = choices.pick(ROUTES);
    let message_type = match choices.byte() {
        0..=223 => (*choices.pick(types)).to_owned(),
        _ => choices.text(32),
    };
    ((*to).to_owned(), message_type)
}

/// One of `names`, or any text.
fn name(choices: &mut Choices, names: &[&str]) -> String {
    match choices.byte() {
        0..=223 => (*choices.pick(names)).to_owned(),
        _ => choices.text(32),
    }
}

/// A message to one of the [`ROUTES`].
fn structured(choices: &mut Choices) -> Message {
    let (to, message_type) = route(choices);
    Message {
        message_type,
        to,
        return_address: None,
        payload: payload(choices),
    }
}

/// A message as a client's frame spells it, if it is one (the gateway's checks aside).
fn from_frame(frame: &str) -> Option<Message> {
    let mut wire: WireSignal = serde_json::from_str(frame).ok()?;
    wire.headers.clear();
    match wire.into_client_body(Some(SignalType::Message)).ok()? {
        Body::Message(message) => Some(message),
        _ => None,
    }
}

/// A payload: one with every field some guest reads, sized by the input, or any JSON the
/// input holds.
fn payload(choices: &mut Choices) -> Json {
    match choices.byte() % 4 {
        0 => Json::parse("{}").expect("JSON"),
        1 => {
            let n = choices.byte();
            let (to, message_type) = route(choices);
            Json::from_value(&json!({
                "by": i64::from(n) - 128, "n": n, "i": n, "k": n % 4, "count": n,
                "depth": n, "bytes": u32::from(n) << 8, "timeout_ms": u32::from(n) * 8,
                "pad": u32::from(n) * 16, "text": "fuzz", "user": "someone",
                "to": to, "message_type": message_type, "group": "g",
                "event_type": *choices.pick(EVENTS), "payload": {"n": n},
                "message_id": "0", "barrier": null, "once": n.is_multiple_of(2),
            }))
        }
        2 => Json::parse(choices.text(255)).unwrap_or_else(|_| Json::null()),
        _ => Json::from_value(&json!(choices.text(64))),
    }
}
