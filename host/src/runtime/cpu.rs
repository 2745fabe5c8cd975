//! The CPU meter: charges a guest only for the time it actually runs.
//!
//! A guest runs only while tokio polls its call future: the wasmtime fiber executes inside
//! that poll and suspends (the poll returns `Pending`) whenever the guest waits, in an async
//! host call such as `request` or a WASI sleep, or at every epoch tick, where the deadline
//! callback yields so other tasks can run on the thread. [`metered`] opens a segment when a
//! poll starts and closes it when the poll returns, so a segment never spans a suspension and
//! never moves between threads. What a guest's own synchronous host calls cost (a `send`, a
//! `log`) is charged to it: they run inside the poll, on its behalf.
//!
//! Two clocks time the segments. The thread's own CPU clock ([`ThreadCpuClock`]) does not
//! count time other tasks or processes take from the core, but each read is a system call
//! (~250–400 ns on this project's 2-core VM; two per poll were ~10% of an echo round trip's
//! CPU). So a signal's segments start on the monotonic clock (a vDSO read, ~20 ns), and the
//! signal moves to the CPU clock for good as soon as it runs long: at its first epoch
//! callback (the guest ran past a tick), or after a segment longer than [`SHORT`]. Most
//! signals end long before either. What the wall clock can over-charge, the time the thread
//! was preempted during a short segment, is bounded: a segment timed on it is charged at
//! most [`WALL_CAP`]. Limits under [`PRECISE_BELOW`] are always timed on the CPU clock, so
//! that bound stays small beside the limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::state::LimitHit;
use crate::config::EPOCH_TICK;

/// A wall-clock segment longer than this moves the signal to the CPU clock.
pub const SHORT: Duration = Duration::from_millis(1);
/// The most a segment timed on the wall clock is charged: a guest that runs this long hits
/// an epoch callback (one tick after its deadline was set), which moves it to the CPU clock.
pub const WALL_CAP: Duration = Duration::from_millis(2 * EPOCH_TICK.as_millis() as u64);
/// CPU limits under this are timed on the CPU clock from the first segment.
pub const PRECISE_BELOW: Duration = Duration::from_millis(100);

/// A clock the meter reads (the thread CPU clock, or the monotonic clock); tests inject
/// fake ones.
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
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// The monotonic clock: time since the meter was made.
#[derive(Debug, Clone, Copy)]
struct WallClock(Instant);

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Counts the CPU time of the current signal: the sum of its running segments. Clones share
/// one count: the store's epoch callback checks it while [`metered`] runs the segments,
/// around a future that borrows the store.
#[derive(Clone)]
pub struct CpuMeter {
    shared: Arc<Shared>,
    limit: Duration,
}

struct Shared {
    cpu: Arc<dyn Clock>,
    wall: Arc<dyn Clock>,
    /// Nanoseconds charged by closed segments.
    used: AtomicU64,
    /// The reading in nanoseconds when the open segment started, plus one; zero while the
    /// guest is not running. On the CPU clock if `on_cpu`, else on the wall clock.
    since: AtomicU64,
    on_cpu: AtomicBool,
    /// This signal times every segment on the CPU clock.
    precise: AtomicBool,
    /// Limits this small are always timed on the CPU clock.
    always_precise: bool,
}

impl std::fmt::Debug for CpuMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuMeter")
            .field("used", &self.used())
            .field("limit", &self.limit)
            .finish()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CpuMeter {
    /// A meter on the thread CPU clock and the monotonic clock.
    pub fn new(limit: Duration) -> Self {
        Self::with_clocks(
            limit,
            Arc::new(ThreadCpuClock),
            Arc::new(WallClock(Instant::now())),
        )
    }

    /// A meter reading `cpu` and `wall`.
    pub fn with_clocks(limit: Duration, cpu: Arc<dyn Clock>, wall: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                cpu,
                wall,
                used: AtomicU64::new(0),
                since: AtomicU64::new(0),
                on_cpu: AtomicBool::new(false),
                precise: AtomicBool::new(false),
                always_precise: limit < PRECISE_BELOW,
            }),
            limit,
        }
    }

    /// Starts counting afresh for a new signal.
    pub fn restart(&self) {
        let s = &self.shared;
        s.used.store(0, Ordering::Relaxed);
        s.since.store(0, Ordering::Relaxed);
        s.precise.store(s.always_precise, Ordering::Relaxed);
    }

    /// The guest starts running: opens a segment (no-op if one is open).
    fn resume(&self) {
        let s = &self.shared;
        if s.since.load(Ordering::Relaxed) == 0 {
            let on_cpu = s.precise.load(Ordering::Relaxed);
            let clock = if on_cpu { &s.cpu } else { &s.wall };
            s.on_cpu.store(on_cpu, Ordering::Relaxed);
            s.since.store(nanos(clock.now()) + 1, Ordering::Relaxed);
        }
    }

    /// What the open segment that started at `since` (plus one) has run so far.
    fn open_segment(&self, since: u64) -> u64 {
        let s = &self.shared;
        if s.on_cpu.load(Ordering::Relaxed) {
            nanos(s.cpu.now()).saturating_sub(since - 1)
        } else {
            nanos(s.wall.now())
                .saturating_sub(since - 1)
                .min(nanos(WALL_CAP))
        }
    }

    /// The guest stops running: closes the open segment and charges it.
    fn pause(&self) {
        let s = &self.shared;
        let since = s.since.load(Ordering::Relaxed);
        if since != 0 {
            let ran = self.open_segment(since);
            s.since.store(0, Ordering::Relaxed);
            if !s.on_cpu.load(Ordering::Relaxed) && ran > nanos(SHORT) {
                s.precise.store(true, Ordering::Relaxed);
            }
            s.used.fetch_add(ran, Ordering::Relaxed);
        }
    }

    /// Moves the open segment, and the rest of the signal, to the CPU clock: what ran so far
    /// is charged on the wall clock (capped).
    fn go_precise(&self) {
        let s = &self.shared;
        s.precise.store(true, Ordering::Relaxed);
        let since = s.since.load(Ordering::Relaxed);
        if since != 0 && !s.on_cpu.load(Ordering::Relaxed) {
            let ran = self.open_segment(since);
            s.used.fetch_add(ran, Ordering::Relaxed);
            s.on_cpu.store(true, Ordering::Relaxed);
            s.since.store(nanos(s.cpu.now()) + 1, Ordering::Relaxed);
        }
    }

    /// CPU time charged so far, the open segment included.
    pub fn used(&self) -> Duration {
        let s = &self.shared;
        let mut used = s.used.load(Ordering::Relaxed);
        let since = s.since.load(Ordering::Relaxed);
        if since != 0 {
            used += self.open_segment(since);
        }
        Duration::from_nanos(used)
    }

    /// Errs once the signal has used more CPU time than allowed. Called from the epoch
    /// callback, on the guest's thread inside its segment: the guest has run past a tick, so
    /// from here on it is timed on the CPU clock.
    pub fn check(&self) -> Result<(), LimitHit> {
        self.go_precise();
        if self.used() > self.limit {
            return Err(LimitHit::CpuTime { limit: self.limit });
        }
        Ok(())
    }
}

/// Runs `call` (a future that runs a guest), charging `meter` for each of its polls.
pub async fn metered<F: Future>(meter: &CpuMeter, call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        meter.resume();
        let poll = call.as_mut().poll(cx);
        meter.pause();
        poll
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// A clock the test moves by hand, in microseconds; it counts its reads.
    #[derive(Default)]
    struct FakeClock {
        us: AtomicU64,
        reads: AtomicU64,
    }

    impl FakeClock {
        fn advance(&self, ms: u64) {
            self.advance_us(ms * 1000);
        }

        fn advance_us(&self, us: u64) {
            self.us.fetch_add(us, Ordering::Relaxed);
        }

        fn reads(&self) -> u64 {
            self.reads.load(Ordering::Relaxed)
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Duration::from_micros(self.us.load(Ordering::Relaxed))
        }
    }

    /// A meter whose CPU and wall clocks are one fake clock: a guest never preempted.
    fn meter(limit_ms: u64) -> (CpuMeter, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        let meter = CpuMeter::with_clocks(
            Duration::from_millis(limit_ms),
            clock.clone(),
            clock.clone(),
        );
        (meter, clock)
    }

    /// A meter with separate fake clocks: (meter, cpu, wall).
    fn two_clocks(limit_ms: u64) -> (CpuMeter, Arc<FakeClock>, Arc<FakeClock>) {
        let (cpu, wall) = (
            Arc::new(FakeClock::default()),
            Arc::new(FakeClock::default()),
        );
        let meter =
            CpuMeter::with_clocks(Duration::from_millis(limit_ms), cpu.clone(), wall.clone());
        (meter, cpu, wall)
    }

    /// A guest's call: each poll runs for `run_ms` on the fake clock, checking the meter
    /// after every full epoch tick as the epoch callback would, then suspends until the last
    /// poll.
    async fn guest(clock: Arc<FakeClock>, meter: CpuMeter, run_ms: u64, polls: usize) -> bool {
        let tick = EPOCH_TICK.as_millis() as u64;
        let mut left = polls;
        std::future::poll_fn(move |_| {
            let mut ran = 0;
            while ran < run_ms {
                let step = tick.min(run_ms - ran);
                clock.advance(step);
                ran += step;
                if step == tick && meter.check().is_err() {
                    return Poll::Ready(false);
                }
            }
            left -= 1;
            if left == 0 {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Polls `future` once with a waker that does nothing.
    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Proves time while the guest runs is charged, and time between polls (yielded to
    /// other tasks at an epoch tick, or suspended in `request` or a WASI sleep) is not,
    /// however long.
    #[test]
    fn only_running_time_is_charged() {
        let (cpu, clock) = meter(100);
        let call = metered(&cpu, guest(clock.clone(), cpu.clone(), 30, 3));
        let mut call = pin!(call);
        assert!(poll_once(call.as_mut()).is_pending());
        clock.advance(10_000);
        assert!(poll_once(call.as_mut()).is_pending());
        clock.advance(60_000);
        assert_eq!(cpu.used(), Duration::from_millis(60));
        assert_eq!(poll_once(call.as_mut()), Poll::Ready(true));
        clock.advance(1_000);
        assert_eq!(cpu.used(), Duration::from_millis(90));
    }

    /// Proves the limit trips inside a poll once the running segments add up past it, even
    /// when each is short, and a restart for the next signal starts from zero.
    #[test]
    fn limit_trips_on_the_sum_of_segments() {
        let (cpu, clock) = meter(100);
        let call = metered(&cpu, guest(clock.clone(), cpu.clone(), 6, 1_000));
        let mut call = pin!(call);
        let mut polls = 0;
        let tripped = loop {
            polls += 1;
            match poll_once(call.as_mut()) {
                Poll::Pending => clock.advance(1_000),
                Poll::Ready(finished) => break !finished,
            }
        };
        assert!(tripped);
        assert_eq!(polls, 17, "100 ms of 6 ms segments trips on the 17th");
        assert!(matches!(
            cpu.check(),
            Err(LimitHit::CpuTime { limit }) if limit == Duration::from_millis(100)
        ));
        cpu.restart();
        assert_eq!(cpu.used(), Duration::ZERO);
        assert!(cpu.check().is_ok());
    }

    /// Runs one segment: `f` moves the fake clocks while the guest "runs".
    fn segment(meter: &CpuMeter, f: impl FnOnce()) {
        meter.resume();
        f();
        meter.pause();
    }

    /// Proves a short segment costs no read of the CPU clock (the system call the wall
    /// clock saves), a preempted one is charged at most `WALL_CAP`, and after a long one
    /// the signal is timed on the CPU clock, where preemption costs nothing.
    #[test]
    fn short_segments_are_timed_on_the_wall_clock_within_a_bound() {
        let (meter, cpu, wall) = two_clocks(2_000);
        meter.restart();
        segment(&meter, || {
            wall.advance_us(200);
            cpu.advance_us(200);
        });
        assert_eq!(meter.used(), Duration::from_micros(200));
        assert_eq!(cpu.reads(), 0, "a short segment never reads the CPU clock");
        segment(&meter, || {
            wall.advance(50);
            cpu.advance_us(100);
        });
        assert_eq!(meter.used(), Duration::from_micros(200) + WALL_CAP);
        segment(&meter, || {
            wall.advance(50);
            cpu.advance(1);
        });
        assert_eq!(meter.used(), Duration::from_micros(1_200) + WALL_CAP);
        meter.restart();
        segment(&meter, || wall.advance_us(300));
        assert_eq!(
            meter.used(),
            Duration::from_micros(300),
            "the next signal starts on the wall clock again"
        );
    }

    /// Proves a guest that runs past an epoch tick is timed on the CPU clock from its
    /// epoch callback on, so time the thread then spends preempted is not charged.
    #[test]
    fn a_guest_past_a_tick_is_timed_on_the_cpu_clock() {
        let (meter, cpu, wall) = two_clocks(2_000);
        meter.restart();
        segment(&meter, || {
            wall.advance(3);
            cpu.advance(3);
            meter.check().expect("under the limit");
            wall.advance(500);
            cpu.advance(5);
        });
        assert_eq!(meter.used(), Duration::from_millis(8));
    }

    /// Proves a limit under `PRECISE_BELOW` is timed on the CPU clock from the start, so
    /// the wall clock's bound cannot trip it.
    #[test]
    fn a_small_limit_is_always_timed_on_the_cpu_clock() {
        let (meter, cpu, wall) = two_clocks(5);
        meter.restart();
        segment(&meter, || {
            wall.advance(40);
            cpu.advance_us(100);
        });
        assert_eq!(meter.used(), Duration::from_micros(100));
        assert!(meter.check().is_ok());
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
