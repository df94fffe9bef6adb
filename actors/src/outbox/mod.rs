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

use std::collections::BTreeSet;
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
    lock: String,
    insert: String,
}

impl Outbox {
    pub fn new(service: Service) -> Self {
        let schema = service.schema();
        Self {
            service,
            lock: format!(
                "select partition from {schema}.outbox_head where partition = any($1) \
                 order by partition for update"
            ),
            // Claims each partition's next seqs and inserts the events in one
            // statement: seq by partition in event order, aggregate_seq per
            // aggregate after the last one stored.
            insert: format!(
                "with e as ( \
                   select x.*, row_number() over (partition by x.partition order by x.ord) as k, \
                     count(*) over (partition by x.partition) as n \
                   from unnest($1::smallint[], $2::uuid[], $3::text[], $4::uuid[], $5::jsonb[], $6::text[]) \
                     with ordinality as x(partition, event_id, event_type, aggregate_id, data, \
                       traceparent, ord)), \
                 heads as ( \
                   update {schema}.outbox_head h set seq = h.seq + c.n \
                   from (select partition, count(*) as n from e group by partition) c \
                   where h.partition = c.partition returning h.partition, h.seq) \
                 insert into {schema}.outbox \
                   (partition, seq, event_id, event_type, aggregate_id, aggregate_seq, data, \
                    traceparent) \
                 select e.partition, heads.seq - e.n + e.k, e.event_id, e.event_type, e.aggregate_id, \
                   coalesce((select max(o.aggregate_seq) from {schema}.outbox o \
                             where o.aggregate_id = e.aggregate_id), 0) \
                   + row_number() over (partition by e.aggregate_id order by e.ord), \
                   e.data, e.traceparent \
                 from e join heads on heads.partition = e.partition"
            ),
        }
    }

    /// Appends `events` inside `tx`. Call it last, right before commit: it locks
    /// the partitions' heads until commit, which is what keeps each partition's
    /// `seq` in commit order. One round trip: the heads are locked in
    /// partition order (so two writers never deadlock), pipelined with the
    /// statement that claims them and inserts the events.
    pub async fn append<E: DomainEvent>(
        &self,
        tx: &Transaction<'_>,
        events: &[E],
    ) -> Result<(), tokio_postgres::Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.append_rows(tx, &OutboxRows::of(events)).await
    }

    /// Appends events already laid out as rows (see [`Self::append`]).
    pub(crate) async fn append_rows(
        &self,
        tx: &Transaction<'_>,
        rows: &OutboxRows,
    ) -> Result<(), tokio_postgres::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let (plans, lock, insert) = futures::try_join!(
            tx.prepare_cached(crate::batch::KEY_LOOKUP_PLANS),
            tx.prepare_cached(&self.lock),
            tx.prepare_cached(&self.insert)
        )?;
        let (heads, params) = (rows.heads(), rows.params());
        // Sent in this order (the first future is polled first): plans made
        // once, as key lookups, for what is left of the transaction (see
        // `batch::one_round_trip`; left to choose, PostgreSQL planned the
        // append anew on every call), and the locks held before the claim
        // runs.
        if rows.partitions_locked() {
            futures::try_join!(
                tx.execute(&plans, &[]),
                tx.query(&lock, &heads),
                tx.execute(&insert, &params)
            )?;
        } else {
            futures::try_join!(tx.execute(&plans, &[]), tx.execute(&insert, &params))?;
        }
        Ok(())
    }

    /// The statements that append events, prepared on `client`, for a
    /// transaction sent in one round trip (see [`OutboxRows::statements`]).
    pub(crate) async fn prepare(
        &self,
        client: &deadpool_postgres::Client,
    ) -> Result<(tokio_postgres::Statement, tokio_postgres::Statement), tokio_postgres::Error> {
        futures::try_join!(
            client.prepare_cached(&self.lock),
            client.prepare_cached(&self.insert)
        )
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
        self.committed(events);
        Ok(())
    }

    /// After a commit that appended `events`: counts them and wakes the
    /// dispatcher.
    pub fn committed<E: DomainEvent>(&self, events: &[E]) {
        if events.is_empty() {
            return;
        }
        crate::measure::committed(self.service, events.iter().map(E::event_type));
        self.wake();
    }

    /// Tells the local dispatcher there is something new (it polls anyway).
    pub fn wake(&self) {
        if let Some(cell) = ractor::registry::where_is(dispatcher_name(self.service)) {
            let _ = ActorRef::<DispatcherMsg>::from(cell).cast(DispatcherMsg::Wake);
        }
    }
}

/// Events to append, as the columns of the append statement.
pub(crate) struct OutboxRows {
    partitions: Vec<i16>,
    distinct: Vec<i16>,
    ids: Vec<uuid::Uuid>,
    types: Vec<&'static str>,
    aggregates: Vec<uuid::Uuid>,
    data: Vec<serde_json::Value>,
    traces: Vec<Option<String>>,
}

type Params<'a> = Vec<&'a (dyn postgres_types::ToSql + Sync)>;

impl OutboxRows {
    /// Events written for the request this task serves (its trace, if any,
    /// goes with each).
    pub(crate) fn of<E: DomainEvent>(events: &[E]) -> Self {
        let trace = crate::trace::current().map(String::from);
        Self::traced(events, |_| trace.clone())
    }

    /// Events written for several requests at once (group commit): `trace`
    /// says whose trace each event continues.
    pub(crate) fn traced<E: DomainEvent>(
        events: &[E],
        trace: impl FnMut(usize) -> Option<String>,
    ) -> Self {
        let partitions: Vec<i16> = events
            .iter()
            .map(|e| partition_of(e.aggregate_id()))
            .collect();
        let distinct: BTreeSet<i16> = partitions.iter().copied().collect();
        Self {
            distinct: distinct.into_iter().collect(),
            partitions,
            ids: events.iter().map(|_| EventId::new().0).collect(),
            types: events.iter().map(|e| e.event_type()).collect(),
            aggregates: events.iter().map(|e| e.aggregate_id()).collect(),
            data: events
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
                .collect(),
            traces: (0..events.len()).map(trace).collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// With several partitions their heads are locked first, in order.
    fn partitions_locked(&self) -> bool {
        self.distinct.len() > 1
    }

    fn heads(&self) -> Params<'_> {
        vec![&self.distinct]
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.partitions,
            &self.ids,
            &self.types,
            &self.aggregates,
            &self.data,
            &self.traces,
        ]
    }

    /// The append as statements of a transaction sent in one round trip,
    /// given the two prepared by [`Outbox::prepare`].
    pub(crate) fn statements<'a>(
        &'a self,
        (lock, insert): &'a (tokio_postgres::Statement, tokio_postgres::Statement),
    ) -> Vec<(&'a tokio_postgres::Statement, Params<'a>)> {
        let mut statements = Vec::new();
        if self.is_empty() {
            return statements;
        }
        if self.partitions_locked() {
            statements.push((lock, self.heads()));
        }
        statements.push((insert, self.params()));
        statements
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
