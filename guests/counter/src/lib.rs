//! `counter`: an agent handler. Every `agent:<id>` gets its own count, and can ask `echo`
//! something without waiting; the answer is kept as that agent's `last_reply`.

use std::cell::RefCell;
use std::collections::BTreeMap;

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

/// One agent's state.
#[derive(Default)]
struct Agent {
    count: i64,
    last_reply: Option<Value>,
}

thread_local! {
    /// Agents by address (`agent:<id>`).
    static AGENTS: RefCell<BTreeMap<String, Agent>> = const { RefCell::new(BTreeMap::new()) };
}

/// Runs `f` on the state of the agent at `address`, creating it on first use.
fn with_agent<T>(address: &str, f: impl FnOnce(&mut Agent) -> T) -> T {
    AGENTS.with_borrow_mut(|agents| f(agents.entry(address.to_owned()).or_default()))
}

fn count(address: &str, agent: &Agent) -> Result<Reply, Failure> {
    ok(&Count {
        agent: address.to_owned(),
        count: agent.count,
        last_reply: agent.last_reply.clone(),
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
            with_agent(me, |agent| {
                agent.count = agent.count.saturating_add(by);
                count(me, agent)
            })
        } else if msg.is::<Get>() {
            with_agent(me, |agent| count(me, agent))
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
        let payload = reply.payload_value()?;
        with_agent(reply.to(), |agent| agent.last_reply = Some(payload));
        Ok(())
    }
}

switchboard_sdk::export_handler!(Counter);
