//! One actor per open order holds its state machine. Commands for an order
//! (cancel, ship, deliver, paid, expire) run one at a time in its mailbox, so
//! two of them can never interleave. Each step is persisted before it acts:
//! the status changes first (with `stock_settled = false`), then the actor
//! commits or releases the reservation, then marks the step done. A crash in
//! between leaves `stock_settled = false`, and whoever loads the order next
//! finishes the step (inventory calls are idempotent by order id).

use std::time::Duration;

use mart_schema::OrderId;
use mart_schema::order::{Order, OrderError, OrderEvent, OrderEventKind, OrderStatus};
use mart_schema::user::Caller;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use time::OffsetDateTime;

use super::store::OrderStore;
use crate::call::Failure;
use crate::entities::Entities;
use crate::inventory::Inventory;

/// How often the router looks for orders with work left.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// An open order's actor with nothing to do for this long stops.
const IDLE: Duration = Duration::from_secs(120);

pub(crate) const ROUTER: &str = "mart.orders.router";

pub(crate) type TransitionReply = RpcReplyPort<Result<Order, Failure<OrderError>>>;

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
                let outcome = state.transition(asker, requested).await;
                let crashed = matches!(outcome, Err(Failure::Infrastructure(_)));
                let _ = reply.send(outcome);
                if crashed {
                    // Reload from PostgreSQL on next use.
                    myself.stop(Some("infrastructure failure".into()));
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
                    myself.stop(Some("idle".into()));
                }
            }
        }
        if state.settled && state.order.status.is_final() {
            myself.stop(Some("order closed".into()));
        }
        Ok(())
    }
}

impl OrderState {
    /// Releases the reservation and refunds any payment; both idempotent.
    async fn give_back(&self, id: OrderId) -> Result<(), String> {
        let failed = |e: String| e;
        match self.deps.inventory.release(None, id).await {
            // Already committed (cancelled after payment) or never reserved:
            // nothing to give back.
            Ok(_) | Err(crate::CallError::Rejected(_)) => {}
            Err(e) => return Err(failed(format!("inventory: {e}"))),
        }
        match self.deps.payments.refund(id).await {
            Ok(true) => self
                .deps
                .store
                .record(&self.order, OrderEventKind::Refunded)
                .await
                .map_err(|e| failed(format!("{e:?}"))),
            Ok(false) => Ok(()),
            Err(e) => Err(failed(format!("payments: {e}"))),
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
            // Another owner changed it (should not happen with one actor per
            // order); the truth is in PostgreSQL.
            return Err(Failure::Infrastructure(
                "order changed under its actor".into(),
            ));
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

/// Finds or starts the actor of an order on this node, and sweeps for orders
/// with work left (due for expiry, or a stock step not finished).
#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum RouterMsg {
    Route(OrderId, RpcReplyPort<Result<ActorRef<OrderMsg>, String>>),
    Sweep,
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
        let _ = myself.cast(RouterMsg::Sweep);
        myself.send_interval(SWEEP_EVERY, || RouterMsg::Sweep);
        Ok(RouterState {
            deps,
            actors: Entities::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.actors.stop_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route(id, reply) => {
                let _ = reply.send(state.actor(&myself, id));
            }
            RouterMsg::Sweep => match state.deps.store.due().await {
                Ok(due) => {
                    for id in due {
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
        state.actors.forget(&event);
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
