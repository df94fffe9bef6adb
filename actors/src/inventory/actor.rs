//! One actor per product owns its stock. It is the first line of defence
//! against overselling: every change to a product's levels goes through its
//! mailbox, decided one at a time ([`super::state::decide`]) against exact
//! in-memory levels.
//!
//! Throughput comes from batching: changes queue up while the previous batch is
//! being written, and the next flush decides all of them in arrival order and
//! writes them (levels, lines, events) in one transaction. Each caller still
//! gets its own exact answer, sent only after the transaction commits.
//!
//! Idle: an actor with nothing to do for [`IDLE`] stops, and its router keeps
//! what it knew ([`Parked`]: the levels and open lines, a few hundred bytes
//! instead of an actor's ~14 kB), so the next request starts an actor from
//! memory, not from PostgreSQL. Parked memory is as safe as a live actor's:
//! its first write is fenced like any other.
//!
//! Fencing: every write is a compare-and-set on the stock row's `version`. An
//! actor writes only if nobody wrote since it loaded (or last wrote), that is
//! only while its memory is the truth. If another node's actor wrote meanwhile
//! (ownership moved), this actor's write changes nothing: it answers "moved"
//! (nothing was written, ask the owner again) and stops. Taking ownership
//! costs no write, so an actor that only reads never disturbs another.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mart_schema::inventory::{InventoryError, LineStatus, StockLevels};
use mart_schema::{OrderId, ProductId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use time::OffsetDateTime;

use super::state::{self, Levels, Line, OpDone, Scratch, StockOp};
use super::store::{StockStore, StockWrite, Wrote};
use super::writer::{StockLoader, StockWriter};
use crate::batch;
use crate::failure::{self, Rejection};
use crate::owners::Owned;
use crate::trace::TraceParent;

/// A stock actor with nothing to do for this long stops; its router parks
/// what it knew, and the next request starts it again from that.
const IDLE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};
/// Finished lines remembered for idempotent retries before asking the database.
const RECENT: usize = 4096;

pub(crate) type OpReply = RpcReplyPort<Result<OpDone, Owned<InventoryError>>>;
/// A change waiting for the next flush.
type Queued = (StockOp, Option<OpReply>, Option<TraceParent>);

/// The stock actor's mailbox; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum StockMsg {
    /// A change, who waits for its answer, and the trace of the request
    /// asking (its events continue it).
    Op(StockOp, Option<OpReply>, Option<TraceParent>),
    Levels(RpcReplyPort<Result<StockLevels, Owned<InventoryError>>>),
    /// Decide and write everything queued so far.
    Flush,
    /// Release reservations whose time is up.
    ExpireDue,
    /// Stop if idle (sent by the router to all its actors now and then:
    /// one timer for all instead of one each).
    Tick,
}

#[derive(Debug)]
pub(crate) struct StockActor;

#[derive(Debug, Clone)]
pub(crate) struct StockArgs {
    pub(crate) product_id: ProductId,
    pub(crate) store: StockStore,
    /// What a previous actor of this product knew when it stopped idle.
    pub(crate) parked: Option<Parked>,
}

/// What an idle actor leaves with its router: enough to start again without
/// a load.
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    levels: Levels,
    open: HashMap<OrderId, Line>,
}

impl Parked {
    /// What an actor that ended knew, if it may be used again: it stopped
    /// because it was idle (not fenced, not handed off) and knew a record.
    pub(crate) fn of(state: StockState) -> Option<Self> {
        if !state.idle_stop || state.fenced {
            return None;
        }
        let mut open = state.open;
        open.shrink_to_fit();
        Some(Self {
            levels: state.levels?,
            open,
        })
    }
}

#[derive(Debug)]
pub(crate) struct StockState {
    args: StockArgs,
    /// `None`: the product has no stock record (unknown to inventory).
    levels: Option<Levels>,
    open: HashMap<OrderId, Line>,
    recent: HashMap<OrderId, Line>,
    pending: Vec<Queued>,
    flush_queued: bool,
    last_active: Instant,
    /// Another node owns the product now: everything still queued is "moved".
    fenced: bool,
    /// When the one pending expiry timer fires (for the earliest open line).
    alarm: Option<OffsetDateTime>,
    /// It stopped because it was idle: what it knew may be parked.
    idle_stop: bool,
}

impl Actor for StockActor {
    type Msg = StockMsg;
    type State = StockState;
    type Arguments = StockArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut args: StockArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let loaded = match args.parked.take() {
            Some(parked) => Some((parked.levels, parked.open)),
            None => batch::submit::<StockLoader>(args.product_id).await?,
        };
        let (levels, open) = match loaded {
            Some((levels, open)) => (Some(levels), open),
            None => (None, HashMap::new()),
        };
        let mut state = StockState {
            args,
            levels,
            open,
            recent: HashMap::new(),
            pending: Vec::new(),
            flush_queued: false,
            last_active: Instant::now(),
            fenced: false,
            alarm: None,
            idle_stop: false,
        };
        state.set_alarm(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The idle check itself is not activity: counting it kept every actor
        // alive for ever (no stock actor ever stopped idle).
        if !matches!(msg, StockMsg::Tick) {
            state.last_active = Instant::now();
        }
        if state.fenced {
            state.refuse_moved(msg);
            return Ok(());
        }
        match msg {
            StockMsg::Op(op, reply, trace) => state.enqueue(&myself, op, reply, trace),
            StockMsg::Levels(reply) => {
                let view = state::view(state.args.product_id, state.levels.as_ref());
                let _ = reply.send(view.map_err(Owned::Rejected));
                state.stop_if_unknown(&myself);
            }
            StockMsg::ExpireDue => {
                state.alarm = None;
                let now = mart_schema::now();
                let due: Vec<OrderId> = state
                    .open
                    .iter()
                    .filter(|(_, line)| line.expires_at <= now)
                    .map(|(order, _)| *order)
                    .collect();
                for order_id in due {
                    let op = StockOp::Release {
                        order_id,
                        expired: true,
                    };
                    state.enqueue(&myself, op, None, None);
                }
                // The due lines are being released; the next alarm is for
                // the first line that is not due yet.
                let next = state
                    .open
                    .values()
                    .map(|l| l.expires_at)
                    .filter(|at| *at > now);
                state.alarm_by(&myself, next.min());
            }
            StockMsg::Flush => {
                state.flush_queued = false;
                // A failed write leaves memory as it was and crashes the actor:
                // waiting callers see "failed", and the next request loads
                // the truth from PostgreSQL.
                //
                // Boxed: ractor keeps each actor's message loop in one
                // allocation as large as its largest handler future, and the
                // flush (queries, the group commit) is kilobytes that an idle
                // actor would otherwise hold for its whole life.
                Box::pin(state.flush(&myself)).await?;
            }
            StockMsg::Tick => {
                if state.pending.is_empty() && state.last_active.elapsed() >= IDLE {
                    // Anything already in the mailbox is still served; the
                    // state it ends with is what gets parked.
                    state.idle_stop = true;
                    let _ = myself.drain();
                }
            }
        }
        Ok(())
    }
}

/// A batch decided change by change: the answers, the events, and what the
/// stock became.
struct Decided {
    scratch: Scratch,
    answers: Vec<Result<OpDone, InventoryError>>,
    events: Vec<mart_schema::inventory::InventoryEvent>,
    /// Per event, the trace of the change that published it.
    traces: Vec<Option<String>>,
}

impl Decided {
    fn of(mut scratch: Scratch, batch: &[Queued]) -> Self {
        let now = mart_schema::now();
        let mut events = Vec::new();
        let mut traces = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for (op, _, trace) in batch {
            let (answer, mut published) = state::decide(&mut scratch, op, now);
            let trace = trace.as_ref().map(|t| t.as_str().to_owned());
            traces.extend(std::iter::repeat_n(trace, published.len()));
            events.append(&mut published);
            answers.push(answer);
        }
        Self {
            scratch,
            answers,
            events,
            traces,
        }
    }
}

fn schedule_expiry(myself: &ActorRef<StockMsg>, at: OffsetDateTime) {
    let wait = (at - mart_schema::now()).max(time::Duration::ZERO);
    let wait = Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(5);
    myself.send_after(wait, || StockMsg::ExpireDue);
}

impl StockState {
    /// One timer per actor, for its earliest open line (a timer each cost
    /// a task per reservation); a later one is set when it fires.
    fn set_alarm(&mut self, myself: &ActorRef<StockMsg>) {
        let earliest = self.open.values().map(|l| l.expires_at).min();
        self.alarm_by(myself, earliest);
    }

    /// Moves the alarm earlier if `earliest` is due before it. A flush passes
    /// only the lines it opened: scanning every open line on each flush made
    /// a hot product's flushes grow with its reservations.
    fn alarm_by(&mut self, myself: &ActorRef<StockMsg>, earliest: Option<OffsetDateTime>) {
        let Some(earliest) = earliest else {
            return;
        };
        if self.alarm.is_none_or(|at| earliest < at) {
            self.alarm = Some(earliest);
            schedule_expiry(myself, earliest);
        }
    }

    fn enqueue(
        &mut self,
        myself: &ActorRef<StockMsg>,
        op: StockOp,
        reply: Option<OpReply>,
        trace: Option<TraceParent>,
    ) {
        self.pending.push((op, reply, trace));
        // Everything already in the mailbox arrives before this Flush, so one
        // flush takes every change that queued up meanwhile.
        if !self.flush_queued {
            self.flush_queued = myself.cast(StockMsg::Flush).is_ok();
        }
    }

    fn refuse_moved(&self, msg: StockMsg) {
        let moved = || Owned::Moved(format!("product {} moved", self.args.product_id));
        match msg {
            StockMsg::Op(_, Some(reply), _) => {
                let _ = reply.send(Err(moved()));
            }
            StockMsg::Levels(reply) => {
                let _ = reply.send(Err(moved()));
            }
            _ => {}
        }
    }

    /// Without a stock record there is nothing to own; stopping means the next
    /// request loads again and sees a record created since.
    fn stop_if_unknown(&self, myself: &ActorRef<StockMsg>) {
        if self.levels.is_none() {
            let _ = myself.drain();
        }
    }

    /// Load → decide → write → reply, for everything queued.
    async fn flush(&mut self, myself: &ActorRef<StockMsg>) -> Result<(), ActorProcessingErr> {
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        let product_id = self.args.product_id;
        let Some(start) = self.levels.clone() else {
            let unknown = || Owned::Rejected(InventoryError::UnknownProduct(product_id));
            for reply in batch.into_iter().filter_map(|(_, reply, _)| reply) {
                let _ = reply.send(Err(unknown()));
            }
            self.stop_if_unknown(myself);
            return Ok(());
        };
        // A new reservation's line is taken for new without asking the
        // database; the write checks. If one exists after all, decide again
        // having looked everything up.
        let mut look_up_all = false;
        loop {
            let (scratch, assumed_new) = self.scratch(start.clone(), &batch, look_up_all).await?;
            let decided = Decided::of(scratch, &batch);
            let write = StockWrite {
                product_id,
                levels: decided.scratch.levels.clone(),
                lines: decided.scratch.touched.clone(),
                events: decided.events.clone(),
                traces: decided.traces.clone(),
                assumed_new,
            };
            let wrote = match batch::submit::<StockWriter>(write).await {
                Ok(wrote) => wrote,
                // A value PostgreSQL refused: nothing was written, memory is
                // still the truth. Each change is tried alone, so only the
                // one at fault hears "no"; the actor lives.
                Err(e) if e.is_data_exception() && batch.len() > 1 => {
                    for change in batch {
                        self.pending = vec![change];
                        Box::pin(self.flush(myself)).await?;
                    }
                    return Ok(());
                }
                Err(e) if e.is_data_exception() => {
                    let refused = failure::unstorable(&e);
                    for reply in batch.into_iter().filter_map(|(_, reply, _)| reply) {
                        let no = InventoryError::malformed(refused.clone());
                        let _ = reply.send(Err(Owned::Rejected(no)));
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            match wrote {
                Wrote::Stale if !look_up_all => look_up_all = true,
                Wrote::Committed => {
                    self.remember(myself, decided.scratch);
                    for ((_, reply, _), answer) in batch.into_iter().zip(decided.answers) {
                        if let Some(reply) = reply {
                            let _ = reply.send(answer.map_err(Owned::Rejected));
                        }
                    }
                    return Ok(());
                }
                Wrote::Fenced | Wrote::Stale => {
                    tracing::info!(product = %product_id, "ownership moved; handing over");
                    let moved =
                        || Owned::Moved(format!("product {product_id} moved to another owner"));
                    for reply in batch.into_iter().filter_map(|(_, reply, _)| reply) {
                        let _ = reply.send(Err(moved()));
                    }
                    self.fenced = true;
                    let _ = myself.drain();
                    return Ok(());
                }
            }
        }
    }

    /// The batch's starting point: the levels, and every line it names, from
    /// memory or (one query for all) from the database. A new reservation's
    /// line unknown to memory is taken for new (and named in the answer)
    /// unless `look_up_all`.
    async fn scratch(
        &self,
        levels: Levels,
        batch: &[Queued],
        look_up_all: bool,
    ) -> Result<(Scratch, Vec<OrderId>), ActorProcessingErr> {
        let mut lines = HashMap::new();
        let mut unknown = BTreeSet::new();
        let mut reserving = BTreeSet::new();
        for (op, _, _) in batch {
            let Some(order) = op.order() else { continue };
            match self.open.get(&order).or_else(|| self.recent.get(&order)) {
                Some(line) => {
                    lines.insert(order, *line);
                }
                None if matches!(op, StockOp::Reserve { .. }) => {
                    reserving.insert(order);
                }
                None => {
                    unknown.insert(order);
                }
            }
        }
        // Named by another change too: look it up after all.
        reserving.retain(|order| !unknown.contains(order));
        if look_up_all {
            unknown.append(&mut reserving);
        }
        let unknown: Vec<OrderId> = unknown.into_iter().collect();
        let product = self.args.product_id;
        lines.extend(self.args.store.lines(product, &unknown).await?);
        let scratch = Scratch::new(product, levels, lines);
        Ok((scratch, reserving.into_iter().collect()))
    }

    /// Committed: memory follows what was written.
    fn remember(&mut self, myself: &ActorRef<StockMsg>, mut written: Scratch) {
        written.levels.version += 1;
        self.levels = Some(written.levels);
        let mut earliest: Option<OffsetDateTime> = None;
        for (order_id, line) in written.touched {
            if line.status == LineStatus::Reserved {
                earliest = Some(earliest.map_or(line.expires_at, |e| e.min(line.expires_at)));
                self.open.insert(order_id, line);
            } else {
                self.open.remove(&order_id);
                if self.recent.len() >= RECENT {
                    self.recent.clear();
                }
                self.recent.insert(order_id, line);
            }
        }
        self.alarm_by(myself, earliest);
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
