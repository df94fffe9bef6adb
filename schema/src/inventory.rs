//! The inventory service's vocabulary: stock levels and reservations.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{FieldErrors, OrderId, ProductId};

/// A product's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLevels {
    pub product_id: ProductId,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`: what can still be reserved.
    pub available: i64,
}

/// At or below this many units left, shoppers are told how many.
pub const LOW_STOCK: i64 = 5;

/// What a shopper may know of a product's stock (`GET /availability`): not
/// the exact level, unless only a few are left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Availability {
    pub product_id: ProductId,
    pub status: AvailabilityStatus,
    /// How many are left, when the status is `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AvailabilityStatus {
    InStock,
    /// [`LOW_STOCK`] or fewer left.
    Low,
    SoldOut,
    /// Inventory keeps no stock for this product (unknown or not yet recorded).
    Unknown,
}

impl Availability {
    /// From what can still be reserved (`None`: no stock record).
    pub fn of(product_id: ProductId, available: Option<i64>) -> Self {
        let (status, left) = match available {
            None => (AvailabilityStatus::Unknown, None),
            Some(n) if n <= 0 => (AvailabilityStatus::SoldOut, None),
            Some(n) if n <= LOW_STOCK => (AvailabilityStatus::Low, Some(n)),
            Some(_) => (AvailabilityStatus::InStock, None),
        };
        Self {
            product_id,
            status,
            left,
        }
    }
}

/// `GET /availability`: the products to look at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// Product ids, comma-separated, 1 to 100.
    pub ids: String,
}

/// `PATCH /inventory/{product_id}`: either `{adjust, reason}` or `{on_hand}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockPatch {
    /// Add (or with a negative number, remove) this many units.
    pub adjust: Option<i64>,
    /// Why, for the audit trail; required with `adjust`.
    pub reason: Option<String>,
    /// Set the quantity on hand outright.
    pub on_hand: Option<i64>,
}

/// A validated stock change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StockChange {
    Adjust { delta: i64, reason: String },
    Set { on_hand: i64 },
}

/// Most units a product may have on hand: the same limit at product
/// creation (`stock`) as in every later change.
pub const MAX_ON_HAND: i64 = 1_000_000_000;
/// Longest adjustment reason kept.
const MAX_REASON: usize = 500;

impl StockPatch {
    /// The change asked for, or a 422 naming the fields.
    pub fn change(self) -> Result<StockChange, FieldErrors> {
        match (self.adjust, self.on_hand) {
            (Some(delta), None) => {
                let reason = self.reason.unwrap_or_default();
                if reason.trim().is_empty() {
                    return Err(FieldErrors::single("reason", "is required with adjust"));
                }
                if reason.chars().count() > MAX_REASON {
                    let message = format!("must be at most {MAX_REASON} characters");
                    return Err(FieldErrors::single("reason", message));
                }
                if delta.unsigned_abs() > MAX_ON_HAND.unsigned_abs() {
                    let message = format!("must be between -{MAX_ON_HAND} and {MAX_ON_HAND}");
                    return Err(FieldErrors::single("adjust", message));
                }
                Ok(StockChange::Adjust { delta, reason })
            }
            (None, Some(on_hand)) if on_hand < 0 => {
                Err(FieldErrors::single("on_hand", "must not be negative"))
            }
            (None, Some(on_hand)) if on_hand > MAX_ON_HAND => Err(FieldErrors::single(
                "on_hand",
                format!("must be at most {MAX_ON_HAND}, the same limit as a product's stock"),
            )),
            (None, Some(on_hand)) => Ok(StockChange::Set { on_hand }),
            _ => Err(FieldErrors::single(
                "adjust",
                "send either {\"adjust\": n, \"reason\": \"...\"} or {\"on_hand\": n}",
            )),
        }
    }
}

/// One line of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReservationLine {
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

/// Reserve every line, or none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReserveRequest {
    pub order_id: OrderId,
    pub lines: Vec<ReservationLine>,
    /// When the reservation releases itself if not committed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What became of a reservation line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineStatus {
    Reserved,
    Committed,
    Released,
    /// Committed, then put back on hand (a paid order was cancelled).
    Returned,
}

impl LineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Reserved => "reserved",
            LineStatus::Committed => "committed",
            LineStatus::Released => "released",
            LineStatus::Returned => "returned",
        }
    }
}

impl std::str::FromStr for LineStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reserved" => Ok(LineStatus::Reserved),
            "committed" => Ok(LineStatus::Committed),
            "released" => Ok(LineStatus::Released),
            "returned" => Ok(LineStatus::Returned),
            other => Err(format!("unknown line status {other:?}")),
        }
    }
}

/// A reservation as it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reservation {
    pub order_id: OrderId,
    pub lines: Vec<ReservedLine>,
}

/// One line of a [`Reservation`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReservedLine {
    pub product_id: ProductId,
    pub quantity: i64,
    pub status: LineStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why the inventory service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum InventoryError {
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    #[error("no stock record for product {0}")]
    UnknownProduct(ProductId),
    #[error(
        "insufficient stock for product {product_id}: {requested} requested, {available} available"
    )]
    InsufficientStock {
        product_id: ProductId,
        requested: i64,
        available: i64,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("no reservation for order {0}")]
    NoReservation(OrderId),
    #[error("not allowed")]
    Forbidden,
}

/// What happened to a product's stock. Published through the inventory outbox;
/// the aggregate is the product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InventoryEvent {
    Adjusted(StockAdjusted),
    Reserved(StockMoved),
    Released(StockMoved),
    Committed(StockMoved),
    /// A committed line went back on hand (its paid order was cancelled).
    Returned(StockMoved),
    LowStock(LowStock),
}

/// `inventory.adjusted`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// `inventory.reserved`, `inventory.released`, `inventory.committed`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockMoved {
    pub product_id: ProductId,
    pub order_id: OrderId,
    pub quantity: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// Why a release happened: `released` (asked) or `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `inventory.low_stock`: `available` fell to or below the threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowStock {
    pub product_id: ProductId,
    pub available: i64,
    pub threshold: i64,
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> &'static str {
        match self {
            InventoryEvent::Adjusted(_) => "inventory.adjusted",
            InventoryEvent::Reserved(_) => "inventory.reserved",
            InventoryEvent::Released(_) => "inventory.released",
            InventoryEvent::Committed(_) => "inventory.committed",
            InventoryEvent::Returned(_) => "inventory.returned",
            InventoryEvent::LowStock(_) => "inventory.low_stock",
        }
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        match self {
            InventoryEvent::Adjusted(e) => e.product_id.0,
            InventoryEvent::Reserved(e)
            | InventoryEvent::Released(e)
            | InventoryEvent::Committed(e)
            | InventoryEvent::Returned(e) => e.product_id.0,
            InventoryEvent::LowStock(e) => e.product_id.0,
        }
    }
}
