//! What a product's stock decides, without any I/O: given its exact levels and
//! the reservation lines a change names, what the change does to them, what
//! the caller is told, and which events say so. The stock actor loads, calls
//! [`decide`] for each queued change in arrival order, writes, and replies.

use std::collections::{BTreeMap, HashMap};

use mart_schema::inventory::{
    InventoryError, InventoryEvent, LineStatus, LowStock, ReserveRequest, ReservedLine,
    StockAdjusted, StockChange, StockLevels, StockMoved,
};
use mart_schema::{FieldErrors, OrderId, ProductId};
use time::OffsetDateTime;

/// A change to one product's stock.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
        /// Asked by an expiry timer, which may be stale.
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

    /// The reservation line the change is about, if any.
    pub(crate) fn order(&self) -> Option<OrderId> {
        match self {
            StockOp::Reserve { order_id, .. }
            | StockOp::Commit { order_id }
            | StockOp::Release { order_id, .. }
            | StockOp::Return { order_id } => Some(*order_id),
            StockOp::Change(_) | StockOp::Archive => None,
        }
    }
}

/// The answer to a [`StockOp`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum OpDone {
    Line(ReservedLine),
    Levels(StockLevels),
}

/// One order's reservation line of this product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Line {
    pub(crate) quantity: i64,
    pub(crate) status: LineStatus,
    pub(crate) expires_at: OffsetDateTime,
}

/// A product's stock record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Levels {
    pub(crate) on_hand: i64,
    pub(crate) reserved: i64,
    pub(crate) threshold: i64,
    pub(crate) archived: bool,
    /// The row's version this memory reflects; the next write requires it.
    pub(crate) version: i64,
}

impl Levels {
    fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    pub(crate) fn view(&self, product_id: ProductId) -> StockLevels {
        StockLevels {
            product_id,
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available(),
        }
    }
}

/// What a batch of changes decides against: the levels, and the lines its
/// changes name as they stand before the batch. Deciding changes it; what it
/// ends as is what the batch writes.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    pub(crate) product_id: ProductId,
    pub(crate) levels: Levels,
    pub(crate) lines: HashMap<OrderId, Line>,
    /// Lines this batch changed, to be written.
    pub(crate) touched: BTreeMap<OrderId, Line>,
}

impl Scratch {
    pub(crate) fn new(
        product_id: ProductId,
        levels: Levels,
        lines: HashMap<OrderId, Line>,
    ) -> Self {
        Self {
            product_id,
            levels,
            lines,
            touched: BTreeMap::new(),
        }
    }

    fn line_done(&self, line: Line) -> OpDone {
        OpDone::Line(ReservedLine {
            product_id: self.product_id,
            quantity: line.quantity,
            status: line.status,
            expires_at: line.expires_at,
        })
    }

    /// Moves a line to `to`: the levels follow, and the event says so.
    fn step(
        &mut self,
        order_id: OrderId,
        line: Line,
        to: LineStatus,
        reason: Option<String>,
    ) -> (OpDone, InventoryEvent) {
        let quantity = line.quantity;
        let levels = &mut self.levels;
        let kind: fn(StockMoved) -> InventoryEvent = match to {
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
        let line = Line { status: to, ..line };
        self.lines.insert(order_id, line);
        self.touched.insert(order_id, line);
        let event = kind(StockMoved {
            product_id: self.product_id,
            order_id,
            quantity,
            on_hand: self.levels.on_hand,
            reserved: self.levels.reserved,
            reason,
        });
        (self.line_done(line), event)
    }
}

pub(crate) type Decision = (Result<OpDone, InventoryError>, Vec<InventoryEvent>);

/// Decides one change against `stock` as of `now`, applying its effect to
/// `stock`: the caller's answer, and the events the change publishes.
pub(crate) fn decide(stock: &mut Scratch, op: &StockOp, now: OffsetDateTime) -> Decision {
    let before = stock.levels.available();
    let (answer, mut events) = match op {
        StockOp::Reserve {
            order_id,
            quantity,
            expires_at,
        } => reserve(stock, *order_id, *quantity, *expires_at),
        StockOp::Commit { order_id } => {
            let to = (LineStatus::Reserved, LineStatus::Committed);
            move_line(stock, *order_id, to, None, now)
        }
        StockOp::Release { order_id, expired } => {
            let to = (LineStatus::Reserved, LineStatus::Released);
            let reason = if *expired { "expired" } else { "released" };
            move_line(stock, *order_id, to, Some(reason), now)
        }
        StockOp::Return { order_id } => {
            let to = (LineStatus::Committed, LineStatus::Returned);
            move_line(stock, *order_id, to, None, now)
        }
        StockOp::Change(change) => adjust(stock, change),
        StockOp::Archive => {
            stock.levels.archived = true;
            (
                Ok(OpDone::Levels(stock.levels.view(stock.product_id))),
                vec![],
            )
        }
    };
    let after = stock.levels.available();
    let threshold = stock.levels.threshold;
    if before > threshold && after <= threshold {
        events.push(InventoryEvent::LowStock(LowStock {
            product_id: stock.product_id,
            available: after,
            threshold,
        }));
    }
    (answer, events)
}

fn reserve(
    stock: &mut Scratch,
    order_id: OrderId,
    quantity: i64,
    expires_at: OffsetDateTime,
) -> Decision {
    let product_id = stock.product_id;
    let available = stock.levels.available();
    let refused = |no| (Err(no), vec![]);
    match stock.lines.get(&order_id).copied() {
        Some(line) if line.status == LineStatus::Released => refused(InventoryError::Conflict(
            format!("the reservation of order {order_id} was already released"),
        )),
        // Asked again: the line as it is.
        Some(line) => (Ok(stock.line_done(line)), vec![]),
        None if stock.levels.archived => refused(InventoryError::UnknownProduct(product_id)),
        None if quantity <= 0 => {
            refused(InventoryError::Conflict("quantity must be positive".into()))
        }
        None if available < quantity => refused(InventoryError::InsufficientStock {
            product_id,
            requested: quantity,
            available,
        }),
        None => {
            let line = Line {
                quantity,
                status: LineStatus::Reserved,
                expires_at,
            };
            let (done, event) = stock.step(order_id, line, LineStatus::Reserved, None);
            (Ok(done), vec![event])
        }
    }
}

/// Commit, release or return: a line moves `from → to`; asking again for
/// where it already is answers it as it is.
fn move_line(
    stock: &mut Scratch,
    order_id: OrderId,
    (from, to): (LineStatus, LineStatus),
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Decision {
    let expiry = reason == Some("expired");
    match stock.lines.get(&order_id).copied() {
        Some(line) if line.status == to => (Ok(stock.line_done(line)), vec![]),
        // A stale expiry timer: this line was not due after all.
        Some(line) if expiry && line.status == from && line.expires_at > now => {
            (Ok(stock.line_done(line)), vec![])
        }
        Some(line) if line.status == from => {
            let (done, event) = stock.step(order_id, line, to, reason.map(str::to_owned));
            (Ok(done), vec![event])
        }
        Some(line) => (
            Err(InventoryError::Conflict(format!(
                "the reservation of order {order_id} is {}; it cannot become {}",
                line.status.as_str(),
                to.as_str()
            ))),
            vec![],
        ),
        None => (Err(InventoryError::NoReservation(order_id)), vec![]),
    }
}

fn adjust(stock: &mut Scratch, change: &StockChange) -> Decision {
    let product_id = stock.product_id;
    let levels = &mut stock.levels;
    if levels.archived {
        return (Err(InventoryError::UnknownProduct(product_id)), vec![]);
    }
    let (target, delta, reason) = match change {
        StockChange::Adjust { delta, reason } => {
            (levels.on_hand.checked_add(*delta), *delta, reason.clone())
        }
        StockChange::Set { on_hand } => {
            (Some(*on_hand), on_hand - levels.on_hand, "set".to_owned())
        }
    };
    match target {
        Some(target) if target > mart_schema::inventory::MAX_ON_HAND => {
            let limit = mart_schema::inventory::MAX_ON_HAND;
            let too_many = format!("would take on_hand above {limit}, the most a product may have");
            let field = match change {
                StockChange::Adjust { .. } => "adjust",
                StockChange::Set { .. } => "on_hand",
            };
            let errors = mart_schema::FieldErrors::single(field, too_many);
            (Err(InventoryError::Invalid(errors)), vec![])
        }
        Some(target) if target >= levels.reserved && target >= 0 => {
            levels.on_hand = target;
            let event = InventoryEvent::Adjusted(StockAdjusted {
                product_id,
                delta,
                reason,
                on_hand: levels.on_hand,
                reserved: levels.reserved,
            });
            (Ok(OpDone::Levels(levels.view(product_id))), vec![event])
        }
        _ => (
            Err(InventoryError::Conflict(format!(
                "on_hand cannot go below the {} units reserved (or below 0); it is {}",
                levels.reserved, levels.on_hand
            ))),
            vec![],
        ),
    }
}

/// What a read of the levels answers: an unknown or archived product is unknown.
pub(crate) fn view(
    product_id: ProductId,
    levels: Option<&Levels>,
) -> Result<StockLevels, InventoryError> {
    levels
        .filter(|l| !l.archived)
        .map(|l| l.view(product_id))
        .ok_or(InventoryError::UnknownProduct(product_id))
}

/// Most units one line may reserve.
const MAX_QUANTITY: i64 = 1_000_000;
/// Most lines one reservation may have.
const MAX_LINES: usize = 100;

/// A reservation request checked as a whole: its lines by product (duplicates
/// merged), in product order, so every reservation takes its lines in the
/// same order.
pub(crate) fn reservation_lines(
    request: &ReserveRequest,
    now: OffsetDateTime,
) -> Result<BTreeMap<ProductId, i64>, FieldErrors> {
    let mut errors = FieldErrors::default();
    if request.lines.is_empty() {
        errors.add("lines", "must have at least one line");
    }
    if request.lines.len() > MAX_LINES {
        errors.add("lines", format!("must have at most {MAX_LINES} lines"));
    }
    if request
        .lines
        .iter()
        .any(|l| !(1..=MAX_QUANTITY).contains(&l.quantity))
    {
        errors.add("quantity", format!("must be between 1 and {MAX_QUANTITY}"));
    }
    if request.expires_at <= now {
        errors.add("expires_at", "must be in the future");
    }
    errors.into_result()?;
    let mut lines: BTreeMap<ProductId, i64> = BTreeMap::new();
    for line in &request.lines {
        *lines.entry(line.product_id).or_default() += line.quantity;
    }
    Ok(lines)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
