//! Payments (the seed's paths, kept): `/payments`, `/payments/{id}`, the Stripe
//! redirects `/stripe-callback/payment-success/` and `/payment-fail/`, and the
//! webhook `/stripe/webhook`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mart_schema::order::OrderStatus;
use mart_schema::payment::{Payment, PaymentOutcome, PaymentRequest, PaymentStatus};
use mart_schema::user::Caller;
use mart_schema::{FieldErrors, OrderId, PaymentId};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Path, Query, RawBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_payment))
        .routes(routes!(get_payment))
        .routes(routes!(payment_success))
        .routes(routes!(payment_fail))
        .routes(routes!(stripe_webhook))
}

/// Pay for an order: a Stripe Checkout Session for the order's amount.
#[utoipa::path(post, path = "/payments", tag = "payments", security(("bearer" = [])),
    request_body = PaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "same key and body within 24 h: the first answer again")),
    responses((status = 201, description = "created", body = Payment), (status = 404, description = "no such resource", body = Problem),
              (status = 409, description = "the order is not awaiting payment", body = Problem)))]
async fn create_payment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Body(request): Body<PaymentRequest>,
) -> Result<Response, ApiError> {
    let key = crate::orders::idempotency_key(&headers)?;
    // Payments are started by the order service, which hands over the order.
    let started = state.orders.pay(caller, key, request.order_id).await?;
    let (payment, replayed) = (started.payment, started.replayed);
    let mut response = (StatusCode::CREATED, Json(payment)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// One payment (its owner or an admin).
#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, description = "OK", body = Payment), (status = 404, description = "no such resource", body = Problem)))]
async fn get_payment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let id: PaymentId = id
        .parse()
        .map_err(|_| ApiError::not_found("no such payment"))?;
    Ok(Json(state.payments.get(caller, id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Callback {
    session_id: Option<String>,
}

fn session_of(callback: Callback) -> Result<String, ApiError> {
    callback
        .session_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid(FieldErrors::single("session_id", "is required")))
}

/// Browsers go on to the storefront's page of the order (which shows what
/// became of the payment); API clients get JSON.
fn render(headers: &HeaderMap, outcome: PaymentOutcome) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !wants_html {
        return Json(outcome).into_response();
    }
    Redirect::to(&format!("/#/orders/{}", outcome.order_id)).into_response()
}

/// Where Stripe sends the shopper after paying. Asks Stripe; reloading is harmless.
#[utoipa::path(get, path = "/stripe-callback/payment-success", tag = "payments", params(Callback),
    responses((status = 200, description = "OK", body = PaymentOutcome), (status = 404, description = "no such resource", body = Problem)))]
async fn payment_success(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Result<Response, ApiError> {
    let outcome = state.payments.confirm(session_of(callback)?).await?;
    if outcome.status == PaymentStatus::Succeeded {
        order_hears_of_it(&state, outcome.order_id).await;
    }
    Ok(render(&headers, outcome))
}

/// The order service learns of a payment from `payment.succeeded` on the
/// outbox, usually within milliseconds. A shopper sent back here reads their
/// order next, so wait (briefly, at most a second) until it shows the payment.
async fn order_hears_of_it(state: &AppState, order: OrderId) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < give_up {
        match state.orders.get(Caller::Service, order).await {
            Ok(order) if order.status == OrderStatus::AwaitingPayment => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return,
        }
    }
}

/// Where Stripe sends the shopper who cancelled. The order can still be paid.
#[utoipa::path(get, path = "/stripe-callback/payment-fail", tag = "payments", params(Callback),
    responses((status = 200, description = "OK", body = PaymentOutcome), (status = 404, description = "no such resource", body = Problem)))]
async fn payment_fail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Result<Response, ApiError> {
    let outcome = state.payments.fail(session_of(callback)?).await?;
    Ok(render(&headers, outcome))
}

/// Stripe's events, verified against `Stripe-Signature` over the raw body.
#[utoipa::path(post, path = "/stripe/webhook", tag = "payments",
    request_body(content = String, content_type = "application/json", description = "the raw Stripe event"),
    responses((status = 200, description = "OK"), (status = 400, description = "bad signature", body = Problem)))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-signature",
                "missing Stripe-Signature",
            )
        })?;
    state
        .payments
        .webhook(body.to_vec(), signature.to_owned())
        .await?;
    Ok(StatusCode::OK)
}
