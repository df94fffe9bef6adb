//! The outbox: domain events written in the same transaction as the state change,
//! then delivered to every durable subscriber in order, until acknowledged.
//!
//! - [`Outbox::append`] adds events inside the caller's transaction.
//! - [`Dispatcher`] (one per hosted service) reads events past each subscriber's
//!   cursor and delivers them in `seq` order to a live member of that subscriber,
//!   anywhere in the cluster; the cursor moves only on acknowledgement.
//! - A subscriber is any actor taking [`SubscriberMsg`], registered under a name
//!   (its durable subscription id) and joined to the source's subscriber group.
//!   It deduplicates by `event_id`: delivery is at-least-once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use mart_schema::event::DomainEvent;
use mart_schema::{EventEnvelope, EventId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use time::OffsetDateTime;

use crate::wire::Wire;

/// How many events one delivery carries at most.
const BATCH: i64 = 200;
/// How long a subscriber may take to acknowledge one batch.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the dispatcher looks for work when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);
/// The longest pause between attempts at an unreachable or failing subscriber.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

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
            claim: format!("update {schema}.outbox_head set seq = seq + $1 returning seq"),
            insert: format!(
                "insert into {schema}.outbox \
                 (seq, event_id, event_type, aggregate_id, aggregate_seq, data) \
                 select e.seq, e.event_id, e.event_type, e.aggregate_id, \
                   coalesce((select max(o.aggregate_seq) from {schema}.outbox o \
                             where o.aggregate_id = e.aggregate_id), 0) \
                   + row_number() over (partition by e.aggregate_id order by e.seq), \
                   e.data \
                 from unnest($1::bigint[], $2::uuid[], $3::text[], $4::uuid[], $5::jsonb[]) \
                   as e(seq, event_id, event_type, aggregate_id, data)"
            ),
        }
    }

    /// Appends `events` inside `tx`. Call it last, right before commit: it locks
    /// the outbox head until commit, which is what keeps `seq` in commit order.
    pub async fn append<E: DomainEvent>(
        &self,
        tx: &Transaction<'_>,
        events: &[E],
    ) -> Result<(), tokio_postgres::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let head: i64 = tx.query_one(&self.claim, &[&count]).await?.get(0);
        // One statement for the whole batch: a product actor may append hundreds
        // of events in one transaction.
        let first = head - count + 1;
        let seqs: Vec<i64> = (first..=head).collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|_| EventId::new().0).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
        let aggregates: Vec<uuid::Uuid> = events.iter().map(|e| e.aggregate_id()).collect();
        let data: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
            .collect();
        let insert = tx.prepare_cached(&self.insert).await?;
        tx.execute(&insert, &[&seqs, &ids, &types, &aggregates, &data])
            .await?;
        Ok(())
    }

    /// Tells the local dispatcher there is something new (it polls anyway).
    pub fn wake(&self) {
        if let Some(cell) = ractor::registry::where_is(dispatcher_name(self.service)) {
            let _ = ActorRef::<DispatcherMsg>::from(cell).cast(DispatcherMsg::Wake);
        }
    }
}

/// The registry name of a service's dispatcher on this node.
pub fn dispatcher_name(service: Service) -> String {
    format!("{}.outbox", service.group())
}

/// What a subscriber receives.
#[derive(Debug, RactorClusterMessage)]
pub enum SubscriberMsg {
    /// Events in `seq` order. The answer is the highest `seq` now handled durably;
    /// anything above it is delivered again.
    #[rpc]
    Deliver(
        Wire<Vec<EventEnvelope>>,
        RpcReplyPort<Wire<Result<i64, String>>>,
    ),
}

/// Registers `subscriber` (named `name`, which must be the actor's registry name)
/// for the events of `sources`.
pub fn subscribe(subscriber: &ActorRef<SubscriberMsg>, sources: &[Service]) {
    for source in sources {
        ractor::pg::join(source.subscribers_group(), vec![subscriber.get_cell()]);
    }
}

/// Messages of the dispatcher; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub enum DispatcherMsg {
    /// New events were committed.
    Wake,
    /// Time to look again.
    Tick,
}

/// Delivers one service's outbox to its subscribers.
#[derive(Debug)]
pub struct Dispatcher;

/// Arguments of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherArgs {
    pub service: Service,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct DispatcherState {
    args: DispatcherArgs,
    sql: Sql,
    /// When each subscriber may be tried again after a failure, and the pause.
    backoff: HashMap<String, (Instant, Duration)>,
}

#[derive(Debug)]
struct Sql {
    register: String,
    cursors: String,
    pending: String,
    advance: String,
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = DispatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DispatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let schema = args.service.schema();
        myself.send_interval(POLL, || DispatcherMsg::Tick);
        Ok(DispatcherState {
            sql: Sql {
                register: format!(
                    "insert into {schema}.outbox_cursors (subscriber) values ($1) on conflict do nothing"
                ),
                cursors: format!("select subscriber, delivered_seq from {schema}.outbox_cursors"),
                pending: format!(
                    "select seq, event_id, event_type, aggregate_id, aggregate_seq, data, occurred_at \
                     from {schema}.outbox where seq > $1 order by seq limit {BATCH}"
                ),
                advance: format!(
                    "update {schema}.outbox_cursors \
                     set delivered_seq = greatest(delivered_seq, $2), updated_at = now() \
                     where subscriber = $1"
                ),
            },
            args,
            backoff: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A database outage is not a reason to crash: the events are safe, and
        // the next tick tries again.
        if let Err(e) = state.dispatch().await {
            tracing::warn!(service = %state.args.service, error = %e, "outbox dispatch failed; retrying");
        }
        Ok(())
    }
}

impl DispatcherState {
    async fn dispatch(&mut self) -> Result<(), String> {
        let members = live_subscribers(self.args.service);
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        // Any subscriber seen once gets a durable cursor: from then on nothing is
        // lost while it is down. A new one starts from the first event.
        for name in members.keys() {
            client
                .execute(&self.sql.register, &[name])
                .await
                .map_err(|e| e.to_string())?;
        }
        let cursors = client
            .query(&self.sql.cursors, &[])
            .await
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut due = Vec::new();
        for row in cursors {
            let name: String = row.get(0);
            let delivered: i64 = row.get(1);
            let ready = self.backoff.get(&name).is_none_or(|(at, _)| *at <= now);
            if let (true, Some(member)) = (ready, members.get(&name)) {
                due.push((name, delivered, member.clone()));
            }
        }
        drop(client);
        let results = futures::future::join_all(
            due.into_iter()
                .map(|(name, delivered, member)| self.deliver(name, delivered, member)),
        )
        .await;
        for (name, outcome) in results {
            match outcome {
                Ok(()) => {
                    self.backoff.remove(&name);
                }
                Err(reason) => {
                    let pause = self
                        .backoff
                        .get(&name)
                        .map_or(POLL, |(_, pause)| (*pause * 2).min(MAX_BACKOFF));
                    tracing::warn!(service = %self.args.service, subscriber = %name, %reason, retry_in = ?pause, "delivery failed");
                    self.backoff.insert(name, (Instant::now() + pause, pause));
                }
            }
        }
        Ok(())
    }

    /// Delivers everything past `delivered` to `member`, batch by batch.
    async fn deliver(
        &self,
        name: String,
        mut delivered: i64,
        member: ActorRef<SubscriberMsg>,
    ) -> (String, Result<(), String>) {
        loop {
            let batch = match self.pending(delivered).await {
                Ok(batch) => batch,
                Err(e) => return (name, Err(e)),
            };
            let Some(last) = batch.last().map(|e| e.seq) else {
                return (name, Ok(()));
            };
            let full = i64::try_from(batch.len()).unwrap_or(0) == BATCH;
            let acked = match member
                .call(
                    |reply| SubscriberMsg::Deliver(Wire::Value(batch), reply),
                    Some(ACK_TIMEOUT),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(Wire::Value(Ok(acked)))) => acked.min(last),
                Ok(ractor::rpc::CallResult::Success(Wire::Value(Err(e)))) => {
                    return (name, Err(format!("subscriber refused: {e}")));
                }
                Ok(ractor::rpc::CallResult::Success(Wire::Malformed(e))) => {
                    return (name, Err(format!("malformed acknowledgement: {e}")));
                }
                Ok(ractor::rpc::CallResult::Timeout) => {
                    return (name, Err("no acknowledgement in time".into()));
                }
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                    return (name, Err("subscriber went away".into()));
                }
            };
            if acked > delivered {
                if let Err(e) = self.advance(&name, acked).await {
                    return (name, Err(e));
                }
                delivered = acked;
            }
            if acked < last {
                return (
                    name,
                    Err(format!("acknowledged only up to {acked} of {last}")),
                );
            }
            if !full {
                return (name, Ok(()));
            }
        }
    }

    async fn pending(&self, after: i64) -> Result<Vec<EventEnvelope>, String> {
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query(&self.sql.pending, &[&after])
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|row| EventEnvelope {
                seq: row.get(0),
                event_id: row.get(1),
                event_type: row.get(2),
                aggregate_id: row.get(3),
                aggregate_seq: row.get(4),
                data: row.get(5),
                occurred_at: row.get::<_, OffsetDateTime>(6),
                source: self.args.service,
            })
            .collect())
    }

    async fn advance(&self, name: &str, to: i64) -> Result<(), String> {
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(&self.sql.advance, &[&name, &to])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Live subscribers of `service` by subscription name, local members preferred.
fn live_subscribers(service: Service) -> HashMap<String, ActorRef<SubscriberMsg>> {
    let mut found: HashMap<String, ActorRef<SubscriberMsg>> = HashMap::new();
    for cell in ractor::pg::get_members(&service.subscribers_group()) {
        let Some(name) = cell.get_name() else {
            continue;
        };
        let local = cell.get_id().is_local();
        let keep_existing = found
            .get(&name)
            .is_some_and(|existing| existing.get_id().is_local() || !local);
        if !keep_existing {
            found.insert(name, ActorRef::from(cell));
        }
    }
    found
}
