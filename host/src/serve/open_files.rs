//! The open-file limit: every connection holds a file descriptor, so the daemon raises its
//! soft limit to the hard limit at start-up and keeps its connection cap below it.

/// File descriptors kept back from connections, for the data directory, the store, the
/// listener and logs.
pub const RESERVED_FILES: u64 = 128;
/// Fewest connections a cap is lowered to, however low the open-file limit.
const MIN_CONNECTIONS: u64 = 16;

/// Raises the soft limit on open files as far as the hard limit allows and returns the soft
/// limit now in force, or `None` where it cannot be known. Logs the outcome at info.
#[cfg(unix)]
pub fn raise_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "could not read the open-file limit");
        return None;
    }
    let before = limit.rlim_cur;
    // An unlimited hard limit cannot be the soft limit on Linux; the kernel's ceiling
    // (nr_open) is usually 2^20.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if before != libc::RLIM_INFINITY && before < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, soft = before, hard = limit.rlim_max, "could not raise the open-file limit");
        }
    }
    let soft: u64 = limit.rlim_cur;
    tracing::info!(soft, was = before, hard = limit.rlim_max, "open-file limit");
    Some(soft)
}

/// Elsewhere the limit is left alone and unknown.
#[cfg(not(unix))]
pub fn raise_limit() -> Option<u64> {
    None
}

/// The connection cap `wanted` lowered to what an open-file limit of `files` leaves room
/// for.
pub fn connection_cap(wanted: usize, files: Option<u64>) -> usize {
    match files {
        Some(files) => {
            let room = files.saturating_sub(RESERVED_FILES).max(MIN_CONNECTIONS);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the cap stays below the open-file limit and is never lowered to nothing.
    #[test]
    fn the_cap_leaves_room_for_other_files() {
        assert_eq!(connection_cap(10_000, Some(1024)), 1024 - 128);
        assert_eq!(connection_cap(50, Some(1024)), 50);
        assert_eq!(connection_cap(10_000, Some(20)), 16);
        assert_eq!(connection_cap(10_000, None), 10_000);
        let soft = raise_limit().expect("the limit is known here");
        assert!(soft > 0);
    }
}
