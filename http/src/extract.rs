//! Extractors whose rejections are problem documents: request bodies (JSON or
//! form), query strings, and the bearer token.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use mart_actors::auth::revocations::{self, Unpassed};
use mart_schema::FieldErrors;
use mart_schema::user::Caller;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A request body in JSON or `application/x-www-form-urlencoded`, decided by
/// `Content-Type`. Decoding errors name the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_ascii_lowercase();
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if content_type.starts_with("application/x-www-form-urlencoded") {
            refuse_nul_in_pairs(&bytes)?;
            let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
            return serde_path_to_error::deserialize(deserializer)
                .map(Body)
                .map_err(|e| decoding_error(e.path().to_string(), e.inner().to_string()));
        }
        if !(content_type.starts_with("application/json") || content_type.contains("+json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send application/json or application/x-www-form-urlencoded",
            ));
        }
        refuse_nul_in_json(&bytes)?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut deserializer)
            .map(Body)
            .map_err(|e| {
                let inner = e.inner();
                if inner.is_syntax() || inner.is_eof() {
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed-json",
                        format!("the body is not valid JSON: {inner}"),
                    );
                }
                decoding_error(e.path().to_string(), inner.to_string())
            })
    }
}

/// The request body as it came, up to the body limit.
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    crate::error::too_large()
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        rejection.body_text(),
                    )
                }
            })
    }
}

/// A 422 naming the field at fault: the path serde reached, or the field a
/// "missing field `x`" / "unknown field `x`" message names.
fn decoding_error(path: String, message: String) -> ApiError {
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    let field = match named {
        Some(name) if path == "." => name.to_owned(),
        // serde_path_to_error already ends an unknown field's path with its name.
        Some(name) if path == name || path.ends_with(&format!(".{name}")) => path,
        Some(name) => format!("{path}.{name}"),
        None if path == "." => "body".to_owned(),
        None => path,
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_owned();
    ApiError::invalid(FieldErrors::single(&field, message))
}

const NUL: &str = "must not contain the NUL character (U+0000)";

/// PostgreSQL cannot store U+0000 in text: refused here, naming the field,
/// before it can fail a database write.
fn refuse_nul_in_pairs(encoded: &[u8]) -> Result<(), ApiError> {
    let at_fault = form_urlencoded::parse(encoded)
        .find(|(name, value)| name.contains('\0') || value.contains('\0'));
    match at_fault {
        Some((name, _)) => Err(ApiError::invalid(FieldErrors::single(
            &name.replace('\0', ""),
            NUL,
        ))),
        None => Ok(()),
    }
}

/// In JSON a NUL can only be written as the escape `\u0000`: only a body
/// holding one is walked to find the field.
fn refuse_nul_in_json(bytes: &[u8]) -> Result<(), ApiError> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        // Not JSON after all; decoding says what is wrong with it.
        return Ok(());
    };
    match nul_path(&value, "") {
        Some(path) => Err(ApiError::invalid(FieldErrors::single(&path, NUL))),
        None => Ok(()),
    }
}

/// The path of the first string (or key) holding a NUL, in
/// `items[0].name` form; the body itself is `body`.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(here()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{}[{i}]", here()))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let name_path = match path {
                "" => name.replace('\0', ""),
                _ => format!("{path}.{}", name.replace('\0', "")),
            };
            if name.contains('\0') {
                Some(name_path)
            } else {
                nul_path(item, &name_path)
            }
        }),
        _ => None,
    }
}

/// A path parameter. Any id that does not parse (not UTF-8, not an id)
/// names nothing that exists: 404, as a problem document.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|_| ApiError::not_found("no such resource"))
    }
}

/// A query string; errors name the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        refuse_nul_in_pairs(query.as_bytes())?;
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|e| decoding_error(e.path().to_string(), e.inner().to_string()))
    }
}

/// The caller a valid bearer token speaks for.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("not authenticated: send Authorization: Bearer <token>")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let verified = state
            .keys
            .verify(token.trim())
            .map_err(|_| ApiError::unauthorized("invalid or expired token; log in again"))?;
        let revoked = || ApiError::unauthorized("this token was revoked; log in again");
        match revocations::check(&verified) {
            Ok(()) => Ok(Auth(verified.caller)),
            Err(Unpassed::Revoked) => Err(revoked()),
            // This node has not heard from the user service lately: ask it
            // about this token's own subjects.
            Err(Unpassed::Unknown) => {
                let floors = state
                    .users
                    .floors(revocations::subjects(&verified))
                    .await
                    .map_err(|_| {
                        ApiError::unavailable("tokens cannot be checked right now; try again soon")
                    })?;
                if revocations::passes(&verified, &floors) {
                    Ok(Auth(verified.caller))
                } else {
                    Err(revoked())
                }
            }
        }
    }
}
