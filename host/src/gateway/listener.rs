//! What the gateway's listener bounds before a client upgrades, without a token: at most
//! [`MAX_HANDSHAKES`] connections that have not upgraded (a flood of idle sockets cannot use
//! up the host's file descriptors), each given [`HANDSHAKE_TIMEOUT`] to send a request's
//! headers in at most 16 KiB, and 30 s in all before it upgrades (so nobody keeps a place by
//! repeating requests). At the cap the connection idle or half-sent the longest is shed
//! for the newcomer, so a flood of half-sent handshakes cannot keep an honest client out.
//! The accept loop is the admin API's ([`crate::listener`]); an upgraded client is bounded
//! by [`super::GatewayLimits`] instead.

use std::time::Duration;

use crate::listener::ConnectionLimits;

/// Default most connections that have not upgraded to WebSocket.
pub const MAX_HANDSHAKES: usize = 1024;
/// Longest a connection may take to send a request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay idle between two requests before it upgrades.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay plain HTTP (page requests, a handshake) before it is
/// closed or upgraded.
const PLAIN_LIFETIME: Duration = Duration::from_secs(30);
/// Most bytes of a request's head a connection may send before its headers are parsed.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The gateway listener's limits, with at most `max_handshakes` connections not upgraded.
pub fn handshake_limits(max_handshakes: usize) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: max_handshakes,
        header_read_timeout: HANDSHAKE_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        lifetime: Some(PLAIN_LIFETIME),
        max_header_bytes: Some(MAX_HEADER_BYTES),
    }
}
