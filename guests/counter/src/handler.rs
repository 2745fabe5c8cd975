// The counter's handler, shared by `counter` and `counter-next` (each defines `VERSION`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_sdk::prelude::*;

/// The largest blob `Fill` stores.
const MAX_FILL_BYTES: u32 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Increment {
    by: i64,
}
impl Message for Increment {}

#[derive(Serialize, Deserialize)]
struct Get {}
impl Message for Get {}

#[derive(Serialize, Deserialize)]
struct AskEcho {
    text: String,
}
impl Message for AskEcho {}

#[derive(Serialize, Deserialize)]
struct Version {}
impl Message for Version {}

#[derive(Serialize, Deserialize)]
struct Notify {
    by: i64,
    user: String,
}
impl Message for Notify {}

#[derive(Serialize, Deserialize)]
struct Explode {
    by: i64,
    user: String,
}
impl Message for Explode {}

#[derive(Serialize, Deserialize)]
struct Fill {
    bytes: u32,
}
impl Message for Fill {}

#[derive(Serialize, Deserialize)]
struct Bump {
    by: i64,
    barrier: Barrier,
}
impl Message for Bump {}

#[derive(Serialize, Deserialize)]
struct Step {
    i: u32,
    barrier: Option<Barrier>,
}
impl Message for Step {}

/// Writes `keys` values of `bytes` bytes each, waits at `barrier` (so several such turns
/// hold their writes at once), then fails: nothing of it is kept.
#[derive(Serialize, Deserialize)]
struct Hoard {
    keys: u32,
    bytes: u32,
    barrier: Barrier,
}
impl Message for Hoard {}

#[derive(Serialize, Deserialize)]
struct Steps {}
impl Message for Steps {}

/// A barrier of the `deferred` service: passed once `k` turns arrived at `group` (or at
/// once, with `once`, after the group was passed before); 504 after `timeout_ms`.
#[derive(Serialize, Deserialize)]
struct Barrier {
    group: String,
    k: u32,
    #[serde(default)]
    once: bool,
    timeout_ms: u32,
}

/// Pushed to a user by `Notify`.
#[derive(Serialize, Deserialize)]
struct Counted {
    agent: String,
    count: i64,
}
impl Event for Counted {}

#[derive(Serialize, Deserialize)]
struct Count {
    agent: String,
    count: i64,
    last_reply: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct Asked {
    message_id: String,
}

/// An agent's count.
fn count_state() -> switchboard_sdk::State<i64> {
    state("count")
}

/// The last answer `echo` gave an agent.
fn last_reply_state() -> switchboard_sdk::State<Value> {
    state("last_reply")
}

/// The steps an agent took, in the order it took them.
fn steps_state() -> switchboard_sdk::State<Vec<u32>> {
    state("steps")
}

fn count(address: &str, count: i64) -> Result<Reply, Failure> {
    ok(&Count {
        agent: address.to_owned(),
        count,
        last_reply: last_reply_state().get()?,
    })
}

/// Adds `by` to the count; the new count.
fn increment(by: i64) -> Result<i64, Failure> {
    count_state().update(|n| {
        *n = n.saturating_add(by);
        *n
    })
}

/// Increments and pushes the new count to `user`, all held until the turn commits.
fn notify(me: &str, by: i64, user: &str) -> Result<i64, Failure> {
    let now = increment(by)?;
    switchboard_sdk::users::push(
        user,
        &Counted {
            agent: me.to_owned(),
            count: now,
        },
    )?;
    Ok(now)
}

/// Waits at `barrier` (an awaited `request`, which leaves at once).
fn wait(barrier: &Barrier) -> Result<(), Failure> {
    switchboard_sdk::request_untyped(
        "deferred",
        "Arrive",
        &json!({"group": barrier.group, "k": barrier.k, "once": barrier.once}),
        Duration::from_millis(u64::from(barrier.timeout_ms)),
        SendOptions::new(),
    )?;
    Ok(())
}

struct Counter;

impl Handler for Counter {
    fn describe() -> Description {
        Description::agent("counter")
            .accepts::<Increment>()
            .accepts::<Get>()
            .accepts::<AskEcho>()
            .accepts::<Version>()
            .accepts::<Notify>()
            .accepts::<Explode>()
            .accepts::<Fill>()
            .accepts::<Hoard>()
            .accepts::<Bump>()
            .accepts::<Step>()
            .accepts::<Steps>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let me = msg.to();
        if let Some(Increment { by }) = msg.decode_if()? {
            count(me, increment(by)?)
        } else if msg.is::<Get>() {
            count(me, count_state().get_or_default()?)
        } else if let Some(AskEcho { text }) = msg.decode_if()? {
            // `send`, not `request`: the answer arrives later at `handle_reply`.
            let message_id = switchboard_sdk::send_untyped(
                "echo",
                "Ping",
                &json!({ "text": text }),
                SendOptions::new(),
            )?;
            ok(&Asked { message_id })
        } else if msg.is::<Version>() {
            ok(&VERSION)
        } else if let Some(Notify { by, user }) = msg.decode_if()? {
            count(me, notify(me, by, &user)?)
        } else if let Some(Explode { by, user }) = msg.decode_if()? {
            notify(me, by, &user)?;
            panic!("exploding after a write and a push");
        } else if let Some(Fill { bytes }) = msg.decode_if()? {
            if bytes > MAX_FILL_BYTES {
                return Err(Failure::bad_request(format!(
                    "fill at most {MAX_FILL_BYTES} bytes"
                )));
            }
            let now = increment(1)?;
            state::<String>("blob").set(&"x".repeat(bytes as usize))?;
            count(me, now)
        } else if let Some(Hoard {
            keys,
            bytes,
            barrier,
        }) = msg.decode_if()?
        {
            let value = "x".repeat(bytes.min(MAX_FILL_BYTES) as usize);
            for key in 0..keys.min(1024) {
                state::<String>(format!("hoard/{key}")).set(&value)?;
            }
            wait(&barrier)?;
            Err(Failure::new(500, "hoarded, and failed on purpose"))
        } else if let Some(Bump { by, barrier }) = msg.decode_if()? {
            let before = count_state().get_or_default()?;
            wait(&barrier)?;
            let now = before.saturating_add(by);
            count_state().set(&now)?;
            count(me, now)
        } else if let Some(Step { i, barrier }) = msg.decode_if()? {
            if let Some(barrier) = &barrier {
                wait(barrier)?;
            }
            let previous = steps_state().update(|steps| {
                let last = steps.last().copied();
                steps.push(i);
                last
            })?;
            ok(&previous)
        } else if msg.is::<Steps>() {
            ok(&steps_state().get_or_default()?)
        } else {
            Err(msg.unsupported())
        }
    }

    fn handle_reply(reply: IncomingReply) -> Result<(), Failure> {
        last_reply_state().set(&reply.payload_value()?)
    }
}

switchboard_sdk::export_handler!(Counter);
