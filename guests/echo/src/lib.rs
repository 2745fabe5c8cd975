//! `echo`: answers any message with its own payload.

use switchboard_sdk::prelude::*;

struct Echo;

impl Handler for Echo {
    fn describe() -> Description {
        // No `accepts`: every message type is welcome.
        Description::service("echo")
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        Ok(Reply::from_json(msg.payload()))
    }
}

switchboard_sdk::export_handler!(Echo);
