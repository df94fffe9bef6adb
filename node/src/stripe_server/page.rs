//! The test server's checkout page (Pay and Cancel), its test controls, and
//! webhooks signed as Stripe signs them.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::{Shared, now, random_id, session, update_session};

pub(super) async fn checkout_page(
    State(shared): State<Shared>,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = session(&shared, &id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_owned()),
        )
            .into_response();
    };
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let code = session["currency"].as_str().unwrap_or("usd");
    // In the currency's own minor units: ¥1500 is 1500 JPY, $15 is 15.00 USD.
    let amount = match code.parse::<mart_schema::Currency>() {
        Ok(currency) => mart_schema::Money::new(amount, currency).to_string(),
        Err(_) => format!("{amount} {} (minor units)", code.to_uppercase()),
    };
    let state = session["status"].as_str().unwrap_or("open");
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mart test checkout</title></head>\
         <body><h1>mart's Stripe test checkout</h1>\
         <p>This is not Stripe: no money moves. Session <code>{id}</code> is <b>{state}</b>.</p>\
         <p>Amount: {amount}</p>\
         <form method=\"post\" action=\"/c/pay/{id}/pay\"><button type=\"submit\">Pay</button></form>\
         <form method=\"post\" action=\"/c/pay/{id}/cancel\"><button type=\"submit\">Cancel</button></form>\
         </body></html>"
    );
    Html(page).into_response()
}

fn with_session_id(url: &str, id: &str) -> String {
    url.replace("{CHECKOUT_SESSION_ID}", id)
}

/// Marks an open session paid; `None` when it cannot be paid.
fn mark_paid(shared: &Shared, id: &str) -> Option<Value> {
    let current = session(shared, id)?;
    if current["status"] != "open" {
        return None;
    }
    update_session(shared, id, |s| {
        s["status"] = json!("complete");
        s["payment_status"] = json!("paid");
        s["payment_intent"] = json!(random_id("pi"));
    })
}

pub(super) async fn pay(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(paid) = mark_paid(&shared, &id) else {
        return (
            StatusCode::CONFLICT,
            Html("<h1>This session cannot be paid</h1>".to_owned()),
        )
            .into_response();
    };
    deliver(&shared, "checkout.session.completed", paid.clone()).await;
    let success = paid["success_url"].as_str().unwrap_or("/");
    Redirect::to(&with_session_id(success, &id)).into_response()
}

pub(super) async fn cancel(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(session) = session(&shared, &id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_owned()),
        )
            .into_response();
    };
    let back = session["cancel_url"].as_str().unwrap_or("/");
    Redirect::to(&with_session_id(back, &id)).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct PayQuietly {
    #[serde(default)]
    webhook: Option<bool>,
}

/// Pays a session; `?webhook=false` leaves the webhook undelivered.
pub(super) async fn pay_quietly(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(options): Query<PayQuietly>,
) -> Response {
    let Some(paid) = mark_paid(&shared, &id) else {
        return StatusCode::CONFLICT.into_response();
    };
    if options.webhook.unwrap_or(true) {
        deliver(&shared, "checkout.session.completed", paid.clone()).await;
    }
    axum::Json(paid).into_response()
}

/// Delivers a session's `checkout.session.completed` again (a duplicate, as
/// Stripe sometimes sends) and returns the exact event and signature used.
pub(super) async fn resend_completed(
    State(shared): State<Shared>,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = session(&shared, &id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (body, signature) = event_bytes(&shared, "checkout.session.completed", session);
    send(&shared, &body, &signature).await;
    axum::Json(json!({"event": String::from_utf8_lossy(&body), "signature": signature}))
        .into_response()
}

fn event_bytes(shared: &Shared, kind: &str, object: Value) -> (Vec<u8>, String) {
    let event = json!({
        "id": random_id("evt"),
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": now(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
        "data": {"object": object},
    });
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let signature = mart_actors::payments::webhook::signature_header(
        &shared.config.webhook_secret,
        now(),
        &body,
    );
    (body, signature)
}

pub(super) async fn deliver(shared: &Shared, kind: &str, object: Value) {
    let (body, signature) = event_bytes(shared, kind, object);
    send(shared, &body, &signature).await;
}

async fn send(shared: &Shared, body: &[u8], signature: &str) {
    let Some(url) = &shared.config.webhook_url else {
        return;
    };
    // The exact bytes that were signed.
    let outcome = shared
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    match outcome {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            tracing::warn!(status = %response.status(), "stripe test server: webhook refused")
        }
        Err(e) => tracing::warn!(error = %e, "stripe test server: webhook not delivered"),
    }
}
