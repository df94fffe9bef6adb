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

use mart_actors::trace::{self, TARGET, TraceParent};
use tracing::Instrument;

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
    // The route's template, never the raw path: ids would make a label of
    // unbounded cardinality.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let template = route.as_ref().map_or("unmatched", |p| p.as_str());
    let span = span(&req, &method, template);
    let work = mart_actors::call::within(started + budget, next.run(req));
    let mut response = REQUEST_ID
        .scope(id.clone(), work)
        .instrument(span.clone())
        .await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    traced(&span, &mut response, status);
    record(template, &method, status, took);
    let path = uri.path();
    // In the request's span: a slow request's line names its trace.
    span.in_scope(|| {
        if took >= SLOW {
            tracing::warn!(request_id = %id, %method, %path, status, ?took, "slow request");
        } else {
            tracing::debug!(request_id = %id, %method, %path, status, ?took, "request");
        }
    });
    response
}

/// The request's span (when traces are on): a child of the caller's
/// `traceparent` if it sent one, else the root of a new trace.
fn span(req: &Request, method: &axum::http::Method, route: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    trace::continue_from(&span, parent.as_ref());
    span
}

/// Ends the request's span with its status, and tells the caller the
/// trace's id (`x-trace-id`), to find it in the trace backend.
fn traced(span: &tracing::Span, response: &mut Response, status: u16) {
    let Some(context) = trace::of(span) else {
        return;
    };
    span.record("http.response.status_code", status);
    if status >= 500 {
        trace::failed(span, &status.to_string());
    }
    if let Ok(value) = axum::http::HeaderValue::from_str(context.trace_id()) {
        response.headers_mut().insert("x-trace-id", value);
    }
}

/// The request in the edge's metrics: by route template, method and status
/// class, with its latency. The handles are kept per thread: looking a
/// labelled metric up in the recorder on every request cost a fifth of the
/// edge's throughput on product reads (`mart bench`).
fn record(route: &str, method: &axum::http::Method, status: u16, took: Duration) {
    use axum::http::Method;
    const METHODS: [&str; 8] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
    ];
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let m = match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    };
    let c = match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    };
    HANDLES.with_borrow_mut(|handles| {
        // Looked up by `&str`: the key is allocated once per route, not per request.
        if !handles.contains_key(route) {
            handles.insert(route.to_owned(), RouteHandles::default());
        }
        let Some(of_route) = handles.get_mut(route) else {
            return;
        };
        of_route.requests[m][c]
            .get_or_insert_with(|| {
                metrics::counter!("mart_http_requests_total", "route" => route.to_owned(), "method" => METHODS[m], "status" => CLASSES[c])
            })
            .increment(1);
        of_route.latency[m]
            .get_or_insert_with(|| {
                metrics::histogram!("mart_http_request_duration_seconds", "route" => route.to_owned(), "method" => METHODS[m])
            })
            .record(took.as_secs_f64());
    });
}

/// One route's metric handles, by method and status class.
#[derive(Default)]
struct RouteHandles {
    requests: [[Option<metrics::Counter>; 5]; 8],
    latency: [Option<metrics::Histogram>; 8],
}

thread_local! {
    static HANDLES: std::cell::RefCell<std::collections::HashMap<String, RouteHandles>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}
