//! `switchboard serve`'s remaining host-wide limits: signal and component sizes, the
//! dead-letter store, the compile queue, the log rate, keyed state and timers, and how
//! long a message stays open for its answer. Flags and environment win over
//! the config file's `[limits]` table (sizes there in bytes), which wins over the defaults.

use serde::Deserialize;

use crate::HostConfig;
use crate::config::{bytes_arg, duration_arg};

/// Host-wide limits; also the config file's `[limits]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLimitArgs {
    /// Largest signal (payload, addresses, headers), like 1MiB; bigger ones get 413
    /// [default: 1MiB].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", value_parser = bytes_arg)]
    pub max_message_bytes: Option<usize>,
    /// Largest component accepted for upload, like 64MiB; bigger ones get 413
    /// [default: 64MiB].
    #[arg(long, env = "SWITCHBOARD_MAX_COMPONENT_BYTES", value_parser = bytes_arg)]
    pub max_component_bytes: Option<usize>,
    /// Dead letters kept at most; past it, a copy of a signal that would need one is refused
    /// at the source and counted (a reply is dropped and counted) [default: 100000].
    #[arg(long, env = "SWITCHBOARD_DEAD_LETTER_CAPACITY")]
    pub dead_letter_capacity: Option<usize>,
    /// Dead letters kept at most for one handler (or client): its share of the store, so one
    /// stuck subscriber never takes the store from the others; past it, copies for that
    /// handler alone are refused at the source and counted [default: 10000].
    #[arg(long, env = "SWITCHBOARD_DEAD_LETTER_HANDLER_CAPACITY")]
    pub dead_letter_handler_capacity: Option<usize>,
    /// Uploads that may wait for a compile slot; past it, an upload gets 503 [default: 16].
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_COMPILATIONS")]
    pub max_queued_compilations: Option<usize>,
    /// Steady rate of log lines about one handler (its own, what it prints, the host's
    /// warnings), per second; the rest are dropped and counted [default: 20].
    #[arg(long, env = "SWITCHBOARD_LOG_LINES_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub log_lines_per_second: Option<u32>,
    /// Log lines about one handler that may be written in a burst before the rate applies
    /// [default: 100].
    #[arg(long, env = "SWITCHBOARD_LOG_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub log_burst: Option<u32>,
    /// Largest value of one keyed-state key, like 256KiB; a signal setting a bigger one
    /// fails with 507 and keeps nothing [default: 256KiB].
    #[arg(long, env = "SWITCHBOARD_STATE_VALUE_BYTES", value_parser = bytes_arg)]
    pub state_value_bytes: Option<usize>,
    /// Keyed state (keys and values) one handler may store in all, like 256MiB; past it a
    /// signal fails with 507 and keeps nothing [default: 256MiB].
    #[arg(long, env = "SWITCHBOARD_STATE_HANDLER_BYTES", value_parser = bytes_arg)]
    pub state_handler_bytes: Option<usize>,
    /// Pending durable timers one handler may have; past it, scheduling fails with 429
    /// [default: 100000].
    #[arg(long, env = "SWITCHBOARD_TIMERS_PER_HANDLER")]
    pub timers_per_handler: Option<usize>,
    /// Least delay, like 1s, of a timer scheduled while handling a signal that descends from
    /// a fired timer (through any messages and handlers): a fired timer starts a fresh
    /// causal chain, so a chain through timers is paced instead [default: 1s].
    #[arg(long, env = "SWITCHBOARD_TIMER_MIN_INTERVAL", value_parser = duration_arg)]
    #[serde(default, with = "humantime_opt")]
    pub timer_min_interval: Option<std::time::Duration>,
    /// Timers of one handler fired per second at most; the others fire late, never lost
    /// [default: 100].
    #[arg(long, env = "SWITCHBOARD_TIMER_FIRES_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub timer_fires_per_second: Option<u32>,
    /// Bytes all turns in flight may hold at once, like 512MiB: state written and not
    /// committed yet, signals and timers held until commit; a turn past it fails with 507
    /// and keeps nothing [default: 512MiB].
    #[arg(long, env = "SWITCHBOARD_TURN_WRITE_BUDGET", value_parser = bytes_arg)]
    pub turn_write_budget: Option<usize>,
    /// How long a message sent without waiting stays open for its answer, like 5m; past it
    /// the host answers 504 [default: 5m].
    #[arg(long, env = "SWITCHBOARD_MESSAGE_DEADLINE", value_parser = duration_arg)]
    #[serde(default, with = "humantime_opt")]
    pub message_deadline: Option<std::time::Duration>,
}

/// A duration in the config file, written like the flag (`90s`, `5m`).
mod humantime_opt {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| {
            crate::config::parse_duration(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("`{t}` is not a duration like 500ms, 10s or 2m"))
            })
        })
        .transpose()
    }
}

impl HostLimitArgs {
    /// These limits where given, else `file`'s (the config file's `[limits]` table).
    pub fn or(self, file: Self) -> Self {
        Self {
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_component_bytes: self.max_component_bytes.or(file.max_component_bytes),
            dead_letter_capacity: self.dead_letter_capacity.or(file.dead_letter_capacity),
            dead_letter_handler_capacity: self
                .dead_letter_handler_capacity
                .or(file.dead_letter_handler_capacity),
            max_queued_compilations: self
                .max_queued_compilations
                .or(file.max_queued_compilations),
            log_lines_per_second: self.log_lines_per_second.or(file.log_lines_per_second),
            log_burst: self.log_burst.or(file.log_burst),
            state_value_bytes: self.state_value_bytes.or(file.state_value_bytes),
            state_handler_bytes: self.state_handler_bytes.or(file.state_handler_bytes),
            timers_per_handler: self.timers_per_handler.or(file.timers_per_handler),
            timer_min_interval: self.timer_min_interval.or(file.timer_min_interval),
            timer_fires_per_second: self.timer_fires_per_second.or(file.timer_fires_per_second),
            turn_write_budget: self.turn_write_budget.or(file.turn_write_budget),
            message_deadline: self.message_deadline.or(file.message_deadline),
        }
    }

    /// Writes the limits given into `host`, leaving the others as they are. Sizes and rates
    /// of 0 would refuse everything: they are at least 1.
    pub fn apply(&self, host: &mut HostConfig) {
        fn set<T: Copy + Ord + From<u8>>(field: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *field = value.max(T::from(1));
            }
        }
        set(&mut host.max_message_bytes, self.max_message_bytes);
        set(&mut host.max_component_bytes, self.max_component_bytes);
        set(&mut host.dead_letter_capacity, self.dead_letter_capacity);
        set(
            &mut host.dead_letter_handler_capacity,
            self.dead_letter_handler_capacity,
        );
        set(
            &mut host.max_queued_compilations,
            self.max_queued_compilations,
        );
        set(&mut host.log_lines_per_second, self.log_lines_per_second);
        set(&mut host.log_burst, self.log_burst);
        set(&mut host.state_value_bytes, self.state_value_bytes);
        set(
            &mut host.state_handler_bytes,
            self.state_handler_bytes.map(|b| b as u64),
        );
        set(&mut host.timers_per_handler, self.timers_per_handler);
        set(
            &mut host.timer_fires_per_second,
            self.timer_fires_per_second,
        );
        set(
            &mut host.turn_write_budget,
            self.turn_write_budget.map(|b| b as u64),
        );
        if let Some(interval) = self.timer_min_interval {
            host.timer_min_interval = interval;
        }
        if let Some(deadline) = self.message_deadline {
            host.message_deadline = deadline.max(std::time::Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves flags win over the file's table, unset limits keep the host's defaults, and
    /// an unknown key in the table is an error naming it.
    #[test]
    fn flags_win_over_the_file_and_unset_limits_keep_defaults() {
        let file: HostLimitArgs = toml::from_str(
            "max_message_bytes = 2048\nlog_burst = 5\nstate_value_bytes = 100\nmessage_deadline = \"90s\"\n",
        )
        .unwrap();
        let flags = HostLimitArgs {
            log_burst: Some(7),
            dead_letter_capacity: Some(0),
            ..HostLimitArgs::default()
        };
        let mut host = HostConfig::default();
        flags.or(file).apply(&mut host);
        assert_eq!(host.max_message_bytes, 2048);
        assert_eq!(host.log_burst, 7);
        assert_eq!(host.dead_letter_capacity, 1, "at least one");
        assert_eq!(host.state_value_bytes, 100);
        assert_eq!(host.message_deadline, std::time::Duration::from_secs(90));
        assert_eq!(
            host.timers_per_handler,
            crate::config::DEFAULT_TIMERS_PER_HANDLER
        );
        let bad = toml::from_str::<HostLimitArgs>("message_deadline = \"soon\"\n").unwrap_err();
        assert!(bad.to_string().contains("soon"), "{bad}");
        assert_eq!(
            host.max_component_bytes,
            crate::config::DEFAULT_MAX_COMPONENT_BYTES
        );
        let unknown = toml::from_str::<HostLimitArgs>("max_bytes = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("max_bytes"), "{unknown}");
    }
}
