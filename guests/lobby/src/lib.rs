//! `lobby`: who is online. It subscribes to the host's presence events (`UserOnline`,
//! `UserOffline`, sent when a user's first connection to the client gateway opens and its
//! last one closes) and keeps the set of online users in keyed state; `Who {}` answers it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;
use switchboard_sdk::users::{UserOffline, UserOnline};

#[derive(Serialize, Deserialize)]
struct Who {}
impl Message for Who {}

fn online() -> switchboard_sdk::State<BTreeSet<String>> {
    state("online")
}

struct Lobby;

impl Handler for Lobby {
    fn describe() -> Description {
        Description::service("lobby")
            .accepts::<Who>()
            .on_event::<UserOnline>()
            .on_event::<UserOffline>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if !msg.is::<Who>() {
            return Err(msg.unsupported());
        }
        ok(&serde_json::json!({ "online": online().get_or_default()? }))
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        if event.is::<UserOnline>() {
            let UserOnline { user } = event.decode()?;
            online().update(|users| users.insert(user))?;
        } else if event.is::<UserOffline>() {
            let UserOffline { user } = event.decode()?;
            online().update(|users| users.remove(&user))?;
        }
        Ok(())
    }
}

switchboard_sdk::export_handler!(Lobby);
