//! Typed signals: Rust types that travel as JSON under a type name. Implementing [`Message`],
//! [`Event`] or [`DataObject`] is one line; the type name defaults to the Rust type's short
//! name and can be overridden by implementing the method.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failure::Failure;
use crate::type_name::short_type_name;

/// A message payload: sent to exactly one handler, under [`Message::message_type`].
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct SetUsername { username: String }
/// impl switchboard_sdk::Message for SetUsername {}
/// assert_eq!(<SetUsername as switchboard_sdk::Message>::message_type(), "SetUsername");
/// ```
pub trait Message: Serialize + DeserializeOwned {
    /// The message type on the wire; defaults to the type's short name.
    fn message_type() -> String {
        short_type_name::<Self>()
    }
}

/// An event payload: broadcast to every handler subscribed to [`Event::event_type`].
pub trait Event: Serialize + DeserializeOwned {
    /// The event type on the wire; defaults to the type's short name.
    fn event_type() -> String {
        short_type_name::<Self>()
    }
}

/// A data object whose changes (created, updated, deleted) are broadcast to subscribers of
/// [`DataObject::object_type`].
pub trait DataObject: Serialize + DeserializeOwned {
    /// The object type on the wire, e.g. `User`; defaults to the type's short name.
    fn object_type() -> String {
        short_type_name::<Self>()
    }
}

/// Encodes `value` as JSON text. Serde only fails here for types it cannot represent (e.g. a
/// map with non-string keys): a bug in the handler, hence 500.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| {
        Failure::internal(format!(
            "could not encode {} as JSON: {e}",
            short_type_name::<T>()
        ))
    })
}

/// Decodes JSON text `json` into `T`; `what` names the text for the error (e.g. "payload of
/// message `SetUsername`"). A mismatch is the sender's fault, hence 400.
pub(crate) fn decode<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(json).map_err(|e| {
        Failure::bad_request(format!(
            "{what} did not decode as {}: {e}",
            short_type_name::<T>()
        ))
        .with_help(format!(
            "send a JSON value shaped like {}",
            short_type_name::<T>()
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize, Serializer};

    use super::*;

    /// A value that never encodes (its `Serialize` fails), for tests across the crate that
    /// show an encoding failure stops a call before anything reaches the host: on the native
    /// target the host's imports panic, so such a test fails loudly if the order changes.
    #[derive(Deserialize, Debug)]
    pub(crate) struct Unencodable;
    impl Serialize for Unencodable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("never encodes"))
        }
    }
    impl Message for Unencodable {}
    impl Event for Unencodable {}
    impl DataObject for Unencodable {}

    /// Asserts `result` is the 500 an [`Unencodable`] value gives.
    pub(crate) fn assert_unencodable<T: std::fmt::Debug>(result: Result<T, Failure>) {
        let err = result.unwrap_err();
        assert_eq!(err.code(), 500, "{err}");
        assert!(
            err.description()
                .starts_with("could not encode Unencodable as JSON: never encodes"),
            "{err}"
        );
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Ping {
        text: String,
    }
    impl Message for Ping {}
    impl Event for Ping {}
    impl DataObject for Ping {}

    #[derive(Serialize, Deserialize)]
    struct Renamed;
    impl Message for Renamed {
        fn message_type() -> String {
            "renamed.v2".into()
        }
    }
    impl Event for Renamed {
        fn event_type() -> String {
            "renamed-event".into()
        }
    }
    impl DataObject for Renamed {
        fn object_type() -> String {
            "RenamedObject".into()
        }
    }

    #[test]
    fn type_names_default_to_the_short_rust_name() {
        assert_eq!(<Ping as Message>::message_type(), "Ping");
        assert_eq!(<Ping as Event>::event_type(), "Ping");
        assert_eq!(<Ping as DataObject>::object_type(), "Ping");
    }

    #[test]
    fn type_names_can_be_overridden() {
        assert_eq!(<Renamed as Message>::message_type(), "renamed.v2");
        assert_eq!(<Renamed as Event>::event_type(), "renamed-event");
        assert_eq!(<Renamed as DataObject>::object_type(), "RenamedObject");
    }

    #[test]
    fn encode_and_decode_round_trip() {
        let json = encode(&Ping { text: "hi".into() }).unwrap();
        assert_eq!(json, r#"{"text":"hi"}"#);
        assert_eq!(
            decode::<Ping>(&json, "payload").unwrap(),
            Ping { text: "hi".into() }
        );
    }

    #[test]
    fn bad_json_is_a_400_naming_the_type() {
        let err = decode::<Ping>(r#"{"txt":1}"#, "payload of message `Ping`").unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.description()
                .starts_with("payload of message `Ping` did not decode as Ping")
        );
        assert!(err.description().contains("missing field `text`"), "{err}");
        assert_eq!(err.help(), Some("send a JSON value shaped like Ping"));
    }

    #[test]
    fn unrepresentable_values_are_a_500() {
        let map: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = encode(&map).unwrap_err();
        assert_eq!(err.code(), 500);
        assert!(err.description().contains("HashMap<(u8, u8), u8>"), "{err}");
    }

    /// A failing `Serialize` is a 500 naming the type and serde's reason.
    #[test]
    fn a_value_whose_serialize_fails_is_a_500() {
        assert_unencodable(encode(&Unencodable));
    }
}
