//! Client tokens as JWTs signed with a shared secret (HS256): the `sub` claim is the user id;
//! `exp` is required, and `iss` and `aud` are checked when configured, with a clock leeway.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

/// How JWTs are checked.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// The HS256 secret.
    pub secret: String,
    /// The issuer a token must name, if set.
    pub issuer: Option<String>,
    /// The audience a token must name, if set.
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Checks HS256 client tokens.
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Jwt {
    /// A checker for `settings`.
    pub fn new(settings: &JwtSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Self {
            key: DecodingKey::from_secret(settings.secret.as_bytes()),
            validation,
        }
    }

    /// The user a valid token stands for; `None` for anything else (bad signature, expired,
    /// wrong issuer or audience, or a `sub` no user id can be).
    pub fn user(&self, token: &str) -> Option<String> {
        let data = decode::<Claims>(token, &self.key, &self.validation).ok()?;
        let sub = data.claims.sub;
        (!sub.is_empty() && !sub.contains([':', '/']) && sub.len() <= 256).then_some(sub)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        crate::signal::now_millis() / 1000
    }

    /// A token signed with the secret, unexpired, for the right issuer and audience, stands
    /// for its `sub`; a wrong secret, an expired token or another audience or issuer does
    /// not.
    #[test]
    fn only_valid_tokens_name_a_user() {
        let jwt = Jwt::new(&JwtSettings {
            secret: "s3cret".into(),
            issuer: Some("switchboard-test".into()),
            audience: Some("chat".into()),
            leeway_secs: 0,
        });
        let good =
            json!({"sub": "ann", "exp": now() + 60, "iss": "switchboard-test", "aud": "chat"});
        assert_eq!(
            jwt.user(&token(good.clone(), "s3cret")).as_deref(),
            Some("ann")
        );
        assert_eq!(
            jwt.user(&token(good.clone(), "other")),
            None,
            "wrong secret"
        );
        let mut expired = good.clone();
        expired["exp"] = json!(now() - 5);
        assert_eq!(jwt.user(&token(expired, "s3cret")), None, "expired");
        let mut audience = good.clone();
        audience["aud"] = json!("billing");
        assert_eq!(jwt.user(&token(audience, "s3cret")), None, "wrong audience");
        let mut issuer = good.clone();
        issuer["iss"] = json!("mallory");
        assert_eq!(jwt.user(&token(issuer, "s3cret")), None, "wrong issuer");
        let mut sneaky = good;
        sneaky["sub"] = json!("agent:x");
        assert_eq!(jwt.user(&token(sneaky, "s3cret")), None, "not a user id");
        assert_eq!(jwt.user("not.a.jwt"), None);
    }
}
