//! `audit`: records every `UserRegistered` event and `User` change it sees, and shows the
//! record on `GetAudit`.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct GetAudit {}
impl Message for GetAudit {}

#[derive(Serialize, Deserialize)]
struct AuditLog {
    entries: Vec<Value>,
}

/// Subscribed to by type only: the audit keeps payloads as they came.
#[derive(Serialize, Deserialize)]
struct UserRegistered {}
impl Event for UserRegistered {}

#[derive(Serialize, Deserialize)]
struct User {}
impl DataObject for User {}

thread_local! {
    static ENTRIES: RefCell<Vec<Value>> = const { RefCell::new(Vec::new()) };
}

fn record(entry: Value) {
    ENTRIES.with_borrow_mut(|entries| entries.push(entry));
}

/// JSON text as a value; anything that is not JSON is kept as a string.
fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

struct Audit;

impl Handler for Audit {
    fn describe() -> Description {
        Description::service("audit")
            .accepts::<GetAudit>()
            .on_event::<UserRegistered>()
            .on_change::<User>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if !msg.is::<GetAudit>() {
            return Err(msg.unsupported());
        }
        ok(&AuditLog {
            entries: ENTRIES.with_borrow(Clone::clone),
        })
    }

    fn handle_event(event: IncomingEvent) -> Result<(), Failure> {
        record(json!({
            "kind": "event",
            "type": event.event_type(),
            "id": event.id(),
            "from": event.from(),
            "payload": json_or_text(event.payload()),
        }));
        Ok(())
    }

    fn handle_data_change(change: DataChange) -> Result<(), Failure> {
        record(json!({
            "kind": "change",
            "change": change.change_type().as_str(),
            "object_type": change.object_type(),
            "object": json_or_text(change.object()),
            "id": change.id(),
            "from": change.from(),
        }));
        Ok(())
    }
}

switchboard_sdk::export_handler!(Audit);
