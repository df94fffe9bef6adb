//! The product service's vocabulary: the catalog.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{Currency, FieldErrors, ProductId};

/// A product as the catalog shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    /// Minor units of `currency`: 1999 is 19.99.
    pub price: i64,
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `POST /products/`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Minor units, an integer: 1999 is 19.99.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price: i64,
    /// Lower-case ISO 4217; `usd` when absent.
    pub currency: Option<String>,
    /// Initial quantity on hand; 0 when absent.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i64>,
}

/// `PATCH /products/{id}`: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<i64>,
    pub currency: Option<String>,
}

/// `GET /products/`: filters, order and page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Words to find in name or description.
    pub q: Option<String>,
    /// Lowest price, in minor units.
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest price, in minor units.
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// `created_at` (newest first, default), `price`, `-price` or `name`.
    #[param(inline, value_type = Option<ProductSort>)]
    pub sort: Option<String>,
}

/// The orders a product listing comes in (documentation of `sort`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ProductSort {
    #[serde(rename = "created_at")]
    CreatedAt,
    #[serde(rename = "price")]
    Price,
    #[serde(rename = "-price")]
    PriceDescending,
    #[serde(rename = "name")]
    Name,
}

/// Why the product service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ProductError {
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    #[error("no such product")]
    NotFound,
    #[error("not allowed")]
    Forbidden,
}

/// What happened to a product. Published through the product service's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProductEvent {
    Created(ProductCreated),
    Updated(ProductUpdated),
    Deleted(ProductDeleted),
}

/// `product.created`: carries the initial stock, so the inventory service can
/// create the stock record even if it was down when the product was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: ProductId,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: Currency,
    pub stock: i64,
}

/// `product.updated`: the product after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductUpdated {
    pub product_id: ProductId,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: Currency,
}

/// `product.deleted`: archived; its last price is kept for consumers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductDeleted {
    pub product_id: ProductId,
    pub price: i64,
    pub currency: Currency,
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::Created(_) => "product.created",
            ProductEvent::Updated(_) => "product.updated",
            ProductEvent::Deleted(_) => "product.deleted",
        }
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        match self {
            ProductEvent::Created(e) => e.product_id.0,
            ProductEvent::Updated(e) => e.product_id.0,
            ProductEvent::Deleted(e) => e.product_id.0,
        }
    }
}
