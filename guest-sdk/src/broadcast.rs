//! Broadcast signals a handler subscribed to: [`IncomingEvent`] and [`DataChange`].

use std::fmt;

use crate::envelope::{Envelope, Signal};
use crate::failure::Failure;
use crate::typed::{self, DataObject, Event};
use crate::wit;

/// An event delivered to `handle_event`.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    envelope: Envelope,
    event_type: String,
    payload: String,
}

impl IncomingEvent {
    /// The event type, e.g. `UserRegistered`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Whether the event's type is `E`'s event type.
    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::event_type()
    }

    /// The payload decoded as `E`; 400 if it does not fit.
    pub fn decode<E: Event>(&self) -> Result<E, Failure> {
        typed::decode(
            &self.payload,
            &format!("payload of event `{}`", self.event_type),
        )
    }
}

impl Signal for IncomingEvent {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl From<wit::Event> for IncomingEvent {
    fn from(e: wit::Event) -> Self {
        Self {
            envelope: e.envelope.into(),
            event_type: e.event_type,
            payload: e.payload,
        }
    }
}

/// What happened to a data object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// The object was created.
    Created,
    /// The object was changed; the signal carries its new version.
    Updated,
    /// The object was deleted; the signal carries its last version.
    Deleted,
}

impl ChangeType {
    /// The lowercase name: `created`, `updated` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<wit::ChangeType> for ChangeType {
    fn from(c: wit::ChangeType) -> Self {
        match c {
            wit::ChangeType::Created => Self::Created,
            wit::ChangeType::Updated => Self::Updated,
            wit::ChangeType::Deleted => Self::Deleted,
        }
    }
}

impl From<ChangeType> for wit::ChangeType {
    fn from(c: ChangeType) -> Self {
        match c {
            ChangeType::Created => Self::Created,
            ChangeType::Updated => Self::Updated,
            ChangeType::Deleted => Self::Deleted,
        }
    }
}

/// A data change delivered to `handle_data_change`.
#[derive(Debug, Clone)]
pub struct DataChange {
    envelope: Envelope,
    change_type: ChangeType,
    object_type: String,
    object: String,
}

impl DataChange {
    /// Whether the object was created, updated or deleted.
    pub fn change_type(&self) -> ChangeType {
        self.change_type
    }

    /// The kind of object, e.g. `User`.
    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// The object as JSON text: its new version, or its last one when deleted.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Whether the object's type is `O`'s object type.
    pub fn is<O: DataObject>(&self) -> bool {
        self.object_type == O::object_type()
    }

    /// The object decoded as `O`; 400 if it does not fit.
    pub fn decode<O: DataObject>(&self) -> Result<O, Failure> {
        typed::decode(
            &self.object,
            &format!("{} object `{}`", self.change_type, self.object_type),
        )
    }
}

impl Signal for DataChange {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl From<wit::DataChangeEvent> for DataChange {
    fn from(c: wit::DataChangeEvent) -> Self {
        Self {
            envelope: c.envelope.into(),
            change_type: c.change_type.into(),
            object_type: c.object_type,
            object: c.object,
        }
    }
}

/// A broadcast on its way: its id, and how many subscribers it is offered to when the
/// current signal's turn commits (a subscriber whose mailbox is full gets it later, from
/// the dead-letter store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The id the host gave it.
    pub id: String,
    /// How many handlers subscribe to it.
    pub subscribers: u32,
}

impl From<crate::wit_host::Emitted> for Emitted {
    fn from(e: crate::wit_host::Emitted) -> Self {
        Self {
            id: e.id,
            subscribers: e.subscribers,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::envelope::tests::wit_envelope;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct UserRegistered {
        user_id: String,
    }
    impl Event for UserRegistered {}

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct User {
        id: String,
    }
    impl DataObject for User {}
    impl Event for User {}

    pub(crate) fn wit_event(event_type: &str, payload: &str) -> wit::Event {
        wit::Event {
            envelope: wit_envelope("evt-1", "registration"),
            event_type: event_type.into(),
            payload: payload.into(),
        }
    }

    pub(crate) fn wit_change(
        change_type: wit::ChangeType,
        object_type: &str,
        object: &str,
    ) -> wit::DataChangeEvent {
        wit::DataChangeEvent {
            envelope: wit_envelope("chg-1", "registration"),
            change_type,
            object_type: object_type.into(),
            object: object.into(),
        }
    }

    #[test]
    fn emitted_carries_the_subscriber_count() {
        let e: Emitted = crate::wit_host::Emitted {
            id: "e-1".into(),
            subscribers: 3,
        }
        .into();
        assert_eq!((e.id.as_str(), e.subscribers), ("e-1", 3));
    }

    #[test]
    fn events_decode_by_type() {
        let evt =
            <IncomingEvent as From<_>>::from(wit_event("UserRegistered", r#"{"user_id":"u1"}"#));
        assert_eq!(
            (evt.id(), evt.from(), evt.event_type()),
            ("evt-1", "registration", "UserRegistered")
        );
        assert_eq!(evt.payload(), r#"{"user_id":"u1"}"#);
        assert!(evt.is::<UserRegistered>());
        assert!(!evt.is::<User>());
        assert_eq!(
            evt.decode::<UserRegistered>().unwrap(),
            UserRegistered {
                user_id: "u1".into()
            }
        );
        let err = evt.decode::<User>().unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.description()
                .starts_with("payload of event `UserRegistered` did not decode as User"),
            "{err}"
        );
    }

    #[test]
    fn data_changes_decode_by_object_type() {
        let chg = <DataChange as From<_>>::from(wit_change(
            wit::ChangeType::Updated,
            "User",
            r#"{"id":"u1"}"#,
        ));
        assert_eq!(
            (chg.id(), chg.change_type(), chg.object_type()),
            ("chg-1", ChangeType::Updated, "User")
        );
        assert_eq!(chg.object(), r#"{"id":"u1"}"#);
        assert!(chg.is::<User>());
        assert_eq!(chg.decode::<User>().unwrap(), User { id: "u1".into() });
        let bad = <DataChange as From<_>>::from(wit_change(wit::ChangeType::Deleted, "User", "[]"));
        let err = bad.decode::<User>().unwrap_err();
        assert!(
            err.description()
                .starts_with("deleted object `User` did not decode as User"),
            "{err}"
        );
    }

    #[test]
    fn change_types_convert_both_ways() {
        for (wit, sdk, name) in [
            (wit::ChangeType::Created, ChangeType::Created, "created"),
            (wit::ChangeType::Updated, ChangeType::Updated, "updated"),
            (wit::ChangeType::Deleted, ChangeType::Deleted, "deleted"),
        ] {
            assert_eq!(ChangeType::from(wit), sdk);
            assert_eq!(wit::ChangeType::from(sdk), wit);
            assert_eq!(sdk.to_string(), name);
        }
    }
}
