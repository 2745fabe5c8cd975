//! `orders`: places orders by awaiting a reservation from `inventory`, and forwards any
//! message as a request (tests use it for nested requests and in-guest timeouts).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_sdk::prelude::*;

/// How long an order waits for the inventory.
const RESERVE_TIMEOUT: Duration = Duration::from_millis(2000);

#[derive(Serialize, Deserialize)]
struct PlaceOrder {
    item: String,
    quantity: u32,
}
impl Message for PlaceOrder {}

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    item: String,
    quantity: u32,
    remaining: u32,
}

#[derive(Serialize, Deserialize)]
struct Reserve {
    item: String,
    quantity: u32,
}
impl Message for Reserve {}

#[derive(Serialize, Deserialize)]
struct Reserved {
    item: String,
    quantity: u32,
    remaining: u32,
}

#[derive(Serialize, Deserialize)]
struct Forward {
    to: String,
    message_type: String,
    payload: Value,
    timeout_ms: u32,
}
impl Message for Forward {}

#[derive(Serialize, Deserialize)]
struct Forwarded {
    reply: Value,
}

struct Orders;

impl Orders {
    fn place(msg: &IncomingMessage, order: PlaceOrder) -> Result<Reply, Failure> {
        let reserve = Reserve {
            item: order.item,
            quantity: order.quantity,
        };
        let reserved: Reserved = switchboard_sdk::request("inventory", &reserve, RESERVE_TIMEOUT)
            .map_err(|f| {
            f.context(format!(
                "reservation of {} {} failed",
                reserve.quantity, reserve.item
            ))
        })?;
        ok(&OrderPlaced {
            order_id: msg.id().to_owned(),
            item: reserved.item,
            quantity: reserved.quantity,
            remaining: reserved.remaining,
        })
    }

    fn forward(fwd: Forward) -> Result<Reply, Failure> {
        let timeout = Duration::from_millis(fwd.timeout_ms.into());
        let reply = switchboard_sdk::request_untyped(
            &fwd.to,
            &fwd.message_type,
            &fwd.payload,
            timeout,
            SendOptions::new(),
        )?;
        ok(&Forwarded { reply })
    }
}

impl Handler for Orders {
    fn describe() -> Description {
        Description::service("orders")
            .accepts::<PlaceOrder>()
            .accepts::<Forward>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        if let Some(order) = msg.decode_if::<PlaceOrder>()? {
            Self::place(&msg, order)
        } else if let Some(fwd) = msg.decode_if::<Forward>()? {
            Self::forward(fwd)
        } else {
            Err(msg.unsupported())
        }
    }
}

switchboard_sdk::export_handler!(Orders);
