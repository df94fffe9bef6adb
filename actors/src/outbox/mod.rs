//! The outbox: domain events written in the same transaction as the state change,
//! then delivered to every durable subscriber in order, until acknowledged.
//!
//! - [`Outbox::append`] adds events inside the caller's transaction.
//! - [`Dispatcher`](dispatcher::Dispatcher) (one per hosted service) reads events past each subscriber's
//!   cursors (one per outbox partition) and delivers them, in `seq` order within
//!   each partition, to a live member of that subscriber anywhere in the cluster;
//!   cursors move only on acknowledgement.
//! - A subscriber is any actor taking [`SubscriberMsg`], registered under a name
//!   (its durable subscription id) and joined to the source's subscriber group.
//!   It deduplicates by `event_id`: delivery is at-least-once.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Transaction;
use mart_schema::event::{DomainEvent, partition_of};
use mart_schema::{EventEnvelope, EventId, Service};
use ractor::{ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::wire::Wire;

mod dispatcher;

pub use dispatcher::{Dispatcher, DispatcherArgs, DispatcherMsg};

/// Writes one service's events into its outbox.
#[derive(Clone, Debug)]
pub struct Outbox {
    service: Service,
    claim: String,
    insert: String,
}

impl Outbox {
    pub fn new(service: Service) -> Self {
        let schema = service.schema();
        Self {
            service,
            claim: format!(
                "update {schema}.outbox_head set seq = seq + $2 where partition = $1 returning seq"
            ),
            insert: format!(
                "insert into {schema}.outbox \
                 (partition, seq, event_id, event_type, aggregate_id, aggregate_seq, data) \
                 select e.partition, e.seq, e.event_id, e.event_type, e.aggregate_id, \
                   coalesce((select max(o.aggregate_seq) from {schema}.outbox o \
                             where o.aggregate_id = e.aggregate_id), 0) \
                   + row_number() over (partition by e.aggregate_id order by e.seq), \
                   e.data \
                 from unnest($1::smallint[], $2::bigint[], $3::uuid[], $4::text[], $5::uuid[], $6::jsonb[]) \
                   as e(partition, seq, event_id, event_type, aggregate_id, data)"
            ),
        }
    }

    /// Appends `events` inside `tx`. Call it last, right before commit: it locks
    /// the partitions' heads until commit, which is what keeps each partition's
    /// `seq` in commit order.
    pub async fn append<E: DomainEvent>(
        &self,
        tx: &Transaction<'_>,
        events: &[E],
    ) -> Result<(), tokio_postgres::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let partitions: Vec<i16> = events
            .iter()
            .map(|e| partition_of(e.aggregate_id()))
            .collect();
        let mut counts: BTreeMap<i16, i64> = BTreeMap::new();
        for p in &partitions {
            *counts.entry(*p).or_default() += 1;
        }
        // Heads are locked in partition order, so two writers never deadlock.
        let mut next: BTreeMap<i16, i64> = BTreeMap::new();
        let claim = tx.prepare_cached(&self.claim).await?;
        for (&partition, &count) in &counts {
            let head: i64 = tx.query_one(&claim, &[&partition, &count]).await?.get(0);
            next.insert(partition, head - count + 1);
        }
        let mut seqs = Vec::with_capacity(events.len());
        for p in &partitions {
            let slot = next.entry(*p).or_default();
            seqs.push(*slot);
            *slot += 1;
        }
        // One statement for the whole batch: a product actor may append hundreds
        // of events in one transaction.
        let ids: Vec<uuid::Uuid> = events.iter().map(|_| EventId::new().0).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
        let aggregates: Vec<uuid::Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let data: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
            .collect();
        let insert = tx.prepare_cached(&self.insert).await?;
        tx.execute(
            &insert,
            &[&partitions, &seqs, &ids, &types, &aggregates, &data],
        )
        .await?;
        Ok(())
    }

    /// The end of every write that changes state: appends `events` to `tx`,
    /// commits, and wakes the dispatcher.
    pub async fn commit<E: DomainEvent>(
        &self,
        tx: Transaction<'_>,
        events: &[E],
    ) -> Result<(), tokio_postgres::Error> {
        self.append(&tx, events).await?;
        tx.commit().await?;
        if !events.is_empty() {
            self.wake();
        }
        Ok(())
    }

    /// Tells the local dispatcher there is something new (it polls anyway).
    pub fn wake(&self) {
        if let Some(cell) = ractor::registry::where_is(dispatcher_name(self.service)) {
            let _ = ActorRef::<DispatcherMsg>::from(cell).cast(DispatcherMsg::Wake);
        }
    }
}

/// Asks this node's dispatcher of `service` for one last delivery pass (a node
/// about to leave hands its events to live subscribers first).
pub async fn flush(service: Service) {
    if let Some(cell) = ractor::registry::where_is(dispatcher_name(service)) {
        let dispatcher = ActorRef::<DispatcherMsg>::from(cell);
        let _ = dispatcher
            .call(DispatcherMsg::Flush, Some(Duration::from_secs(5)))
            .await;
    }
}

/// The registry name of a service's dispatcher on this node.
pub fn dispatcher_name(service: Service) -> String {
    format!("{}.outbox", service.group())
}

/// What a subscriber receives.
#[derive(Debug, RactorClusterMessage)]
pub enum SubscriberMsg {
    /// Events, each aggregate's in order. The answer is how many of them, from
    /// the first, are now handled durably; the rest are delivered again.
    #[rpc]
    Deliver(
        Wire<Vec<EventEnvelope>>,
        RpcReplyPort<Wire<Result<i64, String>>>,
    ),
}

/// Runs `handle` on a delivered batch and answers with how many events, from
/// the first, it handled durably. A malformed batch is refused (it comes again).
pub async fn acknowledge(msg: SubscriberMsg, handle: impl AsyncFnOnce(Vec<EventEnvelope>) -> i64) {
    let SubscriberMsg::Deliver(batch, reply) = msg;
    let answer = match batch {
        Wire::Value(batch) => Ok(handle(batch).await),
        Wire::Malformed(reason) => Err(format!("malformed batch: {reason}")),
    };
    let _ = reply.send(Wire::Value(answer));
}

/// Registers `subscriber` (named `name`, which must be the actor's registry name)
/// for the events of `sources`.
pub fn subscribe(subscriber: &ActorRef<SubscriberMsg>, sources: &[Service]) {
    for source in sources {
        ractor::pg::join(source.subscribers_group(), vec![subscriber.get_cell()]);
    }
}

/// How far one durable subscriber is behind a service's outbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriberLag {
    pub subscriber: String,
    /// Events written but not yet acknowledged.
    pub pending: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_age_secs: f64,
}

/// Every subscriber's lag on `service`'s outbox.
pub async fn lag(
    client: &tokio_postgres::Client,
    service: Service,
) -> Result<Vec<SubscriberLag>, tokio_postgres::Error> {
    let schema = service.schema();
    let rows = client
        .query(
            &format!(
                "select c.subscriber, count(o.seq), \
                   coalesce(extract(epoch from now() - min(o.occurred_at))::float8, 0) \
                 from {schema}.outbox_cursors c \
                 left join {schema}.outbox o on o.partition = c.partition and o.seq > c.delivered_seq \
                 group by c.subscriber order by c.subscriber"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| SubscriberLag {
            subscriber: row.get(0),
            pending: row.get(1),
            oldest_age_secs: row.get(2),
        })
        .collect())
}
