//! What the fuzz targets in `fuzz/` check, one function per parser of outside input, so that
//! the fuzzer and the corpus replay test (`host/tests/fuzz_corpus.rs`) run the very same
//! checks. Each takes arbitrary bytes and panics only when an invariant breaks: a parser
//! panicking, a signal that does not survive the wire, a frame taken that a client may not
//! send, a message answered twice or never. Private parsers are reached through the
//! narrowest entry point their module offers the crate; nothing here is API.
//!
//! - `wire`: the JSON wire format, and its round trip.
//! - `frame`: a client's WebSocket frame and its acknowledgements.
//! - `jwt`, `keys_file`, `tokens_file`: how clients authenticate.
//! - `component_check`: the upload's check before compiling.
//! - `config_file`, `size_and_duration`: `switchboard serve`'s settings.
//! - `EmbeddedHost`: signal sequences through a host running real guests.

mod auth;
mod embedded;
mod frames;
mod settings;
mod upload;
mod wire;

pub use auth::{jwt, keys_file, tokens_file};
pub use embedded::{EmbeddedHost, GUESTS};
pub use frames::frame;
pub use settings::{config_file, size_and_duration};
pub use upload::component_check;
pub use wire::wire;

/// A check of arbitrary bytes: panics if an invariant breaks.
pub type Check = fn(&[u8]);

/// The fuzz targets that need no set-up, by the name of their directory under
/// `fuzz/corpus/`; the embedded host's is [`EMBEDDED_HOST`].
pub const TARGETS: &[(&str, Check)] = &[
    ("wire", wire),
    ("frame", frame),
    ("jwt", jwt),
    ("keys_file", keys_file),
    ("tokens_file", tokens_file),
    ("component_check", component_check),
    ("config_file", config_file),
    ("size_and_duration", size_and_duration),
];

/// The name of the embedded host's fuzz target and corpus directory.
pub const EMBEDDED_HOST: &str = "embedded_host";

/// Arbitrary bytes read as a sequence of choices; past the end every choice is the first.
pub(crate) struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Choices read from `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte.
    pub(crate) fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        first
    }

    /// One of `items`, which must not be empty.
    pub(crate) fn pick<'i, T>(&mut self, items: &'i [T]) -> &'i T {
        &items[usize::from(self.byte()) % items.len()]
    }

    /// Up to `max` bytes (their count comes first), as text.
    pub(crate) fn text(&mut self, max: usize) -> String {
        let len = usize::from(self.byte()).min(max).min(self.data.len());
        let (text, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(text).into_owned()
    }

    /// Every byte not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// The bytes up to the next `separator` (or the end), dropping the separator.
    pub(crate) fn until(&mut self, separator: u8) -> &'a [u8] {
        let end = self
            .data
            .iter()
            .position(|&b| b == separator)
            .unwrap_or(self.data.len());
        let (part, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or_default();
        part
    }
}
