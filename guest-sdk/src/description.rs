//! [`Description`]: what a handler tells the host at deploy time, built fluently from the
//! Rust types it handles.

use crate::typed::{DataObject, Event, Message};
use crate::wit;

/// Whether a handler serves one address or its own agents, `agent:<handler>/<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// Serves the one address it is deployed under.
    Service,
    /// Serves every agent `agent:<handler>/<id>`: keyed actors, each with its own state,
    /// handling one signal at a time.
    Agent,
}

/// A handler's name, kind, accepted message types and subscriptions.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use switchboard_sdk::{Description, Event, HandlerKind};
/// #[derive(Serialize, Deserialize)]
/// struct UserRegistered { user_id: String }
/// impl Event for UserRegistered {}
///
/// let d = Description::service("welcome").on_event::<UserRegistered>();
/// assert_eq!(d.events(), ["UserRegistered"]);
/// assert_eq!(d.kind(), HandlerKind::Service);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    name: String,
    kind: HandlerKind,
    accepts: Accepts,
    clients: Accepts,
    events: Vec<String>,
    data_changes: Vec<String>,
}

impl Description {
    /// A service handler suggesting `name` as its address. It accepts any message type
    /// until [`accepts`](Self::accepts) narrows it or [`accepts_none`](Self::accepts_none)
    /// closes it.
    pub fn service(name: impl Into<String>) -> Self {
        Self::new(name, HandlerKind::Service)
    }

    /// An agent handler: it receives every message addressed to one of its agents,
    /// `agent:<name>/<id>` (or `agent:<id>` while it is the only agent handler deployed).
    pub fn agent(name: impl Into<String>) -> Self {
        Self::new(name, HandlerKind::Agent)
    }

    fn new(name: impl Into<String>, kind: HandlerKind) -> Self {
        Self {
            name: name.into(),
            kind,
            accepts: Accepts::Any,
            clients: Accepts::None,
            events: vec![],
            data_changes: vec![],
        }
    }

    /// Accepts messages of type `M`; the host answers others with a 404.
    pub fn accepts<M: Message>(self) -> Self {
        self.accepts_type(M::message_type())
    }

    /// Accepts messages of the named type.
    pub fn accepts_type(mut self, message_type: impl Into<String>) -> Self {
        let mut types = match self.accepts {
            Accepts::Only(types) => types,
            Accepts::Any | Accepts::None => Vec::new(),
        };
        push_unique(&mut types, message_type.into());
        self.accepts = Accepts::Only(types);
        self
    }

    /// Accepts messages of type `M`, from clients (`user:<id>`, through the gateway) too.
    /// Clients may send only the types opened to them this way (others get 403), unless the
    /// operator opened the whole handler to clients.
    pub fn accepts_from_clients<M: Message>(self) -> Self {
        self.accepts_type_from_clients(M::message_type())
    }

    /// Accepts messages of the named type, from clients too.
    pub fn accepts_type_from_clients(mut self, message_type: impl Into<String>) -> Self {
        let message_type = message_type.into();
        let mut types = match self.clients {
            Accepts::Only(types) => types,
            Accepts::Any | Accepts::None => Vec::new(),
        };
        push_unique(&mut types, message_type.clone());
        self.clients = Accepts::Only(types);
        self.accepts_type(message_type)
    }

    /// Accepts no messages at all (a handler that only listens to broadcasts): the host
    /// answers every message with a 404.
    pub fn accepts_none(mut self) -> Self {
        self.accepts = Accepts::None;
        self
    }

    /// Subscribes to events of type `E`.
    pub fn on_event<E: Event>(self) -> Self {
        self.on_event_type(E::event_type())
    }

    /// Subscribes to events of the named type.
    pub fn on_event_type(mut self, event_type: impl Into<String>) -> Self {
        push_unique(&mut self.events, event_type.into());
        self
    }

    /// Subscribes to data changes of objects of type `O`.
    pub fn on_change<O: DataObject>(self) -> Self {
        self.on_change_type(O::object_type())
    }

    /// Subscribes to data changes of objects of the named type.
    pub fn on_change_type(mut self, object_type: impl Into<String>) -> Self {
        push_unique(&mut self.data_changes, object_type.into());
        self
    }

    /// The suggested name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Service or agent.
    pub fn kind(&self) -> HandlerKind {
        self.kind
    }

    /// Which message types it accepts.
    pub fn accepts_types(&self) -> &Accepts {
        &self.accepts
    }

    /// Which of the accepted message types clients may send.
    pub fn client_types(&self) -> &Accepts {
        &self.clients
    }

    /// Event types subscribed to.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// Object types whose changes are subscribed to.
    pub fn data_changes(&self) -> &[String] {
        &self.data_changes
    }
}

/// Which messages a handler takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepts {
    /// Every message type.
    Any,
    /// No messages at all.
    None,
    /// Only these types.
    Only(Vec<String>),
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl From<Accepts> for wit::Accepts {
    fn from(accepts: Accepts) -> Self {
        match accepts {
            Accepts::Any => Self::Any,
            Accepts::None => Self::None,
            Accepts::Only(types) => Self::Only(types),
        }
    }
}

impl From<Description> for wit::Description {
    fn from(d: Description) -> Self {
        Self {
            name: d.name,
            kind: match d.kind {
                HandlerKind::Service => wit::HandlerKind::Service,
                HandlerKind::Agent => wit::HandlerKind::Agent,
            },
            accepts: d.accepts.into(),
            clients: d.clients.into(),
            events: d.events,
            data_changes: d.data_changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Ping {}
    impl Message for Ping {}
    impl Event for Ping {}

    #[derive(Serialize, Deserialize)]
    struct User {}
    impl DataObject for User {}

    /// Types and names accumulate; a type named twice is listed once.
    #[test]
    fn builds_from_types_and_names() {
        let d = Description::service("echo")
            .accepts::<Ping>()
            .accepts_type("Raw")
            .accepts::<Ping>()
            .on_event::<Ping>()
            .on_event_type("Tick")
            .on_change::<User>()
            .on_change_type("Order");
        assert_eq!(d.name(), "echo");
        assert_eq!(d.kind(), HandlerKind::Service);
        assert_eq!(
            d.accepts_types(),
            &Accepts::Only(vec!["Ping".into(), "Raw".into()])
        );
        assert_eq!(d.events(), ["Ping", "Tick"]);
        assert_eq!(d.data_changes(), ["User", "Order"]);
    }

    /// The WIT record carries name, kind and accepted types; a bare service accepts any.
    #[test]
    fn converts_to_the_wit_record() {
        let w: wit::Description = Description::agent("counter").accepts::<Ping>().into();
        assert_eq!(w.name, "counter");
        assert_eq!(w.kind, wit::HandlerKind::Agent);
        assert_eq!(w.accepts, wit::Accepts::Only(vec!["Ping".into()]));
        assert!(w.events.is_empty() && w.data_changes.is_empty());
        let w: wit::Description = Description::service("svc").into();
        assert_eq!(w.kind, wit::HandlerKind::Service);
        assert_eq!(w.accepts, wit::Accepts::Any);
    }

    /// Clients may send nothing by default; a type opened to clients is accepted too, and
    /// travels as `clients` on the wire.
    #[test]
    fn clients_send_only_the_types_opened_to_them() {
        let w: wit::Description = Description::service("svc").into();
        assert_eq!(w.clients, wit::Accepts::None);
        let d = Description::service("chat")
            .accepts_from_clients::<Ping>()
            .accepts_type("Internal");
        assert_eq!(d.client_types(), &Accepts::Only(vec!["Ping".into()]));
        let w: wit::Description = d.into();
        assert_eq!(w.clients, wit::Accepts::Only(vec!["Ping".into()]));
        assert_eq!(
            w.accepts,
            wit::Accepts::Only(vec!["Ping".into(), "Internal".into()])
        );
    }

    /// `accepts_none` is `None` on the wire, and naming a type afterwards opens only that type.
    #[test]
    fn a_listener_accepts_no_messages_until_it_names_one() {
        let d = Description::service("audit").accepts_none();
        assert_eq!(d.accepts_types(), &Accepts::None);
        let w: wit::Description = d.clone().into();
        assert_eq!(w.accepts, wit::Accepts::None);
        assert_eq!(
            d.accepts_type("Get").accepts_types(),
            &Accepts::Only(vec!["Get".into()])
        );
    }

    /// `accepts_none` after naming types closes the handler again (the list is dropped),
    /// and subscriptions named twice are listed once.
    #[test]
    fn accepts_none_drops_named_types_and_subscriptions_are_unique() {
        let d = Description::agent("a")
            .accepts::<Ping>()
            .accepts_none()
            .on_event::<Ping>()
            .on_event_type("Ping")
            .on_change::<User>()
            .on_change_type("User");
        assert_eq!(d.accepts_types(), &Accepts::None);
        assert_eq!(d.events(), ["Ping"]);
        assert_eq!(d.data_changes(), ["User"]);
        let w: wit::Description = d.into();
        assert_eq!(
            (w.accepts, w.events, w.data_changes),
            (wit::Accepts::None, vec!["Ping".into()], vec!["User".into()])
        );
    }
}
