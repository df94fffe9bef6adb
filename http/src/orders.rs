//! Orders (the seed's paths, kept): `/orders`, `/orders/{id}`, `/my-orders`.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mart_schema::order::{Order, OrderQuery, PlaceOrder, StatusChange};
use mart_schema::{FieldErrors, OrderId, Page, ProductId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Path, Query};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, place_order))
        .routes(routes!(my_orders))
        .routes(routes!(get_order, change_order))
}

/// Place an order: prices from the catalog, stock reserved for every line or
/// none. Send an `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])),
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "same key and body within 24 h: the first answer again")),
    responses(
        (status = 201, description = "created", body = Order),
        (status = 409, description = "insufficient stock, or the same key is still running", body = Problem),
        (status = 422, description = "invalid items, unknown product, mixed currencies, or key reused with another body", body = Problem),
    ))]
async fn place_order(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Body(request): Body<PlaceOrder>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    // A shortage names the line it is about, as a 422 names its field.
    let fields: Vec<(ProductId, String)> = match &request {
        PlaceOrder::Items { items } => items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.product_id, format!("items[{i}].product_id")))
            .collect(),
        PlaceOrder::Single(item) => vec![(item.product_id, "product_id".into())],
    };
    let mart_actors::orders::Placed { order, replayed } = state
        .orders
        .place(caller, key, request.into_items())
        .await
        .map_err(|e| ApiError::from(e).at_line(&fields))?;
    let mut response = (StatusCode::CREATED, Json(order)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The caller's orders (an admin sees all), newest first; filter by `status`.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, description = "OK", body = Page<Order>), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn list_orders(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(query): Query<OrderQuery>,
) -> Result<Json<Page<Order>>, ApiError> {
    Ok(Json(state.orders.list(caller, query, false).await?))
}

/// The caller's own orders (`{items: []}` when there are none).
#[utoipa::path(get, path = "/my-orders", tag = "orders", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, description = "OK", body = Page<Order>)))]
async fn my_orders(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(query): Query<OrderQuery>,
) -> Result<Json<Page<Order>>, ApiError> {
    Ok(Json(state.orders.list(caller, query, true).await?))
}

/// One order (its owner or an admin).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, description = "OK", body = Order), (status = 404, description = "no such resource", body = Problem)))]
async fn get_order(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(state.orders.get(caller, order_id(&id)?).await?))
}

/// Move an order: `{"status": "cancelled"}` (owner, before shipping; admin),
/// `shipped` and `delivered` (admin). Also accepts the seed's `?status=`.
#[utoipa::path(patch, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id"), StatusChange),
    request_body = StatusChange,
    responses((status = 200, description = "OK", body = Order), (status = 404, description = "no such resource", body = Problem),
              (status = 409, description = "not allowed from the current status", body = Problem)))]
async fn change_order(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(query): Query<StatusChange>,
    request: Request,
) -> Result<Json<Order>, ApiError> {
    let id = order_id(&id)?;
    // The body is optional (the seed sent the status in the query string),
    // and may come chunked, without a Content-Length: read it to know.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::BODY_LIMIT)
        .await
        .map_err(|_| crate::error::too_large())?;
    let body = if bytes.trim_ascii().is_empty() {
        None
    } else {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Body(change) = Body::<StatusChange>::from_request(request, &state).await?;
        change.status
    };
    let requested = body
        .or(query.status)
        .ok_or_else(|| ApiError::invalid(FieldErrors::single("status", "is required")))?;
    let status = requested
        .parse()
        .map_err(|e: String| ApiError::invalid(FieldErrors::single("status", e)))?;
    Ok(Json(state.orders.transition(caller, id, status).await?))
}

/// The optional `Idempotency-Key` header.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::invalid(FieldErrors::single(
                    "Idempotency-Key",
                    "must be visible ASCII",
                ))
            })
        })
        .transpose()
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such order"))
}
