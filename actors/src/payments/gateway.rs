//! The payment provider as the payment service sees it. The node supplies the
//! implementation (async-stripe against Stripe or mart's Stripe test server),
//! so this crate stays free of the HTTP client.

use futures::future::BoxFuture;

/// A checkout session as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    pub payment_intent: Option<String>,
}

/// One priced line for the checkout page.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutLine {
    pub name: String,
    pub unit_amount: i64,
    pub quantity: u64,
}

/// What a new checkout session asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheckout {
    /// Stripe replays the first answer to a retried request with this key.
    pub idempotency_key: String,
    pub currency: String,
    pub lines: Vec<CheckoutLine>,
    pub order_id: String,
    pub payment_id: String,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: i64,
}

/// Why the provider failed: a "no" about the request, or not reachable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    #[error("no such object at the payment provider")]
    NotFound,
    #[error("the payment provider refused: {0}")]
    Refused(String),
    #[error("the payment provider is unreachable: {0}")]
    Unreachable(String),
}

/// Stripe Checkout, as mart uses it.
pub trait CheckoutGateway: Send + Sync + std::fmt::Debug {
    fn create_session(
        &self,
        checkout: NewCheckout,
    ) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>>;
    fn session(&self, id: String) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>>;
    fn expire_session(&self, id: String) -> BoxFuture<'_, Result<CheckoutSession, GatewayError>>;
    /// Refunds `payment_intent` in full; `idempotency_key` makes retries safe.
    fn refund(
        &self,
        payment_intent: String,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<(), GatewayError>>;
}
