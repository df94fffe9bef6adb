//! What every operation of the OpenAPI document shares, filled in once rather
//! than repeated on each route: the error statuses the edge's extractors and
//! service calls can answer with, error bodies as `application/problem+json`,
//! the servers and the tags.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::server::Server;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

/// Fills in the shared parts of the document.
pub(crate) struct Contract;

/// The document's tags, in the order a reader meets them.
const TAGS: &[(&str, &str)] = &[
    (
        "users",
        "Accounts, tokens (OAuth2 password and refresh grants) and profiles.",
    ),
    ("products", "The catalog: anyone browses, admins change it."),
    (
        "inventory",
        "Stock levels and adjustments; reservations for operators.",
    ),
    ("orders", "Placing, paying for and following orders."),
    (
        "payments",
        "Stripe Checkout sessions, the shopper's return, Stripe's webhooks.",
    ),
    ("notifications", "The emails mart sent, per user."),
    ("health", "Liveness, readiness and the cluster view."),
];

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi.servers = Some(vec![Server::new("/")]);
        openapi.tags = Some(
            TAGS.iter()
                .map(|(name, description)| {
                    TagBuilder::new()
                        .name(*name)
                        .description(Some(*description))
                        .build()
                })
                .collect(),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                complete(path, operation);
            }
        }
    }
}

/// Adds the statuses `operation` can answer that its route does not list,
/// and makes every error body a problem document.
fn complete(path: &str, operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let has_query = operation.parameters.as_ref().is_some_and(|params| {
        params.iter().any(|p| {
            matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
        })
    });
    // Reads the caller-free health endpoints and the document itself make no
    // service call.
    let calls_a_service = !matches!(path, "/health/live");
    let mut shared: Vec<(&str, &str)> = Vec::new();
    if has_body {
        shared.extend([
            (
                "400",
                "the body is not well-formed (JSON or form) for this operation",
            ),
            ("413", "the body is larger than the edge accepts"),
            (
                "415",
                "the body's content type is not one this operation reads",
            ),
            ("422", "a field is invalid (named in `errors`)"),
        ]);
    }
    if has_query {
        shared.push(("422", "a query parameter is invalid (named in `errors`)"));
    }
    if secured {
        shared.extend([
            (
                "401",
                "no valid bearer token (missing, malformed, expired or revoked)",
            ),
            ("403", "not allowed for this caller"),
        ]);
    }
    if path.contains('{') || has_body {
        shared.push((
            "404",
            "no such resource (the path's, or one the body names)",
        ));
    }
    if calls_a_service {
        shared.extend([
            (
                "503",
                "the service is unreachable or briefly overloaded; see Retry-After",
            ),
            ("504", "the request's deadline ran out (`--call-timeout`)"),
        ]);
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response) {
            as_problem(response);
        }
    }
}

fn problem_response(description: &str) -> Response {
    let mut response = ResponseBuilder::new().description(description).build();
    as_problem(&mut response);
    response
}

/// RFC 9457: errors are `application/problem+json` documents (a readiness
/// report's 503 is one too, with its report as extension members).
fn as_problem(response: &mut Response) {
    let schema = response
        .content
        .shift_remove("application/json")
        .or_else(|| response.content.shift_remove("application/problem+json"));
    let content = match schema {
        Some(RefOr::T(content)) if content.schema.is_some() => content,
        _ => Content::new(Some(Ref::from_schema_name("Problem"))),
    };
    response.content.clear();
    response
        .content
        .insert("application/problem+json".to_owned(), RefOr::T(content));
}
