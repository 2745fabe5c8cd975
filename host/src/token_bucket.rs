//! The one token bucket: `rate` tokens a second, up to `burst` at once. Log lines about a
//! handler (the log limit) and a gateway client's frames are paced by it.

use std::time::Instant;

/// A token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: `rate` tokens a second (at least a small positive rate), up
    /// to `burst` (at least 1).
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            tokens: burst,
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            at: now,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take_at(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token now if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    /// Whether the bucket would be full again at `now` (nothing taken is still owed).
    pub fn refilled_at(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Proves a burst passes, the next token comes only at the rate, and the bucket never
    /// holds more than its burst.
    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3.0, start);
        assert!((0..3).all(|_| bucket.take_at(start)));
        assert!(!bucket.take_at(start));
        assert!(!bucket.take_at(start + Duration::from_millis(400)));
        assert!(bucket.take_at(start + Duration::from_millis(500)));
        let later = start + Duration::from_secs(60);
        assert!(bucket.refilled_at(later));
        assert!((0..3).all(|_| bucket.take_at(later)));
        assert!(
            !bucket.take_at(later),
            "no more than the burst was saved up"
        );
    }
}
