//! The inventory service: stock levels and reservations that can never oversell.
//!
//! - [`stock`]: one actor per product owns its levels (started on demand, stopped
//!   when idle, loaded from PostgreSQL), deciding changes one at a time and
//!   writing them in batches.
//! - [`router`]: this node's owner router — runs the actors of the products this
//!   node owns and answers for them from any node; sweeps for reservations
//!   that expired while nobody was watching.
//! - [`catalog`]: creates stock records from `product.created` events (delivered
//!   through the product outbox, so a product created while inventory was down
//!   still gets its stock) and archives them on `product.deleted`.
//! - `InventoryFront` (here): the `mart.inventory` group member. It never blocks:
//!   each request runs in its own task, and a multi-line reservation reserves
//!   line by line (in product order), undoing the lines it took if one fails.

mod catalog;
mod router;
mod stock;

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use mart_schema::inventory::{
    InventoryError, LineStatus, Reservation, ReserveRequest, ReservedLine, StockChange, StockLevels,
};
use mart_schema::user::Caller;
use mart_schema::{FieldErrors, OrderId, ProductId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use time::OffsetDateTime;

pub(crate) use catalog::{CATALOG_SUBSCRIBER, CatalogSubscriber};
use router::RouterMsg;
pub(crate) use router::StockRouter;
use stock::{OpDone, StockOp};

use crate::call::{CallError, Failure, Rejection, ServiceClient, spawn_answer};
use crate::owners;
use crate::wire::Wire;

/// Most units one line may reserve.
const MAX_QUANTITY: i64 = 1_000_000;
/// Most lines one reservation may have.
const MAX_LINES: usize = 100;

/// Who is asking: `None` for another service (trusted), `Some` for a person,
/// who must be an admin.
pub type Asker = Option<Caller>;

/// The inventory service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum InventoryMsg {
    #[rpc]
    Levels(
        Wire<(Asker, ProductId)>,
        RpcReplyPort<Wire<Result<StockLevels, InventoryError>>>,
    ),
    #[rpc]
    Change(
        Wire<(Asker, ProductId, StockChange)>,
        RpcReplyPort<Wire<Result<StockLevels, InventoryError>>>,
    ),
    #[rpc]
    Reserve(
        Wire<(Asker, ReserveRequest)>,
        RpcReplyPort<Wire<Result<Reservation, InventoryError>>>,
    ),
    #[rpc]
    Commit(
        Wire<(Asker, OrderId)>,
        RpcReplyPort<Wire<Result<Reservation, InventoryError>>>,
    ),
    #[rpc]
    Release(
        Wire<(Asker, OrderId)>,
        RpcReplyPort<Wire<Result<Reservation, InventoryError>>>,
    ),
    /// Puts a committed reservation back on hand (its paid order was cancelled).
    #[rpc]
    Restock(
        Wire<(Asker, OrderId)>,
        RpcReplyPort<Wire<Result<Reservation, InventoryError>>>,
    ),
    #[rpc]
    Show(
        Wire<(Asker, OrderId)>,
        RpcReplyPort<Wire<Result<Reservation, InventoryError>>>,
    ),
}

/// Handle on the inventory service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Inventory {
    client: ServiceClient<InventoryMsg>,
}

type Answer<T> = Result<T, CallError<InventoryError>>;

impl Inventory {
    pub fn new(timeout: std::time::Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Inventory, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    pub async fn levels(&self, asker: Asker, product: ProductId) -> Answer<StockLevels> {
        self.client
            .ask(|reply| InventoryMsg::Levels((asker, product).into(), reply))
            .await
    }

    pub async fn change(
        &self,
        asker: Asker,
        product: ProductId,
        change: StockChange,
    ) -> Answer<StockLevels> {
        self.client
            .ask(|reply| InventoryMsg::Change((asker, product, change.clone()).into(), reply))
            .await
    }

    /// Reserves every line or none; idempotent by order id.
    pub async fn reserve(&self, asker: Asker, request: ReserveRequest) -> Answer<Reservation> {
        self.client
            .ask(|reply| InventoryMsg::Reserve((asker, request.clone()).into(), reply))
            .await
    }

    /// Turns a reservation into a sale; idempotent.
    pub async fn commit(&self, asker: Asker, order: OrderId) -> Answer<Reservation> {
        self.client
            .ask(|reply| InventoryMsg::Commit((asker, order).into(), reply))
            .await
    }

    /// Gives reserved stock back; idempotent.
    pub async fn release(&self, asker: Asker, order: OrderId) -> Answer<Reservation> {
        self.client
            .ask(|reply| InventoryMsg::Release((asker, order).into(), reply))
            .await
    }

    /// Puts what a paid order took back on hand; idempotent.
    pub async fn restock(&self, asker: Asker, order: OrderId) -> Answer<Reservation> {
        self.client
            .ask(|reply| InventoryMsg::Restock((asker, order).into(), reply))
            .await
    }

    pub async fn reservation(&self, asker: Asker, order: OrderId) -> Answer<Reservation> {
        self.client
            .ask(|reply| InventoryMsg::Show((asker, order).into(), reply))
            .await
    }
}

impl Rejection for InventoryError {
    fn malformed(reason: String) -> Self {
        InventoryError::Invalid(FieldErrors::single("request", reason))
    }
}

type Outcome<T> = Result<T, Failure<InventoryError>>;

/// The `mart.inventory` group member on a node hosting inventory.
#[derive(Debug)]
pub(crate) struct InventoryFront;

impl Actor for InventoryFront {
    type Msg = InventoryMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Pool, ActorProcessingErr> {
        ractor::pg::join(Service::Inventory.group(), vec![myself.get_cell()]);
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        pool: &mut Pool,
    ) -> Result<(), ActorProcessingErr> {
        // Each request in its own task: a slow product never holds up the others.
        let pool = pool.clone();
        match msg {
            InventoryMsg::Levels(request, reply) => {
                spawn_answer(reply, request, |(asker, product)| async move {
                    admin_only(asker)?;
                    levels(product).await
                })
            }
            InventoryMsg::Change(request, reply) => {
                spawn_answer(reply, request, |(asker, product, change)| async move {
                    admin_only(asker)?;
                    match op(product, StockOp::Change(change)).await? {
                        OpDone::Levels(levels) => Ok(levels),
                        OpDone::Line(_) => Err(Failure::Infrastructure("unexpected answer".into())),
                    }
                })
            }
            InventoryMsg::Reserve(request, reply) => {
                spawn_answer(reply, request, |(asker, request)| async move {
                    admin_only(asker)?;
                    reserve(request).await
                })
            }
            InventoryMsg::Commit(request, reply) => {
                spawn_answer(reply, request, move |(asker, order)| async move {
                    admin_only(asker)?;
                    settle(&pool, order, |order_id| StockOp::Commit { order_id }).await
                })
            }
            InventoryMsg::Release(request, reply) => {
                spawn_answer(reply, request, move |(asker, order)| async move {
                    admin_only(asker)?;
                    settle(&pool, order, |order_id| StockOp::Release {
                        order_id,
                        expired: false,
                    })
                    .await
                })
            }
            InventoryMsg::Restock(request, reply) => {
                spawn_answer(reply, request, move |(asker, order)| async move {
                    admin_only(asker)?;
                    settle(&pool, order, |order_id| StockOp::Return { order_id }).await
                })
            }
            InventoryMsg::Show(request, reply) => {
                spawn_answer(reply, request, move |(asker, order)| async move {
                    admin_only(asker)?;
                    show(&pool, order).await
                })
            }
        }
        Ok(())
    }
}

fn admin_only(asker: Asker) -> Result<(), InventoryError> {
    match asker {
        Some(caller) if !caller.is_admin() => Err(InventoryError::Forbidden),
        _ => Ok(()),
    }
}

/// How long the owner may take to decide one change.
const OWNER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends one change to the product's owner and waits for its answer.
async fn op(product: ProductId, change: StockOp) -> Outcome<OpDone> {
    let idempotent = change.is_idempotent();
    owners::ask(
        Service::Inventory,
        product.0,
        idempotent,
        OWNER_TIMEOUT,
        |reply| RouterMsg::Op(Wire::Value((product, change.clone())), reply),
    )
    .await
}

async fn levels(product: ProductId) -> Outcome<StockLevels> {
    owners::ask(
        Service::Inventory,
        product.0,
        true,
        OWNER_TIMEOUT,
        |reply| RouterMsg::Levels(Wire::Value(product), reply),
    )
    .await
}

fn line_of(done: OpDone) -> Outcome<ReservedLine> {
    match done {
        OpDone::Line(line) => Ok(line),
        OpDone::Levels(_) => Err(Failure::Infrastructure("unexpected answer".into())),
    }
}

async fn reserve(request: ReserveRequest) -> Outcome<Reservation> {
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
    if request.expires_at <= OffsetDateTime::now_utc() {
        errors.add("expires_at", "must be in the future");
    }
    errors.into_result().map_err(InventoryError::Invalid)?;
    // Duplicate products merge into one line; product order makes every
    // reservation take its lines in the same order.
    let mut lines: BTreeMap<ProductId, i64> = BTreeMap::new();
    for line in &request.lines {
        *lines.entry(line.product_id).or_default() += line.quantity;
    }
    let mut taken: Vec<ProductId> = Vec::new();
    let mut reserved = Vec::new();
    for (&product_id, &quantity) in &lines {
        let outcome = op(
            product_id,
            StockOp::Reserve {
                order_id: request.order_id,
                quantity,
                expires_at: request.expires_at,
            },
        )
        .await
        .and_then(line_of);
        match outcome {
            Ok(line) => {
                taken.push(product_id);
                reserved.push(line);
            }
            Err(failure) => {
                // All or nothing: give back what this reservation took.
                for product in taken {
                    let undo = StockOp::Release {
                        order_id: request.order_id,
                        expired: false,
                    };
                    if let Err(e) = op(product, undo).await {
                        // Still reserved: it expires by itself at expires_at.
                        tracing::warn!(order = %request.order_id, %product, error = ?e, "could not undo a reservation line");
                    }
                }
                return Err(failure);
            }
        }
    }
    Ok(Reservation {
        order_id: request.order_id,
        lines: reserved,
    })
}

async fn products_of(pool: &Pool, order: OrderId) -> Outcome<Vec<ProductId>> {
    let client = pool
        .get()
        .await
        .map_err(|e| Failure::Infrastructure(e.to_string()))?;
    let rows = client
        .query(
            "select product_id from inventory.reservation_lines where order_id = $1 order by product_id",
            &[&order],
        )
        .await
        .map_err(|e| Failure::Infrastructure(e.to_string()))?;
    if rows.is_empty() {
        return Err(Failure::Rejected(InventoryError::NoReservation(order)));
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Commits or releases every line of an order's reservation.
async fn settle(
    pool: &Pool,
    order: OrderId,
    change: impl Fn(OrderId) -> StockOp,
) -> Outcome<Reservation> {
    let mut lines = Vec::new();
    for product in products_of(pool, order).await? {
        lines.push(line_of(op(product, change(order)).await?)?);
    }
    Ok(Reservation {
        order_id: order,
        lines,
    })
}

async fn show(pool: &Pool, order: OrderId) -> Outcome<Reservation> {
    let client = pool
        .get()
        .await
        .map_err(|e| Failure::Infrastructure(e.to_string()))?;
    let rows = client
        .query(
            "select product_id, quantity, status, expires_at from inventory.reservation_lines \
             where order_id = $1 order by product_id",
            &[&order],
        )
        .await
        .map_err(|e| Failure::Infrastructure(e.to_string()))?;
    if rows.is_empty() {
        return Err(Failure::Rejected(InventoryError::NoReservation(order)));
    }
    let mut lines = Vec::new();
    for row in rows {
        let status: String = row.get(2);
        lines.push(ReservedLine {
            product_id: row.get(0),
            quantity: row.get(1),
            status: status
                .parse::<LineStatus>()
                .map_err(Failure::Infrastructure)?,
            expires_at: row.get(3),
        });
    }
    Ok(Reservation {
        order_id: order,
        lines,
    })
}

/// Tells the product's owner it was archived (used by the catalog subscriber,
/// after marking the record archived).
pub(crate) async fn archive_live(product: ProductId) -> Outcome<()> {
    op(product, StockOp::Archive).await.map(|_| ())
}
