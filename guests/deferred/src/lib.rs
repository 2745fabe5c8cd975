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
//!
//! Held messages live in guest memory, so deploy it with concurrency 1.

use std::cell::RefCell;

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

/// What an attempt came to: how many answered, or the code of a refusal (0 if none).
#[derive(Serialize, Deserialize)]
struct Outcome {
    answered: u32,
    code: u32,
}

thread_local! {
    static HELD: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
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
        } else if msg.is::<Envelope>() {
            ok(&serde_json::json!({"deadline": msg.deadline(), "depth": msg.depth()}))
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(DeferredHandler);
