//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
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
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (ok, report) = (state.readiness)().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
