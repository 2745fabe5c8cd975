//! `echo`: answers any message with its own payload. With a `cc` header it also sends a copy
//! of the reply to that address (the explicit reply address of the seed's rule).

use switchboard_sdk::prelude::*;

struct Echo;

impl Handler for Echo {
    fn describe() -> Description {
        // No `accepts`: every message type is welcome.
        Description::service("echo")
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if let Some(cc) = msg.header("cc") {
            let copy = Ok(Reply::from_json(msg.payload()));
            switchboard_sdk::reply_at(&msg.reply_target(), copy, Some(cc))?;
        }
        Ok(Reply::from_json(msg.payload()))
    }
}

switchboard_sdk::export_handler!(Echo);
