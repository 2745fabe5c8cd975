//! [`Failure`]: why a message could not be handled. Returned by a handler it becomes an
//! ErrorReply; returned by the host (from `send`, `request`, ...) it says what went wrong.

use std::fmt;

use crate::wit;

/// A negative answer: an HTTP-like `code`, a `description` a person can act on, and
/// optionally `help` on how to fix it.
///
/// Host-raised codes: 400 payload did not decode, 404 no such address or message type,
/// 413 too large, 429/503 overloaded, 500 handler trapped, 504 no reply before the
/// deadline, 507 a resource limit was hit. Handlers pick their own codes for their errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    code: u32,
    description: String,
    help: Option<String>,
}

impl Failure {
    /// A failure with `code` and `description`, without help.
    pub fn new(code: u32, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            help: None,
        }
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 400: the request is malformed, e.g. its payload did not decode.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(400, description)
    }

    /// 404: the thing asked for does not exist.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(404, description)
    }

    /// 409: the request conflicts with the current state, e.g. a name already taken.
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(409, description)
    }

    /// 500: the handler failed for a reason of its own.
    pub fn internal(description: impl Into<String>) -> Self {
        Self::new(500, description)
    }

    /// The HTTP-like error code.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// What went wrong.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How to fix it, if known.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// Whether the host gave up waiting for a reply (code 504).
    pub fn is_timeout(&self) -> bool {
        self.code == 504
    }

    /// The same failure with its description prefixed by `context`, e.g. "reservation
    /// failed: out of stock". Code and help are kept.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.description = format!("{context}: {}", self.description);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.description)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

impl From<wit::Failure> for Failure {
    fn from(f: wit::Failure) -> Self {
        Self {
            code: f.code,
            description: f.description,
            help: f.help,
        }
    }
}

impl From<Failure> for wit::Failure {
    fn from(f: Failure) -> Self {
        Self {
            code: f.code,
            description: f.description,
            help: f.help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_their_codes() {
        assert_eq!(Failure::bad_request("x").code(), 400);
        assert_eq!(Failure::not_found("x").code(), 404);
        assert_eq!(Failure::conflict("x").code(), 409);
        assert_eq!(Failure::internal("x").code(), 500);
        assert_eq!(Failure::new(418, "teapot").description(), "teapot");
        assert!(Failure::new(504, "late").is_timeout());
        assert!(!Failure::internal("x").is_timeout());
    }

    #[test]
    fn help_and_context_are_kept_in_display() {
        let f = Failure::conflict("admin is taken")
            .with_help("try admin2")
            .context("rename");
        assert_eq!(f.help(), Some("try admin2"));
        assert_eq!(
            f.to_string(),
            "409 rename: admin is taken (help: try admin2)"
        );
        assert_eq!(Failure::not_found("gone").to_string(), "404 gone");
        assert_eq!(Failure::not_found("gone").help(), None);
        let as_error: Box<dyn std::error::Error> = Box::new(f);
        assert!(as_error.to_string().starts_with("409"));
    }

    #[test]
    fn converts_to_and_from_the_wit_record() {
        let f = Failure::new(507, "memory").with_help("smaller please");
        let w: wit::Failure = f.clone().into();
        assert_eq!(
            (w.code, w.description.as_str(), w.help.as_deref()),
            (507, "memory", Some("smaller please"))
        );
        assert_eq!(Failure::from(w), f);
    }
}
