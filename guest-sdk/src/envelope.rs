//! The envelope the host fills in on every signal, and the [`Signal`] trait that gives every
//! incoming signal the same accessors.

use crate::wit;

/// Id, timestamp, sender and headers of a signal, as the host set them. Read them through
/// [`Signal`], which every incoming signal (and the envelope itself) implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope(wit::Envelope);

impl From<wit::Envelope> for Envelope {
    fn from(e: wit::Envelope) -> Self {
        Self(e)
    }
}

/// What every incoming signal has: an envelope. Import it (or the prelude) to call
/// `msg.id()`, `msg.from()` and friends directly on a message, event, change or reply.
pub trait Signal {
    /// The signal's envelope.
    fn envelope(&self) -> &Envelope;

    /// The unique signal id.
    fn id(&self) -> &str {
        &self.envelope().0.id
    }

    /// When the signal was created, in milliseconds since the Unix epoch.
    fn timestamp(&self) -> u64 {
        self.envelope().0.timestamp
    }

    /// The sender's address: a service name, `agent:<handler>/<id>`, `user:<id>`, or `host`. (Named
    /// after the WIT field; call it as a method, `msg.from()`.)
    fn from(&self) -> &str {
        &self.envelope().0.from
    }

    /// How many signals led to this one: 0 from outside the host.
    fn depth(&self) -> u32 {
        self.envelope().0.depth
    }

    /// For a message: when the host answers it with 504 if still unanswered, in
    /// milliseconds since the Unix epoch. `None` for other signals.
    fn deadline(&self) -> Option<u64> {
        self.envelope().0.deadline
    }

    /// All headers, in the order the sender set them.
    fn headers(&self) -> &[(String, String)] {
        &self.envelope().0.headers
    }

    /// The first header called `name` (ignoring ASCII case), if any.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Signal for Envelope {
    fn envelope(&self) -> &Envelope {
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An envelope as the host would fill it in, for tests across the crate.
    pub(crate) fn wit_envelope(id: &str, from: &str) -> wit::Envelope {
        wit::Envelope {
            id: id.into(),
            timestamp: 1_700_000_000_000,
            from: from.into(),
            headers: vec![("Trace-Id".into(), "abc".into()), ("x".into(), "1".into())],
            depth: 2,
            deadline: Some(1_700_000_060_000),
        }
    }

    /// Every accessor reads its own envelope field, depth and deadline included.
    #[test]
    fn accessors_read_the_envelope() {
        let env: Envelope = wit_envelope("id-1", "user:ann").into();
        assert_eq!(env.id(), "id-1");
        assert_eq!(env.timestamp(), 1_700_000_000_000);
        assert_eq!(env.from(), "user:ann");
        assert_eq!(env.headers().len(), 2);
        assert_eq!((env.depth(), env.deadline()), (2, Some(1_700_000_060_000)));
        assert_eq!(env.envelope(), &env);
    }

    /// Header names match ignoring ASCII case; a missing header is `None`.
    #[test]
    fn headers_match_ignoring_case() {
        let env: Envelope = wit_envelope("id-1", "host").into();
        assert_eq!(env.header("trace-id"), Some("abc"));
        assert_eq!(env.header("X"), Some("1"));
        assert_eq!(env.header("missing"), None);
    }

    /// A signal from outside the host has depth 0; a signal that is not a message has no
    /// deadline; a repeated header reads as its first value.
    #[test]
    fn outside_signals_start_at_depth_zero_without_a_deadline() {
        let mut wit = wit_envelope("id-2", "user:bob");
        wit.depth = 0;
        wit.deadline = None;
        wit.headers = vec![("k".into(), "first".into()), ("K".into(), "second".into())];
        let env: Envelope = wit.into();
        assert_eq!((env.depth(), env.deadline()), (0, None));
        assert_eq!(env.header("k"), Some("first"));
        assert_eq!(env.headers().len(), 2);
    }
}
