//! Connected clients (`user:<id>`): ask whether one is online, push an event to one, and
//! the host's presence events ([`UserOnline`], [`UserOffline`]) a handler subscribes to.
//!
//! A push is a one-way message of the event's type to `user:<id>`: nothing waits for an
//! answer. Like every signal a handler sends, it leaves when the current signal's turn
//! commits.

use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::typed::{self, Event};
use crate::wit_users as host;

/// The host's presence event: user `user`'s first connection to the gateway opened.
/// Subscribe with `Description::on_event::<UserOnline>()`; only the host emits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserOnline {
    /// The user id (without `user:`).
    pub user: String,
}
impl Event for UserOnline {}

/// The host's presence event: user `user`'s last connection to the gateway closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserOffline {
    /// The user id (without `user:`).
    pub user: String,
}
impl Event for UserOffline {}

/// The address prefix of connected clients.
pub const USER_PREFIX: &str = "user:";

/// The user id in `user` (`ann` or `user:ann`).
pub fn user_id(user: &str) -> &str {
    user.strip_prefix(USER_PREFIX).unwrap_or(user)
}

/// Whether user `user` (`ann` or `user:ann`) is connected now.
pub fn is_online(user: &str) -> bool {
    host::is_online(user_id(user))
}

/// Pushes `event` to user `user` (`ann` or `user:ann`). A user who is not connected gets
/// nothing; the host counts it. A push larger than a client connection's queue holds fails
/// with 413.
pub fn push<E: Event>(user: &str, event: &E) -> Result<(), Failure> {
    Ok(host::push(
        user_id(user),
        &E::event_type(),
        &typed::encode(event)?,
    )?)
}

/// Pushes `event` to user `user` and keeps it until one of the user's clients acknowledges
/// it: delivered now to every connection the user has open, else in order when the user
/// next connects, for at most `ttl` (zero: the host's longest). The turn fails with 429
/// if this handler already keeps the host's most kept pushes for the user.
pub fn keep<E: Event>(user: &str, event: &E, ttl: std::time::Duration) -> Result<(), Failure> {
    Ok(host::keep(
        user_id(user),
        &E::event_type(),
        &typed::encode(event)?,
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    )?)
}

/// Pushes an event of any type with any JSON payload.
pub fn push_untyped(
    user: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<(), Failure> {
    Ok(host::push(user_id(user), event_type, &payload.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::tests::{Unencodable, assert_unencodable};

    /// `ann` and `user:ann` name the same user; only one leading prefix is removed.
    #[test]
    fn a_user_is_named_with_or_without_its_prefix() {
        assert_eq!(user_id("ann"), "ann");
        assert_eq!(user_id("user:ann"), "ann");
        assert_eq!(user_id("user:"), "");
        assert_eq!(user_id("user:user:ann"), "user:ann");
        assert_eq!(user_id("User:ann"), "User:ann");
        assert_eq!(user_id(USER_PREFIX), "");
    }

    /// A pushed event is encoded before the host is called: one that does not encode is a
    /// 500 and nothing is pushed (the host's import would panic natively).
    #[test]
    fn an_unencodable_event_is_not_pushed() {
        assert_unencodable(push("user:ann", &Unencodable));
        assert_unencodable(keep("user:ann", &Unencodable, std::time::Duration::ZERO));
    }
}
