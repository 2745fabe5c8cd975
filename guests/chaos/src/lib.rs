//! `chaos`: misbehaves on purpose, one way per message type, so tests can prove the host
//! contains it: spin, hog memory, panic, overflow the stack, answer with a huge reply, set
//! a huge state value (`BigState`) or send a message with `n` headers (`Headers`);
//! print `n` lines to stderr; and a `Stall` event makes it a subscriber that is slow on
//! purpose.

use std::hint::black_box;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Spin {}
impl Message for Spin {}

#[derive(Serialize, Deserialize)]
struct Hog {}
impl Message for Hog {}

#[derive(Serialize, Deserialize)]
struct Panic {}
impl Message for Panic {}

#[derive(Serialize, Deserialize)]
struct Recurse {
    depth: u64,
}
impl Message for Recurse {}

#[derive(Serialize, Deserialize)]
struct Bloat {
    bytes: u64,
}
impl Message for Bloat {}

#[derive(Serialize, Deserialize)]
struct BigState {
    bytes: u64,
}
impl Message for BigState {}

#[derive(Serialize, Deserialize)]
struct Headers {
    n: u32,
}
impl Message for Headers {}

/// Fails with its own `code`.
#[derive(Serialize, Deserialize)]
struct Fail {
    code: u32,
}
impl Message for Fail {}

#[derive(Serialize, Deserialize)]
struct Ping {}
impl Message for Ping {}

#[derive(Serialize, Deserialize)]
struct Pong {}

/// Prints `n` lines to stderr, as a Python traceback or a chatty guest would.
#[derive(Serialize, Deserialize)]
struct Print {
    n: u32,
}
impl Message for Print {}

/// An event that keeps `chaos` busy until its CPU limit stops it: a slow subscriber.
#[derive(Serialize, Deserialize)]
struct Stall {}
impl Event for Stall {}

/// Memory `Hog` never gives back.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Loops until the host's CPU limit interrupts it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 MiB at a time until the host's memory limit stops it.
fn hog() -> ! {
    loop {
        let chunk = black_box(vec![1u8; 1 << 20]);
        HOARD.lock().unwrap_or_else(|e| e.into_inner()).push(chunk);
    }
}

/// Recurses `depth` levels, or forever when `depth` is 0. The subtraction after the call
/// keeps it from being a tail call, and subtraction is not an accumulator LLVM could turn into
/// a loop. No local has its address taken, so frames live on the wasm stack (whose overflow
/// the host catches) rather than on Rust's shadow stack in linear memory.
#[inline(never)]
fn recurse(depth: u64, level: u64) -> u64 {
    if depth != 0 && level >= depth {
        return level;
    }
    level.wrapping_sub(recurse(depth, level + 1))
}

struct Chaos;

impl Handler for Chaos {
    fn describe() -> Description {
        Description::service("chaos")
            .accepts::<Spin>()
            .accepts::<Hog>()
            .accepts::<Panic>()
            .accepts::<Recurse>()
            .accepts::<Bloat>()
            .accepts::<BigState>()
            .accepts::<Headers>()
            .accepts::<Fail>()
            .accepts::<Ping>()
            .accepts::<Print>()
            .on_event::<Stall>()
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        if event.is::<Stall>() {
            spin()
        }
        Ok(())
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if msg.is::<Spin>() {
            spin()
        } else if msg.is::<Hog>() {
            hog()
        } else if msg.is::<Panic>() {
            panic!("chaos: panicking on purpose")
        } else if let Some(Recurse { depth }) = msg.decode_if()? {
            ok(&recurse(black_box(depth), 0))
        } else if let Some(Bloat { bytes }) = msg.decode_if()? {
            let len = usize::try_from(bytes)
                .map_err(|_| Failure::bad_request("`bytes` does not fit in memory"))?;
            ok(&"x".repeat(len))
        } else if let Some(BigState { bytes }) = msg.decode_if()? {
            let len = usize::try_from(bytes)
                .map_err(|_| Failure::bad_request("`bytes` does not fit in memory"))?;
            state::<String>("big").set(&"x".repeat(len))?;
            ok(&len)
        } else if let Some(Headers { n }) = msg.decode_if()? {
            let options = (0..n).fold(SendOptions::new(), |options, i| {
                options.header(format!("h{i}"), "v")
            });
            switchboard_sdk::send_with("echo", &Ping {}, options)?;
            ok(&n)
        } else if let Some(Fail { code }) = msg.decode_if()? {
            Err(Failure::new(
                code,
                format!("failing with code {code} on purpose"),
            ))
        } else if msg.is::<Ping>() {
            ok(&Pong {})
        } else if let Some(Print { n }) = msg.decode_if()? {
            for i in 0..n {
                eprintln!("chaos: line {i} of {n} on stderr");
            }
            ok(&n)
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(Chaos);
