//! The payment service's vocabulary.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{Currency, OrderId, PaymentId, UserId};

/// Where a payment attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    Expired,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

impl std::str::FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(PaymentStatus::Pending),
            "succeeded" => Ok(PaymentStatus::Succeeded),
            "failed" => Ok(PaymentStatus::Failed),
            "expired" => Ok(PaymentStatus::Expired),
            "refunded" => Ok(PaymentStatus::Refunded),
            other => Err(format!("unknown payment status {other:?}")),
        }
    }
}

/// A payment attempt: one Stripe Checkout Session for one order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    pub status: PaymentStatus,
    /// Minor units of `currency`, from the order.
    pub amount: i64,
    pub currency: Currency,
    /// Where to send the shopper to pay.
    pub checkout_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /payments/`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub order_id: OrderId,
}

/// What a callback or webhook made of a checkout session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentOutcome {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub status: PaymentStatus,
}

/// Why the payment service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum PaymentError {
    #[error("invalid input: {0}")]
    Invalid(crate::FieldErrors),
    #[error("no such payment")]
    NotFound,
    #[error("no such order")]
    OrderNotFound,
    #[error("the order is {0}, not awaiting payment")]
    OrderNotPayable(String),
    #[error("invalid Stripe signature")]
    BadSignature,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("the payment provider is unavailable: {0}")]
    Provider(String),
}

/// What happened to a payment. Published through the payment outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentEvent {
    #[serde(skip)]
    pub kind: &'static str,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: Currency,
}

impl PaymentEvent {
    /// `payment.<status>` for `payment` as it now stands.
    pub fn of(payment: &Payment) -> Self {
        Self {
            kind: match payment.status {
                PaymentStatus::Pending => "payment.created",
                PaymentStatus::Succeeded => "payment.succeeded",
                PaymentStatus::Failed => "payment.failed",
                PaymentStatus::Expired => "payment.expired",
                PaymentStatus::Refunded => "payment.refunded",
            },
            payment_id: payment.id,
            order_id: payment.order_id,
            user_id: payment.user_id,
            status: payment.status,
            amount: payment.amount,
            currency: payment.currency,
        }
    }
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        self.kind
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        self.payment_id.0
    }
}
