//! The envelope every domain event travels in, from a service's outbox to its
//! subscribers (other services, the Kafka bridge).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{EventId, Service};

/// One domain event as delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Stable across redeliveries: subscribers deduplicate on it.
    pub event_id: EventId,
    /// The service whose outbox holds the event.
    pub source: Service,
    /// `user.registered`, `user.updated`, …
    pub event_type: String,
    /// The entity the event is about (a user id, an order id, …).
    pub aggregate_id: uuid::Uuid,
    /// Per aggregate, gap-free, from 1.
    pub aggregate_seq: i64,
    /// Per service, gap-free, in commit order.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub data: serde_json::Value,
}

/// A domain event a service writes to its outbox.
pub trait DomainEvent: Serialize {
    /// The dotted type name, e.g. `user.registered`.
    fn event_type(&self) -> &'static str;
    /// The entity the event is about.
    fn aggregate_id(&self) -> uuid::Uuid;
}
