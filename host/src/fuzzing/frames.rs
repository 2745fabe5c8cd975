//! A client's WebSocket frame: whatever text a client sends, what the gateway takes from it
//! is something a client may send, stamped as from that client, and what it refuses is
//! refused with one of the codes the README lists for frames.

use crate::address::{Address, Kind};
use crate::gateway::connection::frames::{Acks, Frame, FrameRules};
use crate::signal::{Body, USER_ONLINE, code};

/// The client every frame comes from.
const ADDRESS: &str = "user:fuzz";

/// A small largest signal, so that the fuzzer reaches the 413.
const MAX_MESSAGE_BYTES: usize = 512;

/// Reads `data` as a text frame from `ADDRESS`, whom the operator lets emit `Typing` (and,
/// by mistake, the host's own `UserOnline`, which a client may still never emit).
pub fn frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // A WebSocket text frame is UTF-8; axum refuses anything else.
    };
    let allowed = ["Typing".to_owned(), USER_ONLINE.to_owned()];
    let rules = FrameRules {
        address: ADDRESS,
        events_from_clients: &allowed,
        max_message_bytes: MAX_MESSAGE_BYTES,
        clock: &crate::clock::Clock::system(),
    };
    match rules.read(text) {
        Ok(Frame::Acks(acks)) => {
            let value: serde_json::Value = serde_json::from_str(text).expect("it was JSON");
            let named = match &acks {
                Acks::One(id) => serde_json::json!({ "ack": id }),
                Acks::Many(ids) => serde_json::json!({ "ack": ids }),
            };
            assert_eq!(
                value, named,
                "an acknowledgement is exactly {{\"ack\": ids}}"
            );
        }
        Ok(Frame::Signal(signal)) => {
            let envelope = &signal.envelope;
            assert_eq!(envelope.from, ADDRESS, "stamped as from the client");
            assert_eq!((envelope.depth, envelope.deadline), (0, None));
            assert!(
                signal.size() <= MAX_MESSAGE_BYTES,
                "over the largest signal"
            );
            assert!(
                !envelope
                    .headers
                    .keys()
                    .any(|k| k.to_ascii_lowercase().starts_with("switchboard-")),
                "a client set a host header: {:?}",
                envelope.headers
            );
            match &signal.body {
                Body::Message(m) => {
                    assert!(!m.to.trim().is_empty() && !m.message_type.trim().is_empty());
                    assert!(
                        !matches!(
                            Address::kind_of(&m.to),
                            Kind::Agent | Kind::User | Kind::Inbox
                        ),
                        "a client messaged {} directly",
                        m.to
                    );
                    assert!(
                        m.return_address.as_deref().is_none_or(|a| a == ADDRESS),
                        "replies diverted to {:?}",
                        m.return_address
                    );
                }
                Body::Event { event_type, .. } => {
                    assert!(event_type == "Typing", "a client emitted `{event_type}`")
                }
                other => panic!("a client sent {other:?}"),
            }
        }
        Err(failure) => assert!(
            [code::BAD_REQUEST, code::FORBIDDEN, code::TOO_LARGE].contains(&failure.code),
            "a frame refused with {failure}"
        ),
    }
}
