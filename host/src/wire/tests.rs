//! Unit tests of the wire format: one per rule, each failing if its rule is dropped.

use super::*;
use crate::clock::Clock;
use crate::signal::Envelope;

fn wire(json: &str) -> WireSignal {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// As a host would carry it: `json` plus a full envelope.
fn carried(json: &str) -> Result<Signal, WireError> {
    let mut signal = wire(json);
    signal.id = Some("m1".into());
    signal.timestamp = Some(1);
    signal.from = Some("orders".into());
    signal.into_signal()
}

fn roundtrip(body: Body) {
    let signal = Signal {
        envelope: Envelope::new(
            "orders",
            [("trace".to_owned(), "t1".to_owned())].into(),
            &Clock::system(),
        ),
        body,
    };
    let text = serde_json::to_string(&signal).unwrap();
    let back: Signal = serde_json::from_str(&text).unwrap();
    assert_eq!(back, signal, "{text}");
}

/// Every kind, written by the host, reads back as itself (so no rule refuses what the host writes).
#[test]
fn every_kind_survives_the_wire() {
    let payload = Json::parse(r#"{"n":1}"#).unwrap();
    roundtrip(Body::Message(Message {
        message_type: "Ping".into(),
        to: "echo".into(),
        return_address: Some("audit".into()),
        payload: payload.clone(),
    }));
    roundtrip(Body::Event {
        event_type: "UserRegistered".into(),
        payload: payload.clone(),
    });
    roundtrip(Body::Reply {
        reply_to: "m1".into(),
        to: "orders".into(),
        payload: payload.clone(),
    });
    roundtrip(Body::ErrorReply {
        reply_to: "m1".into(),
        to: "orders".into(),
        error: Failure::new(409, "taken").with_help("pick another"),
    });
    roundtrip(Body::DataChange {
        change_type: ChangeType::Deleted,
        object_type: "User".into(),
        object: payload,
    });
}

/// The seed's field names and enum spellings are what the wire reads.
#[test]
fn wire_shape_is_the_seeds() {
    let json = r#"{"signalType":"DATA_CHANGE_EVENT","changeType":"CREATED","objectType":"User","object":{"id":"u1"}}"#;
    let Body::DataChange {
        change_type,
        object,
        ..
    } = wire(json).into_body().unwrap()
    else {
        panic!("wrong kind")
    };
    assert_eq!(change_type, ChangeType::Created);
    assert_eq!(object.as_str(), r#"{"id":"u1"}"#);
}

/// Unknown fields, missing fields and a missing envelope are refused, naming the field.
#[test]
fn unknown_fields_and_missing_fields_are_refused() {
    let err = serde_json::from_str::<WireSignal>(r#"{"to":"echo","colour":"red"}"#).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");

    assert_eq!(
        wire(r#"{"to":"echo"}"#).into_body(),
        Err(WireError::Missing {
            kind: SignalType::Message,
            field: "messageType"
        })
    );
    let no_code = wire(r#"{"signalType":"ERROR_REPLY","replyTo":"m","to":"a","description":"d"}"#);
    assert!(matches!(
        no_code.into_body(),
        Err(WireError::Missing { field: "code", .. })
    ));
    assert_eq!(
        wire(r#"{"messageType":"A","to":"b"}"#).into_signal(),
        Err(WireError::MissingEnvelope("id"))
    );
}

/// A field of another kind is refused at every way in, and the message names field and kind.
#[test]
fn fields_of_another_kind_are_refused() {
    let cases = [
        (
            r#"{"messageType":"A","to":"b","eventType":"E"}"#,
            SignalType::Message,
            "eventType",
        ),
        (
            r#"{"messageType":"A","to":"b","object":{}}"#,
            SignalType::Message,
            "object",
        ),
        (
            r#"{"signalType":"EVENT","eventType":"E","replyTo":"m"}"#,
            SignalType::Event,
            "replyTo",
        ),
        (
            r#"{"signalType":"ERROR_REPLY","replyTo":"m","to":"a","code":1,"description":"d","payload":1}"#,
            SignalType::ErrorReply,
            "payload",
        ),
        (
            r#"{"signalType":"REPLY","replyTo":"m","to":"a","help":"h"}"#,
            SignalType::Reply,
            "help",
        ),
        (
            r#"{"signalType":"DATA_CHANGE_EVENT","changeType":"CREATED","objectType":"U","object":{},"payload":1}"#,
            SignalType::DataChangeEvent,
            "payload",
        ),
    ];
    for (json, kind, field) in cases {
        let expected = Err(WireError::Foreign { kind, field });
        assert_eq!(wire(json).into_body(), expected, "{json}");
        assert_eq!(wire(json).into_client_body(None), expected, "{json}");
        assert_eq!(carried(json).map(|s| s.body), expected, "{json}");
    }
    let message = WireError::Foreign {
        kind: SignalType::Message,
        field: "eventType",
    }
    .to_string();
    assert_eq!(
        message,
        "a MESSAGE signal does not take the field `eventType`"
    );
}

/// The names a signal is routed by may not be empty, for clients and hosts alike.
#[test]
fn empty_routing_names_are_refused() {
    let cases = [
        (
            r#"{"messageType":"","to":"b"}"#,
            SignalType::Message,
            "messageType",
        ),
        (r#"{"messageType":"A","to":" "}"#, SignalType::Message, "to"),
        (
            r#"{"signalType":"EVENT","eventType":""}"#,
            SignalType::Event,
            "eventType",
        ),
        (
            r#"{"signalType":"DATA_CHANGE_EVENT","changeType":"CREATED","objectType":"","object":{}}"#,
            SignalType::DataChangeEvent,
            "objectType",
        ),
        (
            r#"{"signalType":"REPLY","replyTo":"m","to":""}"#,
            SignalType::Reply,
            "to",
        ),
    ];
    for (json, kind, field) in cases {
        let expected = Err(WireError::Empty { kind, field });
        assert_eq!(wire(json).into_client_body(None), expected, "{json}");
        assert_eq!(carried(json).map(|s| s.body), expected, "{json}");
    }
    let message = WireError::Empty {
        kind: SignalType::Message,
        field: "messageType",
    }
    .to_string();
    assert!(message.contains("`messageType`"), "{message}");
}

/// A client may not set the envelope; a host carrying a signal must.
#[test]
fn clients_leave_the_envelope_to_the_host() {
    let body = r#""messageType":"A","to":"b""#;
    for (field, value) in [
        ("id", r#""m1""#),
        ("from", r#""me""#),
        ("timestamp", "1"),
        ("depth", "0"),
    ] {
        let json = format!("{{{body},\"{field}\":{value}}}");
        let err = wire(&json).into_client_body(None).unwrap_err();
        assert_eq!(err, WireError::SetByHost(field_name(field)));
        assert_eq!(
            err.to_string(),
            format!("the host sets `{field}`; leave it out")
        );
    }
    let full = r#"{"id":"m1","timestamp":1,"from":"orders","messageType":"A","to":"b"}"#;
    let signal = wire(full).into_signal().unwrap();
    assert_eq!(signal.envelope.from, "orders");
    assert!(wire(&format!("{{{body}}}")).into_client_body(None).is_ok());
}

/// Causal depth is a named field the host always writes and reads back; a complete signal
/// without it is at depth 0; a client may not set it, not even to 0 (it could otherwise
/// restart a loop's count), on any edge.
#[test]
fn depth_is_carried_and_only_the_host_sets_it() {
    let mut envelope = Envelope::new("storm", Headers::new(), &Clock::system());
    envelope.depth = 17;
    let signal = Signal {
        envelope,
        body: Body::Event {
            event_type: "Storm".into(),
            payload: Json::null(),
        },
    };
    let text = serde_json::to_string(&signal).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["depth"], 17, "{text}");
    let back: Signal = serde_json::from_str(&text).unwrap();
    assert_eq!(back.envelope.depth, 17);
    let fresh = Envelope::new("client", Headers::new(), &Clock::system());
    let written = serde_json::to_value(Signal {
        envelope: fresh,
        body: Body::Event {
            event_type: "E".into(),
            payload: Json::null(),
        },
    })
    .unwrap();
    assert_eq!(written["depth"], 0, "depth 0 is written too");

    let full = r#"{"id":"m1","timestamp":1,"from":"orders","messageType":"A","to":"b"}"#;
    assert_eq!(wire(full).into_signal().unwrap().envelope.depth, 0);
    for implied in [None, Some(SignalType::Message), Some(SignalType::Event)] {
        let body = match implied {
            Some(SignalType::Event) => r#""eventType":"E""#,
            _ => r#""messageType":"A","to":"b""#,
        };
        let json = format!("{{{body},\"depth\":3}}");
        assert_eq!(
            wire(&json).into_client_body(implied),
            Err(WireError::SetByHost("depth"))
        );
    }
    let negative = r#"{"messageType":"A","to":"b","depth":-1}"#;
    assert!(serde_json::from_str::<WireSignal>(negative).is_err());
}

/// Proves `paced` (descends from a fired timer) survives the wire between hosts, is written
/// only when true, and is refused from a client, which may not set it.
#[test]
fn paced_is_carried_and_only_the_host_sets_it() {
    let mut envelope = Envelope::new("reminders", Headers::new(), &Clock::system());
    envelope.paced = true;
    let signal = Signal {
        envelope,
        body: Body::Event {
            event_type: "Tick".into(),
            payload: Json::null(),
        },
    };
    let text = serde_json::to_string(&signal).unwrap();
    let back: Signal = serde_json::from_str(&text).unwrap();
    assert!(back.envelope.paced, "{text}");
    let unpaced = Signal {
        envelope: Envelope::new("client", Headers::new(), &Clock::system()),
        ..signal
    };
    let written = serde_json::to_value(&unpaced).unwrap();
    assert!(written.get("paced").is_none(), "{written}");
    let client = r#"{"eventType":"E","paced":false}"#;
    assert_eq!(
        wire(client).into_client_body(Some(SignalType::Event)),
        Err(WireError::SetByHost("paced"))
    );
}

fn field_name(field: &str) -> &'static str {
    HOST_SET.into_iter().find(|f| *f == field).unwrap()
}

/// The events edge takes a bare event or a bare data change, and only emissions.
#[test]
fn the_events_edge_implies_an_emission() {
    let implied = Some(SignalType::Event);
    let event = wire(r#"{"eventType":"UserRegistered","payload":{"id":"u1"}}"#);
    assert!(matches!(
        event.into_client_body(implied),
        Ok(Body::Event { event_type, .. }) if event_type == "UserRegistered"
    ));
    let change = wire(r#"{"objectType":"User","changeType":"UPDATED","object":{"id":"u1"}}"#);
    assert!(matches!(
        change.into_client_body(implied),
        Ok(Body::DataChange {
            change_type: ChangeType::Updated,
            ..
        })
    ));
    let explicit = wire(r#"{"signalType":"EVENT","eventType":"E"}"#);
    assert!(explicit.into_client_body(implied).is_ok());
    let explicit = wire(
        r#"{"signalType":"DATA_CHANGE_EVENT","changeType":"CREATED","objectType":"U","object":1}"#,
    );
    assert!(explicit.into_client_body(implied).is_ok());
    let message = wire(r#"{"signalType":"MESSAGE","messageType":"A","to":"b"}"#);
    let err = message.into_client_body(implied).unwrap_err();
    assert_eq!(
        err,
        WireError::WrongKind {
            implied: SignalType::Event,
            given: SignalType::Message
        }
    );
    assert_eq!(
        err.to_string(),
        "this endpoint takes EVENT or DATA_CHANGE_EVENT signals, not MESSAGE"
    );
    let half = wire(r#"{"objectType":"User","object":{}}"#);
    assert_eq!(
        half.into_client_body(implied),
        Err(WireError::Missing {
            kind: SignalType::DataChangeEvent,
            field: "changeType"
        }),
        "a data-change shape is read as one, so the message names what it lacks"
    );
}

/// The messages edge takes messages only, with or without `signalType`.
#[test]
fn the_messages_edge_implies_a_message() {
    let implied = Some(SignalType::Message);
    assert!(matches!(
        wire(r#"{"messageType":"A","to":"b"}"#).into_client_body(implied),
        Ok(Body::Message(_))
    ));
    let event = wire(r#"{"signalType":"EVENT","eventType":"E"}"#);
    assert_eq!(
        event.into_client_body(implied),
        Err(WireError::WrongKind {
            implied: SignalType::Message,
            given: SignalType::Event
        })
    );
    let bare_event = wire(r#"{"eventType":"E"}"#);
    assert_eq!(
        bare_event.into_client_body(implied),
        Err(WireError::Foreign {
            kind: SignalType::Message,
            field: "eventType"
        })
    );
}

/// Proves every edge reads a signal only from a JSON object (serde alone takes a struct
/// spelled as an array of its fields: the gateway read `["r"]` as an acknowledgement).
#[test]
fn a_signal_is_a_json_object() {
    let array = br#"[null, null, null, null, null, null, null, "Ping", "echo"]"#;
    let refused = WireSignal::from_json(array).unwrap_err();
    assert!(refused.to_string().contains("JSON object"), "{refused}");
    let object = br#" {"messageType": "Ping", "to": "echo"}"#;
    assert!(WireSignal::from_json(object).is_ok());
}
