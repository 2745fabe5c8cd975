//! Host-wide settings and per-handler limits, each default a named constant.

use std::time::Duration;

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
/// Default number of signals one handler works on at once. One means a handler is an actor:
/// its in-memory state sees its signals one at a time, like the seeds' reducers.
pub const DEFAULT_CONCURRENCY: u32 = 1;
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
/// How often the epoch ticker advances: the granularity of CPU-time checks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Largest component a host will compile.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Dead letters a host keeps at most, by default.
pub const DEFAULT_DEAD_LETTERS: usize = 100_000;
/// Table elements one handler may grow to (componentize-py handlers hold thousands).
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;

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
    /// Signals handled at once, each on its own warm instance.
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
            concurrency: DEFAULT_CONCURRENCY,
            mailbox: DEFAULT_MAILBOX,
        }
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
    /// Most component instances alive at once across all handlers (pooling allocator slots).
    pub max_instances: u32,
    /// Most dead letters kept; past it, signals that would need one are refused at the source.
    pub dead_letter_capacity: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            default_limits: Limits::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            max_instances: 1000,
            dead_letter_capacity: DEFAULT_DEAD_LETTERS,
        }
    }
}

/// Parses a duration written like `500ms`, `5s` or `2m` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// [`parse_duration`] for clap's `value_parser`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("`{text}` is not a duration like 500ms, 10s or 2m"))
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
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert!(duration_arg("soon").unwrap_err().contains("soon"));
    }
}
