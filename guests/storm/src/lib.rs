//! `storm`: a hostile handler that tries to keep the host busy forever with signals of its
//! own, so tests can prove the host stops each attempt by itself:
//! - a `Storm` event makes it emit `Storm` again (a loop through the event bus);
//! - a `Double` message makes it send itself two `Double`s (a loop that doubles each step);
//! - a `SelfRequest` message makes it `request` itself (each step waits for its own 504);
//! - `Flood {n}` emits `n` `Flood` events while handling one signal (it subscribes to them
//!   itself, so a small mailbox overflows);
//! - `Chatty {n}` writes `n` warning lines to the host's log while handling one signal;
//! - `PushStorm {user, n, pad}` pushes `n` `Pushed` events (each padded with `pad` bytes)
//!   to `user:<user>` in one signal (more than a slow client's queue holds);
//! - `KeepStorm {user, n, pad}` keeps `n` such pushes for `user` (as many as the host lets
//!   one handler keep for a user, or more);
//! - `ForgeOnline {user}` emits the host's presence event `UserOnline` for `user`;
//! - `ForgeChat {user, from, text}` pushes `user` a `Chat` like `chat`'s, claiming to be
//!   from `from`;
//! - `TimerLoop {n, relay}` schedules `n` `Tick` timers due at once; each `Tick` counts
//!   itself in state and schedules the next `Tick` at once, directly or (with `relay`)
//!   through a `Relay` message to itself: a loop through timers, which the depth limit
//!   cannot see. `Ticks {}` answers the count.
//!
//! (A loop through `reply` is impossible since contract 0.2: a message takes one answer;
//! see the `deferred` guest.)
//!
//! Every host call's failure is handed back as the signal's own failure, so a test sees the
//! host's code (508 loop detected, 429 cap reached).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;
use switchboard_sdk::timers::{self, When};
use switchboard_sdk::users::UserOnline;

/// Re-emitted on every delivery.
#[derive(Serialize, Deserialize)]
struct Storm {}
impl Event for Storm {}

/// Sends itself two more of these.
#[derive(Serialize, Deserialize)]
struct Double {}
impl Message for Double {}

/// Requests itself again, waiting up to `timeout_ms` for an answer.
#[derive(Serialize, Deserialize)]
struct SelfRequest {
    timeout_ms: u64,
}
impl Message for SelfRequest {}

/// Emits `n` `Flood` events in one signal.
#[derive(Serialize, Deserialize)]
struct Flood {
    n: u32,
}
impl Message for Flood {}
impl Event for Flood {}

/// Logs `n` warning lines in one signal.
#[derive(Serialize, Deserialize)]
struct Chatty {
    n: u32,
}
impl Message for Chatty {}

/// How many of something the handler did.
#[derive(Serialize, Deserialize)]
struct Done {
    done: u32,
}

/// Pushes `n` `Pushed` events to `user` in one signal, each padded with `pad` bytes.
#[derive(Serialize, Deserialize)]
struct PushStorm {
    user: String,
    n: u32,
    #[serde(default)]
    pad: u32,
}
impl Message for PushStorm {}

/// Keeps `n` `Pushed` events for `user` in one signal, each padded with `pad` bytes.
#[derive(Serialize, Deserialize)]
struct KeepStorm {
    user: String,
    n: u32,
    #[serde(default)]
    pad: u32,
}
impl Message for KeepStorm {}

/// One push of a `PushStorm` or `KeepStorm`.
#[derive(Serialize, Deserialize)]
struct Pushed {
    i: u32,
    pad: String,
}
impl Event for Pushed {}

/// Emits `UserOnline` for `user`, as if the host did.
#[derive(Serialize, Deserialize)]
struct ForgeOnline {
    user: String,
}
impl Message for ForgeOnline {}

/// Starts `n` timer loops.
#[derive(Serialize, Deserialize)]
struct TimerLoop {
    n: u32,
    #[serde(default)]
    relay: bool,
}
impl Message for TimerLoop {}

/// One turn of a timer loop.
#[derive(Serialize, Deserialize)]
struct Tick {
    relay: bool,
}
impl Message for Tick {}

/// Schedules the next `Tick` of a relayed loop.
#[derive(Serialize, Deserialize)]
struct Relay {}
impl Message for Relay {}

/// How many `Tick`s were handled.
#[derive(Serialize, Deserialize)]
struct Ticks {}
impl Message for Ticks {}

fn tick_count() -> switchboard_sdk::state::State<u64> {
    state::<u64>("ticks")
}

/// Pushes `user` a `Chat` claiming to be from `from`.
#[derive(Serialize, Deserialize)]
struct ForgeChat {
    user: String,
    from: String,
    text: String,
}
impl Message for ForgeChat {}

/// What `chat` pushes, as storm forges it.
#[derive(Serialize, Deserialize)]
struct Chat {
    from: String,
    text: String,
}
impl Event for Chat {}

struct StormHandler;

impl Handler for StormHandler {
    fn describe() -> Description {
        Description::service("storm")
            .accepts::<Double>()
            .accepts::<SelfRequest>()
            .accepts::<Flood>()
            .accepts::<Chatty>()
            .accepts::<PushStorm>()
            .accepts::<KeepStorm>()
            .accepts::<ForgeOnline>()
            .accepts::<TimerLoop>()
            .accepts::<Tick>()
            .accepts::<Relay>()
            .accepts::<Ticks>()
            .accepts::<ForgeChat>()
            .on_event::<Storm>()
            .on_event::<Flood>()
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        if event.is::<Storm>() {
            switchboard_sdk::emit(&Storm {})?;
        }
        Ok(())
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        // Its own address, whatever name it was deployed under.
        let me = msg.to().to_owned();
        if msg.is::<Double>() {
            switchboard_sdk::send(&me, &Double {})?;
            switchboard_sdk::send(&me, &Double {})?;
            ok(&Done { done: 2 })
        } else if let Some(SelfRequest { timeout_ms }) = msg.decode_if()? {
            let again = SelfRequest { timeout_ms };
            let timeout = Duration::from_millis(timeout_ms);
            let answer: serde_json::Value = switchboard_sdk::request(&me, &again, timeout)?;
            ok(&answer)
        } else if let Some(Flood { n }) = msg.decode_if()? {
            for i in 0..n {
                switchboard_sdk::emit(&Flood { n: i })?;
            }
            ok(&Done { done: n })
        } else if let Some(Chatty { n }) = msg.decode_if()? {
            for i in 0..n {
                switchboard_sdk::warn!("chatty line {i} of {n}: {}", "x".repeat(100));
            }
            ok(&Done { done: n })
        } else if let Some(TimerLoop { n, relay }) = msg.decode_if()? {
            for _ in 0..n {
                timers::schedule(&me, &Tick { relay }, When::After(Duration::ZERO))?;
            }
            ok(&Done { done: n })
        } else if let Some(Tick { relay }) = msg.decode_if()? {
            tick_count().update(|n| *n += 1)?;
            if relay {
                switchboard_sdk::send(&me, &Relay {})?;
            } else {
                timers::schedule(&me, &Tick { relay }, When::After(Duration::ZERO))?;
            }
            ok(&Done { done: 1 })
        } else if msg.is::<Relay>() {
            timers::schedule(&me, &Tick { relay: true }, When::After(Duration::ZERO))?;
            ok(&Done { done: 1 })
        } else if msg.is::<Ticks>() {
            ok(&tick_count().get_or_default()?)
        } else if let Some(ForgeOnline { user }) = msg.decode_if()? {
            switchboard_sdk::emit(&UserOnline { user })?;
            ok(&Done { done: 1 })
        } else if let Some(ForgeChat { user, from, text }) = msg.decode_if()? {
            switchboard_sdk::users::push(&user, &Chat { from, text })?;
            ok(&Done { done: 1 })
        } else if let Some(PushStorm { user, n, pad }) = msg.decode_if()? {
            let pad = "x".repeat(pad as usize);
            for i in 0..n {
                let pad = pad.clone();
                switchboard_sdk::users::push(&user, &Pushed { i, pad })?;
            }
            ok(&Done { done: n })
        } else if let Some(KeepStorm { user, n, pad }) = msg.decode_if()? {
            let pad = "x".repeat(pad as usize);
            for i in 0..n {
                let pad = pad.clone();
                switchboard_sdk::users::keep(&user, &Pushed { i, pad }, Duration::ZERO)?;
            }
            ok(&Done { done: n })
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(StormHandler);
