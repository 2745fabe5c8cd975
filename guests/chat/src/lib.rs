//! `chat`: people chat through it from the client gateway (the browser page the gateway
//! serves at `/` talks to it). Both its message types are open to clients:
//!
//! - `Say {"to": "<user id>", "text": "..."}` from `user:<id>` sends `text` to another user.
//!   If that user is connected now, it is pushed at once and the answer is
//!   `{"delivered": "now"}`; if not, and the user has connected before, it is kept for them
//!   (until a client of theirs acknowledges it, for at most a week or the host's limit) and
//!   the answer is `{"delivered": "later"}`; a user never seen gets 404 (so nobody can make
//!   the host keep messages for made-up users). The recipient gets a
//!   `Chat {"from", "text", "sent_at"}` message.
//! - `Who {}` answers `{"online": [user ids]}`, kept from the host's presence events.
//!
//! Only a client may `Say` (the sender is who the host says sent it, never a payload field);
//! a text must be non-empty and at most [`MAX_TEXT`] bytes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

use switchboard_sdk::users::{self, USER_PREFIX, UserOffline, UserOnline};

/// Longest text one chat message may carry, in bytes.
pub const MAX_TEXT: usize = 4096;
/// How long a message for an offline user is kept (the host may keep it less).
const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Serialize, Deserialize)]
struct Say {
    to: String,
    text: String,
}
impl Message for Say {}

#[derive(Serialize, Deserialize)]
struct Who {}
impl Message for Who {}

/// What the recipient gets.
#[derive(Serialize, Deserialize)]
struct Chat {
    from: String,
    text: String,
    /// When it was said, in milliseconds since the Unix epoch.
    sent_at: u64,
}
impl Event for Chat {}

fn online() -> switchboard_sdk::State<BTreeSet<String>> {
    state("online")
}

/// Whether `user` has ever connected (one key per user: the set grows with the users).
fn known(user: &str) -> switchboard_sdk::State<bool> {
    state(format!("known/{user}"))
}

/// Whether `id` can be a user id: non-empty, short, without `:` or `/`.
fn is_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.contains([':', '/'])
}

struct ChatHandler;

impl Handler for ChatHandler {
    fn describe() -> Description {
        Description::service("chat")
            .accepts_from_clients::<Say>()
            .accepts_from_clients::<Who>()
            .on_event::<UserOnline>()
            .on_event::<UserOffline>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if msg.is::<Who>() {
            return ok(&serde_json::json!({ "online": online().get_or_default()? }));
        }
        let Some(Say { to, text }) = msg.decode_if()? else {
            return Err(msg.unsupported());
        };
        let Some(from) = msg.from().strip_prefix(USER_PREFIX) else {
            return Err(Failure::new(403, "only a connected user may say something"));
        };
        let to = users::user_id(&to).to_owned();
        if !is_user_id(&to) {
            return Err(Failure::bad_request(
                "`to` must be a user id: non-empty, without `:` or `/`",
            ));
        }
        if text.trim().is_empty() || text.len() > MAX_TEXT {
            return Err(Failure::bad_request(format!(
                "`text` must be non-empty and at most {MAX_TEXT} bytes"
            )));
        }
        let chat = Chat {
            from: from.to_owned(),
            text,
            sent_at: msg.timestamp(),
        };
        if users::is_online(&to) {
            users::push(&to, &chat)?;
            ok(&serde_json::json!({ "delivered": "now" }))
        } else if !known(&to).get_or_default()? {
            Err(Failure::not_found(format!(
                "no user `{to}` has ever been here"
            )))
        } else {
            users::keep(&to, &chat, KEEP_FOR)?;
            ok(&serde_json::json!({ "delivered": "later" }))
        }
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        if event.is::<UserOnline>() {
            let UserOnline { user } = event.decode()?;
            known(&user).set(&true)?;
            online().update(|users| users.insert(user))?;
        } else if event.is::<UserOffline>() {
            let UserOffline { user } = event.decode()?;
            online().update(|users| users.remove(&user))?;
        }
        Ok(())
    }
}

switchboard_sdk::export_handler!(ChatHandler);
