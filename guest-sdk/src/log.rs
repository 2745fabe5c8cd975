//! Logging through the host: [`LogLevel`] and the `trace!` … `error!` macros, which format
//! like `format!` and write one line to the host's log, tagged with this handler's name.

use crate::wit;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Useful when debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// Something failed.
    Error,
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

/// Writes a `trace` line to the host's log: `trace!("got {n} items")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::LogLevel::Trace, &::std::format!($($arg)+)) };
}

/// Writes a `debug` line to the host's log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::LogLevel::Debug, &::std::format!($($arg)+)) };
}

/// Writes an `info` line to the host's log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::LogLevel::Info, &::std::format!($($arg)+)) };
}

/// Writes a `warn` line to the host's log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::LogLevel::Warn, &::std::format!($($arg)+)) };
}

/// Writes an `error` line to the host's log.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::LogLevel::Error, &::std::format!($($arg)+)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_the_wit_enum_in_order() {
        let all = [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ];
        let wit: Vec<wit::LogLevel> = all.iter().map(|&l| l.into()).collect();
        assert_eq!(
            wit,
            [
                wit::LogLevel::Trace,
                wit::LogLevel::Debug,
                wit::LogLevel::Info,
                wit::LogLevel::Warn,
                wit::LogLevel::Error
            ]
        );
        assert!(LogLevel::Warn > LogLevel::Info);
    }
}
