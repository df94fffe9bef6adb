//! Access tokens: HS256 JWTs signed with `MART_JWT_SECRET`. The user service
//! issues them; the edge on any node verifies them without a network call.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mart_schema::UserId;
use mart_schema::user::{Caller, Role, TokenGrant, User};
use serde::{Deserialize, Serialize};

/// The issuer every mart token names, and the only one accepted.
pub const ISSUER: &str = "mart";

/// The claims mart signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    role: Role,
    iat: u64,
    exp: u64,
    iss: String,
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
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

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Only HS256 is accepted, so `alg: none` and algorithm swaps fail.
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A fresh token for `user`.
    pub fn issue(&self, user: &User) -> Result<TokenGrant, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            iat: now,
            exp: now + self.ttl.as_secs(),
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())?;
        Ok(TokenGrant {
            access_token: token,
            token_type: "bearer".into(),
            expires_in: self.ttl.as_secs(),
        })
    }

    /// The caller a token speaks for, if it is genuine and current.
    pub fn verify(&self, token: &str) -> Result<Caller, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| InvalidToken)?;
        Ok(Caller::user(data.claims.sub, data.claims.role))
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
            created_at: time::OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_token_verifies_with_the_key_that_signed_it_only() {
        let keys = TokenKeys::new(b"one secret", Duration::from_secs(60));
        let user = alice();
        let grant = keys.issue(&user).expect("issue");
        assert_eq!(
            keys.verify(&grant.access_token).expect("verify").user_id(),
            Some(user.id)
        );
        let other = TokenKeys::new(b"another secret", Duration::from_secs(60));
        assert_eq!(other.verify(&grant.access_token), Err(InvalidToken));
    }

    #[test]
    fn tampered_unsigned_and_expired_tokens_are_refused() {
        let keys = TokenKeys::new(b"k", Duration::from_secs(60));
        let token = keys.issue(&alice()).expect("issue").access_token;
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
        };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &stale, &keys.encoding)
            .expect("encode");
        let strict = keys;
        assert_eq!(strict.verify(&old), Err(InvalidToken));
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
