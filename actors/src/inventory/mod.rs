//! The inventory service: stock levels and reservations that can never oversell.
//!
//! - `mod.rs` (here): the handle [`Inventory`] and its mailbox [`InventoryMsg`].
//! - `front`: the group member; every request runs in its own task. A
//!   multi-line reservation reserves line by line (in product order), undoing
//!   the lines it took if one fails.
//! - `state`: what a product's stock decides (pure, unit-tested).
//! - `actor`: one actor per product owns its levels (started on demand,
//!   stopped when idle, loaded from PostgreSQL): load → decide → write in
//!   batches → reply.
//! - `router`: this node's owner router — runs the actors of the products this
//!   node owns and answers for them from any node; sweeps for reservations
//!   that expired while nobody was watching.
//! - `catalog`: creates stock records from `product.created` events (delivered
//!   through the product outbox, so a product created while inventory was down
//!   still gets its stock) and archives them on `product.deleted`.
//! - `writer`: group commit — the batches of every product this node owns,
//!   written together, each still fenced by its own version; group load —
//!   the stock actors starting together, loaded in one query.
//! - `store`: all of the service's SQL.

mod actor;
mod catalog;
mod front;
mod router;
mod state;
mod store;
mod writer;

use mart_schema::inventory::{
    Availability, InventoryError, Reservation, ReserveRequest, StockChange, StockLevels,
};
use mart_schema::user::Caller;
use mart_schema::{OrderId, ProductId, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

pub(crate) use catalog::{CATALOG_SUBSCRIBER, CatalogSubscriber};
pub(crate) use front::InventoryService;
pub(crate) use router::StockRouter;
pub(crate) use store::StockStore;
pub(crate) use writer::{StockLoader, StockWriter};

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::wire::Wire;

rejection!(InventoryError);

/// A stock change to one product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductChange {
    pub product: ProductId,
    pub change: StockChange,
}

/// What to do with every line of an order's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    /// Turn it into a sale.
    Commit,
    /// Give reserved stock back.
    Release,
    /// Put what a paid order took back on hand (the order was cancelled).
    Return,
}

/// The inventory service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum InventoryMsg {
    #[rpc]
    Levels(
        Wire<Request<ProductId>>,
        RpcReplyPort<Wire<Result<StockLevels, Refusal<InventoryError>>>>,
    ),
    #[rpc]
    Change(
        Wire<Request<ProductChange>>,
        RpcReplyPort<Wire<Result<StockLevels, Refusal<InventoryError>>>>,
    ),
    #[rpc]
    Reserve(
        Wire<Request<ReserveRequest>>,
        RpcReplyPort<Wire<Result<Reservation, Refusal<InventoryError>>>>,
    ),
    /// Commits, releases or returns every line of a reservation.
    #[rpc]
    Settle(
        Wire<Request<(OrderId, Settle)>>,
        RpcReplyPort<Wire<Result<Reservation, Refusal<InventoryError>>>>,
    ),
    #[rpc]
    Show(
        Wire<Request<OrderId>>,
        RpcReplyPort<Wire<Result<Reservation, Refusal<InventoryError>>>>,
    ),
    /// What anyone may know of some products' stock.
    #[rpc]
    Availability(
        Wire<Request<Vec<ProductId>>>,
        RpcReplyPort<Wire<Result<Vec<Availability>, Refusal<InventoryError>>>>,
    ),
}

/// Handle on the inventory service, wherever it runs. Every request but
/// `availability` is staff-only: an admin, or another service.
#[derive(Clone, Debug)]
pub struct Inventory {
    client: ServiceClient<InventoryMsg>,
}

type Answer<T> = Result<T, CallError<InventoryError>>;

impl Default for Inventory {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Inventory),
        }
    }
}

impl Inventory {
    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// Coarse stock of `products`, for anyone (shoppers browsing).
    pub async fn availability(
        &self,
        caller: Caller,
        products: Vec<ProductId>,
    ) -> Answer<Vec<Availability>> {
        self.client
            .ask(caller, products, InventoryMsg::Availability)
            .await
    }

    pub async fn levels(&self, caller: Caller, product: ProductId) -> Answer<StockLevels> {
        self.client.ask(caller, product, InventoryMsg::Levels).await
    }

    pub async fn change(
        &self,
        caller: Caller,
        product: ProductId,
        change: StockChange,
    ) -> Answer<StockLevels> {
        let change = ProductChange { product, change };
        self.client.ask(caller, change, InventoryMsg::Change).await
    }

    /// Reserves every line or none; idempotent by order id.
    pub async fn reserve(&self, caller: Caller, request: ReserveRequest) -> Answer<Reservation> {
        self.client
            .ask(caller, request, InventoryMsg::Reserve)
            .await
    }

    /// Commits, releases or returns a reservation; idempotent.
    pub async fn settle(&self, caller: Caller, order: OrderId, how: Settle) -> Answer<Reservation> {
        self.client
            .ask(caller, (order, how), InventoryMsg::Settle)
            .await
    }

    pub async fn reservation(&self, caller: Caller, order: OrderId) -> Answer<Reservation> {
        self.client.ask(caller, order, InventoryMsg::Show).await
    }
}
