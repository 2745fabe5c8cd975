//! The JSON wire format: a signal read from any bytes either is refused or survives being
//! written and read again unchanged, whichever way in it came.

use crate::clock::Clock;
use crate::signal::{Body, Envelope, Signal};
use crate::wire::{SignalType, WireSignal};

/// Every kind an edge may imply, and none.
const IMPLIED: [Option<SignalType>; 6] = [
    None,
    Some(SignalType::Message),
    Some(SignalType::Event),
    Some(SignalType::Reply),
    Some(SignalType::ErrorReply),
    Some(SignalType::DataChangeEvent),
];

/// Reads `data` as a complete signal and as a client's signal at every kind of edge: no
/// panic, the two ways to read a complete signal agree, a client's signal has the kind its
/// edge takes, and whatever parsed is written and read back as itself.
pub fn wire(data: &[u8]) {
    let direct = serde_json::from_slice::<Signal>(data);
    let Ok(wire) = serde_json::from_slice::<WireSignal>(data) else {
        assert!(direct.is_err(), "a signal that is not a wire signal");
        return;
    };
    match wire.clone().into_signal() {
        Ok(signal) => {
            assert_eq!(direct.as_ref().ok(), Some(&signal), "two ways, two signals");
            round_trip(&signal);
        }
        Err(_) => assert!(direct.is_err(), "into_signal refused what Signal read"),
    }
    let _ = wire.clone().into_body();
    for implied in IMPLIED {
        let Ok(body) = wire.clone().into_client_body(implied) else {
            continue;
        };
        let stamped = (
            wire.id.as_ref(),
            wire.from.as_ref(),
            wire.timestamp,
            wire.depth,
        );
        assert!(
            stamped == (None, None, None, None) && wire.deadline.is_none(),
            "a client set the envelope: {stamped:?}"
        );
        assert!(
            fits(&body, implied, wire.signal_type),
            "{body:?} at an edge implying {implied:?}"
        );
        round_trip(&Signal {
            envelope: Envelope::new("user:fuzz", wire.headers.clone(), &Clock::system()),
            body,
        });
    }
}

/// Whether `body` is of a kind an edge implying `implied` takes, and of `given` if the
/// signal named its kind.
fn fits(body: &Body, implied: Option<SignalType>, given: Option<SignalType>) -> bool {
    let kind = match body {
        Body::Message(_) => SignalType::Message,
        Body::Event { .. } => SignalType::Event,
        Body::Reply { .. } => SignalType::Reply,
        Body::ErrorReply { .. } => SignalType::ErrorReply,
        Body::DataChange { .. } => SignalType::DataChangeEvent,
    };
    let emission = |k| matches!(k, SignalType::Event | SignalType::DataChangeEvent);
    let edge = match implied {
        None => kind == given.unwrap_or(SignalType::Message),
        Some(implied) if emission(implied) => emission(kind),
        Some(implied) => kind == implied,
    };
    edge && given.is_none_or(|given| given == kind)
}

/// Writes `signal` and reads it back, as a [`Signal`] and through [`WireSignal`]: both
/// give it back unchanged.
fn round_trip(signal: &Signal) {
    let text = serde_json::to_string(signal).expect("a signal serializes");
    let back: Signal = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the host's own signal does not read back: {e}: {text}"));
    assert_eq!(&back, signal, "lost on the wire: {text}");
    let wire: WireSignal = serde_json::from_str(&text).expect("read as a wire signal");
    assert_eq!(wire.into_signal().as_ref(), Ok(signal), "{text}");
    let _ = signal.size();
}
