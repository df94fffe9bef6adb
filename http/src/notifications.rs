//! The email log (the seed's paths, kept): `/notifications`, `/notifications/{id}`
//! (admin) and `/my-notifications`.

use axum::Json;
use axum::extract::State;
use mart_schema::notification::{Notification, NotificationQuery};
use mart_schema::{NotificationId, Page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Path, Query};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(get_notification))
        .routes(routes!(my_notifications))
}

/// Every email (admin), newest first; filter by `status` and `user_id`.
#[utoipa::path(get, path = "/notifications", tag = "notifications", security(("bearer" = [])), params(NotificationQuery),
    responses((status = 200, description = "OK", body = Page<Notification>), (status = 403, description = "not allowed for this caller", body = Problem)))]
async fn list_notifications(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(query): Query<NotificationQuery>,
) -> Result<Json<Page<Notification>>, ApiError> {
    Ok(Json(state.notifications.list(caller, query, false).await?))
}

/// One email (admin).
#[utoipa::path(get, path = "/notifications/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "notification id")),
    responses((status = 200, description = "OK", body = Notification), (status = 404, description = "no such resource", body = Problem)))]
async fn get_notification(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Notification>, ApiError> {
    let id: NotificationId = id
        .parse()
        .map_err(|_| ApiError::not_found("no such notification"))?;
    Ok(Json(state.notifications.get(caller, id).await?))
}

/// The caller's own emails (`{items: []}` when there are none).
#[utoipa::path(get, path = "/my-notifications", tag = "notifications", security(("bearer" = [])), params(NotificationQuery),
    responses((status = 200, description = "OK", body = Page<Notification>)))]
async fn my_notifications(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(query): Query<NotificationQuery>,
) -> Result<Json<Page<Notification>>, ApiError> {
    Ok(Json(state.notifications.list(caller, query, true).await?))
}
