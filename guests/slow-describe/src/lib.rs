//! `slow-describe`: a hostile upload whose `describe` blocks in a WASI sleep for an hour, so
//! a deploy of it stays in `describe` until the host's describe timeout. Tests use it to show
//! that a slow deploy holds up nobody else (listing, other deploys).

use switchboard_sdk::prelude::*;

struct SlowDescribe;

impl Handler for SlowDescribe {
    fn describe() -> Description {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Description::service("slow-describe")
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        Ok(Reply::from_json(msg.payload()))
    }
}

switchboard_sdk::export_handler!(SlowDescribe);
