//! The host's one clock: wall time in milliseconds since the Unix epoch, read by everything
//! that stamps or compares a time (envelopes, deadlines, dead letters, timers, kept pushes,
//! deploy records). A host takes it from its configuration and passes it down, so a test can
//! run hosts whose clocks disagree, as the machines of a cluster do.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock, shifted by a skew that starts at zero. Clones share the skew.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    skew_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock as it is.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system clock, `skew_ms` ahead (or behind, when negative).
    pub fn skewed(skew_ms: i64) -> Self {
        let clock = Self::default();
        clock.advance(skew_ms);
        clock
    }

    /// Moves this clock, and every clone of it, `ms` ahead (or back, when negative).
    pub fn advance(&self, ms: i64) {
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Milliseconds since the Unix epoch, now (0 before it).
    pub fn now_millis(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let now = system.saturating_add(self.skew_ms.load(Ordering::Relaxed));
        u64::try_from(now).unwrap_or(0)
    }

    /// The time `delay` from now, in milliseconds since the Unix epoch.
    pub fn after(&self, delay: std::time::Duration) -> u64 {
        let delay = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.now_millis().saturating_add(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_and_its_clones_run_apart_from_the_system_clock() {
        let system = Clock::system();
        let ahead = Clock::skewed(3_600_000);
        let clone = ahead.clone();
        let gap = ahead.now_millis() - system.now_millis();
        assert!((3_599_000..=3_601_000).contains(&gap), "{gap}");
        clone.advance(-7_200_000);
        let gap = system.now_millis() as i64 - ahead.now_millis() as i64;
        assert!((3_599_000..=3_601_000).contains(&gap), "{gap}");
        assert_eq!(Clock::skewed(i64::MIN).now_millis(), 0);
        assert_eq!(
            system.after(std::time::Duration::MAX),
            u64::MAX,
            "saturates"
        );
    }
}
