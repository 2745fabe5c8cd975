//! `welcome`: greets every newly registered user with a message to `user:<id>`.

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct UserRegistered {
    user_id: String,
    name: String,
}
impl Event for UserRegistered {}

#[derive(Serialize, Deserialize)]
struct Welcome {
    text: String,
}
impl Message for Welcome {}

struct WelcomeHandler;

impl Handler for WelcomeHandler {
    fn describe() -> Description {
        Description::service("welcome").on_event::<UserRegistered>()
    }

    /// It only listens: no message type is its own.
    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        Err(msg.unsupported())
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        let user: UserRegistered = event.decode()?;
        let text = format!("Welcome, {}!", user.name);
        switchboard_sdk::send(&format!("user:{}", user.user_id), &Welcome { text })?;
        Ok(())
    }
}

switchboard_sdk::export_handler!(WelcomeHandler);
