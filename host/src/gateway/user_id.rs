//! What a user id may be, wherever it comes from (a JWT's `sub`, a development tokens
//! file): the id names `user:<id>` in addresses, logs and handlers' state, so it is short,
//! cannot open another address (`:`, `/`), and carries nothing that hides or forges text
//! (control characters such as NUL and newlines, or whitespace at either end).

use thiserror::Error;

/// Longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Why a user id is refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum BadUserId {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes, more than {MAX_USER_ID_BYTES}")]
    TooLong(usize),
    #[error("contains `:` or `/`, which only addresses may")]
    Separator,
    #[error("contains a control character (such as NUL or a newline)")]
    Control,
    #[error("begins or ends with whitespace")]
    Padded,
}

/// Checks that `id` can be a user id.
pub fn check(id: &str) -> Result<(), BadUserId> {
    if id.is_empty() {
        Err(BadUserId::Empty)
    } else if id.len() > MAX_USER_ID_BYTES {
        Err(BadUserId::TooLong(id.len()))
    } else if id.contains([':', '/']) {
        Err(BadUserId::Separator)
    } else if id.chars().any(char::is_control) {
        Err(BadUserId::Control)
    } else if id.trim() != id {
        Err(BadUserId::Padded)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordinary ids pass, spaces inside and any script included; each kind of bad id is
    /// refused for its own reason.
    #[test]
    fn user_ids_are_checked() {
        for good in ["ann", "bo smith", "ünïcode-名前", "a.b_c-d@example.org"] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
        let too_long = "x".repeat(MAX_USER_ID_BYTES + 1);
        let bad = [
            ("", BadUserId::Empty),
            (too_long.as_str(), BadUserId::TooLong(MAX_USER_ID_BYTES + 1)),
            ("agent:x", BadUserId::Separator),
            ("a/b", BadUserId::Separator),
            ("ann\0", BadUserId::Control),
            ("ann\nbo", BadUserId::Control),
            ("ann\u{7f}", BadUserId::Control),
            (" ann", BadUserId::Padded),
            ("ann\u{a0}", BadUserId::Padded),
        ];
        for (id, why) in bad {
            assert_eq!(check(id), Err(why), "{id:?}");
        }
    }
}
