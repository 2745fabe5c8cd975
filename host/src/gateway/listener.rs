//! The gateway's accept loop. An upgraded client is bounded by [`super::GatewayLimits`];
//! this bounds what anyone can hold before that, without a token: at most
//! [`MAX_HANDSHAKES`] connections that have not upgraded (a flood of idle sockets cannot use
//! up the host's file descriptors), each given [`HANDSHAKE_TIMEOUT`] to send a request's
//! headers (a slow sender is closed) in at most 16 KiB, and 30 s in all before it upgrades
//! (so nobody keeps a place by repeating requests).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::write_stall::Watched;
use crate::metrics::GatewayMetrics;

/// Connections that have not upgraded to WebSocket, at most.
pub const MAX_HANDSHAKES: usize = 1024;
/// Longest a connection may take to send a request's headers, or stay idle between two.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay plain HTTP (page requests, a handshake) before it is
/// closed or upgraded.
const PLAIN_LIFETIME: Duration = Duration::from_secs(30);
/// Most bytes of a request's head a connection may send before its headers are parsed.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: axum::Router, metrics: GatewayMetrics) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "the gateway could not accept a connection");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            GatewayMetrics::count(&metrics.refused, "handshakes");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Every request on the connection carries how far writes to it have got, for the
        // client it may upgrade to (see [`super::write_stall`]).
        let (stream, progress) = Watched::new(stream);
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    let mut app = app.clone();
                    request.extensions_mut().insert(progress.clone());
                    async move {
                        let response: Result<_, Infallible> =
                            tower_service::Service::call(&mut app, request).await;
                        response
                    }
                });
            // Headers bounded, and the connection's whole life before it upgrades: nobody
            // keeps a place indefinitely by repeating requests, or much memory meanwhile.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            // Resolves when the connection closes, or hands its socket to the upgraded
            // client (whose own limits take over): either way its place is given back.
            let _ = tokio::time::timeout(PLAIN_LIFETIME, connection).await;
            drop(permit);
        });
    }
}
