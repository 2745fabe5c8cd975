//! In-process signal measurements, run by `bench/run.sh` (timed) and `bench/instructions.sh`
//! (fixed counts under callgrind). Not a test and not a criterion benchmark: one plain
//! program, so that callgrind sees nothing but the work asked for.
//!
//! ```text
//! signals tput SECS   64 requests in flight to `echo` for SECS seconds (after 1 s of warm-up):
//!                     round trips per second
//! signals rt N        N sequential round trips host -> echo -> host: mean µs
//! signals hop N       N sequential hops host -> orders (Forward) -> echo -> orders -> host: mean µs
//! signals raw N       N sequential calls of echo's `handle-message` on one warm instance with
//!                     wasmtime's component API alone, no Switchboard router (the floor): mean µs
//! signals tputn N     N requests, 64 in flight, after 512 of warm-up (for callgrind)
//! ```
//!
//! `rt` and `hop` run on a task of the runtime, as the daemon's callers do. `rt`, `hop` and
//! `raw` warm up with 200 calls first, so with a fixed N they serve callgrind
//! too. Options: `--guests DIR` (echo.wasm and orders.wasm; default: built from `guests/`),
//! `--max-instances N` (the host's pool slots; small under valgrind, which cannot map the
//! default pooling reservation). Run it with
//! `cargo run --release -p switchboard-tests --example signals -- MODE COUNT`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;
use switchboard::Host;

/// Requests in flight in `tput` and `tputn`.
const IN_FLIGHT: usize = 64;
/// Sequential calls before `rt`, `hop` and `raw` start counting.
const WARM_UP: usize = 200;
const WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Args {
    mode: Mode,
    /// Seconds for `tput`, calls for the other modes.
    count: f64,
    /// Directory holding echo.wasm and orders.wasm.
    #[arg(long)]
    guests: Option<PathBuf>,
    /// Instance pool slots of the host (and of the raw engine).
    #[arg(long)]
    max_instances: Option<u32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Tput,
    Tputn,
    Rt,
    Hop,
    Raw,
}

fn main() {
    let args = Args::parse();
    let guests = args
        .guests
        .clone()
        .unwrap_or_else(|| switchboard_tests::guests_dir().to_owned());
    let read = |name: &str| {
        let path = guests.join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let mut config = switchboard_tests::config();
    if let Some(max) = args.max_instances {
        config.max_instances = max;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let count = args.count;
    let calls = count as usize;
    runtime.block_on(async {
        if let Mode::Raw = args.mode {
            let mean = raw::measure(&config, &read("echo"), calls).await;
            println!("raw_us {mean:.3}");
            return;
        }
        let host = Host::new(config).expect("starting a host");
        for name in ["echo", "orders"] {
            host.deploy(name, read(name), None)
                .await
                .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        }
        match args.mode {
            Mode::Tput => {
                lanes(&host, Until::Time(Duration::from_secs(1))).await;
                let start = Instant::now();
                let done = lanes(&host, Until::Time(Duration::from_secs_f64(count))).await;
                println!(
                    "tput_per_s {:.0}",
                    done as f64 / start.elapsed().as_secs_f64()
                );
            }
            Mode::Tputn => {
                lanes(&host, Until::Count(512)).await;
                let done = lanes(&host, Until::Count(calls)).await;
                println!("tputn {done}");
            }
            Mode::Rt => println!("rt_us {:.3}", on_worker(&host, calls, false).await),
            Mode::Hop => println!("hop_us {:.3}", on_worker(&host, calls, true).await),
            Mode::Raw => unreachable!(),
        }
    });
}

fn ping() -> switchboard::Json {
    switchboard_tests::json(json!({ "n": 1 }))
}

enum Until {
    Time(Duration),
    Count(usize),
}

/// Keeps 64 requests to `echo` in flight (64 tasks, each sending its next request when the
/// last is answered) until the time is up or `Count` requests were sent; returns how many
/// were answered.
async fn lanes(host: &Host, until: Until) -> usize {
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (host, sent, stop) = (host.clone(), sent.clone(), stop.clone());
        let limit = match until {
            Until::Count(n) => n,
            Until::Time(_) => usize::MAX,
        };
        tasks.spawn(async move {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < limit {
                host.call("echo", "Ping", ping(), WAIT)
                    .await
                    .expect("a reply");
                done += 1;
            }
            done
        });
    }
    if let Until::Time(time) = until {
        tokio::time::sleep(time).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut done = 0;
    while let Some(lane) = tasks.join_next().await {
        done += lane.expect("a lane");
    }
    done
}

/// [`sequential`] on a task of the runtime's worker threads, where the daemon's own callers
/// (HTTP and WebSocket tasks) run; `block_on`'s thread is outside the pool, so every signal
/// and its answer would cross between threads through tokio's injection queue.
async fn on_worker(host: &Host, n: usize, hop: bool) -> f64 {
    let host = host.clone();
    tokio::spawn(async move { sequential(&host, n, hop).await })
        .await
        .expect("the sequential loop")
}

/// Mean µs of `n` sequential round trips (or hops) after the warm-up.
async fn sequential(host: &Host, n: usize, hop: bool) -> f64 {
    let forward = switchboard_tests::json(json!({
        "to": "echo", "message_type": "Ping", "payload": {"n": 1}, "timeout_ms": 5000
    }));
    let once = || async {
        let reply = if hop {
            host.call("orders", "Forward", forward.clone(), WAIT).await
        } else {
            host.call("echo", "Ping", ping(), WAIT).await
        };
        reply.expect("a reply");
    };
    for _ in 0..WARM_UP {
        once().await;
    }
    let start = Instant::now();
    for _ in 0..n {
        once().await;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The floor: echo's `handle-message` called with wasmtime's component API on one warm
/// instance (`switchboard_tests::raw`).
mod raw {
    use std::time::Instant;

    use switchboard::HostConfig;
    use switchboard_tests::raw::RawEcho;

    pub async fn measure(config: &HostConfig, echo: &[u8], n: usize) -> f64 {
        let mut echo = RawEcho::new(config, echo).await;
        for _ in 0..super::WARM_UP {
            echo.call().await;
        }
        let start = Instant::now();
        for _ in 0..n {
            echo.call().await;
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    }
}
