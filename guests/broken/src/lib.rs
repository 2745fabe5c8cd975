//! `broken`: a handler whose `describe` panics, so the host must refuse to deploy it.

use switchboard_sdk::prelude::*;

struct Broken;

impl Handler for Broken {
    fn describe() -> Description {
        panic!("this handler cannot describe itself")
    }

    fn handle_message(_msg: IncomingMessage) -> Result<Reply, Failure> {
        Err(Failure::internal("never deployed"))
    }
}

switchboard_sdk::export_handler!(Broken);
