//! The inventory service's group member and what it does for each request.
//! Every change to a product goes to that product's owner (see
//! [`crate::owners`]), wherever it runs.

use std::collections::BTreeMap;

use mart_schema::inventory::{
    Availability, InventoryError, Reservation, ReserveRequest, StockLevels,
};
use mart_schema::user::Caller;
use mart_schema::{OrderId, ProductId, Service};

use super::router::{ProductOp, RouterMsg};
use super::state::{self, OpDone, StockOp};
use super::store::StockStore;
use super::{InventoryMsg, ProductChange, Settle};
use crate::call::{Serve, answer_in_task};
use crate::failure::{Failure, Infra};
use crate::owners;

type Outcome<T> = Result<T, Failure<InventoryError>>;

/// The inventory service's front on this node.
#[derive(Clone, Debug)]
pub(crate) struct InventoryService {
    store: StockStore,
}

impl Serve for InventoryService {
    type Msg = InventoryMsg;
    const SERVICE: Service = Service::Inventory;

    fn serve(&self, msg: InventoryMsg) {
        let s = self.clone();
        match msg {
            InventoryMsg::Availability(request, reply) => {
                answer_in_task(reply, request, move |_, products| async move {
                    let looked = products.into_iter().map(|product| async move {
                        match levels(product).await {
                            Ok(levels) => Ok(Availability::of(product, Some(levels.available))),
                            Err(Failure::Rejected(InventoryError::UnknownProduct(_))) => {
                                Ok(Availability::of(product, None))
                            }
                            Err(other) => Err(other),
                        }
                    });
                    futures::future::try_join_all(looked).await
                })
            }
            InventoryMsg::Levels(request, reply) => {
                answer_in_task(reply, request, move |caller, product| async move {
                    caller.staff_or(InventoryError::Forbidden)?;
                    levels(product).await
                })
            }
            InventoryMsg::Change(request, reply) => {
                answer_in_task(reply, request, move |caller, asked| async move {
                    caller.staff_or(InventoryError::Forbidden)?;
                    let ProductChange { product, change } = asked;
                    levels_of(op(product, StockOp::Change(change)).await?)
                })
            }
            InventoryMsg::Reserve(request, reply) => {
                answer_in_task(reply, request, move |caller, request| async move {
                    caller.staff_or(InventoryError::Forbidden)?;
                    let now = mart_schema::now();
                    let lines =
                        state::reservation_lines(&request, now).map_err(InventoryError::Invalid)?;
                    // The order service reserves for ids it just made; an id
                    // from outside may name an existing reservation.
                    if caller != Caller::Service {
                        s.refuse_other_lines(request.order_id, &lines).await?;
                    }
                    let reserved = reserve(request, lines).await;
                    if let Err(Failure::Rejected(no)) = &reserved {
                        crate::measure::reservation_refused(match no {
                            InventoryError::InsufficientStock { .. } => "insufficient_stock",
                            InventoryError::UnknownProduct(_) => "unknown_product",
                            _ => "other",
                        });
                    }
                    reserved
                })
            }
            InventoryMsg::Settle(request, reply) => {
                answer_in_task(reply, request, move |caller, (order, how)| async move {
                    caller.staff_or(InventoryError::Forbidden)?;
                    s.settle(order, how).await
                })
            }
            InventoryMsg::Show(request, reply) => {
                answer_in_task(reply, request, move |caller, order| async move {
                    caller.staff_or(InventoryError::Forbidden)?;
                    s.show(order).await
                })
            }
        }
    }
}

/// Sends one change to the product's owner and waits for its answer.
async fn op(product: ProductId, op: StockOp) -> Outcome<OpDone> {
    let retry = op.is_idempotent();
    let asked = ProductOp { product, op };
    owners::ask_owner(Service::Inventory, product.0, retry, asked, RouterMsg::Op).await
}

async fn levels(product: ProductId) -> Outcome<StockLevels> {
    owners::ask_owner(
        Service::Inventory,
        product.0,
        true,
        product,
        RouterMsg::Levels,
    )
    .await
}

fn line_of(done: OpDone) -> Outcome<mart_schema::inventory::ReservedLine> {
    match done {
        OpDone::Line(line) => Ok(line),
        OpDone::Levels(_) => Err(Infra::bug("a stock actor answered levels for a line").into()),
    }
}

fn levels_of(done: OpDone) -> Outcome<StockLevels> {
    match done {
        OpDone::Levels(levels) => Ok(levels),
        OpDone::Line(_) => Err(Infra::bug("a stock actor answered a line for levels").into()),
    }
}

/// Reserves `lines` (the request's, checked and merged) all or nothing.
async fn reserve(request: ReserveRequest, lines: BTreeMap<ProductId, i64>) -> Outcome<Reservation> {
    let order_id = request.order_id;
    let mut reserved = Vec::new();
    for (&product_id, &quantity) in &lines {
        let asked = StockOp::Reserve {
            order_id,
            quantity,
            expires_at: request.expires_at,
        };
        match op(product_id, asked).await.and_then(line_of) {
            Ok(line) => reserved.push(line),
            Err(failure) => {
                // All or nothing: give back what this reservation took.
                for line in reserved {
                    let undo = StockOp::Release {
                        order_id,
                        expired: false,
                    };
                    if let Err(e) = op(line.product_id, undo).await {
                        // Still reserved: it expires by itself at expires_at.
                        tracing::warn!(order = %order_id, product = %line.product_id, error = ?e, "could not undo a reservation line");
                    }
                }
                return Err(failure);
            }
        }
    }
    Ok(Reservation {
        order_id,
        lines: reserved,
    })
}

impl InventoryService {
    pub(crate) fn new(store: StockStore) -> Self {
        Self { store }
    }

    /// Commits, releases or returns every line of an order's reservation.
    async fn settle(&self, order_id: OrderId, how: Settle) -> Outcome<Reservation> {
        let products = self.store.products_of(order_id).await?;
        if products.is_empty() {
            return Err(InventoryError::NoReservation(order_id).into());
        }
        let mut lines = Vec::new();
        for product in products {
            let asked = match how {
                Settle::Commit => StockOp::Commit { order_id },
                Settle::Release => StockOp::Release {
                    order_id,
                    expired: false,
                },
                Settle::Return => StockOp::Return { order_id },
            };
            lines.push(line_of(op(product, asked).await?)?);
        }
        Ok(Reservation { order_id, lines })
    }

    /// A reservation id already holding other lines is a 409: adding lines
    /// to it would leave them behind when its order is settled. The same
    /// lines again are a retry, answered as before.
    async fn refuse_other_lines(
        &self,
        order_id: OrderId,
        asked: &BTreeMap<ProductId, i64>,
    ) -> Outcome<()> {
        let held = self.store.reservation(order_id).await?;
        if held.is_empty() {
            return Ok(());
        }
        let same = held.len() == asked.len()
            && held
                .iter()
                .all(|line| asked.get(&line.product_id) == Some(&line.quantity));
        if same {
            return Ok(());
        }
        Err(InventoryError::Conflict(format!(
            "reservation {order_id} already exists with other lines"
        ))
        .into())
    }

    async fn show(&self, order_id: OrderId) -> Outcome<Reservation> {
        let lines = self.store.reservation(order_id).await?;
        if lines.is_empty() {
            return Err(InventoryError::NoReservation(order_id).into());
        }
        Ok(Reservation { order_id, lines })
    }
}

/// Tells the product's owner it was archived (used by the catalog subscriber,
/// after marking the record archived).
pub(crate) async fn archive_live(product: ProductId) -> Outcome<()> {
    op(product, StockOp::Archive).await.map(|_| ())
}
