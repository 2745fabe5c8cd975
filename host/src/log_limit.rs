//! Bounded logging: a token bucket per handler for the lines written about it (the host's
//! refusal and failure warnings, and the handler's own `log` lines), so one handler in a
//! storm cannot fill the disk or drown everyone else's lines.
//!
//! A line that finds the bucket empty is dropped and counted in
//! `switchboard_log_suppressed_total{handler}`; the next line that passes is preceded by one
//! that says how many were dropped, so a reader knows the log has a gap and how big it was.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{HandlerLabels, Metrics};
use crate::token_bucket::TokenBucket;

/// Most handlers (or agent addresses) tracked at once; past it, idle buckets are forgotten,
/// so a flood of distinct names cannot grow the table without bound.
const MAX_TRACKED: usize = 10_000;

/// One handler's bucket.
#[derive(Debug)]
struct Bucket {
    tokens: TokenBucket,
    /// Lines dropped since the last one that passed.
    suppressed: u64,
}

/// Per-handler token buckets for log lines.
pub struct LogLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens a bucket holds.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    suppressed: Family<HandlerLabels, Counter>,
}

impl LogLimiter {
    /// A limiter letting `lines_per_second` lines about each handler through, after a burst
    /// of `burst`, counting what it drops in `metrics`.
    pub fn new(lines_per_second: u32, burst: u32, metrics: &Metrics) -> Self {
        Self {
            rate: f64::from(lines_per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
            suppressed: metrics.log_suppressed.clone(),
        }
    }

    /// Whether a line about `handler` may be written now. If lines were dropped since the
    /// last one that passed, a line saying how many is written first.
    pub fn admit(&self, handler: &str) -> bool {
        match self.admit_at(handler, Instant::now()) {
            Admit::Pass { suppressed: 0 } => true,
            Admit::Pass { suppressed } => {
                tracing::warn!(
                    handler,
                    suppressed,
                    "{suppressed} log lines about this handler were suppressed by the rate limit"
                );
                true
            }
            Admit::Drop => false,
        }
    }

    /// Counts `lines` about `handler` dropped by another limit (a guest's per-signal cap).
    pub fn count_dropped(&self, handler: &str, lines: u64) {
        self.suppressed
            .get_or_create(&Metrics::handler(handler))
            .inc_by(lines);
    }

    fn admit_at(&self, handler: &str, now: Instant) -> Admit {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(handler) {
            self.forget_idle(&mut buckets, now);
        }
        let bucket = buckets.entry(handler.to_owned()).or_insert_with(|| Bucket {
            tokens: TokenBucket::new(self.rate, self.burst, now),
            suppressed: 0,
        });
        if bucket.tokens.take_at(now) {
            Admit::Pass {
                suppressed: std::mem::take(&mut bucket.suppressed),
            }
        } else {
            bucket.suppressed += 1;
            drop(buckets);
            self.count_dropped(handler, 1);
            Admit::Drop
        }
    }

    /// Forgets buckets that have refilled and owe no suppression notice; if every one is
    /// busy, forgets them all (the dropped lines were already counted in the metric).
    fn forget_idle(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, b| b.suppressed > 0 || !b.tokens.refilled_at(now));
        if buckets.len() >= MAX_TRACKED {
            buckets.clear();
        }
    }
}

/// What [`LogLimiter::admit_at`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Write the line; `suppressed` lines were dropped since the last one written.
    Pass { suppressed: u64 },
    /// Drop it.
    Drop,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn suppressed(metrics: &Metrics, handler: &str) -> u64 {
        metrics
            .log_suppressed
            .get_or_create(&Metrics::handler(handler))
            .get()
    }

    /// A burst passes, the rest is dropped and counted, the bucket refills at the rate, and
    /// the first line after a gap reports its size; other handlers are not affected.
    #[test]
    fn bursts_then_rate_with_a_count_of_the_gap() {
        let metrics = Metrics::default();
        let limiter = LogLimiter::new(20, 100, &metrics);
        let start = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                limiter.admit_at("storm", start),
                Admit::Pass { suppressed: 0 }
            );
        }
        for _ in 0..1000 {
            assert_eq!(limiter.admit_at("storm", start), Admit::Drop);
        }
        assert_eq!(suppressed(&metrics, "storm"), 1000);
        assert_eq!(
            limiter.admit_at("echo", start),
            Admit::Pass { suppressed: 0 },
            "another handler has its own bucket"
        );
        let later = start + Duration::from_millis(100);
        assert_eq!(
            limiter.admit_at("storm", later),
            Admit::Pass { suppressed: 1000 }
        );
        assert_eq!(
            limiter.admit_at("storm", later),
            Admit::Pass { suppressed: 0 }
        );
        assert_eq!(limiter.admit_at("storm", later), Admit::Drop);
        // Over 10 s at 20 lines/s, about 200 lines pass, never more than the rate allows.
        let passed = (0..10_000)
            .filter(|i| {
                let at = later + Duration::from_millis(*i);
                matches!(limiter.admit_at("storm", at), Admit::Pass { .. })
            })
            .count();
        assert!((195..=205).contains(&passed), "{passed}");
    }

    /// A flood of distinct names keeps the table bounded.
    #[test]
    fn the_table_is_bounded() {
        let metrics = Metrics::default();
        let limiter = LogLimiter::new(20, 100, &metrics);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED * 2) {
            limiter.admit_at(&format!("agent:{i}"), now);
        }
        let len = limiter.buckets.lock().unwrap().len();
        assert!(len <= MAX_TRACKED, "{len}");
    }
}
