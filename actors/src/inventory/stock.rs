//! One actor per product owns its stock. It is the first line of defence
//! against overselling: every change to a product's levels goes through its
//! mailbox, one decision at a time, against exact in-memory levels.
//!
//! Throughput comes from batching: changes queue up while the previous batch is
//! being written, and the next flush decides all of them in arrival order and
//! writes them (levels, lines, events) in one transaction. Each caller still
//! gets its own exact answer, sent only after the transaction commits.
//!
//! Fencing: every write is a compare-and-set on the stock row's `version`. An
//! actor writes only if nobody wrote since it loaded (or last wrote), that is
//! only while its memory is the truth. If another node's actor wrote meanwhile
//! (ownership moved), this actor's write changes nothing: it answers "moved"
//! (nothing was written, ask the owner again) and stops. Taking ownership
//! costs no write, so an actor that only reads never disturbs another.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use mart_schema::inventory::{
    InventoryError, InventoryEvent, LineStatus, LowStock, ReservedLine, StockAdjusted, StockChange,
    StockLevels, StockMoved,
};
use mart_schema::{OrderId, ProductId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use time::OffsetDateTime;

use crate::outbox::Outbox;
use crate::owners::Owned;

/// A stock actor with nothing to do for this long stops; its product's state
/// is in PostgreSQL and it is started again on the next request.
const IDLE: Duration = Duration::from_secs(60);
/// Finished lines remembered for idempotent retries before asking the database.
const RECENT: usize = 4096;

/// A change to one product's stock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum StockOp {
    Reserve {
        order_id: OrderId,
        quantity: i64,
        expires_at: OffsetDateTime,
    },
    Commit {
        order_id: OrderId,
    },
    Release {
        order_id: OrderId,
        expired: bool,
    },
    /// Puts a committed line back on hand (its paid order was cancelled).
    Return {
        order_id: OrderId,
    },
    Change(StockChange),
    Archive,
}

impl StockOp {
    /// Whether asking again after an unknown outcome is safe: reservation
    /// steps are idempotent by order id, a stock adjustment is not.
    pub(crate) fn is_idempotent(&self) -> bool {
        !matches!(self, StockOp::Change(StockChange::Adjust { .. }))
    }
}

/// The answer to a [`StockOp`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum OpDone {
    Line(ReservedLine),
    Levels(StockLevels),
}

pub(crate) type OpReply = RpcReplyPort<Result<OpDone, Owned<InventoryError>>>;

/// The stock actor's mailbox; local only.
#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum StockMsg {
    Op(StockOp, Option<OpReply>),
    Levels(RpcReplyPort<Result<StockLevels, Owned<InventoryError>>>),
    /// Decide and write everything queued so far.
    Flush,
    /// Release reservations whose time is up.
    ExpireDue,
    /// Stop if idle.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Line {
    quantity: i64,
    status: LineStatus,
    expires_at: OffsetDateTime,
}

#[derive(Debug)]
pub(crate) struct StockActor;

#[derive(Debug, Clone)]
pub(crate) struct StockArgs {
    pub(crate) product_id: ProductId,
    pub(crate) pool: Pool,
    pub(crate) outbox: Outbox,
}

#[derive(Debug, Clone)]
struct Levels {
    on_hand: i64,
    reserved: i64,
    threshold: i64,
    archived: bool,
    /// The row's version this memory reflects; the next write requires it.
    version: i64,
}

#[derive(Debug)]
pub(crate) struct StockState {
    args: StockArgs,
    /// `None`: the product has no stock record (unknown to inventory).
    levels: Option<Levels>,
    open: HashMap<OrderId, Line>,
    recent: HashMap<OrderId, Line>,
    pending: Vec<(StockOp, Option<OpReply>)>,
    flush_queued: bool,
    last_active: Instant,
    /// Another node owns the product now: everything still queued is "moved".
    fenced: bool,
}

impl Actor for StockActor {
    type Msg = StockMsg;
    type State = StockState;
    type Arguments = StockArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StockArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Levels, version and open lines in one round trip (one snapshot).
        let client = args.pool.get().await?;
        let load = client
            .prepare_cached(
                "select s.on_hand, s.reserved, s.low_stock_threshold, s.archived, \
                        l.order_id, l.quantity, l.expires_at, s.version \
                 from inventory.stock s \
                 left join inventory.reservation_lines l \
                   on l.product_id = s.product_id and l.status = 'reserved' \
                 where s.product_id = $1",
            )
            .await?;
        let rows = client.query(&load, &[&args.product_id]).await?;
        let levels = rows.first().map(|row| Levels {
            on_hand: row.get(0),
            reserved: row.get(1),
            threshold: row.get(2),
            archived: row.get(3),
            version: row.get(7),
        });
        let mut open = HashMap::new();
        for row in &rows {
            let Some(order_id) = row.get::<_, Option<OrderId>>(4) else {
                continue;
            };
            let line = Line {
                quantity: row.get(5),
                status: LineStatus::Reserved,
                expires_at: row.get(6),
            };
            schedule_expiry(&myself, line.expires_at);
            open.insert(order_id, line);
        }
        drop(client);
        myself.send_interval(IDLE / 2, || StockMsg::Tick);
        Ok(StockState {
            args,
            levels,
            open,
            recent: HashMap::new(),
            pending: Vec::new(),
            flush_queued: false,
            last_active: Instant::now(),
            fenced: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.last_active = Instant::now();
        if state.fenced {
            let moved = || Owned::Moved(format!("product {} moved", state.args.product_id));
            match msg {
                StockMsg::Op(_, Some(reply)) => {
                    let _ = reply.send(Err(moved()));
                }
                StockMsg::Levels(reply) => {
                    let _ = reply.send(Err(moved()));
                }
                _ => {}
            }
            return Ok(());
        }
        match msg {
            StockMsg::Op(op, reply) => state.enqueue(&myself, op, reply),
            StockMsg::Levels(reply) => {
                let _ = reply.send(state.view().map_err(Owned::Rejected));
                state.stop_if_unknown(&myself);
            }
            StockMsg::ExpireDue => {
                let now = OffsetDateTime::now_utc();
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
                    state.enqueue(&myself, op, None);
                }
            }
            StockMsg::Flush => {
                state.flush_queued = false;
                // A failed write leaves memory as it was and crashes the actor:
                // waiting callers see "unavailable", and the next request loads
                // the truth from PostgreSQL.
                state.flush(&myself).await?;
            }
            StockMsg::Tick => {
                if state.pending.is_empty() && state.last_active.elapsed() >= IDLE {
                    let _ = myself.drain();
                }
            }
        }
        Ok(())
    }
}

fn schedule_expiry(myself: &ActorRef<StockMsg>, at: OffsetDateTime) {
    let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let wait = Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(5);
    myself.send_after(wait, || StockMsg::ExpireDue);
}

/// One decision, before it is written.
struct Decided {
    reply: Option<OpReply>,
    answer: Result<OpDone, InventoryError>,
}

impl StockState {
    fn enqueue(&mut self, myself: &ActorRef<StockMsg>, op: StockOp, reply: Option<OpReply>) {
        self.pending.push((op, reply));
        // Everything already in the mailbox arrives before this Flush, so one
        // flush takes every change that queued up meanwhile.
        if !self.flush_queued {
            self.flush_queued = myself.cast(StockMsg::Flush).is_ok();
        }
    }

    /// Without a stock record there is nothing to own; stopping means the next
    /// request loads again and sees a record created since.
    fn stop_if_unknown(&self, myself: &ActorRef<StockMsg>) {
        if self.levels.is_none() {
            let _ = myself.drain();
        }
    }

    fn view(&self) -> Result<StockLevels, InventoryError> {
        let levels = self
            .levels
            .as_ref()
            .filter(|l| !l.archived)
            .ok_or(InventoryError::UnknownProduct(self.args.product_id))?;
        Ok(StockLevels {
            product_id: self.args.product_id,
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.on_hand - levels.reserved,
        })
    }

    fn line(&self, order_id: &OrderId) -> Option<Line> {
        self.open
            .get(order_id)
            .or_else(|| self.recent.get(order_id))
            .copied()
    }

    async fn flush(&mut self, myself: &ActorRef<StockMsg>) -> Result<(), ActorProcessingErr> {
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        let product_id = self.args.product_id;
        let Some(start) = self.levels.clone() else {
            for (_, reply) in batch {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Owned::Rejected(InventoryError::UnknownProduct(
                        product_id,
                    ))));
                }
            }
            self.stop_if_unknown(myself);
            return Ok(());
        };

        // Lines this batch names that memory does not know: one query for all.
        let unknown: Vec<OrderId> = batch
            .iter()
            .filter_map(|(op, _)| match op {
                StockOp::Reserve { order_id, .. }
                | StockOp::Commit { order_id }
                | StockOp::Release { order_id, .. }
                | StockOp::Return { order_id } => Some(*order_id),
                _ => None,
            })
            .filter(|order| self.line(order).is_none())
            .collect();
        let mut client = self.args.pool.get().await?;
        let mut known: HashMap<OrderId, Line> = HashMap::new();
        if !unknown.is_empty() {
            let ids: Vec<uuid::Uuid> = unknown.iter().map(|o| o.0).collect();
            let lookup = client
                .prepare_cached(
                    "select order_id, quantity, status, expires_at from inventory.reservation_lines \
                     where product_id = $1 and order_id = any($2)",
                )
                .await?;
            for row in client.query(&lookup, &[&product_id, &ids]).await? {
                let status: String = row.get(2);
                known.insert(
                    row.get(0),
                    Line {
                        quantity: row.get(1),
                        status: status.parse()?,
                        expires_at: row.get(3),
                    },
                );
            }
        }

        // Decide every change in arrival order against a scratch copy.
        let mut levels = start;
        let mut touched: HashMap<OrderId, Line> = HashMap::new();
        let mut events = Vec::new();
        let mut decided = Vec::with_capacity(batch.len());
        for (op, reply) in batch {
            let before_available = levels.on_hand - levels.reserved;
            let current = |order: &OrderId, touched: &HashMap<OrderId, Line>| {
                touched
                    .get(order)
                    .copied()
                    .or_else(|| self.line(order))
                    .or_else(|| known.get(order).copied())
            };
            let answer = match op {
                StockOp::Reserve {
                    order_id,
                    quantity,
                    expires_at,
                } => match current(&order_id, &touched) {
                    Some(line) if line.status == LineStatus::Released => {
                        Err(InventoryError::Conflict(format!(
                            "the reservation of order {order_id} was already released"
                        )))
                    }
                    Some(line) => Ok(done_line(product_id, line)),
                    None if levels.archived => Err(InventoryError::UnknownProduct(product_id)),
                    None if quantity <= 0 => {
                        Err(InventoryError::Conflict("quantity must be positive".into()))
                    }
                    None if before_available < quantity => Err(InventoryError::InsufficientStock {
                        product_id,
                        requested: quantity,
                        available: before_available,
                    }),
                    None => {
                        let line = Line {
                            quantity,
                            status: LineStatus::Reserved,
                            expires_at,
                        };
                        Ok(step(
                            &mut levels,
                            &mut touched,
                            &mut events,
                            LineMove {
                                product_id,
                                order_id,
                                line,
                                to: LineStatus::Reserved,
                                reason: None,
                            },
                        ))
                    }
                },
                StockOp::Commit { order_id }
                | StockOp::Release { order_id, .. }
                | StockOp::Return { order_id } => {
                    let (from, to, reason) = match &op {
                        StockOp::Commit { .. } => {
                            (LineStatus::Reserved, LineStatus::Committed, None)
                        }
                        StockOp::Release { expired, .. } => (
                            LineStatus::Reserved,
                            LineStatus::Released,
                            Some(if *expired { "expired" } else { "released" }.to_owned()),
                        ),
                        _ => (LineStatus::Committed, LineStatus::Returned, None),
                    };
                    let stale_timer = matches!(op, StockOp::Release { expired: true, .. });
                    match current(&order_id, &touched) {
                        Some(line) if line.status == to => Ok(done_line(product_id, line)),
                        // A stale expiry timer: this line was not due after all.
                        Some(line)
                            if stale_timer
                                && line.status == from
                                && line.expires_at > OffsetDateTime::now_utc() =>
                        {
                            Ok(done_line(product_id, line))
                        }
                        Some(line) if line.status == from => Ok(step(
                            &mut levels,
                            &mut touched,
                            &mut events,
                            LineMove {
                                product_id,
                                order_id,
                                line,
                                to,
                                reason,
                            },
                        )),
                        Some(line) => Err(InventoryError::Conflict(format!(
                            "the reservation of order {order_id} is {}; it cannot become {}",
                            line.status.as_str(),
                            to.as_str()
                        ))),
                        None => Err(InventoryError::NoReservation(order_id)),
                    }
                }
                StockOp::Change(change) => {
                    let (target, delta, reason) = match change {
                        StockChange::Adjust { delta, reason } => {
                            (levels.on_hand.checked_add(delta), delta, reason)
                        }
                        StockChange::Set { on_hand } => {
                            (Some(on_hand), on_hand - levels.on_hand, "set".to_owned())
                        }
                    };
                    match target {
                        _ if levels.archived => Err(InventoryError::UnknownProduct(product_id)),
                        Some(target) if target >= levels.reserved && target >= 0 => {
                            levels.on_hand = target;
                            events.push(InventoryEvent::Adjusted(StockAdjusted {
                                product_id,
                                delta,
                                reason,
                                on_hand: levels.on_hand,
                                reserved: levels.reserved,
                            }));
                            Ok(OpDone::Levels(levels_view(product_id, &levels)))
                        }
                        _ => Err(InventoryError::Conflict(format!(
                            "on_hand cannot go below the {} units reserved (or below 0); it is {}",
                            levels.reserved, levels.on_hand
                        ))),
                    }
                }
                StockOp::Archive => {
                    levels.archived = true;
                    Ok(OpDone::Levels(levels_view(product_id, &levels)))
                }
            };
            let after_available = levels.on_hand - levels.reserved;
            if before_available > levels.threshold && after_available <= levels.threshold {
                events.push(InventoryEvent::LowStock(LowStock {
                    product_id,
                    available: after_available,
                    threshold: levels.threshold,
                }));
            }
            decided.push(Decided { reply, answer });
        }

        // Write the batch: levels, lines and events in one transaction.
        let tx = client.transaction().await?;
        let update = tx
            .prepare_cached(
                "update inventory.stock set on_hand = $2, reserved = $3, archived = archived or $4, \
                   version = version + 1, updated_at = now() \
                 where product_id = $1 and version = $5",
            )
            .await?;
        let written = tx
            .execute(
                &update,
                &[
                    &product_id,
                    &levels.on_hand,
                    &levels.reserved,
                    &levels.archived,
                    &levels.version,
                ],
            )
            .await?;
        levels.version += 1;
        if written == 0 {
            // Fenced: another node's actor wrote since this one loaded.
            // Nothing was written.
            drop(tx);
            tracing::info!(product = %product_id, "ownership moved; handing over");
            for Decided { reply, .. } in decided {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Owned::Moved(format!(
                        "product {product_id} moved to another owner"
                    ))));
                }
            }
            self.fenced = true;
            let _ = myself.drain();
            return Ok(());
        }
        if !touched.is_empty() {
            let orders: Vec<uuid::Uuid> = touched.keys().map(|o| o.0).collect();
            let quantities: Vec<i64> = touched.values().map(|l| l.quantity).collect();
            let statuses: Vec<&str> = touched.values().map(|l| l.status.as_str()).collect();
            let expiries: Vec<OffsetDateTime> = touched.values().map(|l| l.expires_at).collect();
            let upsert = tx
                .prepare_cached(
                    "insert into inventory.reservation_lines (order_id, product_id, quantity, status, expires_at) \
                     select o, $1, q, s, e from unnest($2::uuid[], $3::bigint[], $4::text[], $5::timestamptz[]) \
                       as t(o, q, s, e) \
                     on conflict (order_id, product_id) do update set status = excluded.status, updated_at = now()",
                )
                .await?;
            tx.execute(
                &upsert,
                &[&product_id, &orders, &quantities, &statuses, &expiries],
            )
            .await?;
        }
        self.args.outbox.append(&tx, &events).await?;
        tx.commit().await?;
        drop(client);
        if !events.is_empty() {
            self.args.outbox.wake();
        }

        // Committed: memory follows, then every caller gets its answer.
        self.levels = Some(levels);
        for (order_id, line) in touched {
            if line.status == LineStatus::Reserved {
                if !self.open.contains_key(&order_id) {
                    schedule_expiry(myself, line.expires_at);
                }
                self.open.insert(order_id, line);
            } else {
                self.open.remove(&order_id);
                if self.recent.len() >= RECENT {
                    self.recent.clear();
                }
                self.recent.insert(order_id, line);
            }
        }
        for Decided { reply, answer } in decided {
            if let Some(reply) = reply {
                let _ = reply.send(answer.map_err(Owned::Rejected));
            }
        }
        Ok(())
    }
}

fn levels_view(product_id: ProductId, levels: &Levels) -> StockLevels {
    StockLevels {
        product_id,
        on_hand: levels.on_hand,
        reserved: levels.reserved,
        available: levels.on_hand - levels.reserved,
    }
}

fn done_line(product_id: ProductId, line: Line) -> OpDone {
    OpDone::Line(ReservedLine {
        product_id,
        quantity: line.quantity,
        status: line.status,
        expires_at: line.expires_at,
    })
}

/// One line moving to another status, decided in a batch.
struct LineMove {
    product_id: ProductId,
    order_id: OrderId,
    line: Line,
    to: LineStatus,
    reason: Option<String>,
}

/// Applies a line's move to the batch's scratch state: the levels follow, and
/// the event says so.
fn step(
    levels: &mut Levels,
    touched: &mut HashMap<OrderId, Line>,
    events: &mut Vec<InventoryEvent>,
    m: LineMove,
) -> OpDone {
    let quantity = m.line.quantity;
    let kind: fn(StockMoved) -> InventoryEvent = match m.to {
        LineStatus::Reserved => {
            levels.reserved += quantity;
            InventoryEvent::Reserved
        }
        LineStatus::Committed => {
            levels.on_hand -= quantity;
            levels.reserved -= quantity;
            InventoryEvent::Committed
        }
        LineStatus::Released => {
            levels.reserved -= quantity;
            InventoryEvent::Released
        }
        LineStatus::Returned => {
            levels.on_hand += quantity;
            InventoryEvent::Returned
        }
    };
    let line = Line {
        status: m.to,
        ..m.line
    };
    touched.insert(m.order_id, line);
    events.push(kind(StockMoved {
        product_id: m.product_id,
        order_id: m.order_id,
        quantity,
        on_hand: levels.on_hand,
        reserved: levels.reserved,
        reason: m.reason,
    }));
    done_line(m.product_id, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mart_schema::Service;
    use mart_schema::db::testing::TestDb;
    use ractor::rpc::CallResult;

    async fn reserve(
        actor: &ActorRef<StockMsg>,
        quantity: i64,
    ) -> Result<OpDone, Owned<InventoryError>> {
        let op = StockOp::Reserve {
            order_id: OrderId::new(),
            quantity,
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        match actor
            .call(
                |reply| StockMsg::Op(op, Some(reply)),
                Some(Duration::from_secs(10)),
            )
            .await
        {
            Ok(CallResult::Success(answer)) => answer,
            other => panic!("no answer: {other:?}"),
        }
    }

    /// Two actors for one product, as two nodes whose views of the membership
    /// briefly differ would run. Whichever writes first wins; the other's
    /// write changes nothing (its memory is stale), it answers "moved" and
    /// stops, and the product's levels stay exact.
    #[tokio::test]
    async fn a_stale_owner_is_fenced_out_and_nothing_is_oversold() {
        let db = TestDb::new().await;
        let product_id = ProductId::new();
        db.pool
            .get()
            .await
            .expect("client")
            .execute(
                "insert into inventory.stock (product_id, on_hand) values ($1, 5)",
                &[&product_id],
            )
            .await
            .expect("stock");
        let args = StockArgs {
            product_id,
            pool: db.pool.clone(),
            outbox: Outbox::new(Service::Inventory),
        };
        let (stale, stale_handle) = Actor::spawn(None, StockActor, args.clone())
            .await
            .expect("first owner");
        assert!(reserve(&stale, 2).await.is_ok());

        // A new owner loads (3 available) and sells one.
        let (owner, _) = Actor::spawn(None, StockActor, args)
            .await
            .expect("new owner");
        assert!(reserve(&owner, 1).await.is_ok());
        // The stale actor still believes 3 are available; its write is refused.
        assert!(matches!(reserve(&stale, 3).await, Err(Owned::Moved(_))));
        stale_handle.await.expect("the stale actor stops");
        assert!(matches!(
            reserve(&owner, 3).await,
            Err(Owned::Rejected(InventoryError::InsufficientStock {
                available: 2,
                ..
            }))
        ));
        assert!(reserve(&owner, 2).await.is_ok());
        let row = db
            .pool
            .get()
            .await
            .expect("client")
            .query_one(
                "select on_hand, reserved, (select count(*) from inventory.reservation_lines \
                   where product_id = $1) from inventory.stock where product_id = $1",
                &[&product_id],
            )
            .await
            .expect("levels");
        assert_eq!(
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2)
            ),
            (5, 5, 3)
        );
        owner.stop(None);
    }
}
