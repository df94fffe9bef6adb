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
    /// The outbox partition (a function of the aggregate id).
    pub partition: i16,
    /// Per partition, gap-free, in commit order.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub data: serde_json::Value,
    /// The W3C `traceparent` of the span that wrote the event, when traces
    /// were on: subscribers and the Kafka bridge continue its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A domain event a service writes to its outbox.
pub trait DomainEvent: Serialize {
    /// The dotted type name, e.g. `user.registered`.
    fn event_type(&self) -> &'static str;
    /// The entity the event is about.
    fn aggregate_id(&self) -> uuid::Uuid;
}

/// How many partitions every outbox has (fixed by its migration).
pub const OUTBOX_PARTITIONS: i16 = 16;

/// The outbox partition of an aggregate: stable, so one aggregate's events stay
/// in one partition, in order.
pub fn partition_of(aggregate: uuid::Uuid) -> i16 {
    // FNV-1a over the bytes: UUID v7 starts with a timestamp, so use them all.
    let hash = aggregate
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    i16::try_from(hash % OUTBOX_PARTITIONS as u64).unwrap_or(0)
}
