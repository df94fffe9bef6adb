//! The dispatcher: one per hosted service on each node. It reads events past
//! each subscriber's cursors and delivers them, batch by batch, to a live
//! member of that subscriber anywhere in the cluster; one node at a time
//! delivers to a subscriber (a transaction-scoped advisory lock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::Pool;
use mart_schema::event::OUTBOX_PARTITIONS;
use mart_schema::{EventEnvelope, Service};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use time::OffsetDateTime;

use super::{SubscriberMsg, lag};
use crate::wire::Wire;

/// How many events one delivery carries at most.
const BATCH: i64 = 200;
/// How long a subscriber may take to acknowledge one batch.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the dispatcher looks for work when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);
/// How often a dispatcher logs subscribers that are behind.
const LAG_REPORT: Duration = Duration::from_secs(30);
/// How long a leaving node waits for the last deliveries. A delivery cut
/// short after its subscriber acted (the Kafka bridge produced) but before
/// the cursor moved is delivered again by the next node: a duplicate record.
/// One second was too short on a loaded machine (the rolling-restart test saw
/// one); a hung subscriber still holds the exit no longer than this.
const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// How often the lag gauges are brought up to date.
const LAG_GAUGE: Duration = Duration::from_secs(5);
/// Wake-ups closer together than this share one pass.
const COALESCE: Duration = Duration::from_millis(20);
/// The longest pause between attempts at an unreachable or failing subscriber.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Messages of the dispatcher; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub enum DispatcherMsg {
    /// New events were committed.
    Wake,
    /// Time to look again.
    Tick,
    /// The node is leaving: hand each subscriber one more batch, then
    /// answer; from now on no delivery works through a backlog.
    Flush(RpcReplyPort<()>),
    /// A subscriber's delivery task finished.
    Delivered(String, Result<(), String>),
}

/// Delivers one service's outbox to its subscribers.
#[derive(Debug, Clone, Copy)]
pub struct Dispatcher;

/// Arguments of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherArgs {
    pub service: Service,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct DispatcherState {
    deliverer: Arc<Deliverer>,
    /// When each subscriber may be tried again after a failure, and the pause.
    backoff: HashMap<String, (Instant, Duration)>,
    last_pass: Instant,
    wake_queued: bool,
    last_lag_report: Instant,
    last_lag_gauge: Instant,
    /// Subscribers whose cursors exist.
    registered: std::collections::HashSet<String>,
    /// Subscribers being delivered to now. Each has a task of its own, so a
    /// slow one (mail) never holds back another (the Kafka bridge); `again`
    /// says events may have come after the task's last read.
    running: HashMap<String, Running>,
}

#[derive(Debug)]
struct Running {
    task: tokio::task::JoinHandle<()>,
    again: bool,
}

/// Reads a service's outbox and delivers it to one subscriber at a time.
#[derive(Debug)]
struct Deliverer {
    args: DispatcherArgs,
    sql: Sql,
    /// Set by a flush: the node is leaving.
    leaving: std::sync::atomic::AtomicBool,
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
        let deliverer = Deliverer {
            sql: Sql {
                register: format!(
                    "insert into {schema}.outbox_cursors (subscriber, partition) \
                     select $1, p from generate_series(0, {}) as p on conflict do nothing",
                    OUTBOX_PARTITIONS - 1
                ),
                subscribers: format!("select distinct subscriber from {schema}.outbox_cursors"),
                // Per partition a short range scan of its primary key (a join
                // sorting everything pending took 11 ms with a backlog).
                pending: format!(
                    "select o.partition, o.seq, o.event_id, o.event_type, o.aggregate_id, o.aggregate_seq, \
                       o.data, o.occurred_at, o.traceparent \
                     from {schema}.outbox_cursors c cross join lateral ( \
                       select * from {schema}.outbox o \
                       where o.partition = c.partition and o.seq > c.delivered_seq \
                       order by o.seq limit {BATCH}) o \
                     where c.subscriber = $1 \
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
            leaving: Default::default(),
        };
        Ok(DispatcherState {
            deliverer: Arc::new(deliverer),
            backoff: HashMap::new(),
            last_pass: Instant::now(),
            wake_queued: false,
            last_lag_report: Instant::now(),
            // The first pass sets the gauges.
            last_lag_gauge: Instant::now()
                .checked_sub(LAG_GAUGE)
                .unwrap_or_else(Instant::now),
            registered: Default::default(),
            running: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Deliveries started since the flush (events written while the node
        // wound down) finish too. What is not acknowledged by then stays in
        // the outbox: stopping loses nothing.
        state.finish_running().await;
        for running in state.running.values() {
            running.task.abort();
        }
        Ok(())
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
            DispatcherMsg::Flush(reply) => {
                state
                    .deliverer
                    .leaving
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Some(reply)
            }
            DispatcherMsg::Delivered(name, outcome) => {
                state.delivered(&myself, name, outcome);
                return Ok(());
            }
        };
        state.wake_queued = false;
        // A database outage is not a reason to crash: the events are safe, and
        // the next tick tries again.
        if let Err(e) = state.dispatch(&myself).await {
            tracing::warn!(service = %state.deliverer.args.service, error = %e, "outbox dispatch failed; retrying");
        }
        state.last_pass = Instant::now();
        if let Some(reply) = flushed {
            // Their outcomes arrive as `Delivered` messages after this one.
            state.finish_running().await;
            let _ = reply.send(());
        }
        if state.last_lag_gauge.elapsed() >= LAG_GAUGE {
            state.last_lag_gauge = Instant::now();
            let log = state.last_lag_report.elapsed() >= LAG_REPORT;
            if log {
                state.last_lag_report = Instant::now();
            }
            state.report_lag(log).await;
        }
        Ok(())
    }
}

impl DispatcherState {
    /// Sets each subscriber's lag gauges and, when `log`, logs every one that
    /// is behind (the Kafka bridge while Kafka is down).
    async fn report_lag(&self, log: bool) {
        let service = self.deliverer.args.service;
        let Ok(client) = self.deliverer.args.pool.get().await else {
            return;
        };
        for behind in lag(&client, service).await.unwrap_or_default() {
            crate::measure::outbox_lag(
                service,
                &behind.subscriber,
                behind.pending,
                behind.oldest_age_secs,
            );
            if log && behind.pending > 0 {
                tracing::info!(
                    %service,
                    subscriber = %behind.subscriber,
                    pending = behind.pending,
                    oldest_age_secs = behind.oldest_age_secs,
                    "subscriber is behind"
                );
            }
        }
    }

    /// Starts a delivery task for every subscriber that is due and not
    /// already being delivered to.
    async fn dispatch(&mut self, myself: &ActorRef<DispatcherMsg>) -> Result<(), String> {
        let members = live_subscribers(self.deliverer.args.service);
        let client = self
            .deliverer
            .args
            .pool
            .get()
            .await
            .map_err(|e| e.to_string())?;
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
                .execute(&self.deliverer.sql.register, &[&name])
                .await
                .map_err(|e| e.to_string())?;
            self.registered.insert(name);
        }
        let subscribers = client
            .prepare_cached(&self.deliverer.sql.subscribers)
            .await
            .map_err(|e| e.to_string())?;
        let subscribers = client
            .query(&subscribers, &[])
            .await
            .map_err(|e| e.to_string())?;
        drop(client);
        let now = Instant::now();
        for row in subscribers {
            let name: String = row.get(0);
            let ready = self.backoff.get(&name).is_none_or(|(at, _)| *at <= now);
            let (true, Some(member)) = (ready, members.get(&name)) else {
                continue;
            };
            if let Some(running) = self.running.get_mut(&name) {
                running.again = true;
                continue;
            }
            let (deliverer, myself, member) =
                (self.deliverer.clone(), myself.clone(), member.clone());
            let key = name.clone();
            let task = tokio::spawn(async move {
                let outcome = deliverer.deliver_to(&name, &member).await;
                let _ = myself.cast(DispatcherMsg::Delivered(name, outcome));
            });
            self.running.insert(key, Running { task, again: false });
        }
        Ok(())
    }

    /// Waits for the deliveries running now, a leaving node's last ones: one
    /// cut short after its subscriber acted is a duplicate (see
    /// `FLUSH_WAIT`). A subscriber that does not answer (a hung peer) holds
    /// the node's exit no longer than `FLUSH_WAIT`; the stopping dispatcher
    /// then ends its task.
    async fn finish_running(&mut self) {
        // A finished task's outcome may already have been taken by an
        // earlier wait: a handle is polled only while its task runs.
        let running = self
            .running
            .values_mut()
            .map(|running| &mut running.task)
            .filter(|task| !task.is_finished());
        let _ = tokio::time::timeout(FLUSH_WAIT, futures::future::join_all(running)).await;
    }

    /// Notes how a delivery task ended; goes again at once if events came
    /// meanwhile, or after a growing pause if it failed.
    fn delivered(
        &mut self,
        myself: &ActorRef<DispatcherMsg>,
        name: String,
        outcome: Result<(), String>,
    ) {
        let again = self.running.remove(&name).is_some_and(|r| r.again);
        match outcome {
            Ok(()) => {
                self.backoff.remove(&name);
                if again {
                    let _ = myself.cast(DispatcherMsg::Tick);
                }
            }
            Err(reason) => {
                let pause = self
                    .backoff
                    .get(&name)
                    .map_or(POLL, |(_, pause)| (*pause * 2).min(MAX_BACKOFF));
                tracing::warn!(service = %self.deliverer.args.service, subscriber = %name, %reason, retry_in = ?pause, "delivery failed");
                self.backoff.insert(name, (Instant::now() + pause, pause));
            }
        }
    }
}

impl Deliverer {
    /// Delivers everything past the subscriber's cursors to `member`, batch by batch.
    async fn deliver_to(&self, name: &str, member: &ActorRef<SubscriberMsg>) -> Result<(), String> {
        // Most passes find nothing to send; those need no claim (three round
        // trips every poll, per subscriber).
        if self.pending(name).await?.is_empty() {
            return Ok(());
        }
        // One deliverer per subscriber in the whole cluster: every node hosting
        // this service runs a dispatcher, and two delivering at once would send
        // the same events twice. The claim lasts while this transaction is
        // open and ends with it, or with the connection if this node dies.
        let text = |e: tokio_postgres::Error| e.to_string();
        let mut client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        let claim = client.transaction().await.map_err(text)?;
        let try_claim = claim.prepare_cached(&self.sql.claim).await.map_err(text)?;
        let row = claim.query_one(&try_claim, &[&name]).await.map_err(text)?;
        if !row.get::<_, bool>(0) {
            // Another node is delivering to it right now.
            return Ok(());
        }
        // Read again under the claim: another node may have just delivered.
        loop {
            let batch = self.pending(name).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let full = i64::try_from(batch.len()).unwrap_or(0) == BATCH;
            self.send(name, member, batch).await?;
            // A leaving node hands over one batch, not a backlog: what is
            // left is safe in the outbox for the next deliverer.
            if !full || self.leaving.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
        }
    }

    /// Sends one batch and moves the cursors past what was acknowledged.
    async fn send(
        &self,
        name: &str,
        member: &ActorRef<SubscriberMsg>,
        batch: Vec<EventEnvelope>,
    ) -> Result<(), String> {
        let sent = batch.len();
        let heads: Vec<(i16, i64)> = batch.iter().map(|e| (e.partition, e.seq)).collect();
        let deliver = |reply| SubscriberMsg::Deliver(Wire::Value(batch), reply);
        let handled = match member.call(deliver, Some(ACK_TIMEOUT)).await {
            Ok(CallResult::Success(Wire::Value(Ok(count)))) => {
                usize::try_from(count).unwrap_or(0).min(sent)
            }
            Ok(CallResult::Success(Wire::Value(Err(e)))) => {
                return Err(format!("subscriber refused: {e}"));
            }
            Ok(CallResult::Success(Wire::Malformed(e))) => {
                return Err(format!("malformed acknowledgement: {e}"));
            }
            Ok(CallResult::Timeout) => return Err("no acknowledgement in time".into()),
            Ok(CallResult::SenderError) | Err(_) => return Err("subscriber went away".into()),
        };
        if handled > 0 {
            let mut upto: BTreeMap<i16, i64> = BTreeMap::new();
            for (partition, seq) in &heads[..handled] {
                let slot = upto.entry(*partition).or_default();
                *slot = (*slot).max(*seq);
            }
            self.advance(name, upto).await?;
        }
        if handled < sent {
            return Err(format!("acknowledged only {handled} of {sent} events"));
        }
        Ok(())
    }

    async fn pending(&self, subscriber: &str) -> Result<Vec<EventEnvelope>, String> {
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        let pending = client
            .prepare_cached(&self.sql.pending)
            .await
            .map_err(|e| e.to_string())?;
        let rows = client
            .query(&pending, &[&subscriber])
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
                traceparent: row.get(8),
                source: self.args.service,
            })
            .collect())
    }

    async fn advance(&self, name: &str, upto: BTreeMap<i16, i64>) -> Result<(), String> {
        let partitions: Vec<i16> = upto.keys().copied().collect();
        let seqs: Vec<i64> = upto.values().copied().collect();
        let client = self.args.pool.get().await.map_err(|e| e.to_string())?;
        let advance = client
            .prepare_cached(&self.sql.advance)
            .await
            .map_err(|e| e.to_string())?;
        client
            .execute(&advance, &[&name, &partitions, &seqs])
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
