//! The order service: placing orders (priced from the catalog, stock reserved
//! all-or-nothing), reading them, paying for them, and moving them through
//! their life.
//!
//! - `mod.rs` (here): the handle [`Orders`] and its mailbox [`OrdersMsg`].
//! - `front`: the group member; every request runs in its own task. Placing
//!   an order needs no actor yet: prices from the product service, a
//!   reservation from inventory (idempotent by the new order's id), then one
//!   transaction writes the order, its lines, `order.placed` and the
//!   Idempotency-Key's outcome. Paying hands the order to the payment service.
//! - `state`: who may move an order where, and what that entails (pure).
//! - `actor`: one actor per open order for every later change: load → decide
//!   → write → reply, then the stock (and refund) step.
//! - `router`: this node's owner router — starts the order actors it owns and
//!   sweeps for orders with work left.
//! - `payments`: the subscriber that learns of succeeded payments from the
//!   payment outbox and marks their orders paid.
//! - `writer`: group commit of new orders (one transaction per flush).
//! - `store`: all of the service's SQL.
//!
//! Orders call payments (to start a checkout and to refund); payments never
//! call orders: they publish, and this service listens.

mod actor;
mod front;
mod payments;
mod router;
mod state;
mod store;
mod writer;

use mart_schema::order::{ItemRequest, Order, OrderError, OrderQuery, OrderStatus};
use mart_schema::payment::PaymentError;
use mart_schema::user::Caller;
use mart_schema::{OrderId, Page, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

pub(crate) use actor::OrderDeps;
pub(crate) use front::OrderService;
pub(crate) use payments::{PAYMENTS_SUBSCRIBER, PaymentSubscriber};
pub(crate) use router::OrderRouter;
pub(crate) use writer::OrderWriter;

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::payments::Started;
use crate::wire::Wire;

rejection!(OrderError);

/// `POST /orders`: the items, under an optional Idempotency-Key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrder {
    pub key: Option<String>,
    pub items: Vec<ItemRequest>,
}

/// A placed order, and whether this answer replays an earlier request's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

/// Which orders to list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderListing {
    pub query: OrderQuery,
    /// Only the caller's own, even for an admin.
    pub mine_only: bool,
}

/// A move of one order to another status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StatusRequest {
    pub id: OrderId,
    pub status: OrderStatus,
}

/// `POST /payments`: pay for an order, under an optional Idempotency-Key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayRequest {
    pub key: Option<String>,
    pub order_id: OrderId,
}

/// The order service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum OrdersMsg {
    #[rpc]
    Place(
        Wire<Request<NewOrder>>,
        RpcReplyPort<Wire<Result<Placed, Refusal<OrderError>>>>,
    ),
    #[rpc]
    Get(
        Wire<Request<OrderId>>,
        RpcReplyPort<Wire<Result<Order, Refusal<OrderError>>>>,
    ),
    #[rpc]
    List(
        Wire<Request<OrderListing>>,
        RpcReplyPort<Wire<Result<Page<Order>, Refusal<OrderError>>>>,
    ),
    #[rpc]
    Transition(
        Wire<Request<StatusRequest>>,
        RpcReplyPort<Wire<Result<Order, Refusal<OrderError>>>>,
    ),
    /// Answers as the payment service does (the order is handed to it).
    #[rpc]
    Pay(
        Wire<Request<PayRequest>>,
        RpcReplyPort<Wire<Result<Started, Refusal<PaymentError>>>>,
    ),
}

/// Handle on the order service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Orders {
    client: ServiceClient<OrdersMsg>,
}

type Answer<T> = Result<T, CallError<OrderError>>;

impl Default for Orders {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Orders),
        }
    }
}

impl Orders {
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
        let new = NewOrder { key, items };
        self.client.ask(caller, new, OrdersMsg::Place).await
    }

    pub async fn get(&self, caller: Caller, id: OrderId) -> Answer<Order> {
        self.client.ask(caller, id, OrdersMsg::Get).await
    }

    /// The caller's orders (all orders for an admin unless `mine_only`).
    pub async fn list(
        &self,
        caller: Caller,
        query: OrderQuery,
        mine_only: bool,
    ) -> Answer<Page<Order>> {
        let listing = OrderListing { query, mine_only };
        self.client.ask(caller, listing, OrdersMsg::List).await
    }

    /// Moves an order to `status` for `caller`.
    pub async fn transition(
        &self,
        caller: Caller,
        id: OrderId,
        status: OrderStatus,
    ) -> Answer<Order> {
        let asked = StatusRequest { id, status };
        self.client.ask(caller, asked, OrdersMsg::Transition).await
    }

    /// Starts (or returns the live) payment of an order: its checkout session.
    pub async fn pay(
        &self,
        caller: Caller,
        key: Option<String>,
        order_id: OrderId,
    ) -> Result<Started, CallError<PaymentError>> {
        let asked = PayRequest { key, order_id };
        self.client.ask(caller, asked, OrdersMsg::Pay).await
    }
}
