//! Client tokens as JWTs: signed with a shared secret (HS256), or with a private key whose
//! public half is in the keys file under the token's `kid` (RS256, ES256), so keys can
//! rotate. The `sub` claim is the user id ([`super::user_id`]); `exp` is required, `nbf`
//! is checked when present, and `iss` and `aud` are required and checked when configured,
//! with a clock leeway. A token whose header lists critical extensions (`crit`) is refused:
//! the gateway understands none (RFC 7515, 4.1.11).

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use thiserror::Error;

use super::keys::{KeySet, KeysError};
use super::user_id::{self, BadUserId};

/// How JWTs are checked.
#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    /// The HS256 secret, if HS256 tokens are accepted.
    pub secret: Option<String>,
    /// The keys file (RS256 and ES256 public keys by `kid`), if such tokens are accepted.
    pub keys: Option<PathBuf>,
    /// The issuer a token must name, if set.
    pub issuer: Option<String>,
    /// The audience a token must name, if set.
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Who a valid token stands for, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bearer {
    /// The user id (`sub`).
    pub user: String,
    /// When the token stops being valid (its `exp` plus the leeway), in milliseconds since
    /// the Unix epoch; `None` for a development token, which does not expire.
    pub expires_ms: Option<u64>,
}

/// Why a JWT lets nobody in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refused {
    /// Not a token the gateway accepts: bad signature, unknown `kid`, an algorithm its key
    /// is not for, expired, wrong issuer or audience (which, is not said).
    #[error("the token is not valid")]
    Invalid,
    /// The header lists extensions the token must not be used without.
    #[error(
        "the token's header lists critical extensions (`crit`), which the gateway does not understand"
    )]
    Critical,
    /// Valid, but its `sub` cannot be a user id.
    #[error("the token's user id (`sub`) {0}")]
    UserId(BadUserId),
}

/// Checks client JWTs.
pub struct Jwt {
    secret: Option<DecodingKey>,
    keys: Option<KeySet>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl Jwt {
    /// A checker for `settings`; fails if the keys file cannot be used.
    pub fn new(settings: &JwtSettings) -> Result<Self, KeysError> {
        Ok(Self {
            secret: settings
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            keys: settings.keys.as_deref().map(KeySet::load).transpose()?,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience must be named, not merely not contradicted.
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Who a valid token stands for, or why it stands for nobody.
    pub fn bearer(&self, token: &str) -> Result<Bearer, Refused> {
        let header = decode_header(token).map_err(|_| Refused::Invalid)?;
        if header.crit.is_some() {
            return Err(Refused::Critical);
        }
        let claims = match (header.alg, &header.kid) {
            (Algorithm::HS256, _) => {
                let secret = self.secret.as_ref().ok_or(Refused::Invalid)?;
                decode::<Claims>(token, secret, &self.validation(Algorithm::HS256))
            }
            (Algorithm::RS256 | Algorithm::ES256, Some(kid)) => {
                let keys = self.keys.as_ref().ok_or(Refused::Invalid)?;
                let (algorithm, key) = keys.key(kid).ok_or(Refused::Invalid)?;
                if algorithm != header.alg {
                    return Err(Refused::Invalid);
                }
                decode::<Claims>(token, &key, &self.validation(algorithm))
            }
            _ => return Err(Refused::Invalid),
        }
        .map_err(|_| Refused::Invalid)?
        .claims;
        let sub = claims.sub;
        user_id::check(&sub).map_err(Refused::UserId)?;
        Ok(Bearer {
            user: sub,
            expires_ms: Some(
                claims
                    .exp
                    .saturating_add(self.leeway_secs)
                    .saturating_mul(1000),
            ),
        })
    }
}

#[cfg(test)]
mod tests;
