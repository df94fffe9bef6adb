//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mart_schema::Service;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Auth, Path};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(cluster))
        .routes(routes!(owner))
}

fn admin_only(caller: &mart_schema::user::Caller) -> Result<(), ApiError> {
    // The edge's own operational endpoints: only admins see the topology.
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you are not allowed to do this",
        ))
    }
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "OK")))]
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"state": "live", "status": 200}))
}

/// Ready for this node's job: every hosted service has its database and
/// joined its group, and the edge reaches at least one service in the
/// cluster. `reachable` says which services requests can reach now.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "ready; `reachable` lists each service"), (status = 503, description = "a hosted service lacks its database, or no service is reachable; see Retry-After")))]
async fn ready(State(state): State<AppState>) -> Response {
    let readiness = state.hosted.readiness().await;
    let mut report = serde_json::to_value(&readiness).unwrap_or_default();
    if readiness.ready {
        // `status` is the HTTP status in both answers, as in a problem
        // document; `state` says it in words.
        if let Some(fields) = report.as_object_mut() {
            fields.insert("status".into(), 200.into());
        }
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
    responses((status = 200, description = "OK"), (status = 403, description = "not allowed for this caller", body = crate::error::Problem)))]
async fn cluster(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&caller)?;
    Ok(Json((state.cluster)().await))
}

/// The services whose entities have owners (documentation of a path).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum EntityService {
    Inventory,
    Orders,
}

/// Which node owns an entity now (admin): a product's stock (`inventory`) or
/// an order (`orders`), as this node's view of the membership places it.
#[utoipa::path(get, path = "/cluster/owners/{service}/{id}", tag = "health", security(("bearer" = [])),
    params(("service" = inline(EntityService), Path, description = "`inventory` or `orders`"),
           ("id" = String, Path, description = "product id (inventory) or order id (orders)")),
    responses((status = 200, description = "OK"), (status = 403, description = "not allowed for this caller", body = crate::error::Problem),
              (status = 422, description = "a field is invalid (named in `errors`)", body = crate::error::Problem), (status = 503, description = "a service is unreachable; see Retry-After", body = crate::error::Problem)))]
async fn owner(
    Auth(caller): Auth,
    Path((service, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&caller)?;
    let mut errors = mart_schema::FieldErrors::default();
    let service = match service.parse::<Service>() {
        Ok(s @ (Service::Inventory | Service::Orders)) => Some(s),
        _ => {
            errors.add(
                "service",
                "must be inventory or orders (the services with entities)",
            );
            None
        }
    };
    let key = uuid::Uuid::parse_str(&id)
        .map_err(|_| errors.add("id", "must be a UUID"))
        .ok();
    errors.into_result().map_err(ApiError::invalid)?;
    let (Some(service), Some(key)) = (service, key) else {
        return Err(ApiError::internal("validated above"));
    };
    let node = mart_actors::owners::owner_node(service, key)
        .ok_or_else(|| ApiError::unavailable(format!("no {service} node is live")))?;
    Ok(Json(
        serde_json::json!({"service": service.name(), "id": key, "node": node}),
    ))
}
