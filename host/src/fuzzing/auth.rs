//! How clients authenticate: JWTs, the keys file they are checked with, and the development
//! tokens file. A token stands for a valid user id or for nobody; a file is read or refused;
//! none of them panics.

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::value::RawValue;

use super::Choices;
use crate::gateway::keys::parse;
use crate::gateway::{Jwt, JwtSettings, KeysError, Tokens};

/// The test keys `host/src/gateway/jwt/tests.rs` signs with, and their keys file.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
const SECRET: &str = "fuzz-secret";
const ISSUER: &str = "switchboard-fuzz";
const AUDIENCE: &str = "fuzz";
const LEEWAY_SECS: u64 = 60;

/// The checkers and the keys to sign with, made once.
struct Auth {
    /// Requires the issuer and audience.
    strict: Jwt,
    /// Requires neither.
    lax: Jwt,
    secret: EncodingKey,
    rsa: EncodingKey,
    ec: EncodingKey,
    /// The fixture files a keys file may name, by name.
    files: HashMap<String, Vec<u8>>,
    /// A token signed by each fixture private key, for checking the keys a file gives.
    signed: [(Algorithm, String); 2],
}

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let files: HashMap<String, Vec<u8>> = ["rsa.pem", "rsa.pub.pem", "ec.pem", "ec.pub.pem"]
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(format!("{FIXTURES}/{name}"))
                    .unwrap_or_else(|e| panic!("the fixture {name}: {e}"));
                (name.to_owned(), bytes)
            })
            .collect();
        let settings = JwtSettings {
            secret: Some(SECRET.into()),
            keys: Some(format!("{FIXTURES}/keys.toml").into()),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway_secs: LEEWAY_SECS,
        };
        let lax = JwtSettings {
            issuer: None,
            audience: None,
            ..settings.clone()
        };
        let rsa = EncodingKey::from_rsa_pem(&files["rsa.pem"]).expect("the RSA fixture");
        let ec = EncodingKey::from_ec_pem(&files["ec.pem"]).expect("the EC fixture");
        let claims = serde_json::json!({"sub": "fuzz", "exp": u32::MAX});
        let sign = |alg, key| jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap();
        Auth {
            strict: Jwt::new(&settings).expect("the fixture keys file"),
            lax: Jwt::new(&lax).expect("the fixture keys file"),
            secret: EncodingKey::from_secret(SECRET.as_bytes()),
            signed: [
                (Algorithm::RS256, sign(Algorithm::RS256, &rsa)),
                (Algorithm::ES256, sign(Algorithm::ES256, &ec)),
            ],
            rsa,
            ec,
            files,
        }
    })
}

impl Auth {
    /// A token of `header` and `claims` (JSON), signed with the key its `alg` takes.
    fn sign(&self, header: &[u8], claims: &[u8]) -> Option<String> {
        let header: Header = serde_json::from_slice(header).ok()?;
        let claims: Box<RawValue> = serde_json::from_slice(claims).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => &self.secret,
            Algorithm::RS256 => &self.rsa,
            Algorithm::ES256 => &self.ec,
            _ => return None,
        };
        jsonwebtoken::encode(&header, &claims, key).ok()
    }
}

/// Checks a token. The first byte chooses: bit 0, a checker requiring issuer and audience or
/// not; bit 1, the rest is the token, or a header and claims (JSON, split by a NUL byte)
/// the harness signs with the key the header's `alg` takes (so the fuzzer gets past the
/// signature to the claims). A token that stands for someone names a valid user id, is not
/// expired, and (signed here) names the user of its `sub`.
pub fn jwt(data: &[u8]) {
    let auth = auth();
    let mut choices = Choices::new(data);
    let mode = choices.byte();
    let checker = if mode & 1 == 0 {
        &auth.strict
    } else {
        &auth.lax
    };
    let (token, claims) = if mode & 2 == 0 {
        (String::from_utf8_lossy(choices.rest()).into_owned(), None)
    } else {
        let header = choices.until(0);
        let claims = choices.rest();
        match auth.sign(header, claims) {
            Some(token) => (token, Some(claims)),
            None => return,
        }
    };
    let Ok(bearer) = checker.bearer(&token) else {
        return;
    };
    let user = &bearer.user;
    assert!(
        !user.is_empty() && !user.contains([':', '/']) && user.len() <= 256,
        "`{user}` is no user id"
    );
    let now_secs = crate::clock::Clock::system().now_millis() / 1000;
    let expires_secs = bearer.expires_ms.expect("a JWT expires") / 1000;
    // A second may have passed since the check.
    assert!(
        expires_secs + 1 >= now_secs,
        "taken at {now_secs}, expired at {expires_secs}"
    );
    if let Some(claims) = claims {
        let claims: serde_json::Value = serde_json::from_slice(claims).expect("signed as JSON");
        assert_eq!(claims["sub"].as_str(), Some(user.as_str()), "not its `sub`");
    }
}

/// Reads a keys file (its `pem` paths may name the fixture files, nothing else): refused, or
/// every key is RS256 or ES256 and checks a token without panicking.
pub fn keys_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let auth = auth();
    let read = |pem: &str| {
        auth.files.get(pem).cloned().ok_or_else(|| KeysError::Read {
            path: pem.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    };
    let Ok(keys) = parse(text, "keys.toml", read) else {
        return;
    };
    for (kid, (algorithm, key)) in &keys {
        assert!(
            matches!(algorithm, Algorithm::RS256 | Algorithm::ES256),
            "key `{kid}` is {algorithm:?}"
        );
        for (signed_with, token) in &auth.signed {
            if signed_with == algorithm {
                check_with(token, key, *algorithm);
            }
        }
    }
}

/// Checks `token` with a key a keys file gave: whatever the key, no panic.
fn check_with(token: &str, key: &DecodingKey, algorithm: Algorithm) {
    let mut validation = Validation::new(algorithm);
    validation.validate_aud = false;
    let _ = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation);
}

/// Reads a development tokens file: refused, or every token stands for its user, a valid
/// user id.
pub fn tokens_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = Tokens::parse(text, "tokens.toml") else {
        return;
    };
    let table: HashMap<String, String> = toml::from_str(text).expect("Tokens read it");
    for (token, user) in table {
        assert!(
            !user.is_empty() && !user.contains([':', '/']),
            "user `{user}`"
        );
        assert_eq!(tokens.user(&token), Some(user));
    }
}
