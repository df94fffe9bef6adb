//! mart's Stripe test server: the part of Stripe's API that mart uses, on the
//! wire exactly as Stripe speaks it, for machines that cannot reach Stripe.
//!
//! - `POST /v1/checkout/sessions` (form-encoded, nested keys), `GET
//!   /v1/checkout/sessions/{id}`, `POST /v1/checkout/sessions/{id}/expire`,
//!   `POST /v1/refunds`; bearer key check; `Idempotency-Key` replay; errors in
//!   Stripe's `{"error": {type, message, param}}` shape.
//! - A checkout page per session with Pay and Cancel buttons (plain forms).
//!   Pay marks the session paid, delivers a signed `checkout.session.completed`
//!   webhook and redirects (303) to `success_url`; Cancel redirects to
//!   `cancel_url`. Sessions past `expires_at` expire and send
//!   `checkout.session.expired`.
//! - Webhooks are signed as Stripe signs them: `Stripe-Signature:
//!   t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` over the exact bytes sent.
//! - Test controls under `/_test/`: pay without delivering the webhook, deliver
//!   a session's webhook again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

mod page;

use page::{cancel, checkout_page, deliver, pay, pay_quietly, resend_completed};

/// How the test server is set up.
#[derive(Debug, Clone)]
pub struct StripeTestConfig {
    /// The secret key clients must present (`Authorization: Bearer sk_test_...`).
    pub api_key: String,
    /// Where webhooks go, if anywhere.
    pub webhook_url: Option<String>,
    /// The `whsec_...` secret webhooks are signed with.
    pub webhook_secret: String,
    /// Base of the checkout page URLs (this server's address as browsers see it).
    pub public_base: String,
}

#[derive(Default)]
struct Books {
    sessions: HashMap<String, Value>,
    /// Idempotency-Key → (request body, status, response body)
    replies: HashMap<String, (Bytes, StatusCode, Value)>,
    refunds: HashMap<String, Value>,
}

#[derive(Clone)]
struct Shared {
    config: StripeTestConfig,
    books: Arc<Mutex<Books>>,
    http: reqwest::Client,
}

/// Serves the test server on `listener` until the task is dropped.
pub fn router(config: StripeTestConfig) -> Router {
    let shared = Shared {
        config,
        books: Arc::new(Mutex::new(Books::default())),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
    };
    tokio::spawn(expire_loop(shared.clone()));
    Router::new()
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/checkout/sessions/{id}", get(retrieve_session))
        .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
        .route("/v1/refunds", post(create_refund))
        .route("/c/pay/{id}", get(checkout_page))
        .route("/c/pay/{id}/pay", post(pay))
        .route("/c/pay/{id}/cancel", post(cancel))
        .route("/_test/sessions/{id}/pay", post(pay_quietly))
        .route("/_test/sessions/{id}/webhook", post(resend_completed))
        .with_state(shared)
}

fn stripe_error(status: StatusCode, kind: &str, message: &str, param: Option<&str>) -> Response {
    let code = param.map(|_| "parameter_missing");
    stripe_error_coded(status, kind, message, param, code)
}

fn stripe_error_coded(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let mut error = json!({"type": kind, "message": message});
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// The secret key as Stripe takes it: a bearer token, or HTTP Basic with the
/// key as the user name and no password (`curl -u sk_test_...:`).
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let key = shared.config.api_key.as_str();
    if let Some(token) = given.strip_prefix("Bearer ") {
        return token == key;
    }
    given
        .strip_prefix("Basic ")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|pair| pair.split_once(':').is_some_and(|(user, _)| user == key))
}

fn unauthorized() -> Response {
    stripe_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Invalid API Key provided.",
        None,
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}_test_{}", uuid::Uuid::new_v4().simple())
}

/// Replays the stored answer for a repeated Idempotency-Key, as Stripe does.
fn replay(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let key = headers.get("idempotency-key")?.to_str().ok()?;
    let books = shared.books.lock().ok()?;
    let (first_body, status, reply) = books.replies.get(key)?;
    if first_body != body {
        return Some(stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            None,
        ));
    }
    let mut response = (*status, axum::Json(reply.clone())).into_response();
    response.headers_mut().insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
    Some(response)
}

fn remember(shared: &Shared, headers: &HeaderMap, body: &Bytes, status: StatusCode, reply: &Value) {
    if let (Some(key), Ok(mut books)) = (
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
        shared.books.lock(),
    ) {
        books
            .replies
            .insert(key.to_owned(), (body.clone(), status, reply.clone()));
    }
}

async fn create_session(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Some(replayed) = replay(&shared, &headers, &body) {
        return replayed;
    }
    let form: HashMap<String, String> =
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(_) => {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "Invalid form body.",
                    None,
                );
            }
        };
    for required in ["mode", "success_url"] {
        if !form.contains_key(required) {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Missing required param: {required}."),
                Some(required),
            );
        }
    }
    let checkout = match parse_checkout(&form) {
        Ok(checkout) => checkout,
        Err(Invalid { message, param }) => {
            let kind = "invalid_request_error";
            return stripe_error(StatusCode::BAD_REQUEST, kind, &message, param.as_deref());
        }
    };
    let id = random_id("cs");
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": checkout.amount_total,
        "amount_total": checkout.amount_total,
        "automatic_tax": {"enabled": false, "liability": null, "status": null},
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": form.get("client_reference_id"),
        "created": checkout.created,
        "currency": checkout.currency,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer_email": form.get("customer_email"),
        "expires_at": checkout.expires_at,
        "livemode": false,
        "metadata": checkout.metadata,
        "mode": form.get("mode"),
        "payment_intent": null,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "shipping_options": [],
        "status": "open",
        "success_url": form.get("success_url"),
        "url": format!("{}/c/pay/{id}", shared.config.public_base),
    });
    if let Ok(mut books) = shared.books.lock() {
        books.sessions.insert(id, session.clone());
    }
    remember(&shared, &headers, &body, StatusCode::OK, &session);
    (StatusCode::OK, axum::Json(session)).into_response()
}

/// What a Checkout Session request asks for, checked as Stripe checks it.
/// Why Stripe would refuse a request: a 400 `invalid_request_error`.
struct Invalid {
    message: String,
    param: Option<String>,
}

struct NewSession {
    amount_total: i64,
    currency: Option<String>,
    created: i64,
    expires_at: i64,
    metadata: serde_json::Map<String, Value>,
}

fn parse_checkout(form: &HashMap<String, String>) -> Result<NewSession, Invalid> {
    let mut amount_total = 0i64;
    let mut currency = None;
    let mut i = 0;
    while let Some(quantity) = form.get(&format!("line_items[{i}][quantity]")) {
        let field = |name: &str| form.get(&format!("line_items[{i}][price_data][{name}]"));
        let (Some(unit), Some(cur), Ok(quantity)) = (
            field("unit_amount").and_then(|u| u.parse::<i64>().ok()),
            field("currency"),
            quantity.parse::<i64>(),
        ) else {
            return Err(Invalid {
                message: "Each line item needs price_data[currency], price_data[unit_amount] and quantity.".into(),
                param: Some(format!("line_items[{i}]")),
            });
        };
        amount_total += unit * quantity;
        currency = Some(cur.clone());
        i += 1;
    }
    if i == 0 {
        return Err(Invalid {
            message: "line_items is required in payment mode.".into(),
            param: Some("line_items".into()),
        });
    }
    let created = now();
    let expires_at = match form.get("expires_at").map(|e| e.parse::<i64>()) {
        None => created + 24 * 3600,
        Some(Ok(at)) if at >= created + 30 * 60 - 60 && at <= created + 24 * 3600 => at,
        Some(_) => {
            return Err(Invalid {
                message: "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.".into(),
                param: Some("expires_at".into()),
            });
        }
    };
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect();
    Ok(NewSession {
        amount_total,
        currency,
        created,
        expires_at,
        metadata,
    })
}

fn missing(kind: &str, id: &str) -> Response {
    stripe_error_coded(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No such {kind}: '{id}'"),
        Some("id"),
        Some("resource_missing"),
    )
}

fn session(shared: &Shared, id: &str) -> Option<Value> {
    shared.books.lock().ok()?.sessions.get(id).cloned()
}

fn update_session(shared: &Shared, id: &str, change: impl FnOnce(&mut Value)) -> Option<Value> {
    let mut books = shared.books.lock().ok()?;
    let session = books.sessions.get_mut(id)?;
    change(session);
    Some(session.clone())
}

async fn retrieve_session(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match session(&shared, &id) {
        Some(session) => axum::Json(session).into_response(),
        None => missing("checkout.session", &id),
    }
}

async fn expire_session(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Some(current) = session(&shared, &id) else {
        return missing("checkout.session", &id);
    };
    if current["status"] != "open" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Only Checkout Sessions with a status in [\"open\"] can be expired.",
            None,
        );
    }
    let expired = expire(&shared, &id).await.unwrap_or(current);
    axum::Json(expired).into_response()
}

async fn expire(shared: &Shared, id: &str) -> Option<Value> {
    let expired = update_session(shared, id, |s| s["status"] = json!("expired"))?;
    deliver(shared, "checkout.session.expired", expired.clone()).await;
    Some(expired)
}

async fn expire_loop(shared: Shared) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let due: Vec<String> = match shared.books.lock() {
            Ok(books) => books
                .sessions
                .values()
                .filter(|s| {
                    s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|at| at <= now())
                })
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect(),
            Err(_) => return,
        };
        for id in due {
            expire(&shared, &id).await;
        }
    }
}

async fn create_refund(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Some(replayed) = replay(&shared, &headers, &body) {
        return replayed;
    }
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map(|pairs| pairs.into_iter().collect())
            .unwrap_or_default();
    let Some(intent) = form.get("payment_intent") else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Missing required param: payment_intent.",
            Some("payment_intent"),
        );
    };
    let paid = shared.books.lock().ok().and_then(|books| {
        books
            .sessions
            .values()
            .find(|s| s["payment_intent"] == json!(intent) && s["payment_status"] == "paid")
            .cloned()
    });
    let Some(paid) = paid else {
        return missing("payment_intent", intent);
    };
    let amount = form
        .get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .or_else(|| paid["amount_total"].as_i64())
        .unwrap_or(0);
    let refund = json!({
        "id": random_id("re"),
        "object": "refund",
        "amount": amount,
        "charge": null,
        "created": now(),
        "currency": paid["currency"],
        "metadata": {},
        "payment_intent": intent,
        "status": "succeeded",
    });
    if let Ok(mut books) = shared.books.lock() {
        books.refunds.insert(
            refund["id"].as_str().unwrap_or_default().to_owned(),
            refund.clone(),
        );
    }
    remember(&shared, &headers, &body, StatusCode::OK, &refund);
    let charge = json!({
        "id": random_id("ch"), "object": "charge", "amount": paid["amount_total"], "amount_refunded": amount,
        "currency": paid["currency"], "payment_intent": intent, "refunded": true, "created": now(),
    });
    deliver(&shared, "charge.refunded", charge).await;
    (StatusCode::OK, axum::Json(refund)).into_response()
}
