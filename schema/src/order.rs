//! The order service's vocabulary.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{Currency, FieldErrors, OrderId, ProductId, UserId};

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    /// No transition leaves these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Cancelled | OrderStatus::Expired
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            OrderStatus::AwaitingPayment,
            OrderStatus::Paid,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| {
            format!("unknown status {s:?} (awaiting_payment, paid, shipped, delivered, cancelled, expired)")
        })
    }
}

/// One line of an order, priced at order time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i64,
    pub line_total: i64,
}

/// An order as its owner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    /// Minor units of `currency`.
    pub total: i64,
    pub currency: Currency,
    /// When an unpaid order expires and its stock is released.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One requested line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// `POST /orders/`: `{items: [...]}` or the seed's single line `{product_id, quantity}`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PlaceOrder {
    Items { items: Vec<ItemRequest> },
    Single(ItemRequest),
}

/// Either shape of [`PlaceOrder`], read as one struct so that a bad value is
/// reported at its field (`items[0].quantity`) and an unknown field is
/// refused; an untagged enum could only say that no shape matched.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EitherShape {
    items: Option<Vec<ItemRequest>>,
    product_id: Option<ProductId>,
    quantity: Option<i64>,
}

impl<'de> Deserialize<'de> for PlaceOrder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let shape = EitherShape::deserialize(deserializer)?;
        match shape {
            EitherShape {
                items: Some(items),
                product_id: None,
                quantity: None,
            } => Ok(PlaceOrder::Items { items }),
            EitherShape {
                items: Some(_),
                product_id,
                ..
            } => {
                let extra = if product_id.is_some() {
                    "product_id"
                } else {
                    "quantity"
                };
                Err(D::Error::custom(format!(
                    "unknown field `{extra}`: send either `items` or one `product_id` and `quantity`"
                )))
            }
            EitherShape {
                product_id: Some(product_id),
                quantity: Some(quantity),
                ..
            } => Ok(PlaceOrder::Single(ItemRequest {
                product_id,
                quantity,
            })),
            EitherShape {
                product_id: Some(_),
                ..
            } => Err(D::Error::missing_field("quantity")),
            EitherShape { .. } => Err(D::Error::missing_field("items")),
        }
    }
}

impl PlaceOrder {
    pub fn into_items(self) -> Vec<ItemRequest> {
        match self {
            PlaceOrder::Items { items } => items,
            PlaceOrder::Single(item) => vec![item],
        }
    }
}

/// `GET /orders/`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
}

/// `PATCH /orders/{id}`: `{status}` (or the seed's `?status=`).
#[derive(
    Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// What the order becomes: an admin ships and delivers, the owner cancels.
    #[schema(value_type = Option<OrderStatus>)]
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
}

/// Why the order service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum OrderError {
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    #[error("no such order")]
    NotFound,
    #[error(
        "insufficient stock for product {product_id}: {requested} requested, {available} available"
    )]
    InsufficientStock {
        product_id: ProductId,
        requested: i64,
        available: i64,
    },
    #[error("an order that is {current} cannot become {requested}")]
    IllegalTransition {
        current: OrderStatus,
        requested: OrderStatus,
    },
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("not allowed")]
    Forbidden,
}

/// What happened to an order. Published through the order outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    #[serde(skip)]
    pub kind: OrderEventKind,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub total: i64,
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// On `order.cancelled`: the order was paid, so the money goes back.
    #[serde(default)]
    pub refund_due: bool,
}

/// Which event an [`OrderEvent`] is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEventKind {
    #[default]
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Expired,
    Refunded,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self.kind {
            OrderEventKind::Placed => "order.placed",
            OrderEventKind::Paid => "order.paid",
            OrderEventKind::Shipped => "order.shipped",
            OrderEventKind::Delivered => "order.delivered",
            OrderEventKind::Cancelled => "order.cancelled",
            OrderEventKind::Expired => "order.expired",
            OrderEventKind::Refunded => "order.refunded",
        }
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        self.order_id.0
    }
}

impl OrderEvent {
    /// The event of `kind` carrying the order as it now stands.
    pub fn of(kind: OrderEventKind, order: &Order) -> Self {
        Self {
            kind,
            order_id: order.id,
            user_id: order.user_id,
            status: order.status,
            items: order.items.clone(),
            total: order.total,
            currency: order.currency,
            expires_at: order.expires_at,
            refund_due: false,
        }
    }
}
