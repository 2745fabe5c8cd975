//! Switchboard's host: routes signals between handlers that run as sandboxed WebAssembly
//! components written against the `switchboard:signal` WIT interface.
//!
//! Data flows one way: [`transport`] → [`router`] → [`runtime`] → [`router`] → [`transport`].
//! The runtime reaches the router only through its narrow [`runtime::Outbound`] interface,
//! the client gateway through [`gateway::Routing`], and a transport delivers into
//! [`transport::Inbound`], never the router type; a test
//! (`layering`) checks that no module imports one that imports it back.
//!
//! - [`address`]: what an address names (one parser, one `Display`), and the encoder of
//!   names into NATS subject tokens.
//! - [`signal`]: the envelope, the five signal kinds, the host's error codes.
//! - [`wire`]: the JSON wire format every edge (HTTP, WebSocket, NATS, logs) shares.
//! - [`runtime`]: the engine, compiled handler versions, warm instances and their limits.
//! - [`router`]: routes, mailboxes, subscriptions, pending replies.
//! - [`transport`]: how signals reach the host that serves them; in-process by default.
//! - [`host`]: the embeddable [`Host`] handle tying them together.
//! - [`store`]: the data directory: modules by hash, compiled artifacts, the registry file.
//! - [`db`]: the embedded transactional store (redb) in the data directory.
//! - [`keyed`]: durable keyed state of agents and services, and durable timers.
//! - [`dead_letters`]: signals a mailbox or client refused, kept for replay or purge.
//! - [`registry`]: deployed handlers and versions, persisted; deploy, roll back, delete.
//! - [`admin`]: the HTTP admin API (axum), guarded by a bearer token.
//! - [`listener`]: the accept loop both listeners share, bounding the connections held.
//! - [`serve`]: the daemon: restore the registry, serve the admin API, drain on shutdown.
//! - [`run_command`]: `switchboard run`, a host driven by JSON signals on stdin.
//! - [`compile_command`]: `switchboard compile-artifact`, the child process a daemon compiles
//!   uploads in.
//! - [`operator`]: the operator commands (`deploy`, `list`, `request`, ...): a client of the
//!   admin API.
//! - [`log_limit`]: per-handler rate limits of log lines, with a count of what was dropped.
//! - [`token_bucket`]: the one token bucket (log lines, gateway frames).
//! - [`metrics`]: Prometheus counters, gauges and histograms per handler.
//! - [`clock`]: the one clock a host reads, passed down from its configuration.
//! - [`config`]: host settings and per-handler limits with their defaults.
//! - `fuzzing` (hidden): the checks the fuzz targets in `fuzz/` and the corpus replay test
//!   share.

pub mod address;
pub mod admin;
pub mod clock;
pub mod compile_command;
pub mod config;
pub mod db;
pub mod dead_letters;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod host;
pub mod keyed;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod nats;
pub mod operator;
pub mod registry;
pub mod router;
pub mod run_command;
pub mod runtime;
pub mod serve;
pub mod signal;
pub mod store;
pub mod token_bucket;
pub mod transport;
pub mod wire;

pub use config::{Compiler, HostConfig, Limits};
pub use host::{Backends, DeployError, Deployed, HandlerInfo, Host, StartError};
pub use signal::{Body, ChangeType, Failure, Json, Signal};
pub use wire::WireSignal;

#[cfg(test)]
mod layering;
