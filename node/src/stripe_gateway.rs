//! The payment service's gateway to Stripe Checkout, through async-stripe:
//! Stripe itself, or mart's Stripe test server at `MART_STRIPE_API_BASE`.

use std::collections::HashMap;

use futures::future::BoxFuture;
use mart_actors::payments::gateway::{CheckoutGateway, CheckoutSession, GatewayError, NewCheckout};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use stripe_checkout::{CheckoutSessionMode, CheckoutSessionStatus};

/// Stripe Checkout through async-stripe.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway").finish_non_exhaustive()
    }
}

impl StripeGateway {
    /// A client for `secret_key`, talking to `api_base` (Stripe's by default).
    pub fn new(secret_key: &str, api_base: Option<&str>) -> anyhow::Result<Self> {
        let mut builder = stripe::ClientBuilder::new(secret_key);
        if let Some(base) = api_base {
            // async-stripe appends `v1/...` to the base.
            builder = builder.url(format!("{}/", base.trim_end_matches('/')));
        }
        Ok(Self {
            client: builder
                .build()
                .map_err(|e| anyhow::anyhow!("Stripe client: {e}"))?,
        })
    }
}

fn failed(e: StripeError) -> GatewayError {
    match e {
        StripeError::Stripe(_, 404) => GatewayError::NotFound,
        StripeError::Stripe(errors, status) if status < 500 => GatewayError::Refused(
            errors
                .message
                .clone()
                .unwrap_or_else(|| format!("status {status}")),
        ),
        other => GatewayError::Unreachable(other.to_string()),
    }
}

fn session_of(session: stripe_checkout::CheckoutSession) -> CheckoutSession {
    CheckoutSession {
        id: session.id.as_str().to_owned(),
        url: session.url,
        status: session.status.map_or_else(
            || "open".to_owned(),
            |s: CheckoutSessionStatus| s.as_str().to_owned(),
        ),
        payment_status: session.payment_status.as_str().to_owned(),
        payment_intent: session.payment_intent.map(|p| p.id().as_str().to_owned()),
    }
}

impl CheckoutGateway for StripeGateway {
    fn create_session(
        &self,
        checkout: NewCheckout,
    ) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>> {
        Box::pin(async move {
            let currency: stripe_types::Currency = checkout.currency.parse().map_err(|_| {
                GatewayError::Refused(format!("unknown currency {}", checkout.currency))
            })?;
            let lines: Vec<CreateCheckoutSessionLineItems> = checkout
                .lines
                .iter()
                .map(|line| {
                    let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency.clone());
                    price.unit_amount = Some(line.unit_amount);
                    price.product_data = Some(ProductData::new(line.name.clone()));
                    let mut item = CreateCheckoutSessionLineItems::new();
                    item.price_data = Some(price);
                    item.quantity = Some(line.quantity);
                    item
                })
                .collect();
            let metadata = HashMap::from([
                ("order_id".to_owned(), checkout.order_id.clone()),
                ("payment_id".to_owned(), checkout.payment_id.clone()),
            ]);
            let key = IdempotencyKey::new(&checkout.idempotency_key)
                .map_err(|e| GatewayError::Refused(e.to_string()))?;
            let session = CreateCheckoutSession::new()
                .mode(CheckoutSessionMode::Payment)
                .line_items(lines)
                .success_url(checkout.success_url)
                .cancel_url(checkout.cancel_url)
                .client_reference_id(checkout.order_id)
                .metadata(metadata)
                .expires_at(checkout.expires_at)
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key))
                .send(&self.client)
                .await
                .map_err(failed)?;
            Ok(session_of(session))
        })
    }

    fn session(&self, id: String) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>> {
        Box::pin(async move {
            let session = RetrieveCheckoutSession::new(id.as_str())
                .send(&self.client)
                .await
                .map_err(failed)?;
            Ok(session_of(session))
        })
    }

    fn expire_session(&self, id: String) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>> {
        Box::pin(async move {
            let session = ExpireCheckoutSession::new(id.as_str())
                .send(&self.client)
                .await
                .map_err(failed)?;
            Ok(session_of(session))
        })
    }

    fn refund(
        &self,
        payment_intent: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            let key = IdempotencyKey::new(&idempotency_key)
                .map_err(|e| GatewayError::Refused(e.to_string()))?;
            stripe_core::refund::CreateRefund::new()
                .payment_intent(payment_intent)
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key))
                .send(&self.client)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }
}
