//! The order service's group member and what it does for each request.
//! Placing and reading need no order actor; every transition goes to the
//! order's owner (see [`crate::owners`]), wherever it runs.

use std::time::Duration;

use crate::pool::Pool;
use mart_schema::inventory::{InventoryError, ReservationLine, ReserveRequest};
use mart_schema::order::{ItemRequest, Order, OrderError, OrderStatus};
use mart_schema::page::Checked;
use mart_schema::payment::PaymentError;
use mart_schema::product::ProductError;
use mart_schema::user::Caller;
use mart_schema::{FieldErrors, OrderId, Page, PageRequest, Service};

use super::router::{RouterMsg, Transition};
use super::state;
use super::store::{NewRow, OrderStore};
use super::writer::OrderWriter;
use super::{NewOrder, OrderListing, OrdersMsg, PayRequest, Placed, StatusRequest};
use crate::batch;
use crate::call::{CallError, Serve, answer_in_task};
use crate::failure::Failure;
use crate::idempotency::{FirstRun, KeyErrors};
use crate::inventory::Inventory;
use crate::outbox::Outbox;
use crate::owners;
use crate::payments::{Payments, Started};
use crate::products::Products;

/// How much longer the reservation lives than the unpaid order.
const RESERVATION_GRACE: Duration = Duration::from_secs(5 * 60);

type Outcome<T> = Result<T, Failure<OrderError>>;

/// The order service's front on this node.
#[derive(Clone, Debug)]
pub(crate) struct OrderService {
    pub(crate) store: OrderStore,
    products: Products,
    pub(crate) inventory: Inventory,
    pub(crate) payments: Payments,
    reservation_ttl: Duration,
}

impl Serve for OrderService {
    type Msg = OrdersMsg;
    const SERVICE: Service = Service::Orders;

    fn serve(&self, msg: OrdersMsg) {
        let s = self.clone();
        match msg {
            OrdersMsg::Place(request, reply) => {
                answer_in_task(reply, request, move |caller, new| async move {
                    s.place(caller, new).await
                })
            }
            OrdersMsg::Get(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    s.visible(caller, id).await
                })
            }
            OrdersMsg::List(request, reply) => {
                answer_in_task(reply, request, move |caller, listing| async move {
                    s.list(caller, listing).await
                })
            }
            OrdersMsg::Transition(request, reply) => {
                answer_in_task(reply, request, move |caller, asked| async move {
                    s.visible(caller, asked.id).await?;
                    transition(caller, asked).await
                })
            }
            OrdersMsg::Pay(request, reply) => {
                answer_in_task(reply, request, move |caller, asked| async move {
                    s.pay(caller, asked).await
                })
            }
        }
    }
}

/// Asks the node owning the order to move it. A transition another service
/// asks for is idempotent (asking for the current status answers the order),
/// so it is asked again even after an unknown outcome; a person's is not.
pub(crate) async fn transition(caller: Caller, asked: StatusRequest) -> Outcome<Order> {
    let retry = caller == Caller::Service;
    let move_to = Transition {
        id: asked.id,
        caller,
        status: asked.status,
    };
    owners::ask_owner(
        Service::Orders,
        asked.id.0,
        retry,
        move_to,
        RouterMsg::Transition,
    )
    .await
}

impl OrderService {
    pub(crate) fn new(pool: Pool, reservation_ttl: Duration) -> Self {
        Self {
            store: OrderStore::new(pool, Outbox::new(Service::Orders)),
            products: Products::default(),
            inventory: Inventory::default(),
            payments: Payments::default(),
            reservation_ttl,
        }
    }

    /// The order, if `caller` may see it (someone else's order looks absent).
    async fn visible(&self, caller: Caller, id: OrderId) -> Outcome<Order> {
        let order = self.store.load(id).await?.order;
        if !caller.may_act_for(order.user_id) {
            return Err(OrderError::NotFound.into());
        }
        Ok(order)
    }

    async fn list(&self, caller: Caller, listing: OrderListing) -> Outcome<Page<Order>> {
        let OrderListing { query, mine_only } = listing;
        let page = PageRequest {
            limit: query.limit,
            cursor: query.cursor.clone(),
        };
        let checked = page.checked::<OrderId, OrderStatus>(query.status.as_deref());
        let Checked {
            limit,
            after,
            status,
        } = checked.map_err(OrderError::Invalid)?;
        let owner = match caller.user_id() {
            Some(me) if mine_only || !caller.is_staff() => Some(me),
            Some(_) => None,
            None if caller.is_staff() => None,
            None => return Err(OrderError::Forbidden.into()),
        };
        let items = self
            .store
            .list(owner, status, after, PageRequest::overfetch(limit))
            .await?;
        Ok(Page::from_overfetch(items, limit, |o| o.id.to_string()))
    }

    async fn place(&self, caller: Caller, new: NewOrder) -> Outcome<Placed> {
        let NewOrder { key, items } = new;
        state::check_request(&items, key.as_deref()).map_err(OrderError::Invalid)?;
        let Some(user) = caller.user_id() else {
            return Err(OrderError::Forbidden.into());
        };
        let errors = KeyErrors {
            in_progress: OrderError::IdempotencyInProgress,
            mismatch: OrderError::IdempotencyMismatch,
        };
        let store = &self.store;
        let (order, replayed) = store
            .keys
            .run(
                &store.pool,
                user,
                key.as_deref(),
                &items,
                errors,
                async |key| {
                    // The order's transaction records the key's outcome.
                    let value = self.place_once(user, &items, key).await?;
                    Ok(FirstRun {
                        value,
                        recorded: true,
                    })
                },
            )
            .await?;
        Ok(Placed { order, replayed })
    }

    async fn place_once(
        &self,
        user: mart_schema::UserId,
        items: &[ItemRequest],
        key: Option<&str>,
    ) -> Outcome<Order> {
        let lookups = items.iter().map(|item| self.products.get(item.product_id));
        let mut found = Vec::with_capacity(items.len());
        for looked_up in futures::future::join_all(lookups).await {
            match looked_up {
                Ok(product) => found.push(Some(product)),
                Err(CallError::Rejected(ProductError::NotFound)) => found.push(None),
                Err(e) => return Err(e.into_infra(Service::Products).into()),
            }
        }
        let priced = state::price(items, found).map_err(OrderError::Invalid)?;
        let now = mart_schema::now();
        let order = Order {
            id: OrderId::new(),
            user_id: user,
            status: OrderStatus::AwaitingPayment,
            items: priced.lines,
            total: priced.total,
            currency: priced.currency,
            expires_at: now + self.reservation_ttl,
            created_at: now,
            updated_at: now,
        };
        self.reserve(&order).await?;
        let key = key.map(|key| {
            let outcome = serde_json::to_value(Ok::<&Order, OrderError>(&order));
            (key.to_owned(), outcome.unwrap_or_default())
        });
        let row = NewRow {
            order: order.clone(),
            key,
            trace: crate::trace::current().map(String::from),
        };
        if let Err(e) = batch::submit::<OrderWriter>(row).await {
            // No order: give the stock back now rather than at expiry.
            let release = crate::inventory::Settle::Release;
            let _ = self
                .inventory
                .settle(Caller::Service, order.id, release)
                .await;
            return Err(e.into());
        }
        Ok(order)
    }

    /// Reserves the order's stock, all lines or none.
    async fn reserve(&self, order: &Order) -> Outcome<()> {
        let lines = order.items.iter().map(|l| ReservationLine {
            product_id: l.product_id,
            quantity: l.quantity,
        });
        let reservation = ReserveRequest {
            order_id: order.id,
            lines: lines.collect(),
            // The order expires first and releases the stock itself; the grace
            // keeps the reservation alive for a payment confirmed at the last
            // moment.
            expires_at: order.expires_at + RESERVATION_GRACE,
        };
        match self.inventory.reserve(Caller::Service, reservation).await {
            Ok(_) => Ok(()),
            Err(CallError::Rejected(InventoryError::InsufficientStock {
                product_id,
                requested,
                available,
            })) => Err(OrderError::InsufficientStock {
                product_id,
                requested,
                available,
            }
            .into()),
            Err(CallError::Rejected(InventoryError::UnknownProduct(product))) => {
                let i = order.items.iter().position(|l| l.product_id == product);
                Err(OrderError::Invalid(FieldErrors::single(
                    &format!("items[{}].product_id", i.unwrap_or(0)),
                    format!("product {product} cannot be ordered"),
                ))
                .into())
            }
            Err(e) => Err(e.into_infra(Service::Inventory).into()),
        }
    }

    /// Hands the caller's order to the payment service, which opens (or
    /// returns the live) checkout session.
    async fn pay(
        &self,
        caller: Caller,
        asked: PayRequest,
    ) -> Result<Started, Failure<PaymentError>> {
        let order = match self.visible(caller, asked.order_id).await {
            Ok(order) => order,
            Err(Failure::Rejected(OrderError::NotFound)) => {
                return Err(PaymentError::OrderNotFound.into());
            }
            Err(Failure::Rejected(other)) => {
                return Err(Failure::Infra(crate::failure::Infra::bug(format!(
                    "reading an order: {other:?}"
                ))));
            }
            Err(Failure::Infra(e)) => return Err(Failure::Infra(e)),
        };
        // Whether it is still payable is the payment service's to say: a
        // replayed Idempotency-Key gets its first answer even after payment.
        match self.payments.start(caller, asked.key, order).await {
            Ok(started) => Ok(started),
            Err(CallError::Rejected(no)) => Err(no.into()),
            Err(e) => Err(e.into_infra(Service::Payments).into()),
        }
    }
}
