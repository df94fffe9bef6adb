//! The shared vocabulary of mart. No business rules live here.
//!
//! - [`ids`]: typed UUID v7 identifiers (`UserId`, `EventId`).
//! - [`money`]: `Money` (i64 minor units) and `Currency` (ISO 4217).
//! - [`service`]: the services a node can host and the names they go by.
//! - [`user`], [`product`], [`inventory`], [`order`], [`payment`], [`notification`]: requests, replies, events and errors
//!   of each service.
//! - [`event`]: the envelope every domain event travels in.
//! - [`page`]: keyset pagination (`{items, next_cursor}`).
//! - [`problem`]: field-level validation errors.
//! - [`now`]: the current UTC time at the precision mart stores and answers.
//! - [`db`]: pools (TLS as `sslmode` says, in `db::tls`), per-service
//!   migrations (SQL in `migrations/`), the embedded PostgreSQL, and (feature
//!   `testing`) throwaway test databases.

pub mod db;
pub mod event;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod notification;
pub mod order;
pub mod page;
pub mod payment;
pub mod problem;
pub mod product;
pub mod service;
pub mod user;

pub use event::EventEnvelope;
pub use ids::{EventId, NotificationId, OrderId, PaymentId, ProductId, UserId};
pub use money::{Currency, Money};
pub use page::{Page, PageRequest};
pub use problem::FieldErrors;
pub use service::Service;

/// Now, in UTC, to the microsecond: PostgreSQL keeps microseconds, so a time
/// answered before it is stored (a `201`) reads the same when read back.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1_000 * 1_000;
    now.replace_nanosecond(micros).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_whole_microseconds() {
        assert_eq!(super::now().nanosecond() % 1_000, 0);
    }
}
