//! The outbox: domain events written in the same transaction as the state change,
//! then delivered to every durable subscriber in order, until acknowledged.
//!
//! - [`Outbox::append`] adds events inside the caller's transaction.
//! - [`Dispatcher`] (one per hosted service) reads events past each subscriber's
//!   cursors (one per outbox partition) and delivers them, in `seq` order within
//!   each partition, to a live member of that subscriber anywhere in the cluster;
//!   cursors move only on acknowledgement.
//! - A subscriber is any actor taking [`SubscriberMsg`], registered under a name
//!   (its durable subscription id) and joined to the source's subscriber group.
//!   It deduplicates by `event_id`: delivery is at-least-once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use mart_schema::event::{DomainEvent, OUTBOX_PARTITIONS, partition_of};
use mart_schema::{EventEnvelope, EventId, Service};
use ractor::rpc::CallResult;
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
/// How often a dispatcher logs subscribers that are behind.
const LAG_REPORT: Duration = Duration::from_secs(30);
/// Wake-ups closer together than this share one pass.
const COALESCE: Duration = Duration::from_millis(20);
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

/// Messages of the dispatcher; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub enum DispatcherMsg {
    /// New events were committed.
    Wake,
    /// Time to look again.
    Tick,
    /// Deliver what can be delivered now, then answer (before a node leaves).
    Flush(RpcReplyPort<()>),
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
    last_pass: Instant,
    wake_queued: bool,
    last_lag_report: Instant,
    /// Subscribers whose cursors exist.
    registered: std::collections::HashSet<String>,
}

#[derive(Debug)]
struct Sql {
    register: String,
    subscribers: String,
    pending: String,
    advance: String,
    /// Whether this node may deliver to a subscriber now (see `deliver`).
    claim: String,
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
                    "insert into {schema}.outbox_cursors (subscriber, partition) \
                     select $1, p from generate_series(0, {}) as p on conflict do nothing",
                    OUTBOX_PARTITIONS - 1
                ),
                subscribers: format!("select distinct subscriber from {schema}.outbox_cursors"),
                pending: format!(
                    "select o.partition, o.seq, o.event_id, o.event_type, o.aggregate_id, o.aggregate_seq, \
                       o.data, o.occurred_at \
                     from {schema}.outbox o join {schema}.outbox_cursors c \
                       on c.partition = o.partition and c.subscriber = $1 \
                     where o.seq > c.delivered_seq \
                     order by o.seq, o.partition limit {BATCH}"
                ),
                claim: format!(
                    "select pg_try_advisory_xact_lock(hashtextextended('{schema}.outbox/' || $1, 0))"
                ),
                advance: format!(
                    "update {schema}.outbox_cursors c \
                     set delivered_seq = greatest(c.delivered_seq, u.seq), updated_at = now() \
                     from unnest($2::smallint[], $3::bigint[]) as u(partition, seq) \
                     where c.subscriber = $1 and c.partition = u.partition"
                ),
            },
            args,
            backoff: HashMap::new(),
            last_pass: Instant::now(),
            wake_queued: false,
            last_lag_report: Instant::now(),
            registered: Default::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let flushed = match msg {
            DispatcherMsg::Wake => {
                // Under load every commit wakes us: one pass per short interval
                // serves them all.
                if state.wake_queued {
                    return Ok(());
                }
                if state.last_pass.elapsed() < COALESCE {
                    state.wake_queued = true;
                    myself.send_after(COALESCE, || DispatcherMsg::Tick);
                    return Ok(());
                }
                None
            }
            DispatcherMsg::Tick => None,
            DispatcherMsg::Flush(reply) => Some(reply),
        };
        state.wake_queued = false;
        // A database outage is not a reason to crash: the events are safe, and
        // the next tick tries again.
        if let Err(e) = state.dispatch().await {
            tracing::warn!(service = %state.args.service, error = %e, "outbox dispatch failed; retrying");
        }
        state.last_pass = Instant::now();
        if let Some(reply) = flushed {
            let _ = reply.send(());
        }
        if state.last_lag_report.elapsed() >= LAG_REPORT {
            state.last_lag_report = Instant::now();
            state.report_lag().await;
        }
        Ok(())
    }
}

impl DispatcherState {
    /// Logs every subscriber that is behind (the Kafka bridge while Kafka is down).
    async fn report_lag(&self) {
        let Ok(client) = self.args.pool.get().await else {
            return;
        };
        for behind in lag(&client, self.args.service).await.unwrap_or_default() {
            if behind.pending > 0 {
                tracing::info!(
                    service = %self.args.service,
                    subscriber = %behind.subscriber,
                    pending = behind.pending,
                    oldest_age_secs = behind.oldest_age_secs,
                    "subscriber is behind"
                );
            }
        }
    }

    async fn dispatch(&mut self) -> Result<(), String> {
        let members = live_subscribers(self.args.service);
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        // Any subscriber seen once gets durable cursors: from then on nothing is
        // lost while it is down. A new one starts from the first event. Once
        // registered, a name needs no more writes from this dispatcher.
        let new: Vec<String> = members
            .keys()
            .filter(|n| !self.registered.contains(*n))
            .cloned()
            .collect();
        for name in new {
            client
                .execute(&self.sql.register, &[&name])
                .await
                .map_err(|e| e.to_string())?;
            self.registered.insert(name);
        }
        let subscribers = client
            .query(&self.sql.subscribers, &[])
            .await
            .map_err(|e| e.to_string())?;
        drop(client);
        let now = Instant::now();
        let mut due = Vec::new();
        for row in subscribers {
            let name: String = row.get(0);
            let ready = self.backoff.get(&name).is_none_or(|(at, _)| *at <= now);
            if let (true, Some(member)) = (ready, members.get(&name)) {
                due.push((name, member.clone()));
            }
        }
        let results = futures::future::join_all(
            due.into_iter()
                .map(|(name, member)| self.deliver(name, member)),
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

    /// Delivers everything past the subscriber's cursors to `member`, batch by batch.
    async fn deliver(
        &self,
        name: String,
        member: ActorRef<SubscriberMsg>,
    ) -> (String, Result<(), String>) {
        // Most passes find nothing to send; those need no claim (three round
        // trips every poll, per subscriber).
        match self.pending(&name).await {
            Ok(batch) if batch.is_empty() => return (name, Ok(())),
            Ok(_) => {}
            Err(e) => return (name, Err(e)),
        }
        // One deliverer per subscriber in the whole cluster: every node hosting
        // this service runs a dispatcher, and two delivering at once would send
        // the same events twice. The claim lasts while this transaction is
        // open and ends with it, or with the connection if this node dies.
        let mut claim = match self.args.pool.get().await {
            Ok(client) => client,
            Err(e) => return (name, Err(e.to_string())),
        };
        let claimed = match claim.transaction().await {
            Ok(tx) => match tx.query_one(&self.sql.claim, &[&name]).await {
                Ok(row) if row.get::<_, bool>(0) => Some(tx),
                Ok(_) => None,
                Err(e) => return (name, Err(e.to_string())),
            },
            Err(e) => return (name, Err(e.to_string())),
        };
        let Some(_held) = claimed else {
            // Another node is delivering to it right now.
            return (name, Ok(()));
        };
        // Read again under the claim: another node may have just delivered.
        loop {
            let batch = match self.pending(&name).await {
                Ok(batch) => batch,
                Err(e) => return (name, Err(e)),
            };
            if batch.is_empty() {
                return (name, Ok(()));
            }
            let sent = batch.len();
            let full = i64::try_from(sent).unwrap_or(0) == BATCH;
            let heads: Vec<(i16, i64)> = batch.iter().map(|e| (e.partition, e.seq)).collect();
            let handled = match member
                .call(
                    |reply| SubscriberMsg::Deliver(Wire::Value(batch), reply),
                    Some(ACK_TIMEOUT),
                )
                .await
            {
                Ok(CallResult::Success(Wire::Value(Ok(count)))) => {
                    usize::try_from(count).unwrap_or(0).min(sent)
                }
                Ok(CallResult::Success(Wire::Value(Err(e)))) => {
                    return (name, Err(format!("subscriber refused: {e}")));
                }
                Ok(CallResult::Success(Wire::Malformed(e))) => {
                    return (name, Err(format!("malformed acknowledgement: {e}")));
                }
                Ok(CallResult::Timeout) => return (name, Err("no acknowledgement in time".into())),
                Ok(CallResult::SenderError) | Err(_) => {
                    return (name, Err("subscriber went away".into()));
                }
            };
            if handled > 0 {
                let mut upto: BTreeMap<i16, i64> = BTreeMap::new();
                for (partition, seq) in &heads[..handled] {
                    let slot = upto.entry(*partition).or_default();
                    *slot = (*slot).max(*seq);
                }
                if let Err(e) = self.advance(&name, upto).await {
                    return (name, Err(e));
                }
            }
            if handled < sent {
                return (
                    name,
                    Err(format!("acknowledged only {handled} of {sent} events")),
                );
            }
            if !full {
                return (name, Ok(()));
            }
        }
    }

    async fn pending(&self, subscriber: &str) -> Result<Vec<EventEnvelope>, String> {
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query(&self.sql.pending, &[&subscriber])
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|row| EventEnvelope {
                partition: row.get(0),
                seq: row.get(1),
                event_id: row.get(2),
                event_type: row.get(3),
                aggregate_id: row.get(4),
                aggregate_seq: row.get(5),
                data: row.get(6),
                occurred_at: row.get::<_, OffsetDateTime>(7),
                source: self.args.service,
            })
            .collect())
    }

    async fn advance(&self, name: &str, upto: BTreeMap<i16, i64>) -> Result<(), String> {
        let partitions: Vec<i16> = upto.keys().copied().collect();
        let seqs: Vec<i64> = upto.values().copied().collect();
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(&self.sql.advance, &[&name, &partitions, &seqs])
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
