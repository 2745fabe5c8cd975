//! `switchboard serve`'s client-gateway flags: where it listens, how clients authenticate,
//! what bounds each connection, what clients may reach, and how long pushes are kept for
//! users who are not connected. Flags and environment only (no config-file table).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::HostConfig;
use crate::config::{bytes_arg, duration_arg};
use crate::gateway::{GatewayLimits, JwtSettings};

/// The client gateway's flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GatewayArgs {
    /// Address the client gateway (WebSocket clients at `GET /v1/ws`, the chat page at `/`)
    /// listens on; off unless given. It needs --gateway-tokens, --gateway-jwt-secret or
    /// --gateway-jwt-keys.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// TOML file of client tokens for development, `"token" = "user id"`: a client presenting
    /// one is `user:<id>`. The admin token grants nothing on the gateway.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_TOKENS", value_name = "FILE")]
    pub gateway_tokens: Option<PathBuf>,
    /// Secret of the HS256 JWTs clients present to the gateway; a valid token's `sub` is
    /// the user id, and `exp` is required.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub gateway_jwt_secret: Option<String>,
    /// TOML file of the public keys of RS256 and ES256 client JWTs, by key id: `[[key]]`
    /// tables of `kid`, `alg` and `pem` (a PEM file, relative to this one, or the PEM text).
    /// Read again when a token names an unknown `kid`, so keys rotate without a restart.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_JWT_KEYS", value_name = "FILE")]
    pub gateway_jwt_keys: Option<PathBuf>,
    /// The issuer (`iss`) client JWTs must name, if set.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_JWT_ISSUER")]
    pub gateway_jwt_issuer: Option<String>,
    /// The audience (`aud`) client JWTs must name, if set.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_JWT_AUDIENCE")]
    pub gateway_jwt_audience: Option<String>,
    /// Clock leeway for client JWTs' `exp`, in seconds; a connection is closed (code 4001)
    /// when its token's `exp` plus the leeway passes; at most a day (86400), since a huge
    /// leeway would wrap the time it is subtracted from [default: 60].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_JWT_LEEWAY", value_parser = clap::value_parser!(u64).range(..=86_400))]
    pub gateway_jwt_leeway: Option<u64>,
    /// How often the gateway pings each client, like 20s [default: 20s].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_HEARTBEAT", value_parser = duration_arg)]
    pub gateway_heartbeat: Option<Duration>,
    /// How long a client may stay silent (no frame, no pong) before it is closed with code
    /// 4000 [default: 60s].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_HEARTBEAT_TIMEOUT", value_parser = duration_arg)]
    pub gateway_heartbeat_timeout: Option<Duration>,
    /// Signals one connection may have waiting to be sent; one that finds the queue full is
    /// not sent to that connection, and counted as undelivered [default: 256].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_QUEUE", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_queue: Option<u32>,
    /// Bytes of signals one connection may have waiting to be sent, like 8MiB (an empty
    /// queue takes any signal); one that would pass it is not sent to that connection, and
    /// counted as undelivered. A handler's push larger than this gets 413 [default: 8MiB].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_QUEUE_BYTES", value_parser = bytes_arg)]
    pub gateway_queue_bytes: Option<usize>,
    /// How long a write to a client may make no progress, like 10s: a client that takes no
    /// byte for that long is closed with code 4002, its socket shut 2 s later [default: 10s].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_WRITE_STALL", value_parser = duration_arg)]
    pub gateway_write_stall: Option<Duration>,
    /// Frames one connection may send per second, steadily; the rest are refused with
    /// ErrorReply 429 [default: 50].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_FRAMES_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_frames_per_second: Option<u32>,
    /// Frames one connection may send in a burst before the rate applies [default: 100].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_FRAME_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_frame_burst: Option<u32>,
    /// Largest frame a client may send, like 2MiB; a bigger one closes the connection with
    /// code 1009 [default: 2MiB].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_MAX_FRAME_BYTES", value_parser = bytes_arg)]
    pub gateway_max_frame_bytes: Option<usize>,
    /// Connections one user may have open at once; more are refused with 429 [default: 16].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_CONNECTIONS_PER_USER", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_connections_per_user: Option<u32>,
    /// Connections that have not upgraded yet (page requests, handshakes) the gateway holds
    /// at once; at the cap the one idle or half-sent the longest is closed for the newcomer
    /// [default: 1024].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_MAX_HANDSHAKES", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_max_handshakes: Option<u32>,
    /// Connections the gateway holds at once; more are refused with 503 [default: 10000].
    #[arg(long, env = "SWITCHBOARD_GATEWAY_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_max_connections: Option<u32>,
    /// Handlers clients may send any message type they accept, beyond the types their
    /// descriptions open to clients (comma-separated, or the flag repeated; `*` opens every
    /// handler, for development).
    #[arg(
        long,
        env = "SWITCHBOARD_OPEN_TO_CLIENTS",
        value_delimiter = ',',
        value_name = "HANDLER"
    )]
    pub open_to_clients: Vec<String>,
    /// Event types clients may emit (comma-separated, or the flag repeated); by default they
    /// may emit none. The host's presence events can never be.
    #[arg(
        long,
        env = "SWITCHBOARD_CLIENTS_MAY_EMIT",
        value_delimiter = ',',
        value_name = "EVENT_TYPE"
    )]
    pub clients_may_emit: Vec<String>,
    /// Pushes one handler may keep for one user until a client acknowledges them; a handler
    /// keeping more gets 429, while other handlers keep their own [default: 1000].
    #[arg(long, env = "SWITCHBOARD_KEPT_PER_USER", value_parser = clap::value_parser!(u32).range(1..))]
    pub kept_per_user: Option<u32>,
    /// Longest a push is kept for a user, like 12h or 7d (a handler may ask for less)
    /// [default: 7d].
    #[arg(long, env = "SWITCHBOARD_KEPT_TTL", value_parser = duration_arg)]
    pub kept_ttl: Option<Duration>,
}

/// The client gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Its address.
    pub listen: SocketAddr,
    /// A development tokens file, if any.
    pub tokens: Option<PathBuf>,
    /// How client JWTs are checked, if they are accepted.
    pub jwt: Option<JwtSettings>,
    /// What bounds each connection.
    pub limits: GatewayLimits,
    /// Connections not upgraded yet, at most.
    pub max_handshakes: usize,
}

impl GatewayArgs {
    /// Applies the host-wide settings (what clients may reach, kept pushes, the largest
    /// push) to `host`.
    pub fn apply(&self, host: &mut HostConfig) {
        host.open_to_clients = self.open_to_clients.clone();
        if let Some(n) = self.kept_per_user {
            host.kept_per_user = n as usize;
        }
        if let Some(ttl) = self.kept_ttl {
            host.kept_ttl = ttl;
        }
        if let Some(bytes) = self.gateway_queue_bytes {
            host.client_queue_bytes = bytes;
        }
    }

    /// The gateway's settings, if it is on.
    pub fn options(self) -> anyhow::Result<Option<GatewayOptions>> {
        let authenticates = self.gateway_tokens.is_some()
            || self.gateway_jwt_secret.is_some()
            || self.gateway_jwt_keys.is_some();
        let Some(listen) = self.gateway_listen else {
            if authenticates {
                bail!(
                    "--gateway-tokens, --gateway-jwt-secret and --gateway-jwt-keys need --gateway-listen"
                );
            }
            return Ok(None);
        };
        if !authenticates {
            bail!(
                "the client gateway needs --gateway-tokens, --gateway-jwt-secret or --gateway-jwt-keys"
            );
        }
        let jwt =
            (self.gateway_jwt_secret.is_some() || self.gateway_jwt_keys.is_some()).then(|| {
                JwtSettings {
                    secret: self.gateway_jwt_secret,
                    keys: self.gateway_jwt_keys,
                    issuer: self.gateway_jwt_issuer,
                    audience: self.gateway_jwt_audience,
                    leeway_secs: self.gateway_jwt_leeway.unwrap_or(60),
                }
            });
        let defaults = GatewayLimits::default();
        let limits = GatewayLimits {
            heartbeat: self.gateway_heartbeat.unwrap_or(defaults.heartbeat),
            heartbeat_timeout: self
                .gateway_heartbeat_timeout
                .unwrap_or(defaults.heartbeat_timeout),
            queue: self.gateway_queue.map_or(defaults.queue, |n| n as usize),
            queue_bytes: self.gateway_queue_bytes.unwrap_or(defaults.queue_bytes),
            write_stall: self.gateway_write_stall.unwrap_or(defaults.write_stall),
            frames_per_second: self
                .gateway_frames_per_second
                .unwrap_or(defaults.frames_per_second),
            frame_burst: self.gateway_frame_burst.unwrap_or(defaults.frame_burst),
            max_frame_bytes: self
                .gateway_max_frame_bytes
                .unwrap_or(defaults.max_frame_bytes),
            connections_per_user: self
                .gateway_connections_per_user
                .map_or(defaults.connections_per_user, |n| n as usize),
            max_connections: self
                .gateway_max_connections
                .map_or(defaults.max_connections, |n| n as usize),
            events_from_clients: self.clients_may_emit.clone(),
        };
        if limits.heartbeat.is_zero() || limits.heartbeat_timeout < limits.heartbeat {
            bail!("--gateway-heartbeat must be above zero and at most --gateway-heartbeat-timeout");
        }
        if limits.write_stall.is_zero() {
            bail!("--gateway-write-stall must be above zero");
        }
        Ok(Some(GatewayOptions {
            listen,
            tokens: self.gateway_tokens,
            jwt,
            limits,
            max_handshakes: self
                .gateway_max_handshakes
                .map_or(crate::gateway::MAX_HANDSHAKES, |n| n as usize),
        }))
    }
}
