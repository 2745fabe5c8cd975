//! `sleeper`: takes its time on purpose, so tests can prove the host bounds a signal's wall
//! time and charges only the CPU time a guest really uses. `Sleep` blocks in WASI (the
//! monotonic clock and `wasi:io/poll`), where no CPU limit can reach it; `Burn` keeps a core
//! busy for a span of wall time; `Work` does a fixed amount of computing, whatever the
//! wall time it takes; `Ping` answers at once with this guest's name, so a test can tell
//! which version answered after a swap.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

/// What every answer carries, to tell this guest from another deployed under its name.
const VERSION: &str = "sleeper";

/// Sleeps `ms` milliseconds through WASI, then answers.
#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}
impl Message for Sleep {}

/// Busy-loops for `ms` milliseconds of wall time, then answers.
#[derive(Serialize, Deserialize)]
struct Burn {
    ms: u64,
}
impl Message for Burn {}

/// Computes for `rounds` rounds (a fixed amount of CPU work), then answers.
#[derive(Serialize, Deserialize)]
struct Work {
    rounds: u64,
}
impl Message for Work {}

#[derive(Serialize, Deserialize)]
struct Ping {}
impl Message for Ping {}

#[derive(Serialize)]
struct Done {
    version: &'static str,
    done: u64,
}

/// One round of work: pure computing, no host call.
fn round(mut x: u64) -> u64 {
    for _ in 0..10_000 {
        x = black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

struct Sleeper;

impl Handler for Sleeper {
    fn describe() -> Description {
        Description::service("sleeper")
            .accepts::<Sleep>()
            .accepts::<Burn>()
            .accepts::<Work>()
            .accepts::<Ping>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let done = if let Some(Sleep { ms }) = msg.decode_if()? {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        } else if let Some(Burn { ms }) = msg.decode_if()? {
            // Reading the clock is a host call: check it only between rounds of pure work,
            // so the guest spends its time running, not in the host.
            let start = Instant::now();
            let mut x = 1;
            while start.elapsed() < Duration::from_millis(ms) {
                x = round(x);
            }
            black_box(x);
            ms
        } else if let Some(Work { rounds }) = msg.decode_if()? {
            let mut x = 1;
            for _ in 0..rounds {
                x = round(x);
            }
            black_box(x);
            rounds
        } else if msg.is::<Ping>() {
            0
        } else {
            return Err(msg.unsupported());
        };
        ok(&Done {
            version: VERSION,
            done,
        })
    }
}

switchboard_sdk::export_handler!(Sleeper);
