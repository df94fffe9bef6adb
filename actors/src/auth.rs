//! Access tokens: JWTs signed with `MART_JWT_SECRET` (HS256, the default) or
//! with Ed25519 keys (EdDSA, each named by a `kid`; the public halves are
//! published as a JWKS so another service or a Kafka consumer can verify a
//! token holding no secret, and a previous key keeps verifying during a
//! rotation). The user service issues them; the edge on any node verifies the
//! signature without a network call, then checks the token is not revoked
//! ([`revocations`]).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mart_schema::UserId;
use mart_schema::user::{Caller, Role, TokenGrant, User};
use serde::{Deserialize, Serialize};

/// The issuer every mart token names, and the only one accepted.
pub const ISSUER: &str = "mart";

pub mod revocations;

/// The claims mart signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    role: Role,
    iat: u64,
    exp: u64,
    iss: String,
    /// The user's token version when issued: a password or role change, or
    /// a delete, raises it and so revokes every earlier token.
    #[serde(default)]
    ver: i32,
    /// The session (refresh-token family) it belongs to; a logout ends it.
    #[serde(default)]
    sid: Option<uuid::Uuid>,
}

/// What a genuine token says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verified {
    pub caller: Caller,
    pub user: UserId,
    pub version: i32,
    pub session: Option<uuid::Uuid>,
}

/// Signs and verifies tokens: one shared secret, or Ed25519 key pairs.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    /// The signing key's id (EdDSA only).
    kid: Option<String>,
    /// Keys that verify, by `kid` (EdDSA: the signing key and previous ones).
    decoding: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    ttl: Duration,
    /// The public keys, as `GET /.well-known/jwks.json` serves them.
    jwks: jsonwebtoken::jwk::JwkSet,
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadKey(String);

/// The PKCS#8 DER prefix of an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new Ed25519 private key, PKCS#8 DER (what `openssl genpkey -algorithm
/// ed25519 -outform der` writes).
pub fn generate_ed25519() -> Vec<u8> {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    [&ED25519_PKCS8_PREFIX[..], &seed].concat()
}

/// An Ed25519 private key from PEM or PKCS#8 DER.
fn ed25519_key(bytes: &[u8]) -> Result<EncodingKey, BadKey> {
    if bytes.starts_with(b"-----BEGIN") {
        EncodingKey::from_ed_pem(bytes).map_err(|e| BadKey(format!("not an Ed25519 PEM key: {e}")))
    } else if bytes.len() == 48 && bytes.starts_with(&ED25519_PKCS8_PREFIX) {
        Ok(EncodingKey::from_ed_der(bytes))
    } else {
        Err(BadKey(
            "not an Ed25519 private key (PEM, or PKCS#8 DER)".into(),
        ))
    }
}

/// A key's public JWK, named by the first 16 hex digits of its SHA-256.
fn public_jwk(key: &EncodingKey) -> Result<(String, jsonwebtoken::jwk::Jwk), BadKey> {
    use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
    use sha2::Digest;
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::EdDSA)
        .map_err(|e| BadKey(format!("no public key: {e}")))?;
    let AlgorithmParameters::OctetKeyPair(pair) = &jwk.algorithm else {
        return Err(BadKey("not an Ed25519 key".into()));
    };
    let kid = hex::encode(&sha2::Sha256::digest(pair.x.as_bytes())[..8]);
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((kid, jwk))
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. Deliberately vague to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid or expired token")]
pub struct InvalidToken;

/// Only `algorithm` is accepted, so `alg: none` and algorithm swaps fail.
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
    validation.leeway = 5;
    validation
}

impl TokenKeys {
    /// HS256 with one secret every node shares.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            kid: None,
            decoding: vec![(None, DecodingKey::from_secret(secret))],
            validation: validation(Algorithm::HS256),
            ttl,
            jwks: jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
        }
    }

    /// EdDSA: signs with `signing` (an Ed25519 private key, PEM or PKCS#8
    /// DER); tokens signed by any of `previous` still verify (a rotation).
    pub fn ed25519(signing: &[u8], previous: &[Vec<u8>], ttl: Duration) -> Result<Self, BadKey> {
        let encoding = ed25519_key(signing)?;
        let (kid, jwk) = public_jwk(&encoding)?;
        let mut keys = vec![jwk];
        for old in previous {
            let (_, jwk) = public_jwk(&ed25519_key(old)?)?;
            keys.push(jwk);
        }
        let decoding = keys
            .iter()
            .map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| BadKey(e.to_string()))?;
                Ok((jwk.common.key_id.clone(), key))
            })
            .collect::<Result<_, BadKey>>()?;
        Ok(Self {
            encoding,
            kid: Some(kid),
            decoding,
            validation: validation(Algorithm::EdDSA),
            ttl,
            jwks: jsonwebtoken::jwk::JwkSet { keys },
        })
    }

    /// The public keys that verify mart's tokens (none with HS256).
    pub fn jwks(&self) -> &jsonwebtoken::jwk::JwkSet {
        &self.jwks
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A fresh access token for `user` at token `version`, in `session`.
    pub fn issue(
        &self,
        user: &User,
        version: i32,
        session: Option<uuid::Uuid>,
    ) -> Result<TokenGrant, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            iat: now,
            exp: now + self.ttl.as_secs(),
            iss: ISSUER.into(),
            ver: version,
            sid: session,
        };
        let mut header = Header::new(self.validation.algorithms[0]);
        header.kid = self.kid.clone();
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())?;
        Ok(TokenGrant {
            access_token: token,
            token_type: "bearer".into(),
            expires_in: self.ttl.as_secs(),
            refresh_token: None,
        })
    }

    /// What a token says, if it is genuine and unexpired (whether it is
    /// revoked is [`revocations::check`]'s question).
    pub fn verify(&self, token: &str) -> Result<Verified, InvalidToken> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|_| InvalidToken)?
            .kid;
        let key = self
            .decoding
            .iter()
            .find(|(id, _)| id.is_none() || *id == kid)
            .map(|(_, key)| key)
            .ok_or(InvalidToken)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| InvalidToken)?;
        let claims = data.claims;
        Ok(Verified {
            caller: Caller::user(claims.sub, claims.role),
            user: claims.sub,
            version: claims.ver,
            session: claims.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            id: UserId::new(),
            username: "alice".into(),
            email: "alice@example.test".into(),
            role: Role::Customer,
            created_at: mart_schema::now(),
        }
    }

    #[test]
    fn a_token_verifies_with_the_key_that_signed_it_only() {
        let keys = TokenKeys::new(b"one secret", Duration::from_secs(60));
        let user = alice();
        let session = uuid::Uuid::new_v4();
        let grant = keys.issue(&user, 3, Some(session)).expect("issue");
        let verified = keys.verify(&grant.access_token).expect("verify");
        assert_eq!(verified.caller.user_id(), Some(user.id));
        assert_eq!((verified.version, verified.session), (3, Some(session)));
        let other = TokenKeys::new(b"another secret", Duration::from_secs(60));
        assert_eq!(other.verify(&grant.access_token), Err(InvalidToken));
    }

    #[test]
    fn tampered_unsigned_and_expired_tokens_are_refused() {
        let keys = TokenKeys::new(b"k", Duration::from_secs(60));
        let token = keys.issue(&alice(), 0, None).expect("issue").access_token;
        let mut parts: Vec<&str> = token.split('.').collect();
        // Swap in claims that make the caller an admin, keeping the signature.
        let forged_claims = base64_url(&format!(
            r#"{{"sub":"{}","role":"admin","iat":1,"exp":99999999999,"iss":"mart"}}"#,
            UserId::new()
        ));
        parts[1] = &forged_claims;
        assert_eq!(keys.verify(&parts.join(".")), Err(InvalidToken));

        let none_header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", token.split('.').nth(1).unwrap_or(""));
        assert_eq!(keys.verify(&unsigned), Err(InvalidToken));

        let now = jsonwebtoken::get_current_timestamp();
        let stale = Claims {
            sub: UserId::new(),
            role: Role::Customer,
            iat: now - 7200,
            exp: now - 3600,
            iss: ISSUER.into(),
            ver: 0,
            sid: None,
        };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &stale, &keys.encoding)
            .expect("encode");
        let strict = keys;
        assert_eq!(strict.verify(&old), Err(InvalidToken));
    }

    #[test]
    fn ed25519_tokens_verify_from_the_jwks_alone_and_across_a_rotation() {
        let ttl = Duration::from_secs(60);
        let (old, new) = (generate_ed25519(), generate_ed25519());
        let before = TokenKeys::ed25519(&old, &[], ttl).expect("old key");
        let token = before.issue(&alice(), 0, None).expect("issue").access_token;

        // Another service, holding only the published keys, can verify.
        let jwk = &before.jwks().keys[0];
        let outside = DecodingKey::from_jwk(jwk).expect("jwk");
        let mut check = Validation::new(Algorithm::EdDSA);
        check.set_issuer(&[ISSUER]);
        assert!(jsonwebtoken::decode::<Claims>(&token, &outside, &check).is_ok());
        assert_eq!(
            jsonwebtoken::decode_header(&token).expect("header").kid,
            jwk.common.key_id
        );

        // Rotated: new tokens use the new key; old ones verify until they expire.
        let after = TokenKeys::ed25519(&new, std::slice::from_ref(&old), ttl).expect("rotated");
        assert_eq!(after.jwks().keys.len(), 2);
        assert!(after.verify(&token).is_ok());
        let fresh = after.issue(&alice(), 0, None).expect("issue").access_token;
        assert!(after.verify(&fresh).is_ok());
        assert_eq!(before.verify(&fresh), Err(InvalidToken), "unknown kid");
        // Retired: the old key's tokens fail.
        let retired = TokenKeys::ed25519(&new, &[], ttl).expect("retired");
        assert_eq!(retired.verify(&token), Err(InvalidToken));

        // An HS256 token (signed with anything) is refused under EdDSA.
        let hs = TokenKeys::new(b"some shared secret of 32 bytes or so", ttl);
        let swapped = hs.issue(&alice(), 0, None).expect("issue").access_token;
        assert_eq!(after.verify(&swapped), Err(InvalidToken));
        assert!(TokenKeys::ed25519(b"not a key", &[], ttl).is_err());
    }

    fn base64_url(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
