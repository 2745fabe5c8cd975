//! `inventory`: reserves stock from an in-memory store that starts with apples and pears.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_sdk::prelude::*;

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

thread_local! {
    static STOCK: RefCell<BTreeMap<String, u32>> =
        RefCell::new(BTreeMap::from([("apple".to_owned(), 10), ("pear".to_owned(), 2)]));
}

struct Inventory;

impl Handler for Inventory {
    fn describe() -> Description {
        Description::service("inventory").accepts::<Reserve>()
    }

    fn handle_message(msg: IncomingMessage) -> Result<Reply, Failure> {
        let Reserve { item, quantity } = msg.decode()?;
        STOCK.with_borrow_mut(|stock| {
            let Some(left) = stock.get_mut(&item) else {
                return Err(
                    Failure::not_found(format!("unknown item `{item}`")).with_help(format!(
                        "known items: {}",
                        stock.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                );
            };
            let Some(remaining) = left.checked_sub(quantity) else {
                return Err(Failure::conflict(format!(
                    "out of stock: {quantity} {item} asked, {left} left"
                )));
            };
            *left = remaining;
            ok(&Reserved {
                item,
                quantity,
                remaining,
            })
        })
    }
}

switchboard_sdk::export_handler!(Inventory);
