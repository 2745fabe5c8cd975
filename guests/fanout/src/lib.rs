//! `fanout`: sends many messages at once with `send` and counts the replies that come back to
//! `handle_reply`, so tests can prove the host never refuses a reply for lack of room.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

/// Send `count` messages of type `message_type` to `to`, without waiting.
#[derive(Serialize, Deserialize)]
struct Fan {
    to: String,
    message_type: String,
    count: u32,
}
impl Message for Fan {}

/// How many sends the host took, and the codes of those it refused.
#[derive(Serialize, Deserialize)]
struct Fanned {
    sent: u32,
    refused: Vec<u32>,
}

/// How many replies and error replies have arrived so far.
#[derive(Serialize, Deserialize)]
struct Tally {}
impl Message for Tally {}

#[derive(Serialize, Deserialize)]
struct Counted {
    replies: u64,
    errors: u64,
}

thread_local! {
    static REPLIES: Cell<u64> = const { Cell::new(0) };
    static ERRORS: Cell<u64> = const { Cell::new(0) };
}

struct Fanout;

impl Handler for Fanout {
    fn describe() -> Description {
        Description::service("fanout")
            .accepts::<Fan>()
            .accepts::<Tally>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if let Some(Fan {
            to,
            message_type,
            count,
        }) = msg.decode_if()?
        {
            let mut fanned = Fanned {
                sent: 0,
                refused: Vec::new(),
            };
            for n in 0..count {
                let payload = serde_json::json!({ "n": n });
                match switchboard_sdk::send_untyped(
                    &to,
                    &message_type,
                    &payload,
                    SendOptions::new(),
                ) {
                    Ok(_) => fanned.sent += 1,
                    Err(failure) => fanned.refused.push(failure.code()),
                }
            }
            ok(&fanned)
        } else if msg.is::<Tally>() {
            ok(&Counted {
                replies: REPLIES.with(Cell::get),
                errors: ERRORS.with(Cell::get),
            })
        } else {
            Err(msg.unsupported())
        }
    }

    fn handle_reply(reply: IncomingReply) -> Result<(), Failure> {
        let counter = if reply.is_ok() { &REPLIES } else { &ERRORS };
        counter.with(|c| c.set(c.get() + 1));
        Ok(())
    }
}

switchboard_sdk::export_handler!(Fanout);
