//! `counter`: an agent handler. Every agent (`agent:counter/<id>`) keeps its own count in
//! keyed state, so it survives hot swaps, rollbacks, restarts and crashes; and can ask `echo`
//! something without waiting: the answer is kept as that agent's `last_reply`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_sdk::prelude::*;

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

fn count(address: &str, count: i64) -> Result<Reply, Failure> {
    ok(&Count {
        agent: address.to_owned(),
        count,
        last_reply: last_reply_state().get()?,
    })
}

struct Counter;

impl Handler for Counter {
    fn describe() -> Description {
        Description::agent("counter")
            .accepts::<Increment>()
            .accepts::<Get>()
            .accepts::<AskEcho>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let me = msg.to();
        if let Some(Increment { by }) = msg.decode_if()? {
            let now = count_state().update(|n| {
                *n = n.saturating_add(by);
                *n
            })?;
            count(me, now)
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
        } else {
            Err(msg.unsupported())
        }
    }

    fn handle_reply(reply: IncomingReply) -> Result<(), Failure> {
        last_reply_state().set(&reply.payload_value()?)
    }
}

switchboard_sdk::export_handler!(Counter);
