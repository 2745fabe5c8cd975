//! The chat page the gateway serves at `/`: plain HTML, CSS and JavaScript, compiled into
//! the binary, with no build step and nothing fetched from elsewhere. A person logs in with
//! a client token, sees who is online, and chats through the `chat` handler.

use axum::http::header;
use axum::response::IntoResponse;

/// Only this page's own script, style and WebSocket: nothing inline, nothing from elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`: the page.
pub async fn html() -> impl IntoResponse {
    asset("text/html; charset=utf-8", include_str!("page/chat.html"))
}

/// `GET /chat.js`: its script.
pub async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("page/chat.js"),
    )
}

/// `GET /chat.css`: its style.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("page/chat.css"))
}
