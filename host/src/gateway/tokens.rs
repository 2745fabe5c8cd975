//! Client tokens for development: a TOML file mapping each token to the user id it stands
//! for (`"s3cret-ann" = "ann"`). A file naming a user id that cannot be one
//! ([`super::user_id`]) is refused when it is read.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

use super::user_id::{self, BadUserId};

/// The tokens file could not be used.
#[derive(Debug, Error)]
pub enum TokensError {
    #[error("could not read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not a TOML table of token = \"user id\": {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("the tokens file {path} gives token `{token}...` a user id that {reason}")]
    BadUser {
        path: String,
        token: String,
        reason: BadUserId,
    },
}

/// Tokens and the users they stand for.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses the text of a tokens file named `path`.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokensError> {
        let map: HashMap<String, String> =
            toml::from_str(text).map_err(|source| TokensError::Parse {
                path: path.to_owned(),
                source,
            })?;
        for (token, user) in &map {
            user_id::check(user).map_err(|reason| TokensError::BadUser {
                path: path.to_owned(),
                token: token.chars().take(4).collect(),
                reason,
            })?;
        }
        Ok(Self(map))
    }

    /// The user `token` stands for, if any.
    pub fn user(&self, token: &str) -> Option<String> {
        self.0.get(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens map to users; unknown tokens to nobody; a bad file is refused naming it.
    #[test]
    fn tokens_stand_for_users() {
        let tokens = Tokens::parse("\"t-ann\" = \"ann\"\n\"t-bo\" = \"bo\"\n", "t.toml").unwrap();
        assert_eq!(tokens.user("t-ann").as_deref(), Some("ann"));
        assert_eq!(tokens.user("nope"), None);
        let bad = Tokens::parse("x = 1", "t.toml").unwrap_err();
        assert!(bad.to_string().contains("t.toml"), "{bad}");
        let sneaky = Tokens::parse("\"t\" = \"agent:x\"", "t.toml").unwrap_err();
        assert!(matches!(sneaky, TokensError::BadUser { .. }), "{sneaky}");
        let hidden = Tokens::parse("\"t\" = \"ann\\u0000\"", "t.toml").unwrap_err();
        assert!(hidden.to_string().contains("control character"), "{hidden}");
        let padded = Tokens::parse("\"t\" = \" ann\"", "t.toml").unwrap_err();
        assert!(padded.to_string().contains("whitespace"), "{padded}");
    }
}
