//! A plain axum server with one POST route that echoes its JSON body: the yardstick
//! `bench/http-load.sh` measures `POST /v1/messages?wait` against.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7071".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = Router::new().route("/echo", post(|body: Bytes| async move { body }));
    axum::serve(listener, app).await
}
