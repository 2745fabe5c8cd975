use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn signed(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &serde_json::Value,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    signed(
        Algorithm::HS256,
        None,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn now() -> u64 {
    crate::clock::Clock::system().now_millis() / 1000
}

fn user(jwt: &Jwt, token: &str) -> Option<String> {
    jwt.bearer(token).ok().map(|b| b.user)
}

/// A token signed with the secret, unexpired, for the right issuer and audience, stands
/// for its `sub`; a wrong secret, an expired token or another audience or issuer does
/// not.
#[test]
fn only_valid_tokens_name_a_user() {
    let jwt = Jwt::new(&JwtSettings {
        secret: Some("s3cret".into()),
        issuer: Some("switchboard-test".into()),
        audience: Some("chat".into()),
        ..JwtSettings::default()
    })
    .unwrap();
    let good = json!({"sub": "ann", "exp": now() + 60, "iss": "switchboard-test", "aud": "chat"});
    let bearer = jwt.bearer(&hs256(good.clone(), "s3cret")).unwrap();
    assert_eq!(bearer.user, "ann");
    assert_eq!(bearer.expires_ms, Some((now() + 60) * 1000));
    assert_eq!(
        user(&jwt, &hs256(good.clone(), "other")),
        None,
        "wrong secret"
    );
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 5);
    assert_eq!(user(&jwt, &hs256(expired, "s3cret")), None, "expired");
    let mut audience = good.clone();
    audience["aud"] = json!("billing");
    assert_eq!(
        user(&jwt, &hs256(audience, "s3cret")),
        None,
        "wrong audience"
    );
    let mut issuer = good.clone();
    issuer["iss"] = json!("mallory");
    assert_eq!(user(&jwt, &hs256(issuer, "s3cret")), None, "wrong issuer");
    for claim in ["aud", "iss"] {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(claim);
        assert_eq!(user(&jwt, &hs256(missing, "s3cret")), None, "no {claim}");
    }
    let mut early = good.clone();
    early["nbf"] = json!(now() + 60);
    assert_eq!(user(&jwt, &hs256(early, "s3cret")), None, "not valid yet");
    let mut sneaky = good;
    sneaky["sub"] = json!("agent:x");
    assert_eq!(user(&jwt, &hs256(sneaky, "s3cret")), None, "not a user id");
    assert_eq!(user(&jwt, "not.a.jwt"), None);
}

/// RS256 and ES256 tokens are checked with the public key their `kid` names in the keys
/// file; an unknown kid, a key of the other algorithm, a key that did not sign it, or an
/// HS256 token when no secret is set stand for nobody.
#[test]
fn public_keys_are_found_by_kid() {
    let jwt = Jwt::new(&JwtSettings {
        keys: Some(format!("{FIXTURES}/keys.toml").into()),
        ..JwtSettings::default()
    })
    .unwrap();
    let claims = json!({"sub": "bo", "exp": now() + 60});
    let rsa = EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap();
    let by_rsa = signed(Algorithm::RS256, Some("rsa-1"), &claims, &rsa);
    assert_eq!(user(&jwt, &by_rsa).as_deref(), Some("bo"));
    let by_ec = signed(Algorithm::ES256, Some("ec-1"), &claims, &ec);
    assert_eq!(user(&jwt, &by_ec).as_deref(), Some("bo"));
    let unknown = signed(Algorithm::RS256, Some("rsa-9"), &claims, &rsa);
    assert_eq!(user(&jwt, &unknown), None, "unknown kid");
    let crossed = signed(Algorithm::ES256, Some("rsa-1"), &claims, &ec);
    assert_eq!(
        user(&jwt, &crossed),
        None,
        "an ES256 token naming an RSA key"
    );
    let no_kid = signed(Algorithm::RS256, None, &claims, &rsa);
    assert_eq!(user(&jwt, &no_kid), None, "no kid");
    assert_eq!(
        user(&jwt, &hs256(claims, "s3cret")),
        None,
        "no secret is set"
    );
}

/// A keys file naming an algorithm other than RS256 or ES256, or a key that is not PEM, is
/// refused at start, naming the file and the key.
#[test]
fn a_bad_keys_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("sb-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Jwt::new(&JwtSettings {
            keys: Some(path.clone()),
            ..JwtSettings::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let hs = load("[[key]]\nkid = \"k\"\nalg = \"HS256\"\npem = \"x\"\n");
    assert!(hs.contains("RS256 or ES256") && hs.contains("`k`"), "{hs}");
    let garbage = load(
        "[[key]]\nkid = \"k\"\nalg = \"RS256\"\npem = \"-----BEGIN PUBLIC KEY-----\\nnope\\n-----END PUBLIC KEY-----\"\n",
    );
    assert!(garbage.contains("not a PEM RS256 public key"), "{garbage}");
    let missing = load("[[key]]\nkid = \"k\"\nalg = \"ES256\"\npem = \"absent.pem\"\n");
    assert!(missing.contains("absent.pem"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A valid token whose `sub` cannot be a user id (NUL, a newline, padding) is refused for
/// that reason; one whose header lists critical extensions is refused whatever they are,
/// even signed with the right secret.
#[test]
fn bad_user_ids_and_critical_headers_are_refused() {
    let jwt = Jwt::new(&JwtSettings {
        secret: Some("s3cret".into()),
        ..JwtSettings::default()
    })
    .unwrap();
    let claims = |sub: &str| json!({"sub": sub, "exp": now() + 600});
    for (sub, why) in [
        ("ann\0", BadUserId::Control),
        ("ann\nbo", BadUserId::Control),
        (" ann", BadUserId::Padded),
        ("ann ", BadUserId::Padded),
    ] {
        let refused = jwt.bearer(&hs256(claims(sub), "s3cret")).unwrap_err();
        assert_eq!(refused, Refused::UserId(why), "{sub:?}");
    }
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let key = EncodingKey::from_secret(b"s3cret");
    let critical = encode(&header, &claims("ann"), &key).unwrap();
    assert_eq!(jwt.bearer(&critical).unwrap_err(), Refused::Critical);
    assert_eq!(
        user(&jwt, &hs256(claims("ann"), "s3cret")).as_deref(),
        Some("ann")
    );
}
