//! One actor per open order holds its state machine. Commands for an order
//! (cancel, ship, deliver, paid, expire) run one at a time in its mailbox, so
//! two of them can never interleave. Each step is persisted before it acts:
//! the status changes first (with `stock_settled = false`), then the actor
//! commits or releases the reservation, then marks the step done. A crash in
//! between leaves `stock_settled = false`, and whoever loads the order next
//! finishes the step (inventory calls are idempotent by order id).
//!
//! Ownership: an order's actor runs on the node owning it (see
//! [`crate::owners`]). Every transition is a compare-and-set on the status in
//! PostgreSQL, which fences a stale actor on a node that lost ownership: its
//! write changes nothing, it answers "moved" and stops, and the caller asks
//! the new owner.

use std::time::Duration;

use mart_schema::inventory::InventoryError;
use mart_schema::order::{Order, OrderError, OrderEvent, OrderEventKind, OrderStatus};
use mart_schema::user::Caller;
use mart_schema::{OrderId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use time::OffsetDateTime;

use super::store::OrderStore;
use crate::call::Failure;
use crate::entities::Entities;
use crate::inventory::Inventory;
use crate::owners::{self, Owned};
use crate::wire::Wire;

/// How often the router looks for orders with work left.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// An open order's actor with nothing to do for this long stops.
const IDLE: Duration = Duration::from_secs(120);

/// How long an order's actor may take for one transition (it may call
/// inventory and payments).
const TRANSITION_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) type TransitionAnswer = Result<Order, Owned<OrderError>>;
pub(crate) type TransitionReply = RpcReplyPort<TransitionAnswer>;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum OrderMsg {
    /// Move to `status` on behalf of `asker` (`None`: another service).
    Transition(Option<Caller>, OrderStatus, TransitionReply),
    /// Expire if due; finish an unfinished stock step.
    Resume,
    Tick,
}

#[derive(Debug, Clone)]
pub(crate) struct OrderDeps {
    pub(crate) store: OrderStore,
    pub(crate) inventory: Inventory,
    pub(crate) payments: crate::payments::Payments,
}

#[derive(Debug)]
pub(crate) struct OrderActor;

#[derive(Debug)]
pub(crate) struct OrderState {
    deps: OrderDeps,
    order: Order,
    settled: bool,
    /// A write found the order changed by another actor: ownership moved.
    fenced: bool,
    last_active: std::time::Instant,
}

impl Actor for OrderActor {
    type Msg = OrderMsg;
    type State = OrderState;
    type Arguments = (OrderId, OrderDeps);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (id, deps): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (order, settled) = deps.store.load(id).await.map_err(|e| e.to_string())?;
        if order.status == OrderStatus::AwaitingPayment {
            let wait = Duration::try_from(
                (order.expires_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO),
            )
            .unwrap_or_default();
            myself.send_after(wait + Duration::from_millis(5), || OrderMsg::Resume);
        }
        if !settled {
            let _ = myself.cast(OrderMsg::Resume);
        }
        myself.send_interval(IDLE / 2, || OrderMsg::Tick);
        Ok(OrderState {
            deps,
            order,
            settled,
            fenced: false,
            last_active: std::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.last_active = std::time::Instant::now();
        match msg {
            OrderMsg::Transition(asker, requested, reply) => {
                let outcome = match state.transition(asker, requested).await {
                    Ok(order) => Ok(order),
                    Err(Failure::Rejected(no)) => Err(Owned::Rejected(no)),
                    Err(Failure::Infrastructure(e)) if state.fenced => Err(Owned::Moved(e)),
                    Err(Failure::Infrastructure(e)) => Err(Owned::Failed(e)),
                };
                let crashed = matches!(outcome, Err(Owned::Moved(_) | Owned::Failed(_)));
                let _ = reply.send(outcome);
                if crashed {
                    // Reload from PostgreSQL on next use. Draining (not stopping)
                    // answers what is already queued instead of dropping it; a
                    // caller sees "unavailable" only when an actor really crashed.
                    let _ = myself.drain();
                    return Ok(());
                }
                state.settle(&myself).await;
            }
            OrderMsg::Resume => {
                let due = state.order.status == OrderStatus::AwaitingPayment
                    && state.order.expires_at <= OffsetDateTime::now_utc();
                if due
                    && let Err(Failure::Infrastructure(e)) =
                        state.transition(None, OrderStatus::Expired).await
                {
                    tracing::warn!(order = %state.order.id, error = %e, "could not expire order; will retry");
                    myself.send_after(Duration::from_secs(2), || OrderMsg::Resume);
                    return Ok(());
                }
                state.settle(&myself).await;
            }
            OrderMsg::Tick => {
                if state.settled && state.last_active.elapsed() >= IDLE {
                    let _ = myself.drain();
                }
            }
        }
        if state.settled && state.order.status.is_final() {
            let _ = myself.drain();
        }
        Ok(())
    }
}

impl OrderState {
    /// Gives the stock back (releases the reservation, or returns what a paid
    /// order took) and refunds any payment; each step idempotent.
    async fn give_back(&self, id: OrderId) -> Result<(), String> {
        use crate::CallError::Rejected;
        match self.deps.inventory.release(None, id).await {
            Ok(_) | Err(Rejected(InventoryError::NoReservation(_))) => {}
            // Committed: the order was paid. The goods never left, so they go
            // back on hand.
            Err(Rejected(_)) => match self.deps.inventory.restock(None, id).await {
                Ok(_) => {}
                Err(Rejected(no)) => {
                    tracing::error!(order = %id, reason = %no, "stock of a cancelled order could not be returned");
                }
                Err(e) => return Err(format!("inventory: {e}")),
            },
            Err(e) => return Err(format!("inventory: {e}")),
        }
        match self.deps.payments.refund(id).await {
            Ok(true) => self
                .deps
                .store
                .record(&self.order, OrderEventKind::Refunded)
                .await
                .map_err(|e| format!("{e:?}")),
            Ok(false) => Ok(()),
            Err(e) => Err(format!("payments: {e}")),
        }
    }

    /// Decides and persists one transition; the stock step follows in `settle`.
    async fn transition(
        &mut self,
        asker: Option<Caller>,
        requested: OrderStatus,
    ) -> Result<Order, Failure<OrderError>> {
        use OrderStatus as S;
        let current = self.order.status;
        if let Some(caller) = asker
            && !caller.is_admin()
            && caller.user_id != self.order.user_id
        {
            return Err(OrderError::NotFound.into());
        }
        let admin = asker.is_none_or(|c| c.is_admin());
        let internal = asker.is_none();
        // Another service confirming what already happened (a replayed payment
        // confirmation) gets the order as it is.
        if internal && requested == current {
            return Ok(self.order.clone());
        }
        let (kind, needs_stock_step) = match (current, requested) {
            (S::AwaitingPayment, S::Paid) if internal => (OrderEventKind::Paid, true),
            (S::AwaitingPayment, S::Cancelled) => (OrderEventKind::Cancelled, true),
            // Cancelling a paid order refunds it (in the settle step).
            (S::Paid, S::Cancelled) => (OrderEventKind::Cancelled, true),
            (S::AwaitingPayment, S::Expired)
                if internal && self.order.expires_at <= OffsetDateTime::now_utc() =>
            {
                (OrderEventKind::Expired, true)
            }
            (S::Paid, S::Shipped) if admin => (OrderEventKind::Shipped, false),
            (S::Shipped, S::Delivered) if admin => (OrderEventKind::Delivered, false),
            _ if !admin
                && matches!(requested, S::Shipped | S::Delivered | S::Paid | S::Expired) =>
            {
                return Err(OrderError::Forbidden.into());
            }
            _ => return Err(OrderError::IllegalTransition { current, requested }.into()),
        };
        let mut next = self.order.clone();
        next.status = requested;
        next.updated_at = OrderStore::now();
        let mut event = OrderEvent::of(kind, &next);
        event.refund_due = current == S::Paid && requested == S::Cancelled;
        let moved = self
            .deps
            .store
            .transition(&next, current, !needs_stock_step, event)
            .await?;
        if !moved {
            // Another node's actor changed it: ownership moved. The truth is
            // in PostgreSQL, with the new owner.
            self.fenced = true;
            return Err(Failure::Infrastructure(format!(
                "order {} moved to another owner",
                self.order.id
            )));
        }
        self.order = next;
        self.settled = !needs_stock_step;
        Ok(self.order.clone())
    }

    /// Finishes the stock step of the current status, if one is pending.
    async fn settle(&mut self, myself: &ActorRef<OrderMsg>) {
        if self.settled {
            return;
        }
        let id = self.order.id;
        let outcome = match self.order.status {
            OrderStatus::Paid => match self.deps.inventory.commit(None, id).await {
                // The reservation is gone (released by hand, or lapsed past its
                // grace): retrying cannot help; someone must look at it.
                Err(crate::CallError::Rejected(no)) => {
                    tracing::error!(order = %id, reason = %no, "paid order whose stock could not be committed");
                    Ok(())
                }
                other => other.map(|_| ()).map_err(|e| e.to_string()),
            },
            OrderStatus::Cancelled | OrderStatus::Expired => self.give_back(id).await,
            _ => Ok(()),
        };
        let done = match outcome {
            Ok(()) => self.deps.store.mark_settled(id).await.is_ok(),
            Err(e) => {
                tracing::warn!(order = %id, error = %e, "stock step failed; will retry");
                false
            }
        };
        if done {
            self.settled = true;
        } else {
            myself.send_after(Duration::from_secs(2), || OrderMsg::Resume);
        }
    }
}

/// This node's order owner router: runs the actors of the orders this node
/// owns, answers transitions for them from any node, hands orders off when
/// membership changes, and sweeps for owned orders with work left (due for
/// expiry, or a stock step not finished) — including those of a node that died.
#[derive(Debug, RactorClusterMessage)]
pub(crate) enum RouterMsg {
    /// Move an order to a status on behalf of `asker` (`None`: another service).
    #[rpc]
    Transition(
        Wire<(OrderId, Option<Caller>, OrderStatus)>,
        RpcReplyPort<Wire<TransitionAnswer>>,
    ),
    Sweep(Wire<()>),
}

#[derive(Debug)]
pub(crate) struct OrderRouter;

#[derive(Debug)]
pub(crate) struct RouterState {
    deps: OrderDeps,
    actors: Entities<OrderId, OrderMsg>,
}

impl Actor for OrderRouter {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = OrderDeps;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        deps: OrderDeps,
    ) -> Result<Self::State, ActorProcessingErr> {
        let actors = Entities::join(Service::Orders, &myself.get_cell());
        let _ = myself.cast(RouterMsg::Sweep(Wire::Value(())));
        myself.send_interval(SWEEP_EVERY, || RouterMsg::Sweep(Wire::Value(())));
        Ok(RouterState { deps, actors })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.actors.leave(&myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Transition(request, reply) => owners::serve(
                reply,
                request,
                |(id, ..)| state.actor(&myself, *id),
                |actor, (_, asker, status)| {
                    owners::ask_entity(
                        actor,
                        move |reply| OrderMsg::Transition(asker, status, reply),
                        TRANSITION_TIMEOUT,
                        "order actor",
                    )
                },
            ),
            RouterMsg::Sweep(_) => match state.deps.store.due().await {
                Ok(due) => {
                    for id in due {
                        if !state.actors.owns(id) {
                            continue;
                        }
                        if let Ok(actor) = state.actor(&myself, id) {
                            let _ = actor.cast(OrderMsg::Resume);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "order sweep failed"),
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.actors.supervise(&event);
        Ok(())
    }
}

impl RouterState {
    fn actor(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        id: OrderId,
    ) -> Result<ActorRef<OrderMsg>, String> {
        let deps = self.deps.clone();
        self.actors
            .get_or_start(id, &myself.get_cell(), || (OrderActor, (id, deps)))
    }
}
