//! `switchboard serve`'s settings: the TOML config file (with its `[signals]` and `[limits]`
//! tables), and the duration and size arguments. Whatever parses is a setting the host can
//! live with: a duration it can wait for, a limit of at least one.

use std::time::{Duration, Instant};

use crate::config::{MAX_INSTANCES_LIMIT, bytes_arg, duration_arg, parse_bytes, parse_duration};
use crate::serve::ServeArgs;

/// Whether the host can wait for `d`: a deadline `d` from now exists, and `d` in
/// milliseconds fits the `u64`s signals carry deadlines in.
fn waitable(d: Duration) -> bool {
    Instant::now().checked_add(d).is_some() && u64::try_from(d.as_millis()).is_ok()
}

/// Reads `data` as the config file of `switchboard serve` given no flags.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = ServeArgs::from_file_text(text) else {
        return;
    };
    let host = &settings.host_config;
    let durations = [
        ("drain_timeout", settings.drain_timeout),
        (
            "header_read_timeout",
            settings.connections.header_read_timeout,
        ),
        ("idle_timeout", settings.connections.idle_timeout),
        ("instance_idle", host.instance_idle),
        ("compile_timeout", host.compile_timeout),
        ("message_deadline", host.message_deadline),
    ];
    for (key, d) in durations {
        assert!(waitable(d), "`{key}` of {d:?} cannot be waited for");
    }
    assert!(!settings.admin_token.is_empty());
    assert!((1..=MAX_INSTANCES_LIMIT).contains(&host.max_instances));
    assert!(host.max_causal_depth >= 1 && host.max_compilations >= 1);
    assert!(host.max_message_bytes >= 1 && host.dead_letter_capacity >= 1);
    assert!(host.log_lines_per_second >= 1 && host.log_burst >= 1);
}

/// Reads `data` as a duration and as a size argument: the flag parsers agree with the
/// plain ones, a duration can be waited for, and both read back from their plain form.
pub fn size_and_duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let duration = parse_duration(text);
    assert_eq!(duration, duration_arg(text).ok());
    if let Some(d) = duration {
        assert!(waitable(d), "`{text}` is {d:?}, which cannot be waited for");
        assert_eq!(parse_duration(&format!("{}ms", d.as_millis())), Some(d));
    }
    let size = parse_bytes(text);
    assert_eq!(size, bytes_arg(text).ok());
    if let Some(n) = size {
        assert_eq!(parse_bytes(&n.to_string()), Some(n));
    }
}
