//! What every request goes through first: its deadline, which every call made
//! for it inherits, and its id, which every log line about it carries. The
//! access log stays quiet on the hot path: one DEBUG line per request, a
//! WARN line for a slow one; failures are logged where they are known, with
//! their cause (see [`crate::error`]).

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::error::ApiError;

/// A request slower than this is logged at WARN.
const SLOW: Duration = Duration::from_millis(500);

tokio::task_local! {
    static REQUEST_ID: Box<str>;
}

/// The id of the request this task serves, for log lines.
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(|id| id.to_string()).unwrap_or_default()
}

/// Longest request target (path and query) accepted.
const MAX_URI: usize = 8 * 1024;
/// Most header bytes (names and values) accepted.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A request too big to read gets a problem document, as every error does.
/// (Beyond hyper's own limits, 64 KiB of target or 100 headers, hyper answers
/// before any of this runs, with an empty body.)
fn oversized(req: &Request) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request target is longer than {MAX_URI} bytes"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (headers > MAX_HEADER_BYTES).then(|| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        )
    })
}

pub(crate) async fn serve(req: Request, next: Next, budget: Duration) -> Response {
    if let Some(refused) = oversized(&req) {
        return refused.into_response();
    }
    let started = Instant::now();
    let id: Box<str> = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .into();
    // Cheap clones (shared bytes): the line is usually not written.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let work = mart_actors::call::within(started + budget, next.run(req));
    let response = REQUEST_ID.scope(id.clone(), work).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let path = uri.path();
    if took >= SLOW {
        tracing::warn!(request_id = %id, %method, %path, status, ?took, "slow request");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ?took, "request");
    }
    response
}
