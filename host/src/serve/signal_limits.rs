//! `switchboard serve`'s per-signal limits: how deep a chain of signals may go and how much
//! one handler may send, emit, request and log while handling one signal. Flags and
//! environment win over the config file's `[signals]` table, which wins over the defaults.

use serde::Deserialize;

use crate::HostConfig;

/// Per-signal limits every handler runs under; also the config file's `[signals]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalLimitArgs {
    /// Longest causal chain: a signal sent while handling a signal at this depth is refused
    /// with 508 (a loop) [default: 32].
    #[arg(long, env = "SWITCHBOARD_MAX_CAUSAL_DEPTH", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_causal_depth: Option<u32>,
    /// Messages a handler may `send` while handling one signal; past it, 429 [default: 1000].
    #[arg(long, env = "SWITCHBOARD_MAX_SENDS_PER_SIGNAL")]
    pub max_sends_per_signal: Option<u32>,
    /// Events and data changes a handler may emit while handling one signal; past it, 429
    /// [default: 1000].
    #[arg(long, env = "SWITCHBOARD_MAX_EMITS_PER_SIGNAL")]
    pub max_emits_per_signal: Option<u32>,
    /// `request`s a handler may make while handling one signal; past it, 429 [default: 100].
    #[arg(long, env = "SWITCHBOARD_MAX_REQUESTS_PER_SIGNAL")]
    pub max_requests_per_signal: Option<u32>,
    /// Lines a handler may `log` while handling one signal; the rest are dropped and
    /// counted [default: 100].
    #[arg(long, env = "SWITCHBOARD_MAX_LOG_LINES_PER_SIGNAL")]
    pub max_log_lines_per_signal: Option<u32>,
}

impl SignalLimitArgs {
    /// These limits where given, else `file`'s (the config file's `[signals]` table).
    pub fn or(self, file: Self) -> Self {
        Self {
            max_causal_depth: self.max_causal_depth.or(file.max_causal_depth),
            max_sends_per_signal: self.max_sends_per_signal.or(file.max_sends_per_signal),
            max_emits_per_signal: self.max_emits_per_signal.or(file.max_emits_per_signal),
            max_requests_per_signal: self
                .max_requests_per_signal
                .or(file.max_requests_per_signal),
            max_log_lines_per_signal: self
                .max_log_lines_per_signal
                .or(file.max_log_lines_per_signal),
        }
    }

    /// Writes the limits given into `host`, leaving the others as they are.
    pub fn apply(&self, host: &mut HostConfig) {
        let set = |field: &mut u32, value: Option<u32>| {
            if let Some(value) = value {
                *field = value;
            }
        };
        // A depth of 0 would refuse every signal a handler sends: at least 1.
        set(
            &mut host.max_causal_depth,
            self.max_causal_depth.map(|d| d.max(1)),
        );
        set(&mut host.max_sends_per_signal, self.max_sends_per_signal);
        set(&mut host.max_emits_per_signal, self.max_emits_per_signal);
        set(
            &mut host.max_requests_per_signal,
            self.max_requests_per_signal,
        );
        set(
            &mut host.max_log_lines_per_signal,
            self.max_log_lines_per_signal,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves flags win over the file's table, and unset limits keep the host's defaults.
    #[test]
    fn flags_win_over_the_file_and_unset_limits_keep_defaults() {
        let file: SignalLimitArgs =
            toml::from_str("max_causal_depth = 8\nmax_emits_per_signal = 5\n").unwrap();
        let flags = SignalLimitArgs {
            max_causal_depth: Some(4),
            ..SignalLimitArgs::default()
        };
        let mut host = HostConfig::default();
        flags.or(file).apply(&mut host);
        assert_eq!(host.max_causal_depth, 4);
        assert_eq!(host.max_emits_per_signal, 5);
        assert_eq!(
            host.max_sends_per_signal,
            crate::config::DEFAULT_SENDS_PER_SIGNAL
        );
        let unknown = toml::from_str::<SignalLimitArgs>("max_depth = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("max_depth"), "{unknown}");
    }
}
