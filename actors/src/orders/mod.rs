//! The order service: placing orders (priced from the catalog, stock reserved
//! all-or-nothing), reading them, and moving them through their life.
//!
//! - `OrdersFront` (here): the `mart.orders` group member; each request runs in
//!   its own task. Placing an order needs no actor yet: prices from the product
//!   service, a reservation from inventory (idempotent by the new order's id),
//!   then one transaction writes the order, its lines, `order.placed` and the
//!   Idempotency-Key's outcome.
//! - `actor`: one actor per open order for every later change, and the
//!   router that starts them and sweeps for orders with work left.
//! - `store`: SQL.

mod actor;
mod store;

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use mart_schema::inventory::{InventoryError, ReservationLine, ReserveRequest};
use mart_schema::order::{ItemRequest, Order, OrderError, OrderLine, OrderQuery, OrderStatus};
use mart_schema::product::ProductError;
use mart_schema::user::Caller;
use mart_schema::{Currency, FieldErrors, OrderId, Page, PageRequest, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use time::OffsetDateTime;

use actor::RouterMsg;
pub(crate) use actor::{OrderDeps, OrderRouter};
use store::OrderStore;

use crate::call::{CallError, Failure, Rejection, ServiceClient, spawn_answer};
use crate::idempotency::{FirstRun, KeyErrors};
use crate::inventory::Inventory;
use crate::outbox::Outbox;
use crate::owners;
use crate::products::Products;
use crate::wire::Wire;

/// Most lines one order may have.
const MAX_LINES: usize = 100;
/// How much longer the reservation lives than the unpaid order.
const RESERVATION_GRACE: Duration = Duration::from_secs(5 * 60);

/// A placed order and whether it is a replay of an earlier request.
pub type Placed = (Order, bool);

/// The order service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum OrdersMsg {
    #[rpc]
    Place(
        Wire<(Caller, Option<String>, Vec<ItemRequest>)>,
        RpcReplyPort<Wire<Result<Placed, OrderError>>>,
    ),
    #[rpc]
    Get(
        Wire<(Caller, OrderId)>,
        RpcReplyPort<Wire<Result<Order, OrderError>>>,
    ),
    #[rpc]
    List(
        Wire<(Caller, OrderQuery, bool)>,
        RpcReplyPort<Wire<Result<Page<Order>, OrderError>>>,
    ),
    #[rpc]
    Transition(
        Wire<(Option<Caller>, OrderId, OrderStatus)>,
        RpcReplyPort<Wire<Result<Order, OrderError>>>,
    ),
}

/// Handle on the order service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Orders {
    client: ServiceClient<OrdersMsg>,
}

type Answer<T> = Result<T, CallError<OrderError>>;

impl Orders {
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Orders, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// Places an order; with an idempotency key, a retry returns the first answer.
    pub async fn place(
        &self,
        caller: Caller,
        key: Option<String>,
        items: Vec<ItemRequest>,
    ) -> Answer<Placed> {
        self.client
            .ask(|reply| OrdersMsg::Place((caller, key.clone(), items.clone()).into(), reply))
            .await
    }

    pub async fn get(&self, caller: Caller, id: OrderId) -> Answer<Order> {
        self.client
            .ask(|reply| OrdersMsg::Get((caller, id).into(), reply))
            .await
    }

    /// The caller's orders (all orders for an admin unless `mine_only`).
    pub async fn list(
        &self,
        caller: Caller,
        query: OrderQuery,
        mine_only: bool,
    ) -> Answer<Page<Order>> {
        self.client
            .ask(|reply| OrdersMsg::List((caller, query.clone(), mine_only).into(), reply))
            .await
    }

    /// Moves an order to `status` for `asker` (`None`: another service).
    pub async fn transition(
        &self,
        asker: Option<Caller>,
        id: OrderId,
        status: OrderStatus,
    ) -> Answer<Order> {
        self.client
            .ask(|reply| OrdersMsg::Transition((asker, id, status).into(), reply))
            .await
    }
}

impl Rejection for OrderError {
    fn malformed(reason: String) -> Self {
        OrderError::Invalid(FieldErrors::single("request", reason))
    }
}

type Outcome<T> = Result<T, Failure<OrderError>>;

/// What placing an order needs.
#[derive(Clone, Debug)]
pub(crate) struct OrderServiceDeps {
    pub(crate) store: OrderStore,
    pub(crate) products: Products,
    pub(crate) inventory: Inventory,
    pub(crate) payments: crate::payments::Payments,
    pub(crate) reservation_ttl: Duration,
}

impl OrderServiceDeps {
    pub(crate) fn new(pool: Pool, reservation_ttl: Duration, call_timeout: Duration) -> Self {
        Self {
            store: OrderStore::new(pool, Outbox::new(Service::Orders)),
            products: Products::new(call_timeout),
            inventory: Inventory::new(call_timeout),
            payments: crate::payments::Payments::new(call_timeout),
            reservation_ttl,
        }
    }

    pub(crate) fn actor_deps(&self) -> OrderDeps {
        OrderDeps {
            store: self.store.clone(),
            inventory: self.inventory.clone(),
            payments: self.payments.clone(),
        }
    }
}

/// The `mart.orders` group member on a node hosting orders.
#[derive(Debug)]
pub(crate) struct OrdersFront;

impl Actor for OrdersFront {
    type Msg = OrdersMsg;
    type State = OrderServiceDeps;
    type Arguments = OrderServiceDeps;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        deps: OrderServiceDeps,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(Service::Orders.group(), vec![myself.get_cell()]);
        Ok(deps)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        deps: &mut OrderServiceDeps,
    ) -> Result<(), ActorProcessingErr> {
        let deps = deps.clone();
        match msg {
            OrdersMsg::Place(request, reply) => {
                spawn_answer(reply, request, move |(caller, key, items)| async move {
                    place(&deps, caller, key, items).await
                })
            }
            OrdersMsg::Get(request, reply) => {
                spawn_answer(reply, request, move |(caller, id)| async move {
                    visible(&deps.store, Some(caller), id).await
                })
            }
            OrdersMsg::List(request, reply) => {
                spawn_answer(reply, request, move |(caller, query, mine)| async move {
                    list(&deps.store, caller, query, mine).await
                })
            }
            OrdersMsg::Transition(request, reply) => {
                spawn_answer(reply, request, move |(asker, id, status)| async move {
                    visible(&deps.store, asker, id).await?;
                    transition(asker, id, status).await
                })
            }
        }
        Ok(())
    }
}

/// The order, if `asker` may see it (someone else's order looks absent).
async fn visible(store: &OrderStore, asker: Option<Caller>, id: OrderId) -> Outcome<Order> {
    let (order, _) = store.load(id).await?;
    match asker {
        Some(caller) if !caller.is_admin() && caller.user_id != order.user_id => {
            Err(OrderError::NotFound.into())
        }
        _ => Ok(order),
    }
}

/// Asks the node owning the order to move it. A transition another service
/// asks for is idempotent (asking for the current status answers the order),
/// so it is asked again even after an unknown outcome; a person's is not.
async fn transition(asker: Option<Caller>, id: OrderId, status: OrderStatus) -> Outcome<Order> {
    let timeout = Duration::from_secs(25);
    owners::ask(Service::Orders, id.0, asker.is_none(), timeout, |reply| {
        RouterMsg::Transition(Wire::Value((id, asker, status)), reply)
    })
    .await
}

async fn list(
    store: &OrderStore,
    caller: Caller,
    query: OrderQuery,
    mine_only: bool,
) -> Outcome<Page<Order>> {
    let page = PageRequest {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let mut errors = FieldErrors::default();
    let limit = page.limit().map_err(|e| errors.0.extend(e.0)).unwrap_or(0);
    let after = page
        .cursor_key::<OrderId>()
        .map_err(|e| errors.0.extend(e.0))
        .unwrap_or(None);
    let status = match query.status.as_deref().map(str::parse::<OrderStatus>) {
        Some(Ok(status)) => Some(status),
        Some(Err(e)) => {
            errors.add("status", e);
            None
        }
        None => None,
    };
    errors.into_result().map_err(OrderError::Invalid)?;
    let owner = if caller.is_admin() && !mine_only {
        None
    } else {
        Some(caller.user_id)
    };
    let mut items = store
        .list(owner, status, after, i64::from(limit) + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

async fn place(
    deps: &OrderServiceDeps,
    caller: Caller,
    key: Option<String>,
    items: Vec<ItemRequest>,
) -> Outcome<Placed> {
    let mut errors = FieldErrors::default();
    if items.is_empty() {
        errors.add("items", "must have at least one item");
    }
    if items.len() > MAX_LINES {
        errors.add("items", format!("must have at most {MAX_LINES} items"));
    }
    for (i, item) in items.iter().enumerate() {
        if !(1..=1000).contains(&item.quantity) {
            errors.add(
                &format!("items[{i}].quantity"),
                "must be between 1 and 1000",
            );
        }
    }
    if let Some(key) = &key
        && (key.is_empty() || key.len() > 255)
    {
        errors.add("Idempotency-Key", "must be 1 to 255 characters");
    }
    errors.into_result().map_err(OrderError::Invalid)?;

    let errors = KeyErrors {
        in_progress: OrderError::IdempotencyInProgress,
        mismatch: OrderError::IdempotencyMismatch,
    };
    let store = &deps.store;
    store
        .keys
        .run(
            &store.pool,
            caller.user_id,
            key.as_deref(),
            &items,
            errors,
            async |key| {
                // The order's transaction records the key's outcome.
                let value = place_once(deps, caller, &items, key).await?;
                Ok(FirstRun {
                    value,
                    recorded: true,
                })
            },
        )
        .await
}

async fn place_once(
    deps: &OrderServiceDeps,
    caller: Caller,
    items: &[ItemRequest],
    key: Option<&str>,
) -> Outcome<Order> {
    // Prices come from the catalog, never from the client.
    let mut lines = Vec::with_capacity(items.len());
    let mut currencies = HashSet::new();
    let mut errors = FieldErrors::default();
    let lookups =
        futures::future::join_all(items.iter().map(|item| deps.products.get(item.product_id)))
            .await;
    for (i, (item, found)) in items.iter().zip(lookups).enumerate() {
        match found {
            Ok(product) => {
                currencies.insert(product.currency);
                lines.push(OrderLine {
                    product_id: product.id,
                    name: product.name,
                    unit_price: product.price,
                    quantity: item.quantity,
                    line_total: product.price.saturating_mul(item.quantity),
                });
            }
            Err(CallError::Rejected(ProductError::NotFound)) => {
                errors.add(
                    &format!("items[{i}].product_id"),
                    format!("no such product {}", item.product_id),
                );
            }
            Err(e) => return Err(Failure::Infrastructure(format!("catalog: {e}"))),
        }
    }
    if currencies.len() > 1 {
        errors.add("items", "all items must be in one currency");
    }
    errors.into_result().map_err(OrderError::Invalid)?;
    let currency = currencies.into_iter().next().unwrap_or(Currency::USD);
    let total = lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.line_total));

    let now = OffsetDateTime::now_utc();
    let order = Order {
        id: OrderId::new(),
        user_id: caller.user_id,
        status: OrderStatus::AwaitingPayment,
        items: lines,
        total,
        currency,
        expires_at: now + deps.reservation_ttl,
        created_at: now,
        updated_at: now,
    };
    let reservation = ReserveRequest {
        order_id: order.id,
        lines: order
            .items
            .iter()
            .map(|l| ReservationLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect(),
        // The order expires first and releases the stock itself; the grace keeps
        // the reservation alive for a payment confirmed at the last moment.
        expires_at: order.expires_at + RESERVATION_GRACE,
    };
    match deps.inventory.reserve(None, reservation).await {
        Ok(_) => {}
        Err(CallError::Rejected(InventoryError::InsufficientStock {
            product_id,
            requested,
            available,
        })) => {
            return Err(OrderError::InsufficientStock {
                product_id,
                requested,
                available,
            }
            .into());
        }
        Err(CallError::Rejected(InventoryError::UnknownProduct(product))) => {
            let i = order
                .items
                .iter()
                .position(|l| l.product_id == product)
                .unwrap_or(0);
            return Err(OrderError::Invalid(FieldErrors::single(
                &format!("items[{i}].product_id"),
                format!("product {product} cannot be ordered"),
            ))
            .into());
        }
        Err(CallError::Rejected(other)) => {
            return Err(Failure::Infrastructure(format!("inventory: {other}")));
        }
        Err(e) => return Err(Failure::Infrastructure(format!("inventory: {e}"))),
    }
    let outcome =
        key.map(|_| serde_json::to_value(Ok::<&Order, OrderError>(&order)).unwrap_or_default());
    if let Err(e) = deps.store.insert(&order, key.zip(outcome.as_ref())).await {
        // No order: give the stock back now rather than at expiry.
        let _ = deps.inventory.release(None, order.id).await;
        return Err(e);
    }
    Ok(order)
}
