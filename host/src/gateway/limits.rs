//! What bounds a client: what it may emit, heartbeats, its queue, how long a write to it may
//! stall, its frame rate and size, and how many connections a user and the gateway may have;
//! and the close codes a connection ends with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a write to a client may make no progress before the client is closed, by
/// default.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(10);

/// The gateway's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// How often the gateway pings a client.
    pub heartbeat: Duration,
    /// How long a client may stay silent (no frame, no pong) before it is closed with
    /// [`close::HEARTBEAT`], to the moment.
    pub heartbeat_timeout: Duration,
    /// Signals one connection may have waiting to be sent; a signal finding it full is not
    /// sent to that connection, and counted.
    pub queue: usize,
    /// Bytes of signals one connection may have waiting (an empty queue takes any one); a
    /// signal that would pass it is not sent to that connection, and counted. A push larger
    /// than this is refused at the handler's `push` or `keep` (413).
    pub queue_bytes: usize,
    /// How long a write to a client may make no progress (not one byte taken) before the
    /// connection is closed with [`close::TOO_SLOW`]: the client stopped reading.
    pub write_stall: Duration,
    /// Frames a connection may send per second, steadily; the rest are refused (429).
    pub frames_per_second: u32,
    /// Frames a connection may send in a burst before the rate applies.
    pub frame_burst: u32,
    /// Largest frame a client may send; a bigger one closes the connection with
    /// [`close::TOO_LARGE`].
    pub max_frame_bytes: usize,
    /// Connections one user may have open at once.
    pub connections_per_user: usize,
    /// Connections the gateway holds at once.
    pub max_connections: usize,
    /// Event types clients may emit (none by default; never the presence events).
    pub events_from_clients: Vec<String>,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(20),
            heartbeat_timeout: Duration::from_secs(60),
            queue: super::CLIENT_QUEUE,
            queue_bytes: crate::config::DEFAULT_CLIENT_QUEUE_BYTES,
            write_stall: DEFAULT_WRITE_STALL,
            frames_per_second: 50,
            frame_burst: 100,
            max_frame_bytes: 2 << 20,
            connections_per_user: 16,
            max_connections: 10_000,
            events_from_clients: Vec::new(),
        }
    }
}

/// The close codes a connection ends with.
pub mod close {
    /// The host is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was past the largest the gateway takes.
    pub const TOO_LARGE: u16 = 1009;
    /// The client answered no ping within the heartbeat timeout.
    pub const HEARTBEAT: u16 = 4000;
    /// The client's token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Writes to the client stalled: it stopped reading.
    pub const TOO_SLOW: u16 = 4002;
}

/// Counts connections against the caps; a taken [`Slot`] gives its place back when dropped.
#[derive(Clone, Default)]
pub struct Slots {
    taken: Arc<Mutex<(usize, HashMap<String, usize>)>>,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// The user has as many connections as one user may.
    User(usize),
    /// The gateway has as many connections as it holds.
    Gateway(usize),
}

/// One connection's place.
pub struct Slot {
    slots: Slots,
    user: String,
}

impl Slots {
    /// Takes a place for `user` within `limits`.
    pub fn take(&self, user: &str, limits: &GatewayLimits) -> Result<Slot, Full> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let (total, users) = &mut *taken;
        if *total >= limits.max_connections {
            return Err(Full::Gateway(limits.max_connections));
        }
        let mine = users.entry(user.to_owned()).or_default();
        if *mine >= limits.connections_per_user {
            return Err(Full::User(limits.connections_per_user));
        }
        *mine += 1;
        *total += 1;
        Ok(Slot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(|e| e.into_inner());
        let (total, users) = &mut *taken;
        *total = total.saturating_sub(1);
        if let Some(mine) = users.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's places and the gateway's run out separately, and come back when dropped.
    #[test]
    fn slots_are_capped_per_user_and_in_total() {
        let limits = GatewayLimits {
            connections_per_user: 2,
            max_connections: 3,
            ..GatewayLimits::default()
        };
        let slots = Slots::default();
        let a1 = slots.take("ann", &limits).unwrap();
        let _a2 = slots.take("ann", &limits).unwrap();
        assert_eq!(slots.take("ann", &limits).err(), Some(Full::User(2)));
        let _b1 = slots.take("bo", &limits).unwrap();
        assert_eq!(slots.take("cy", &limits).err(), Some(Full::Gateway(3)));
        drop(a1);
        assert!(slots.take("ann", &limits).is_ok());
    }
}
