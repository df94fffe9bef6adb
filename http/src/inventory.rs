//! Stock levels and (for operators) reservations: `/inventory/{product_id}`,
//! `/inventory/reservations`, admin only; and `/availability`, what anyone
//! browsing may know of it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mart_schema::inventory::{
    Availability, AvailabilityQuery, Reservation, ReserveRequest, StockLevels, StockPatch,
};
use mart_schema::user::Caller;
use mart_schema::{FieldErrors, OrderId, ProductId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use mart_actors::inventory::Settle;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Path, Query};
use crate::products::product_id;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(availability))
        .routes(routes!(get_levels, change_levels))
        .routes(routes!(reserve))
        .routes(routes!(get_reservation))
        .routes(routes!(commit_reservation))
        .routes(routes!(release_reservation))
        .routes(routes!(return_reservation))
}

/// Most products one availability request may name.
const MAX_IDS: usize = 100;

/// Whether products can be bought, for anyone browsing: `in_stock`, `low`
/// (with how many are `left`), `sold_out` or `unknown`; in the order asked.
#[utoipa::path(get, path = "/availability", tag = "inventory", params(AvailabilityQuery),
    responses((status = 200, description = "OK", body = Vec<Availability>), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn availability(
    State(state): State<AppState>,
    Query(query): Query<AvailabilityQuery>,
) -> Result<Json<Vec<Availability>>, ApiError> {
    let ids: Result<Vec<ProductId>, _> = query
        .ids
        .split(',')
        .map(|id| id.trim().parse::<ProductId>())
        .collect();
    let ids = match ids {
        Ok(ids) if (1..=MAX_IDS).contains(&ids.len()) => ids,
        Ok(_) => {
            let why = format!("must name 1 to {MAX_IDS} product ids");
            return Err(ApiError::invalid(FieldErrors::single("ids", why)));
        }
        Err(_) => {
            let why = "must be product ids separated by commas";
            return Err(ApiError::invalid(FieldErrors::single("ids", why)));
        }
    };
    Ok(Json(
        state.inventory.availability(Caller::Anonymous, ids).await?,
    ))
}

/// A product's stock: on hand, reserved, available.
#[utoipa::path(get, path = "/inventory/{product_id}", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses((status = 200, description = "OK", body = StockLevels), (status = 404, description = "no such resource", body = Problem)))]
async fn get_levels(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<StockLevels>, ApiError> {
    Ok(Json(
        state.inventory.levels(caller, product_id(&id)?).await?,
    ))
}

/// Adjust stock by `{"adjust": n, "reason": "..."}` or set `{"on_hand": n}`.
/// Going below what is reserved (or below 0) is a 409.
#[utoipa::path(patch, path = "/inventory/{product_id}", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    request_body = StockPatch,
    responses((status = 200, description = "OK", body = StockLevels), (status = 409, description = "conflicts with the current state", body = Problem), (status = 422, description = "a field is invalid (named in `errors`)", body = Problem)))]
async fn change_levels(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(patch): Body<StockPatch>,
) -> Result<Json<StockLevels>, ApiError> {
    let product = product_id(&id)?;
    let change = patch.change().map_err(ApiError::invalid)?;
    Ok(Json(state.inventory.change(caller, product, change).await?))
}

/// Hold stock for an order: every line or none; idempotent by `order_id`.
#[utoipa::path(post, path = "/inventory/reservations", tag = "inventory", security(("bearer" = [])),
    request_body = ReserveRequest,
    responses((status = 201, description = "created", body = Reservation), (status = 409, description = "insufficient stock", body = Problem)))]
async fn reserve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(request): Body<ReserveRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let fields: Vec<(ProductId, String)> = request
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| (line.product_id, format!("lines[{i}].product_id")))
        .collect();
    let reservation = state
        .inventory
        .reserve(caller, request)
        .await
        .map_err(|e| ApiError::from(e).at_line(&fields))?;
    Ok((StatusCode::CREATED, Json(reservation)))
}

/// A reservation and its lines.
#[utoipa::path(get, path = "/inventory/reservations/{order_id}", tag = "inventory", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, description = "OK", body = Reservation), (status = 404, description = "no such resource", body = Problem)))]
async fn get_reservation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(order): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    Ok(Json(
        state
            .inventory
            .reservation(caller, order_id(&order)?)
            .await?,
    ))
}

/// Turn a reservation into a sale.
#[utoipa::path(post, path = "/inventory/reservations/{order_id}/commit", tag = "inventory", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, description = "OK", body = Reservation), (status = 404, description = "no such resource", body = Problem), (status = 409, description = "conflicts with the current state", body = Problem)))]
async fn commit_reservation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(order): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    let order = order_id(&order)?;
    Ok(Json(
        state
            .inventory
            .settle(caller, order, Settle::Commit)
            .await?,
    ))
}

/// Give reserved stock back.
#[utoipa::path(post, path = "/inventory/reservations/{order_id}/release", tag = "inventory", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, description = "OK", body = Reservation), (status = 404, description = "no such resource", body = Problem), (status = 409, description = "conflicts with the current state", body = Problem)))]
async fn release_reservation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(order): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    let order = order_id(&order)?;
    Ok(Json(
        state
            .inventory
            .settle(caller, order, Settle::Release)
            .await?,
    ))
}

/// Put sold (committed) stock back on hand, as when a paid order is cancelled.
#[utoipa::path(post, path = "/inventory/reservations/{order_id}/return", tag = "inventory", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, description = "OK", body = Reservation), (status = 404, description = "no such resource", body = Problem), (status = 409, description = "conflicts with the current state", body = Problem)))]
async fn return_reservation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(order): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    let order = order_id(&order)?;
    Ok(Json(
        state
            .inventory
            .settle(caller, order, Settle::Return)
            .await?,
    ))
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such reservation"))
}
