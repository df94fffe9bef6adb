//! The user service's paths (the seed's, kept): `/register`, `/token`,
//! `/user_profile`, `/users`, `/users/{id}`; and sessions: refresh tokens on
//! `/token`, `/logout`, password change and reset.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mart_schema::FieldErrors;
use mart_schema::user::{
    Credentials, Logout, PasswordChange, PasswordReset, Registration, TokenRequest, User,
    UserError, UserPatch,
};
use mart_schema::{Page, PageRequest, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, OAuthError, Problem};
use crate::extract::{Auth, Body, Path, Query};
use crate::throttle::ClientAddress;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(issue_token))
        .routes(routes!(logout))
        .routes(routes!(user_profile))
        .routes(routes!(change_password))
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(reset_password))
        .routes(routes!(jwks))
}

/// Register a customer account. Throttled per client address (429).
#[utoipa::path(post, path = "/register", tag = "users",
    request_body(content = Registration, content_type = "application/json"),
    responses(
        (status = 201, description = "created", body = User),
        (status = 409, description = "username or email taken", body = Problem),
        (status = 422, description = "a field is invalid, or the password too easy to guess", body = Problem),
        (status = 429, description = "too many attempts from this address; see Retry-After", body = Problem),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Body(registration): Body<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    state.throttle.attempt(None, address)?;
    let user = state.users.register(registration).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Log in (`grant_type=password`, the default; the username may be the
/// email) or renew (`grant_type=refresh_token`). Answers an access token and
/// a single-use refresh token; errors carry RFC 6749's `error` code. Never
/// cached. Throttled per account and per client address (429).
#[utoipa::path(post, path = "/token", tag = "users",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "a new token pair", body = mart_schema::user::TokenGrant),
        (status = 400, description = "`invalid_grant` (refresh token unknown, expired or reused) or `unsupported_grant_type`", body = Problem),
        (status = 401, description = "`invalid_grant`: wrong username or password", body = Problem),
        (status = 422, description = "`invalid_request`: a required field is missing", body = Problem),
        (status = 429, description = "too many attempts; see Retry-After", body = Problem),
    ))]
async fn issue_token(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Body(request): Body<TokenRequest>,
) -> Response {
    let outcome = grant(&state, address, request).await;
    let mut response = match outcome {
        Ok(grant) => Json(grant).into_response(),
        Err(e) => e.into_response(),
    };
    // RFC 6749 §5.1: token responses are never stored.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn grant(
    state: &AppState,
    address: Option<std::net::IpAddr>,
    request: TokenRequest,
) -> Result<mart_schema::user::TokenGrant, ApiError> {
    let missing = |field: &str| ApiError {
        oauth: Some(OAuthError::InvalidRequest),
        ..ApiError::invalid(FieldErrors::single(field, "is required"))
    };
    match request.grant_type.as_deref().unwrap_or("password") {
        "password" => {
            let username = request.username.ok_or_else(|| missing("username"))?;
            let password = request.password.ok_or_else(|| missing("password"))?;
            state.throttle.attempt(Some(&username), address)?;
            let credentials = Credentials { username, password };
            Ok(state.users.issue_token(credentials).await?)
        }
        "refresh_token" => {
            let secret = request
                .refresh_token
                .ok_or_else(|| missing("refresh_token"))?;
            state.throttle.attempt(None, address)?;
            Ok(state.users.refresh(secret).await?)
        }
        other => Err(ApiError {
            oauth: Some(OAuthError::UnsupportedGrantType),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported-grant-type",
                format!("grant_type {other:?} is not supported: use password or refresh_token"),
            )
        }),
    }
}

/// End a session: its refresh token and every access token issued in it
/// stop working (on every node within a second). Unknown tokens are fine:
/// the session is over either way.
#[utoipa::path(post, path = "/logout", tag = "users",
    request_body(content = Logout, content_type = "application/x-www-form-urlencoded"),
    responses((status = 204, description = "the session is over"),
              (status = 422, description = "refresh_token is missing", body = Problem)))]
async fn logout(
    State(state): State<AppState>,
    Body(request): Body<Logout>,
) -> Result<StatusCode, ApiError> {
    let secret = request
        .refresh_token
        .ok_or_else(|| ApiError::invalid(FieldErrors::single("refresh_token", "is required")))?;
    state.users.logout(secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change your own password, giving the current one. Every token issued
/// before (in every session) stops working; log in again.
#[utoipa::path(post, path = "/user_profile/password", tag = "users", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204, description = "changed; earlier tokens are revoked"),
              (status = 401, description = "not signed in, or the token is invalid, expired or revoked", body = Problem),
              (status = 422, description = "wrong current password, or the new one too easy to guess", body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(change): Body<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state.users.change_password(caller, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a user's password (admin), revoking every token they hold.
#[utoipa::path(post, path = "/users/{id}/password", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    request_body = PasswordReset,
    responses((status = 204, description = "reset; the user's tokens are revoked"),
              (status = 403, description = "not allowed for this caller", body = Problem), (status = 404, description = "no such resource", body = Problem),
              (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn reset_password(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(reset): Body<PasswordReset>,
) -> Result<StatusCode, ApiError> {
    state
        .users
        .reset_password(caller, user_id(&id)?, reset)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(get, path = "/user_profile", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = User), (status = 401, description = "not signed in, or the token is invalid, expired or revoked", body = Problem)))]
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
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "page size, 1 to 100 (default 20)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "OK", body = Page<User>), (status = 403, description = "not allowed for this caller", body = Problem)))]
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
    responses((status = 200, description = "OK", body = User), (status = 404, description = "no such resource", body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.users.get(caller, user_id(&id)?).await?))
}

/// Change email (self or admin), password or role (admin). An owner
/// changes their password with `POST /user_profile/password`. A password or
/// role change revokes the user's earlier tokens.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    request_body = UserPatch,
    responses((status = 200, description = "OK", body = User), (status = 403, description = "not allowed for this caller", body = Problem),
              (status = 404, description = "no such resource", body = Problem), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
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
    responses((status = 204, description = "done, no content"), (status = 403, description = "not allowed for this caller", body = Problem), (status = 404, description = "no such resource", body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.users.delete(caller, user_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify mart's access tokens (RFC 7517), so another
/// service or a Kafka consumer can check a token without holding a secret.
/// Empty when tokens are HS256 (`MART_JWT_ALGORITHM=hs256`, the default).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "users",
    responses((status = 200, description = "`{keys: [...]}`: Ed25519 keys, each with its `kid`")))]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.jwks().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// A malformed id names no user: 404, like an unknown one.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("no such user"))
}
