//! `username`: hands out unique usernames, refusing taken ones with a 409.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

/// Names nobody may take.
const RESERVED: [&str; 2] = ["admin", "root"];

#[derive(Serialize, Deserialize)]
struct SetUsername {
    username: String,
}
impl Message for SetUsername {}

#[derive(Serialize, Deserialize)]
struct UsernameSet {
    username: String,
}

thread_local! {
    /// Names set so far by this instance.
    static TAKEN: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

struct Username;

impl Handler for Username {
    fn describe() -> Description {
        Description::service("username").accepts::<SetUsername>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let SetUsername { username } = msg.decode()?;
        TAKEN.with_borrow_mut(|taken| {
            let is_taken = |name: &str| RESERVED.contains(&name) || taken.contains(name);
            if is_taken(&username) {
                let free = (2..)
                    .map(|n| format!("{username}{n}"))
                    .find(|name| !is_taken(name));
                return Err(Failure::conflict(format!(
                    "the username `{username}` is already taken"
                ))
                .with_help(format!(
                    "choose another name, e.g. `{}`",
                    free.unwrap_or_default()
                )));
            }
            taken.insert(username.clone());
            ok(&UsernameSet { username })
        })
    }
}

switchboard_sdk::export_handler!(Username);
