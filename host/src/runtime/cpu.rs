//! The CPU meter: charges a guest only for the time it actually runs.
//!
//! A signal's CPU time is the sum of its running segments. wasmtime's call hook
//! ([`on_call_hook`]) opens a segment whenever execution enters wasm (a call from the host,
//! or a return from a host function) and closes it whenever execution leaves wasm (a return
//! to the host, or a call of a host function). Every suspension of a guest goes through a
//! host function or a libcall, both bracketed by the hook: an async host call such as
//! `request` or a WASI sleep, and the epoch callback's yield to tokio, while other tasks run
//! on the thread. So a segment never spans a suspension, never moves between threads, and
//! the thread's own CPU clock ([`ThreadCpuClock`]) measures it: time other tasks or
//! processes take from the core is not charged either.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::CallHook;

use super::state::LimitHit;

/// A clock that only moves while the calling thread runs. Tests inject a fake one.
pub trait Clock: Send + Sync + 'static {
    /// The clock's reading now; only differences between readings matter.
    fn now(&self) -> Duration;
}

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadCpuClock;

impl Clock for ThreadCpuClock {
    #[cfg(unix)]
    fn now(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call only writes to it.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            // Never happens for this clock on Linux; a stopped clock under-charges rather
            // than failing the guest.
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[cfg(not(unix))]
    fn now(&self) -> Duration {
        // No per-thread clock: fall back to wall time since first use.
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// Counts the CPU time of the current signal: the sum of its running segments.
pub struct CpuMeter {
    clock: Arc<dyn Clock>,
    /// Time charged by closed segments.
    used: Duration,
    /// When the open segment started, if the guest is running.
    running_since: Option<Duration>,
    limit: Duration,
}

impl std::fmt::Debug for CpuMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuMeter")
            .field("used", &self.used)
            .field("running", &self.running_since.is_some())
            .field("limit", &self.limit)
            .finish()
    }
}

impl CpuMeter {
    /// A meter on the thread CPU clock.
    pub fn new(limit: Duration) -> Self {
        Self::with_clock(limit, Arc::new(ThreadCpuClock))
    }

    /// A meter reading `clock`.
    pub fn with_clock(limit: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            used: Duration::ZERO,
            running_since: None,
            limit,
        }
    }

    /// Starts counting afresh for a new signal.
    pub fn restart(&mut self) {
        self.used = Duration::ZERO;
        self.running_since = None;
    }

    /// The guest starts running: opens a segment (no-op if one is open).
    pub fn resume(&mut self) {
        if self.running_since.is_none() {
            self.running_since = Some(self.clock.now());
        }
    }

    /// The guest stops running: closes the open segment and charges it.
    pub fn pause(&mut self) {
        if let Some(since) = self.running_since.take() {
            self.used += self.clock.now().saturating_sub(since);
        }
    }

    /// CPU time charged so far, the open segment included.
    pub fn used(&self) -> Duration {
        match self.running_since {
            Some(since) => self.used + self.clock.now().saturating_sub(since),
            None => self.used,
        }
    }

    /// Errs once the signal has used more CPU time than allowed.
    pub fn check(&self) -> Result<(), LimitHit> {
        if self.used() > self.limit {
            return Err(LimitHit::CpuTime { limit: self.limit });
        }
        Ok(())
    }
}

/// What the store's call hook does: a segment runs exactly while wasm does.
pub fn on_call_hook(meter: &mut CpuMeter, hook: CallHook) {
    if hook.exiting_host() {
        meter.resume();
    } else {
        meter.pause();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct FakeClock(AtomicU64);

    impl FakeClock {
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::Relaxed);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::Relaxed))
        }
    }

    fn meter(limit_ms: u64) -> (CpuMeter, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        let meter = CpuMeter::with_clock(Duration::from_millis(limit_ms), clock.clone());
        (meter, clock)
    }

    /// Proves running time between entering and leaving wasm is charged, time before the
    /// call is not, and the open segment counts toward the limit.
    #[test]
    fn running_time_is_charged() {
        let (mut cpu, clock) = meter(100);
        clock.advance(500);
        on_call_hook(&mut cpu, CallHook::CallingWasm);
        clock.advance(60);
        assert_eq!(cpu.used(), Duration::from_millis(60));
        assert!(cpu.check().is_ok());
        on_call_hook(&mut cpu, CallHook::ReturningFromWasm);
        clock.advance(1000);
        assert_eq!(cpu.used(), Duration::from_millis(60));
    }

    /// Proves time inside a host call (an awaited `request`, a WASI sleep) and time
    /// yielded to other tasks at an epoch tick (the epoch callback is a libcall, bracketed
    /// by the same hooks) are not charged, however long.
    #[test]
    fn time_in_host_calls_and_yields_is_free() {
        let (mut cpu, clock) = meter(100);
        on_call_hook(&mut cpu, CallHook::CallingWasm);
        clock.advance(30);
        // The guest calls `request`, or the epoch callback yields to tokio.
        on_call_hook(&mut cpu, CallHook::CallingHost);
        clock.advance(10_000);
        assert!(cpu.check().is_ok());
        on_call_hook(&mut cpu, CallHook::ReturningFromHost);
        clock.advance(30);
        // A host function calls back into the guest (`cabi_realloc`) before returning.
        on_call_hook(&mut cpu, CallHook::CallingHost);
        clock.advance(5_000);
        on_call_hook(&mut cpu, CallHook::CallingWasm);
        clock.advance(5);
        on_call_hook(&mut cpu, CallHook::ReturningFromWasm);
        clock.advance(5_000);
        on_call_hook(&mut cpu, CallHook::ReturningFromHost);
        clock.advance(5);
        on_call_hook(&mut cpu, CallHook::ReturningFromWasm);
        assert_eq!(cpu.used(), Duration::from_millis(70));
    }

    /// Proves the limit trips once the running segments add up past it, even when each is
    /// short, and that a restart for the next signal starts from zero.
    #[test]
    fn limit_trips_on_the_sum_of_segments() {
        let (mut cpu, clock) = meter(100);
        on_call_hook(&mut cpu, CallHook::CallingWasm);
        for _ in 0..20 {
            clock.advance(6);
            on_call_hook(&mut cpu, CallHook::CallingHost);
            clock.advance(1_000);
            on_call_hook(&mut cpu, CallHook::ReturningFromHost);
        }
        assert_eq!(cpu.used(), Duration::from_millis(120));
        assert!(matches!(
            cpu.check(),
            Err(LimitHit::CpuTime { limit }) if limit == Duration::from_millis(100)
        ));
        cpu.restart();
        assert_eq!(cpu.used(), Duration::ZERO);
        assert!(cpu.check().is_ok());
    }

    /// Proves the production clock measures this thread's own work and not its sleep.
    #[test]
    fn thread_clock_ignores_sleep() {
        let clock = ThreadCpuClock;
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(200));
        let slept = clock.now() - before;
        assert!(slept < Duration::from_millis(100), "{slept:?}");
        let before = clock.now();
        let mut n = 0u64;
        while clock.now() - before < Duration::from_millis(20) {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        assert!(clock.now() - before >= Duration::from_millis(20));
    }
}
