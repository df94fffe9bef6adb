//! The metrics the services record, named in one place after Prometheus'
//! conventions (`_total` counters, `_seconds` histograms) with bounded
//! labels: services, event types, outcomes, subscriber names; never ids.
//! They go to whatever `metrics` recorder the process installed (the node's
//! Prometheus exporter); with none they cost next to nothing.

use std::time::Duration;

use mart_schema::Service;
use metrics::{counter, gauge, histogram};

/// A request a service's front answered, on the node that served it.
pub(crate) fn served(service: Service, outcome: &'static str, took: Duration) {
    counter!("mart_service_requests_total", "service" => service.name(), "outcome" => outcome)
        .increment(1);
    histogram!("mart_service_request_duration_seconds", "service" => service.name())
        .record(took.as_secs_f64());
}

/// A request a service's front took (`+1`) or answered (`-1`). A front hands
/// each request to a task at once, so its mailbox stays empty: what waits
/// is these, the requests in progress.
pub(crate) fn in_flight(service: Service, change: f64) {
    gauge!("mart_service_requests_in_flight", "service" => service.name()).increment(change);
}

/// A call to a service, on the node that made it: `ok`, `rejected` (the
/// service's "no"), `unavailable`, `timeout` or `failed`.
pub(crate) fn called(service: Service, outcome: &'static str) {
    counter!("mart_service_calls_total", "service" => service.name(), "outcome" => outcome)
        .increment(1);
}

/// An entity moved under a caller's feet; it asks the new owner.
pub(crate) fn moved(service: Service) {
    counter!("mart_owner_moved_retries_total", "service" => service.name()).increment(1);
}

/// How many entity actors this node's router of `service` runs.
pub(crate) fn entity_actors(service: Service, live: usize) {
    gauge!("mart_entity_actors", "service" => service.name()).set(live as f64);
}

/// How many idle entities this node's router of `service` keeps parked.
pub(crate) fn entities_parked(service: Service, parked: usize) {
    gauge!("mart_entities_parked", "service" => service.name()).set(parked as f64);
}

/// The membership of a service's owners changed: its entities reload,
/// some on other nodes.
pub(crate) fn ownership_changed(service: Service) {
    counter!("mart_ownership_changes_total", "service" => service.name()).increment(1);
}

/// Domain events committed (with their state change) to a service's outbox:
/// orders placed, paid, cancelled, expired; reservations; payments by
/// outcome; refunds; emails sent or failed.
pub(crate) fn committed(service: Service, types: impl Iterator<Item = &'static str>) {
    for kind in types {
        counter!("mart_domain_events_total", "service" => service.name(), "type" => kind)
            .increment(1);
    }
}

/// A reservation line the stock actor said no to, by reason.
pub(crate) fn reservation_refused(reason: &'static str) {
    counter!("mart_reservations_refused_total", "reason" => reason).increment(1);
}

/// An email that did not go out this time and will be tried again.
pub(crate) fn email_retrying() {
    counter!("mart_emails_retrying_total").increment(1);
}

/// What a subscriber has yet to acknowledge of a service's outbox.
pub(crate) fn outbox_lag(service: Service, subscriber: &str, pending: i64, oldest: f64) {
    let labels = [
        ("service", service.name().to_owned()),
        ("subscriber", subscriber.to_owned()),
    ];
    gauge!("mart_outbox_pending_events", &labels).set(pending as f64);
    gauge!("mart_outbox_oldest_pending_age_seconds", &labels).set(oldest);
}

/// A service's connection pool: connections in use and idle, and callers
/// waiting for one.
/// How long a caller of `service` waited for a PostgreSQL connection.
pub(crate) fn pool_checkout(service: Service, took: Duration) {
    histogram!("mart_db_pool_checkout_seconds", "service" => service.name())
        .record(took.as_secs_f64());
}

pub fn pool(service: Service, status: deadpool_postgres::Status) {
    let in_use = status.size.saturating_sub(status.available);
    gauge!("mart_db_pool_connections", "service" => service.name(), "state" => "in_use")
        .set(in_use as f64);
    gauge!("mart_db_pool_connections", "service" => service.name(), "state" => "idle")
        .set(status.available as f64);
    gauge!("mart_db_pool_max_connections", "service" => service.name()).set(status.max_size as f64);
    gauge!("mart_db_pool_waiting", "service" => service.name()).set(status.waiting as f64);
}
