//! The user service's paths (the seed's, kept): `/register`, `/token`,
//! `/user_profile`, `/users`, `/users/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mart_schema::user::{Credentials, Registration, User, UserError, UserPatch};
use mart_schema::{Page, PageRequest, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Query};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(issue_token))
        .routes(routes!(user_profile))
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
}

/// Register a customer account.
#[utoipa::path(post, path = "/register", tag = "users",
    request_body(content = Registration, content_type = "application/json"),
    responses(
        (status = 201, body = User),
        (status = 409, description = "username or email taken", body = Problem),
        (status = 422, description = "a field is invalid", body = Problem),
    ))]
async fn register(
    State(state): State<AppState>,
    Body(registration): Body<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state.users.register(registration).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Log in (OAuth2 password form or JSON); the username may be the email.
#[utoipa::path(post, path = "/token", tag = "users",
    request_body(content = Credentials, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = mart_schema::user::TokenGrant),
        (status = 401, description = "wrong credentials", body = Problem),
    ))]
async fn issue_token(
    State(state): State<AppState>,
    Body(credentials): Body<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.users.issue_token(credentials).await?))
}

/// The caller's own account.
#[utoipa::path(get, path = "/user_profile", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = Problem)))]
async fn user_profile(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<User>, ApiError> {
    let me = caller
        .user_id()
        .ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    match state.users.get(caller, me).await {
        Ok(user) => Ok(Json(user)),
        // The token outlived its account.
        Err(mart_actors::CallError::Rejected(UserError::NotFound)) => {
            Err(ApiError::unauthorized("this account no longer exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// All users (admin), in registration order.
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, description = "page size, 1 to 100 (default 20)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = Page<User>), (status = 403, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(page): Query<PageRequest>,
) -> Result<Json<Page<User>>, ApiError> {
    Ok(Json(state.users.list(caller, page).await?))
}

/// One user (admin, or the user themself).
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = User), (status = 404, body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.users.get(caller, user_id(&id)?).await?))
}

/// Change email or password (self or admin) or role (admin).
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    request_body = UserPatch,
    responses((status = 200, body = User), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(patch): Body<UserPatch>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(
        state.users.update(caller, user_id(&id)?, patch).await?,
    ))
}

/// Delete a user (admin).
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.users.delete(caller, user_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A malformed id names no user: 404, like an unknown one.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("no such user"))
}
