//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Auth;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(cluster))
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "live"}))
}

/// Hosted services have their database and joined their groups, and the
/// services the edge needs are reachable somewhere in the cluster.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200), (status = 503)))]
async fn ready(State(state): State<AppState>) -> Response {
    let (ok, mut report) = (state.readiness)().await;
    if ok {
        return (StatusCode::OK, Json(report)).into_response();
    }
    // Not ready is an error like any other: a problem document, with the
    // report's fields as extension members.
    if let Some(fields) = report.as_object_mut() {
        fields.insert("type".into(), "urn:mart:problem:not-ready".into());
        fields.insert("title".into(), "Service Unavailable".into());
        fields.insert("status".into(), 503.into());
        fields.insert("detail".into(), "this node is not ready to serve".into());
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "1"),
        ],
        report.to_string(),
    )
        .into_response()
}

/// The cluster as this node sees it (admin): nodes, the services each hosts,
/// and which are reachable.
#[utoipa::path(get, path = "/cluster", tag = "health", security(("bearer" = [])),
    responses((status = 200), (status = 403, body = crate::error::Problem)))]
async fn cluster(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    // The edge's own operational endpoint: only admins see the topology.
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you are not allowed to do this",
        ));
    }
    Ok(Json((state.cluster)().await))
}
