//! What every request goes through first: its deadline, which every call made
//! for it inherits, and its id, which every log line about it carries. The
//! access log stays quiet on the hot path: one DEBUG line per request, a
//! WARN line for a slow one; failures are logged where they are known, with
//! their cause (see [`crate::error`]).

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

/// A request slower than this is logged at WARN.
const SLOW: Duration = Duration::from_millis(500);

tokio::task_local! {
    static REQUEST_ID: Box<str>;
}

/// The id of the request this task serves, for log lines.
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(|id| id.to_string()).unwrap_or_default()
}

pub(crate) async fn serve(req: Request, next: Next, budget: Duration) -> Response {
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
