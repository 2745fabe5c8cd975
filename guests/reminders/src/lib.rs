//! `reminders`: an agent that reminds itself later with a durable timer.
//!
//! - `Remind {"text", "after_ms"}` schedules a `Fire` to this same agent and keeps it as
//!   pending; answers the timer's id.
//! - `RemindAt {"text", "at_ms", "to"}` schedules a `Fire` at a time, to `to` (default: this
//!   agent).
//! - `Cancel {"id"}` cancels a pending reminder; answers whether there was one.
//! - `Fire {"text"}` (sent by the timer) records that it fired, and pushes `Reminded` to the
//!   user of the same id (`agent:reminders/ann` reminds `user:ann`), kept until one of the
//!   user's clients acknowledges it (delivered at once if connected, else at next connect).
//! - `Get {}` answers the pending and fired reminders.
//!
//! Everything lives in keyed state and commits with the signal, so a reminder survives a
//! restart, and one scheduled by a failed signal never fires.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;
use switchboard_sdk::timers::{self, TIMER_HEADER, When};
use switchboard_sdk::users;

#[derive(Serialize, Deserialize)]
struct Remind {
    text: String,
    after_ms: u64,
}
impl Message for Remind {}

#[derive(Serialize, Deserialize)]
struct RemindAt {
    text: String,
    at_ms: u64,
    to: Option<String>,
}
impl Message for RemindAt {}

#[derive(Serialize, Deserialize)]
struct Cancel {
    id: String,
}
impl Message for Cancel {}

#[derive(Serialize, Deserialize)]
struct Fire {
    text: String,
}
impl Message for Fire {}

#[derive(Serialize, Deserialize)]
struct Get {}
impl Message for Get {}

/// Pushed to the agent's user when a reminder fires.
#[derive(Serialize, Deserialize)]
struct Reminded {
    text: String,
}
impl Event for Reminded {}

/// A fired reminder.
#[derive(Serialize, Deserialize, Clone)]
struct Fired {
    id: String,
    text: String,
    /// When it was scheduled, in milliseconds since the Unix epoch.
    scheduled_at: u64,
}

/// Pending reminders by timer id.
fn pending() -> switchboard_sdk::State<BTreeMap<String, String>> {
    state("pending")
}

fn fired() -> switchboard_sdk::State<Vec<Fired>> {
    state("fired")
}

struct Reminders;

impl Handler for Reminders {
    fn describe() -> Description {
        Description::agent("reminders")
            .accepts::<Remind>()
            .accepts::<RemindAt>()
            .accepts::<Cancel>()
            .accepts::<Fire>()
            .accepts::<Get>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let me = msg.to().to_owned();
        if let Some(Remind { text, after_ms }) = msg.decode_if()? {
            let when = When::After(Duration::from_millis(after_ms));
            let id = timers::schedule(&me, &Fire { text: text.clone() }, when)?;
            pending().update(|p| p.insert(id.clone(), text))?;
            ok(&serde_json::json!({ "id": id }))
        } else if let Some(RemindAt { text, at_ms, to }) = msg.decode_if()? {
            let to = to.unwrap_or(me);
            let id = timers::schedule(&to, &Fire { text: text.clone() }, When::At(at_ms))?;
            pending().update(|p| p.insert(id.clone(), text))?;
            ok(&serde_json::json!({ "id": id }))
        } else if let Some(Cancel { id }) = msg.decode_if()? {
            let cancelled = timers::cancel(&id)?;
            pending().update(|p| p.remove(&id))?;
            ok(&serde_json::json!({ "cancelled": cancelled }))
        } else if let Some(Fire { text }) = msg.decode_if()? {
            let Some(id) = msg.header(TIMER_HEADER).map(str::to_owned) else {
                return Err(Failure::bad_request(
                    "`Fire` is sent by this agent's timers only",
                ));
            };
            pending().update(|p| p.remove(&id))?;
            let scheduled_at = msg.timestamp();
            fired().update(|f| {
                f.push(Fired {
                    id,
                    text: text.clone(),
                    scheduled_at,
                })
            })?;
            // Kept until one of the user's clients acknowledges it: delivered now if the
            // user is connected, else when they next connect.
            let user = me.rsplit('/').next().unwrap_or_default();
            users::keep(user, &Reminded { text }, Duration::ZERO)?;
            ok(&serde_json::json!({}))
        } else if msg.is::<Get>() {
            ok(&serde_json::json!({
                "pending": pending().get_or_default()?,
                "fired": fired().get_or_default()?,
            }))
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(Reminders);
