//! `deferred`: answers messages later, and tries every wrong way to answer.
//!
//! - `Hold {}`: no answer now (`Reply::later`); the message is kept until a `Release`.
//! - `Release {"payload": ..}`: answers every held message with `payload`; returns how many.
//! - `ReleaseTwice {}`: answers the oldest held message twice; returns the second's code.
//! - `Forge {"message_id": ..}`: answers a message this handler was never sent; returns the
//!   code the host refused it with.
//! - `ReplyThenTrap {}`: answers itself with `reply`, then panics.
//! - `ReplyThenReturn {}`: answers itself with `reply`, then returns another answer.
//!
//! - `Envelope {}`: answers with its own message's deadline and depth.
//! - `Announce {"event_type", "payload"}`: emits that event and answers how many
//!   subscribers it is offered to.
//! - `Arrive {"group": .., "k": .., "once": false}`: a barrier. The message is held until `k`
//!   have arrived at `group`; then all of them are answered (with how many were) and the
//!   group starts again, or, with `once`, lets every later arrival pass at once.
//!
//! Held messages live in guest memory, so deploy it with concurrency 1.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Hold {}
impl Message for Hold {}

#[derive(Serialize, Deserialize)]
struct Release {
    payload: Value,
}
impl Message for Release {}

#[derive(Serialize, Deserialize)]
struct ReleaseTwice {}
impl Message for ReleaseTwice {}

#[derive(Serialize, Deserialize)]
struct Forge {
    message_id: String,
}
impl Message for Forge {}

#[derive(Serialize, Deserialize)]
struct ReplyThenTrap {}
impl Message for ReplyThenTrap {}

#[derive(Serialize, Deserialize)]
struct ReplyThenReturn {}
impl Message for ReplyThenReturn {}

#[derive(Serialize, Deserialize)]
struct Envelope {}
impl Message for Envelope {}

/// Emits an event of `event_type` and answers how many subscribers it was offered to.
#[derive(Serialize, Deserialize)]
struct Announce {
    event_type: String,
    payload: Value,
}
impl Message for Announce {}

#[derive(Serialize, Deserialize)]
struct Arrive {
    group: String,
    k: u32,
    #[serde(default)]
    once: bool,
}
impl Message for Arrive {}

/// How many arrivals a barrier released (the waiting ones its answers reached, and this one).
#[derive(Serialize, Deserialize)]
struct Released {
    released: u32,
}

/// The arrivals waiting at one barrier group, and whether it was passed before.
#[derive(Default)]
struct Group {
    waiting: Vec<Deferred>,
    passed: bool,
}

/// What an attempt came to: how many answered, or the code of a refusal (0 if none).
#[derive(Serialize, Deserialize)]
struct Outcome {
    answered: u32,
    code: u32,
}

thread_local! {
    static HELD: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
    static GROUPS: RefCell<HashMap<String, Group>> = RefCell::new(HashMap::new());
}

/// An arrival at barrier `group`: held (`Reply::later`) until `k` have arrived, then all are
/// answered. A waiting message whose sender gave up (its deadline passed) takes no answer;
/// that is not this arrival's failure.
fn arrive(msg: &IncomingMessage, Arrive { group, k, once }: Arrive) -> Result<Reply, Failure> {
    let released = GROUPS.with_borrow_mut(|groups| {
        let group = groups.entry(group).or_default();
        if once && group.passed {
            return Some(Vec::new());
        }
        if group.waiting.len() + 1 < k as usize {
            group.waiting.push(msg.defer());
            return None;
        }
        group.passed = true;
        Some(std::mem::take(&mut group.waiting))
    });
    let Some(waiting) = released else {
        return Ok(Reply::later());
    };
    let answered = waiting
        .iter()
        .filter(|deferred| {
            let released = Released {
                released: waiting.len() as u32 + 1,
            };
            deferred.reply(ok(&released)).is_ok()
        })
        .count();
    ok(&Released {
        released: answered as u32 + 1,
    })
}

fn code_of(result: Result<String, Failure>) -> u32 {
    result.err().map_or(0, |failure| failure.code())
}

struct DeferredHandler;

impl Handler for DeferredHandler {
    fn describe() -> Description {
        Description::service("deferred")
            .accepts::<Hold>()
            .accepts::<Release>()
            .accepts::<ReleaseTwice>()
            .accepts::<Forge>()
            .accepts::<ReplyThenTrap>()
            .accepts::<ReplyThenReturn>()
            .accepts::<Envelope>()
            .accepts::<Announce>()
            .accepts::<Arrive>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if msg.is::<Hold>() {
            HELD.with_borrow_mut(|held| held.push(msg.defer()));
            Ok(Reply::later())
        } else if let Some(Release { payload }) = msg.decode_if()? {
            let held = HELD.with_borrow_mut(std::mem::take);
            for deferred in &held {
                deferred.reply(ok(&payload))?;
            }
            ok(&Outcome {
                answered: held.len() as u32,
                code: 0,
            })
        } else if msg.is::<ReleaseTwice>() {
            let first = HELD.with_borrow_mut(|held| (!held.is_empty()).then(|| held.remove(0)));
            let Some(deferred) = first else {
                return Err(Failure::not_found("nothing is held"));
            };
            deferred.reply(ok(&"first"))?;
            let code = code_of(deferred.reply(ok(&"second")));
            ok(&Outcome { answered: 1, code })
        } else if let Some(Forge { message_id }) = msg.decode_if()? {
            let code = code_of(Deferred::new(message_id).reply(ok(&"forged")));
            ok(&Outcome { answered: 0, code })
        } else if msg.is::<ReplyThenTrap>() {
            msg.defer().reply(ok(&"before the trap"))?;
            panic!("trapping after answering");
        } else if msg.is::<ReplyThenReturn>() {
            msg.defer().reply(ok(&"by reply"))?;
            ok(&"by return")
        } else if let Some(request) = msg.decode_if::<Arrive>()? {
            arrive(&msg, request)
        } else if let Some(Announce {
            event_type,
            payload,
        }) = msg.decode_if()?
        {
            let emitted = switchboard_sdk::emit_untyped(&event_type, &payload, &[])?;
            ok(&serde_json::json!({"id": emitted.id, "subscribers": emitted.subscribers}))
        } else if msg.is::<Envelope>() {
            ok(&serde_json::json!({"deadline": msg.deadline(), "depth": msg.depth()}))
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(DeferredHandler);
