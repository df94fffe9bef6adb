//! Batched round trips: items that arrive while one batch is at the database
//! queue up, and the next flush sends all of them in one statement or
//! transaction. Each caller still gets its own answer, after the batch.
//!
//! - Group commit: the stock actors of a node share one writer (many
//!   products, one transaction), and so do the new orders of a node.
//! - Group load: stock actors starting at once (a cold sweep of products, a
//!   hand-off reloading every product) load in one query, not one each.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::call::remaining;
use crate::failure::Infra;

/// What a [`Batcher`] sends: a group commit, or a group load.
pub(crate) trait Batched: Clone + Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// Each item's outcome, in the order of the items.
    type Done: Clone + Send + 'static;
    /// Its registry name on this node.
    const NAME: &'static str;
    /// The service it works for.
    const SERVICE: mart_schema::Service;
    /// Most items one round trip takes.
    const MAX_BATCH: usize;

    fn run(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Done>, Infra>> + Send;
}

pub(crate) type Outcome<D> = Result<D, Arc<Infra>>;

/// An item waiting for its batch, and where its outcome goes.
type Waiting<W> = (
    <W as Batched>::Item,
    RpcReplyPort<Outcome<<W as Batched>::Done>>,
);

pub(crate) enum BatchMsg<I, D> {
    Write(I, RpcReplyPort<Outcome<D>>),
    /// Send everything queued so far.
    Flush,
}

impl<I: Send + 'static, D: Send + 'static> ractor::Message for BatchMsg<I, D> {}

impl<I, D> std::fmt::Debug for BatchMsg<I, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BatchMsg::Write(..) => "Write",
            BatchMsg::Flush => "Flush",
        })
    }
}

/// The actor that batches one [`Batched`]'s items.
pub(crate) struct Batcher<W>(PhantomData<fn() -> W>);

impl<W> Batcher<W> {
    pub(crate) fn new() -> Self {
        Batcher(PhantomData)
    }
}

impl<W> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Batcher::new()
    }
}

impl<W> std::fmt::Debug for Batcher<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

pub(crate) struct Queue<W: Batched> {
    batched: W,
    pending: Vec<Waiting<W>>,
    flush_queued: bool,
}

impl<W: Batched> std::fmt::Debug for Queue<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<W: Batched> Actor for Batcher<W> {
    type Msg = BatchMsg<W::Item, W::Done>;
    type State = Queue<W>;
    type Arguments = W;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        batched: W,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Queue {
            batched,
            pending: Vec::new(),
            flush_queued: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        queue: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BatchMsg::Write(item, reply) => {
                queue.pending.push((item, reply));
                // Everything already in the mailbox arrives before this Flush.
                if !queue.flush_queued {
                    queue.flush_queued = myself.cast(BatchMsg::Flush).is_ok();
                }
            }
            BatchMsg::Flush => {
                queue.flush_queued = false;
                while !queue.pending.is_empty() {
                    let take = queue.pending.len().min(W::MAX_BATCH);
                    let batch: Vec<_> = queue.pending.drain(..take).collect();
                    run(&queue.batched, batch).await;
                }
            }
        }
        Ok(())
    }
}

/// Runs one batch and answers each of its callers.
async fn run<W: Batched>(batched: &W, batch: Vec<Waiting<W>>) {
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let several = items.len() > 1;
    match batched.run(&items).await {
        Ok(done) => answer(replies, Ok(done)),
        // A value PostgreSQL refused fails the whole transaction: run each
        // alone, so only its own caller hears of it.
        Err(e) if several && e.is_data_exception() => {
            for (item, reply) in items.iter().zip(replies) {
                let alone = batched.run(std::slice::from_ref(item)).await;
                answer(vec![reply], alone);
            }
        }
        Err(e) => answer(replies, Err(e)),
    }
}

/// Sends each waiting caller its item's outcome.
fn answer<D: Clone>(replies: Vec<RpcReplyPort<Outcome<D>>>, outcome: Result<Vec<D>, Infra>) {
    match outcome {
        Ok(done) => {
            for (reply, done) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok(done));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Runs `item` with whatever else is queued on this node; answers after
/// the batch (the commit), at most until this task's deadline.
pub(crate) async fn submit<W: Batched>(item: W::Item) -> Result<W::Done, Infra> {
    // Restarting, or stopping with its node: trying again soon may work.
    let away = |why: &str| Infra::Unavailable {
        service: W::SERVICE,
        why: format!("{}: {why}", W::NAME),
    };
    let Some(cell) = ractor::registry::where_is(W::NAME) else {
        return Err(away("not running"));
    };
    let batcher = ActorRef::<BatchMsg<W::Item, W::Done>>::from(cell);
    let ask = |reply| BatchMsg::Write(item, reply);
    match batcher.call(ask, Some(remaining())).await {
        Ok(ractor::rpc::CallResult::Success(Ok(done))) => Ok(done),
        Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(Infra::Shared(e)),
        Ok(ractor::rpc::CallResult::Timeout) => Err(away("no answer in time")),
        _ => Err(away("stopped mid-write")),
    }
}

/// Makes the rest of a transaction plan its statements once, as key lookups
/// (see [`one_round_trip`]).
pub(crate) const KEY_LOOKUP_PLANS: &str = "select set_config('plan_cache_mode', 'force_generic_plan', true), \
            set_config('enable_seqscan', 'off', true)";

/// Runs `statements` as one transaction in one round trip: BEGIN, each
/// statement, COMMIT, all sent at once. The server runs them in order; the
/// first failure aborts the rest, and the COMMIT then rolls back. Every
/// statement must be prepared already (so each is sent when first polled).
///
/// The transaction's statements are planned once, as key lookups per array
/// element, which is their best plan whatever the values:
/// - Generic plans. Left to choose, PostgreSQL planned the group commits'
///   array statements (the outbox append, the stock update) again about
///   every other execution, a third of a millisecond each and a fifth of the
///   server's time under the order bench (`pg_stat_statements`,
///   track_planning).
/// - No sequential scans. For a small catalog the generic plan of the stock
///   update scanned the whole table on every batch (`auto_explain`), and
///   a busy table holds many dead row versions between vacuums: 0.76 ms a
///   call in the order bench, 0.56 ms as index lookups (`pg_stat_statements`).
///
/// Not for every statement of a pool: a product load is planned for the
/// products it names (see `StockStore::load_many`).
pub(crate) async fn one_round_trip(
    client: &deadpool_postgres::Client,
    statements: &[(
        &tokio_postgres::Statement,
        Vec<&(dyn postgres_types::ToSql + Sync)>,
    )],
) -> Result<Vec<u64>, tokio_postgres::Error> {
    let (begin, plans, commit) = futures::try_join!(
        client.prepare_cached("begin"),
        client.prepare_cached(KEY_LOOKUP_PLANS),
        client.prepare_cached("commit")
    )?;
    let mut sent = Vec::with_capacity(statements.len() + 3);
    sent.push(client.execute(&begin, &[]));
    sent.push(client.execute(&plans, &[]));
    for (statement, params) in statements {
        sent.push(client.execute(*statement, params));
    }
    sent.push(client.execute(&commit, &[]));
    let mut done = futures::future::join_all(sent).await.into_iter().skip(2);
    let mut affected = Vec::with_capacity(statements.len());
    for outcome in done.by_ref().take(statements.len()) {
        affected.push(outcome?);
    }
    done.next().transpose()?;
    Ok(affected)
}
