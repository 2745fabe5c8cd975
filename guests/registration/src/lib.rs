//! `registration`: registers a user, announcing it as an event and as a data change.

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Register {
    user_id: String,
    name: String,
}
impl Message for Register {}

#[derive(Serialize, Deserialize)]
struct Registered {
    user_id: String,
}

#[derive(Serialize, Deserialize)]
struct UserRegistered {
    user_id: String,
    name: String,
}
impl Event for UserRegistered {}

#[derive(Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
}
impl DataObject for User {}

struct Registration;

impl Handler for Registration {
    fn describe() -> Description {
        Description::service("registration").accepts::<Register>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let Register { user_id, name } = msg.decode()?;
        switchboard_sdk::emit(&UserRegistered {
            user_id: user_id.clone(),
            name: name.clone(),
        })?;
        switchboard_sdk::created(&User {
            id: user_id.clone(),
            name,
        })?;
        ok(&Registered { user_id })
    }
}

switchboard_sdk::export_handler!(Registration);
