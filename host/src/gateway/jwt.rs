//! Client tokens as JWTs: signed with a shared secret (HS256), or with a private key whose
//! public half is in the keys file under the token's `kid` (RS256, ES256), so keys can
//! rotate. The `sub` claim is the user id; `exp` is required, `nbf` is checked when
//! present, and `iss` and `aud` are required and checked when configured, with a clock
//! leeway.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::keys::{KeySet, KeysError};

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

    /// Who a valid token stands for; `None` for anything else (bad signature, unknown `kid`,
    /// an algorithm its key is not for, expired, wrong issuer or audience, or a `sub` no
    /// user id can be).
    pub fn bearer(&self, token: &str) -> Option<Bearer> {
        let header = decode_header(token).ok()?;
        let claims = match (header.alg, &header.kid) {
            (Algorithm::HS256, _) => {
                let secret = self.secret.as_ref()?;
                decode::<Claims>(token, secret, &self.validation(Algorithm::HS256)).ok()?
            }
            (Algorithm::RS256 | Algorithm::ES256, Some(kid)) => {
                let (algorithm, key) = self.keys.as_ref()?.key(kid)?;
                if algorithm != header.alg {
                    return None;
                }
                decode::<Claims>(token, &key, &self.validation(algorithm)).ok()?
            }
            _ => return None,
        }
        .claims;
        let sub = claims.sub;
        let valid = !sub.is_empty() && !sub.contains([':', '/']) && sub.len() <= 256;
        valid.then(|| Bearer {
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
