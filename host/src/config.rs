//! Host-wide settings and per-handler limits, each default a named constant.

use std::time::Duration;

use crate::clock::Clock;

/// Default memory a handler instance may grow to.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 << 20;
/// Default CPU time a handler may spend on one signal: the time its guest runs, not time
/// suspended in a host call or waiting for a core.
pub const DEFAULT_CPU_TIME: Duration = Duration::from_secs(2);
/// Default wall-clock time a handler may take over one signal (or to start an instance),
/// host calls and sleeps included; past it the call is abandoned with 504.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Longest per-signal deadline a deploy may ask for.
pub const MAX_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// Most linear memory a deploy may ask for, in MiB.
pub const MAX_MEMORY_MB: u64 = 4096;
/// Most CPU time per signal a deploy may ask for, in milliseconds.
pub const MAX_CPU_MS: u64 = 600_000;
/// Most signals a handler may work on at once.
pub const MAX_CONCURRENCY: u32 = 64;
/// Largest mailbox a deploy may ask for: a mailbox's slots are allocated when it opens.
pub const MAX_MAILBOX: u32 = 100_000;
/// Default number of signals a service works on at once. One means a service is an actor:
/// its in-memory state sees its signals one at a time, like the seeds' reducers.
pub const DEFAULT_CONCURRENCY: u32 = 1;
/// Default number of agents an agent handler runs at once, each one signal at a time: enough
/// that distinct agents' turns share the state store's group commits (at 1, every agent of
/// a handler waited for the previous agent's fsync). Instances beyond the first take shared
/// slots of the pool and are released when idle, so the default is also at most an eighth
/// of the pool (`max_instances`): a small pool is not taken by one handler's idle workers.
pub const DEFAULT_AGENT_CONCURRENCY: u32 = 32;
/// Default number of signals waiting in a handler's mailbox before senders get 503.
pub const DEFAULT_MAILBOX: u32 = 1024;
/// Default largest signal (payload, addresses, headers) in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Default wasm stack a handler may use.
pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;
/// Default deadline of a `request` whose caller gave none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest deadline a guest may ask `request` for.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a message sent without waiting stays open for its answer, by default.
pub const DEFAULT_MESSAGE_DEADLINE: Duration = Duration::from_secs(300);
/// How often the epoch ticker advances: the granularity of CPU-time checks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Largest component a host will compile.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Dead letters a host keeps at most, by default.
pub const DEFAULT_DEAD_LETTERS: usize = 100_000;
/// Default share of the dead-letter store one handler (or client) may fill: one handler's
/// failures never take the store from the others.
pub const DEFAULT_DEAD_LETTERS_PER_HANDLER: usize = 10_000;
/// Table elements one handler may grow to (componentize-py handlers hold thousands).
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;
/// Default bytes of signals one handler's mailbox may hold: 64 signals of the largest size,
/// or thousands of ordinary ones (whose count bound then comes first).
pub const DEFAULT_MAILBOX_BYTES: usize = 64 << 20;
/// Default bytes of signals all mailboxes of a host may hold together.
pub const DEFAULT_QUEUE_BUDGET_BYTES: usize = 1 << 30;
/// Default longest causal chain: a signal more than this many steps from the client signal
/// that started it is refused with 508 (loop detected).
pub const DEFAULT_MAX_CAUSAL_DEPTH: u32 = 32;
/// Default number of messages a handler may `send` while handling one signal.
pub const DEFAULT_SENDS_PER_SIGNAL: u32 = 1000;
/// Default number of events and data changes a handler may emit while handling one signal.
pub const DEFAULT_EMITS_PER_SIGNAL: u32 = 1000;
/// Default number of `request`s a handler may make while handling one signal.
pub const DEFAULT_REQUESTS_PER_SIGNAL: u32 = 100;
/// Default number of lines a handler may `log` while handling one signal; the rest are
/// dropped and counted.
pub const DEFAULT_LOG_LINES_PER_SIGNAL: u32 = 100;
/// Default steady rate of warning lines (and guest log lines) about one handler, per second.
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 20;
/// Default burst of warning lines about one handler before the rate applies.
pub const DEFAULT_LOG_BURST: u32 = 100;
/// Default number of handler instances alive at once across all handlers; every deployed
/// handler is guaranteed one of them.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Most instances a host may be configured for: the pooling allocator reserves address
/// space for every slot up front.
pub const MAX_INSTANCES_LIMIT: u32 = 10_000;
/// Default time a warm instance waits for a signal before it is released.
pub const DEFAULT_INSTANCE_IDLE: Duration = Duration::from_secs(30);
/// How long a signal waits for a free instance slot before it is answered with 503.
pub const INSTANCE_SLOT_WAIT: Duration = Duration::from_secs(1);
/// Uploads compiled at once by default; more wait their turn.
pub const DEFAULT_MAX_COMPILATIONS: usize = 2;
/// Uploads that may wait for a compile slot by default; past it an upload gets 503.
pub const DEFAULT_MAX_QUEUED_COMPILATIONS: usize = 16;
/// Longest one compilation may take by default before it is stopped and the upload refused.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default largest value of one state key, in bytes.
pub const DEFAULT_STATE_VALUE_BYTES: usize = 256 << 10;
/// Default bytes of state (keys and values) one handler may store across its agents.
pub const DEFAULT_STATE_HANDLER_BYTES: u64 = 256 << 20;
/// Default number of pending durable timers one handler may have.
pub const DEFAULT_TIMERS_PER_HANDLER: usize = 100_000;
/// Default least delay of a timer scheduled by a turn that descends from a fired timer, so a
/// chain through timers is paced (a fired timer starts a fresh causal chain).
pub const DEFAULT_TIMER_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default most timers of one handler fired per second; the rest fire late, never lost.
pub const DEFAULT_TIMER_FIRES_PER_SECOND: u32 = 100;
/// Default bytes all turns in flight may hold at once in writes and held signals.
pub const DEFAULT_TURN_WRITE_BUDGET: u64 = 512 << 20;
/// Default bytes of signals one client connection may have waiting to be sent; a push
/// larger than the setting is refused where it is made (413).
pub const DEFAULT_CLIENT_QUEUE_BYTES: usize = 8 << 20;
/// Default number of pushes one handler may keep for one user until a client acknowledges
/// them.
pub const DEFAULT_KEPT_PER_USER: usize = 1000;
/// Default longest time a push is kept for its user.
pub const DEFAULT_KEPT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Limits for one handler, chosen at deploy time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: u64,
    /// CPU time per signal.
    pub cpu_time: Duration,
    /// Wall-clock time per signal, after which the call is abandoned and its instance
    /// discarded.
    pub deadline: Duration,
    /// Signals handled at once, each on its own warm instance. 0 (the default) means the
    /// default of the handler's kind, decided once it has described itself:
    /// [`DEFAULT_CONCURRENCY`] for a service, [`DEFAULT_AGENT_CONCURRENCY`] for an agent
    /// handler ([`Limits::for_kind`]).
    pub concurrency: u32,
    /// Signals that may wait in the mailbox.
    pub mailbox: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpu_time: DEFAULT_CPU_TIME,
            deadline: DEFAULT_DEADLINE,
            concurrency: 0,
            mailbox: DEFAULT_MAILBOX,
        }
    }
}

impl Limits {
    /// The first limit beyond what a deploy on this host may ask for, named with its value
    /// (a record from the cluster's registry is held to the same bounds as an upload here).
    pub fn beyond_bounds(&self) -> Option<String> {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_MB << 20 {
            return Some(format!("memory {} bytes", self.memory_bytes));
        }
        if self.cpu_time.is_zero() || ms(self.cpu_time) > MAX_CPU_MS {
            return Some(format!("CPU time {} ms", ms(self.cpu_time)));
        }
        if self.deadline.is_zero() || self.deadline > MAX_DEADLINE {
            return Some(format!("deadline {} ms", ms(self.deadline)));
        }
        if self.concurrency > MAX_CONCURRENCY {
            return Some(format!("concurrency {}", self.concurrency));
        }
        if self.mailbox == 0 || self.mailbox > MAX_MAILBOX {
            return Some(format!("mailbox {}", self.mailbox));
        }
        None
    }

    /// These limits for a handler that is an agent handler or not, on a host with a pool of
    /// `max_instances`, its concurrency settled if it was left to the kind's default.
    pub fn for_kind(mut self, agent: bool, max_instances: u32) -> Self {
        if self.concurrency == 0 {
            self.concurrency = if agent {
                DEFAULT_AGENT_CONCURRENCY.min(max_instances / 8).max(1)
            } else {
                DEFAULT_CONCURRENCY
            };
        }
        self
    }
}

/// Settings of one host process.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Limits for handlers deployed without their own.
    pub default_limits: Limits,
    /// Largest signal in bytes; bigger ones get ErrorReply 413.
    pub max_message_bytes: usize,
    /// Largest component accepted for compilation.
    pub max_component_bytes: usize,
    /// Wasm stack per instance; deeper recursion traps (ErrorReply 500).
    pub max_wasm_stack: usize,
    /// Most handler instances alive at once across all handlers (the instance pool's slots);
    /// every deployed handler is guaranteed one, so it is also the most handlers deployed.
    pub max_instances: u32,
    /// How long a warm instance waits for a signal before it is released.
    pub instance_idle: Duration,
    /// Most dead letters kept; past it, signals that would need one are refused at the source.
    pub dead_letter_capacity: usize,
    /// Most dead letters kept for one handler (or client); past it, a copy that would need
    /// one is refused at the source, for that handler alone.
    pub dead_letter_handler_capacity: usize,
    /// Bytes of signals ([`crate::Signal::size`]) one handler's mailbox may hold; past it,
    /// signals are refused like at a full mailbox (503).
    pub mailbox_bytes: usize,
    /// Bytes of signals all mailboxes may hold together; past it, signals are refused (503).
    pub queue_budget_bytes: usize,
    /// Longest causal chain; a host call that would go deeper fails with 508.
    pub max_causal_depth: u32,
    /// Messages a handler may `send` while handling one signal; past it, 429.
    pub max_sends_per_signal: u32,
    /// Events and data changes a handler may emit while handling one signal; past it, 429.
    pub max_emits_per_signal: u32,
    /// `request`s a handler may make while handling one signal; past it, 429.
    pub max_requests_per_signal: u32,
    /// Lines a handler may `log` while handling one signal; the rest are dropped and counted.
    pub max_log_lines_per_signal: u32,
    /// Steady rate of warning and guest log lines about one handler, per second.
    pub log_lines_per_second: u32,
    /// Lines about one handler that may be written in a burst before the rate applies.
    pub log_burst: u32,
    /// Where uploads are compiled.
    pub compiler: Compiler,
    /// Compilations run at once; more wait for a slot.
    pub max_compilations: usize,
    /// Uploads that may wait for a compile slot; past it an upload is refused (503).
    pub max_queued_compilations: usize,
    /// Longest one compilation may take before it is stopped and the upload refused.
    pub compile_timeout: Duration,
    /// How long a message sent without waiting stays open for its answer; past it the host
    /// answers 504 (an awaited message's deadline is its sender's timeout).
    pub message_deadline: Duration,
    /// Largest value of one state key; a turn setting a bigger one fails with 507.
    pub state_value_bytes: usize,
    /// Bytes of state (keys and values) one handler may store; a turn that would store more
    /// fails with 507 (deletes always pass).
    pub state_handler_bytes: u64,
    /// Pending durable timers one handler may have; scheduling past it fails with 429.
    pub timers_per_handler: usize,
    /// Least delay of a timer scheduled by a turn descending from a fired timer.
    pub timer_min_interval: Duration,
    /// Most timers of one handler fired per second; the others wait, late, never lost.
    pub timer_fires_per_second: u32,
    /// Bytes all turns in flight may hold at once (state writes not committed yet, signals
    /// and timers held until commit); a turn past it fails with 507 and keeps nothing.
    pub turn_write_budget: u64,
    /// Most concurrent turns whose state commits share one durable transaction (group
    /// commit); 1 gives every turn its own fsync (for measuring what grouping saves).
    pub state_max_group: usize,
    /// Handlers clients (`user:<id>`) may send any message type they accept, beyond what
    /// their descriptions open to clients; `*` opens every handler.
    pub open_to_clients: Vec<String>,
    /// Pushes one handler may keep for one user until a client acknowledges them; a turn
    /// keeping more fails with 429 (other handlers keep their own for the user).
    pub kept_per_user: usize,
    /// Longest a kept push is kept (a handler may ask for less).
    pub kept_ttl: Duration,
    /// Bytes of signals one client connection may have waiting to be sent
    /// (`--gateway-queue-bytes`): a push larger than that could never be queued, so `push`
    /// and `keep` refuse it with 413.
    pub client_queue_bytes: usize,
    /// The clock the host reads for every time it stamps or compares (the system clock;
    /// tests skew it).
    pub clock: Clock,
    /// Whether this host joined a cluster (`--nats`). Until agents, keyed state, timers and
    /// kept pushes are kept cluster-wide, such a host refuses them with 409, so that no agent
    /// runs on two stores that drift apart.
    pub clustered: bool,
}

/// Where uploads are compiled. Compiling is CPU- and memory-heavy and outside wasmtime's
/// denial-of-service scope, so the daemon compiles in a child process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// On a blocking thread of this process: needs no binary (tests, embedding), but a
    /// compile cannot be stopped once started, and its memory stays with this process.
    #[default]
    InProcess,
    /// In a child process, `PROGRAM compile-artifact ...` (the `switchboard` binary): killed
    /// when nobody waits for it any more or past the time budget, and its memory goes back
    /// to the system when it exits.
    Subprocess(std::path::PathBuf),
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            default_limits: Limits::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            max_instances: DEFAULT_MAX_INSTANCES,
            instance_idle: DEFAULT_INSTANCE_IDLE,
            dead_letter_capacity: DEFAULT_DEAD_LETTERS,
            dead_letter_handler_capacity: DEFAULT_DEAD_LETTERS_PER_HANDLER,
            mailbox_bytes: DEFAULT_MAILBOX_BYTES,
            queue_budget_bytes: DEFAULT_QUEUE_BUDGET_BYTES,
            max_causal_depth: DEFAULT_MAX_CAUSAL_DEPTH,
            max_sends_per_signal: DEFAULT_SENDS_PER_SIGNAL,
            max_emits_per_signal: DEFAULT_EMITS_PER_SIGNAL,
            max_requests_per_signal: DEFAULT_REQUESTS_PER_SIGNAL,
            max_log_lines_per_signal: DEFAULT_LOG_LINES_PER_SIGNAL,
            log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
            log_burst: DEFAULT_LOG_BURST,
            compiler: Compiler::InProcess,
            max_compilations: DEFAULT_MAX_COMPILATIONS,
            max_queued_compilations: DEFAULT_MAX_QUEUED_COMPILATIONS,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            message_deadline: DEFAULT_MESSAGE_DEADLINE,
            state_value_bytes: DEFAULT_STATE_VALUE_BYTES,
            state_handler_bytes: DEFAULT_STATE_HANDLER_BYTES,
            timers_per_handler: DEFAULT_TIMERS_PER_HANDLER,
            timer_min_interval: DEFAULT_TIMER_MIN_INTERVAL,
            timer_fires_per_second: DEFAULT_TIMER_FIRES_PER_SECOND,
            turn_write_budget: DEFAULT_TURN_WRITE_BUDGET,
            state_max_group: crate::keyed::MAX_GROUP,
            open_to_clients: Vec::new(),
            kept_per_user: DEFAULT_KEPT_PER_USER,
            kept_ttl: DEFAULT_KEPT_TTL,
            client_queue_bytes: DEFAULT_CLIENT_QUEUE_BYTES,
            clock: Clock::system(),
            clustered: false,
        }
    }
}

/// Longest duration a flag or the config file may give: 100 years. Far past any sensible
/// setting, and near enough that a deadline that far ahead is still an instant the clock
/// holds and a `u64` of milliseconds (a longer one overflowed both: a panic at shutdown or
/// at a client's first heartbeat, or a deadline wrapped into the past).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration written like `500ms`, `5s`, `2m`, `12h` or `7d` (a bare number is
/// seconds), of at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    };
    (duration <= MAX_DURATION).then_some(duration)
}

/// [`parse_duration`] for clap's `value_parser`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| {
        format!("`{text}` is not a duration like 500ms, 10s, 2m, 12h or 7d, of at most 100 years")
    })
}

/// Parses a size written like `1048576`, `512KiB`, `64MiB` or `1GiB`.
pub fn parse_bytes(text: &str) -> Option<usize> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// [`parse_bytes`] for clap's `value_parser`.
pub fn bytes_arg(text: &str) -> Result<usize, String> {
    parse_bytes(text).ok_or_else(|| format!("`{text}` is not a size like 1048576, 64MiB or 1GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert!(duration_arg("soon").unwrap_err().contains("soon"));
    }

    /// Proves a duration too long to wait for is refused rather than overflowing where it
    /// is used (found by the fuzz target `size_and_duration`: `744444444444444444` seconds
    /// is no `u64` of milliseconds, and a deadline that far ahead no instant).
    #[test]
    fn durations_past_a_century_are_refused() {
        assert_eq!(parse_duration("36500d"), Some(MAX_DURATION));
        assert_eq!(parse_duration("36501d"), None);
        assert_eq!(parse_duration("744444444444444444"), None);
        assert_eq!(parse_duration("18446744073709551615ms"), None);
        assert!(duration_arg("36501d").unwrap_err().contains("100 years"));
    }

    /// Proves sizes parse with and without a binary unit, and nonsense is refused.
    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("64MB"), None);
        assert_eq!(parse_bytes("MiB"), None);
        assert!(bytes_arg("lots").unwrap_err().contains("lots"));
    }
}
