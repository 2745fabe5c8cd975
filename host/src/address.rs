//! Addresses: where a message, reply or push goes, and the names that may appear in a NATS
//! subject.
//!
//! An address travels as text (a signal's `to`, `from` and return address, as JSON and WIT
//! carry it); what the text means comes from [`Address::parse`] alone, and [`Address`]'s
//! `Display` writes it back, so no other code looks at prefixes. [`subject_token`] turns any
//! name or id into one subject token: nothing in a name can add a token (`.`) or widen a
//! subscription (`*`, `>`), and distinct names never share a token.

use std::fmt;

/// The host itself: the sender of what the host raises (404s, 504s, trap reports).
pub const HOST: &str = "host";
/// The one address every agent handler shares; `agent:<id>` messages are delivered there.
pub const AGENTS: &str = "agents";
/// Longest agent id, in bytes: an agent's id is part of every key it stores.
pub const MAX_AGENT_ID_BYTES: usize = 256;
/// The agent id an agent handler's own address ends with, standing for all its agents:
/// `agent:<handler>/*`.
pub const ANY_AGENT: &str = "*";

const AGENT: &str = "agent:";
const USER: &str = "user:";
const INBOX: &str = "inbox:";
/// Longest handler part of an agent address that is looked at: names have at most 64
/// characters, and a little slack keeps the error about the id, not the name.
const MAX_AGENT_HANDLER_BYTES: usize = 65;

/// What an address names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Address<'a> {
    /// `host`.
    Host,
    /// `agents`: where messages to agents are delivered before their handler is resolved.
    Agents,
    /// An agent: `agent:<handler>/<id>`, or the short `agent:<id>`, valid while one agent
    /// handler is deployed. `agent:<handler>/*` is that handler's own address.
    Agent {
        handler: Option<&'a str>,
        id: &'a str,
    },
    /// A client's connections: `user:<id>`.
    User(&'a str),
    /// A host's inbox, where answers to what its callers await come back: `inbox:<host>`.
    Inbox(&'a str),
    /// A service handler, by the name it was deployed under. Any other text parses as one;
    /// deployed names are checked, so text that is no name has no route.
    Service(&'a str),
}

/// The kinds of [`Address`], for text that may not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Host,
    Agents,
    Agent,
    User,
    Inbox,
    Service,
}

/// Why text is no address: it has a kind's prefix but not the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "an agent address is `agent:<handler>/<id>` or `agent:<id>`, with an id of 1 to {MAX_AGENT_ID_BYTES} bytes"
    )]
    Agent,
    #[error("a user address is `user:<id>` with a non-empty id")]
    User,
    #[error("an inbox address is `inbox:<host>` with a non-empty host")]
    Inbox,
}

impl AddressError {
    /// The kind of address the text was meant to be.
    pub fn kind(self) -> Kind {
        match self {
            Self::Agent => Kind::Agent,
            Self::User => Kind::User,
            Self::Inbox => Kind::Inbox,
        }
    }
}

impl<'a> Address<'a> {
    /// Reads an address.
    pub fn parse(text: &'a str) -> Result<Self, AddressError> {
        if let Some(rest) = text.strip_prefix(AGENT) {
            return agent(rest).ok_or(AddressError::Agent);
        }
        if let Some(id) = text.strip_prefix(USER) {
            return non_empty(id).map(Self::User).ok_or(AddressError::User);
        }
        if let Some(host) = text.strip_prefix(INBOX) {
            return non_empty(host).map(Self::Inbox).ok_or(AddressError::Inbox);
        }
        Ok(match text {
            HOST => Self::Host,
            AGENTS => Self::Agents,
            name => Self::Service(name),
        })
    }

    /// The kind of address `text` is, or was meant to be if it does not parse.
    pub fn kind_of(text: &str) -> Kind {
        match Address::parse(text) {
            Ok(address) => address.kind(),
            Err(error) => error.kind(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Host => Kind::Host,
            Self::Agents => Kind::Agents,
            Self::Agent { .. } => Kind::Agent,
            Self::User(_) => Kind::User,
            Self::Inbox(_) => Kind::Inbox,
            Self::Service(_) => Kind::Service,
        }
    }

    /// The address an agent handler is deployed at, standing for all its agents.
    pub fn agent_handler(handler: &'a str) -> Self {
        Self::Agent {
            handler: Some(handler),
            id: ANY_AGENT,
        }
    }

    /// The handler that answers as `text`, as metrics and limits name it: an agent's handler
    /// (`agent:<handler>/<id>`), never the agent, whose id a client chooses; else `text`.
    pub fn handler_of(text: &str) -> &str {
        match Address::parse(text) {
            Ok(Address::Agent {
                handler: Some(handler),
                ..
            }) => handler,
            _ => text,
        }
    }

    /// The address that serves this one: the shared `agents` address for an agent, itself
    /// for anything else.
    pub fn served_at(self) -> Self {
        match self {
            Self::Agent { .. } => Self::Agents,
            other => other,
        }
    }
}

/// An agent address after `agent:`.
fn agent(rest: &str) -> Option<Address<'_>> {
    if rest.len() > MAX_AGENT_ID_BYTES + MAX_AGENT_HANDLER_BYTES {
        return None;
    }
    let (handler, id) = match rest.split_once('/') {
        Some((handler, id)) => (Some(non_empty(handler)?), id),
        None => (None, rest),
    };
    let id = non_empty(id).filter(|id| id.len() <= MAX_AGENT_ID_BYTES)?;
    Some(Address::Agent { handler, id })
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str(HOST),
            Self::Agents => f.write_str(AGENTS),
            Self::Agent {
                handler: Some(handler),
                id,
            } => write!(f, "{AGENT}{handler}/{id}"),
            Self::Agent { handler: None, id } => write!(f, "{AGENT}{id}"),
            Self::User(id) => write!(f, "{USER}{id}"),
            Self::Inbox(host) => write!(f, "{INBOX}{host}"),
            Self::Service(name) => f.write_str(name),
        }
    }
}

/// `name` as one NATS subject token. ASCII letters, digits and `-` stand for themselves;
/// every other byte, `_` included, becomes `_` and two upper-case hex digits; the empty name
/// becomes `_` alone. So a token never holds `.`, `*`, `>`, whitespace or control
/// characters, is never empty, and two names share a token only if they are equal
/// ([`subject_name`] reads it back).
pub fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            token.push('_');
            token.push(char::from(HEX[usize::from(byte >> 4)]));
            token.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    token
}

/// The name a [`subject_token`] stands for, or `None` for text no name encodes to.
pub fn subject_name(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first.is_ascii_alphanumeric() || first == b'-' {
            bytes.push(first);
            rest = tail;
            continue;
        }
        if first != b'_' || tail.len() < 2 {
            return None;
        }
        let hex = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        let byte = hex(tail[0])? << 4 | hex(tail[1])?;
        // Each byte has one spelling: a byte that stands for itself is never escaped.
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            return None;
        }
        bytes.push(byte);
        rest = &tail[2..];
    }
    if bytes.is_empty() {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Proves each kind of address parses from its text and writes back the same text.
    #[test]
    fn addresses_parse_and_write_back() {
        let cases = [
            ("host", Address::Host),
            ("agents", Address::Agents),
            ("echo", Address::Service("echo")),
            (
                "agent:counter/c1",
                Address::Agent {
                    handler: Some("counter"),
                    id: "c1",
                },
            ),
            (
                "agent:c1",
                Address::Agent {
                    handler: None,
                    id: "c1",
                },
            ),
            ("agent:counter/*", Address::agent_handler("counter")),
            (
                "agent:counter/a/b",
                Address::Agent {
                    handler: Some("counter"),
                    id: "a/b",
                },
            ),
            ("user:ann", Address::User("ann")),
            ("inbox:h1", Address::Inbox("h1")),
        ];
        for (text, address) in cases {
            assert_eq!(Address::parse(text), Ok(address), "{text}");
            assert_eq!(address.to_string(), text);
        }
    }

    /// Proves text with a kind's prefix but not the rest is refused, with that kind.
    #[test]
    fn malformed_addresses_are_refused_with_their_kind() {
        let long = format!("agent:{}", "x".repeat(MAX_AGENT_ID_BYTES + 1));
        let long_full = format!("agent:h/{}", "x".repeat(MAX_AGENT_ID_BYTES + 1));
        for (text, error) in [
            ("agent:", AddressError::Agent),
            ("agent:/x", AddressError::Agent),
            ("agent:h/", AddressError::Agent),
            (long.as_str(), AddressError::Agent),
            (long_full.as_str(), AddressError::Agent),
            ("user:", AddressError::User),
            ("inbox:", AddressError::Inbox),
        ] {
            assert_eq!(Address::parse(text), Err(error), "{text}");
            assert_eq!(Address::kind_of(text), error.kind());
        }
        let longest = format!("agent:h/{}", "x".repeat(MAX_AGENT_ID_BYTES));
        assert!(Address::parse(&longest).is_ok());
    }

    /// Proves an agent is served at the shared `agents` address, everything else at itself.
    #[test]
    fn agents_are_served_at_the_shared_address() {
        let agent = Address::parse("agent:counter/c1").unwrap();
        assert_eq!(agent.served_at(), Address::Agents);
        assert_eq!(Address::handler_of("agent:counter/c1"), "counter");
        assert_eq!(Address::handler_of("agent:c1"), "agent:c1");
        assert_eq!(Address::handler_of("echo"), "echo");
        assert_eq!(Address::User("ann").served_at(), Address::User("ann"));
    }

    #[test]
    fn tokens_of_examples() {
        assert_eq!(subject_token("echo"), "echo");
        assert_eq!(subject_token("a.b"), "a_2Eb");
        assert_eq!(subject_token("a_b"), "a_5Fb");
        assert_eq!(subject_token("*"), "_2A");
        assert_eq!(subject_token(">"), "_3E");
        assert_eq!(subject_token("a b"), "a_20b");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("é"), "_C3_A9");
        assert_eq!(subject_name("_5F"), Some("_".to_owned()));
        assert_eq!(subject_name("_"), Some(String::new()));
        // Text no name encodes to: empty, a separator, a cut escape, lower-case or non-hex
        // digits, a second spelling of `a`, a lone byte that is no UTF-8.
        for bad in ["", "a.b", "_4", "_zz", "_2e", "_61", "_FF"] {
            assert_eq!(subject_name(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Proves a token never holds what NATS reads as a separator or wildcard, whitespace
        /// or a control character, and is never empty.
        #[test]
        fn tokens_cannot_add_or_widen_a_token(name in any::<String>()) {
            let token = subject_token(&name);
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}");
        }

        /// Proves the encoding is injective: every token reads back as the one name it came
        /// from, so distinct names have distinct tokens.
        #[test]
        fn tokens_read_back_to_their_name(name in any::<String>()) {
            prop_assert_eq!(subject_name(&subject_token(&name)), Some(name));
        }

        /// Proves distinct names never meet, on names built from the characters most likely
        /// to collide.
        #[test]
        fn distinct_names_have_distinct_tokens(
            a in "[a-c2E5F._*> \\-]{0,6}",
            b in "[a-c2E5F._*> \\-]{0,6}",
        ) {
            prop_assert_eq!(subject_token(&a) == subject_token(&b), a == b);
        }

        /// Proves every address writes back to the text it was read from.
        #[test]
        fn addresses_round_trip(text in "(agent:|user:|inbox:)?[a-z*/]{0,8}") {
            if let Ok(address) = Address::parse(&text) {
                prop_assert_eq!(address.to_string(), text);
            }
        }
    }
}
