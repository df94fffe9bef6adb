//! One actor per open order holds its state machine. Commands for an order
//! (cancel, ship, deliver, paid, expire) run one at a time in its mailbox, so
//! two of them can never interleave: load → decide ([`super::state::decide`])
//! → write → reply, then the step the move calls for. Each step is persisted
//! before it acts: the status changes first (with `stock_settled = false`),
//! then the actor commits or gives back the stock (and refunds), then marks
//! the step done. A crash in between leaves `stock_settled = false`, and
//! whoever loads the order next finishes the step (inventory and refund calls
//! are idempotent by order id).
//!
//! Ownership: an order's actor runs on the node owning it (see
//! [`crate::owners`]). Every transition is a compare-and-set on the status in
//! PostgreSQL, which fences a stale actor on a node that lost ownership: its
//! write changes nothing, it answers "moved" and stops, and the caller asks
//! the new owner.

use std::time::{Duration, Instant};

use mart_schema::inventory::InventoryError;
use mart_schema::order::{Order, OrderError, OrderEvent, OrderEventKind, OrderStatus};
use mart_schema::user::Caller;
use mart_schema::{OrderId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::state::{self, Settle, Step};
use super::store::OrderStore;
use crate::call::CallError;
use crate::failure::{Failure, Infra};
use crate::inventory::{self, Inventory};
use crate::owners::{Owned, Written};
use crate::payments::Payments;

/// An open order's actor with nothing to do for this long stops.
const IDLE: Duration = Duration::from_secs(120);
/// The pause before a failed step is tried again.
const RETRY: Duration = Duration::from_secs(2);

pub(crate) type TransitionAnswer = Result<Order, Owned<OrderError>>;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum OrderMsg {
    /// Move to a status on behalf of a caller.
    Transition(Caller, OrderStatus, RpcReplyPort<TransitionAnswer>),
    /// Expire if due; finish an unfinished step.
    Resume,
    /// Stop if idle (sent by the router to all its actors now and then).
    Tick,
}

/// What an order's actor needs.
#[derive(Debug, Clone)]
pub(crate) struct OrderDeps {
    pub(crate) store: OrderStore,
    pub(crate) inventory: Inventory,
    pub(crate) payments: Payments,
}

#[derive(Debug)]
pub(crate) struct OrderActor;

#[derive(Debug)]
pub(crate) struct OrderState {
    deps: OrderDeps,
    order: Order,
    settled: bool,
    last_active: Instant,
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
        let loaded = deps.store.load(id).await.map_err(Failure::into_infra)?;
        let (order, settled) = (loaded.order, loaded.settled);
        if order.status == OrderStatus::AwaitingPayment {
            let wait = (order.expires_at - mart_schema::now()).max(time::Duration::ZERO);
            let wait = Duration::try_from(wait).unwrap_or_default();
            myself.send_after(wait + Duration::from_millis(5), || OrderMsg::Resume);
        }
        if !settled {
            let _ = myself.cast(OrderMsg::Resume);
        }
        Ok(OrderState {
            deps,
            order,
            settled,
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The idle check itself is not activity (counting it kept every
        // settled order's actor alive for ever).
        if !matches!(msg, OrderMsg::Tick) {
            state.last_active = Instant::now();
        }
        match msg {
            OrderMsg::Transition(caller, requested, reply) => {
                let outcome = state.transition(caller, requested).await;
                let lost = matches!(outcome, Err(Owned::Moved(_) | Owned::Failed(_)));
                let _ = reply.send(outcome);
                if lost {
                    // Reload from PostgreSQL on next use. Draining (not stopping)
                    // answers what is already queued instead of dropping it.
                    let _ = myself.drain();
                    return Ok(());
                }
                state.settle(&myself).await;
            }
            OrderMsg::Resume => {
                let due = state.order.status == OrderStatus::AwaitingPayment
                    && state.order.expires_at <= mart_schema::now();
                if due {
                    match state
                        .transition(Caller::Service, OrderStatus::Expired)
                        .await
                    {
                        Ok(_) | Err(Owned::Rejected(_)) => {}
                        Err(Owned::Moved(_)) => {
                            let _ = myself.drain();
                            return Ok(());
                        }
                        Err(Owned::Failed(e)) => {
                            tracing::warn!(order = %state.order.id, error = %e, "could not expire order; will retry");
                            myself.send_after(RETRY, || OrderMsg::Resume);
                            return Ok(());
                        }
                    }
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
    /// Decides and persists one transition; its step follows in `settle`.
    async fn transition(&mut self, caller: Caller, requested: OrderStatus) -> TransitionAnswer {
        let now = mart_schema::now();
        let step = state::decide(&self.order, caller, requested, now).map_err(Owned::Rejected)?;
        let Step::Move { kind, settle } = step else {
            return Ok(self.order.clone());
        };
        let from = self.order.status;
        let mut next = self.order.clone();
        next.status = requested;
        next.updated_at = now;
        let mut event = OrderEvent::of(kind, &next);
        event.refund_due = state::refund_due(from, requested);
        let settled = settle == Settle::Nothing;
        let store = &self.deps.store;
        match store.transition(&next, from, settled, event).await {
            Ok(Written::Committed) => {}
            // Another node's actor changed it: ownership moved. The truth is
            // in PostgreSQL, with the new owner.
            Ok(Written::Fenced) => {
                return Err(Owned::Moved(format!("order {} moved", self.order.id)));
            }
            Err(Failure::Rejected(no)) => return Err(Owned::Rejected(no)),
            Err(Failure::Infra(e)) => return Err(Owned::Failed(e.chain())),
        }
        self.order = next;
        self.settled = settled;
        Ok(self.order.clone())
    }

    /// Finishes the step of the current status, if one is pending; tries
    /// again later if it fails.
    async fn settle(&mut self, myself: &ActorRef<OrderMsg>) {
        if self.settled {
            return;
        }
        let id = self.order.id;
        let outcome = match Settle::of(self.order.status) {
            Settle::CommitStock => self.commit_stock().await,
            Settle::GiveBack => self.give_back().await,
            Settle::Nothing => Ok(()),
        };
        let done = match outcome {
            Ok(()) => self
                .deps
                .store
                .mark_settled(id)
                .await
                .map_err(Failure::into_infra),
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => self.settled = true,
            Err(e) => {
                tracing::warn!(order = %id, error = %e.chain(), "order step failed; will retry");
                myself.send_after(RETRY, || OrderMsg::Resume);
            }
        }
    }

    async fn commit_stock(&self) -> Result<(), Infra> {
        let id = self.order.id;
        let commit = inventory::Settle::Commit;
        match self
            .deps
            .inventory
            .settle(Caller::Service, id, commit)
            .await
        {
            Ok(_) => Ok(()),
            // The reservation is gone (released by hand, or lapsed past its
            // grace): retrying cannot help; someone must look at it.
            Err(CallError::Rejected(no)) => {
                tracing::error!(order = %id, reason = %no, "paid order whose stock could not be committed");
                Ok(())
            }
            Err(e) => Err(e.into_infra(Service::Inventory)),
        }
    }

    /// Gives the stock back (releases the reservation, or returns what a paid
    /// order took) and refunds any payment; each step idempotent.
    async fn give_back(&self) -> Result<(), Infra> {
        let id = self.order.id;
        let inventory = &self.deps.inventory;
        let release = inventory::Settle::Release;
        match inventory.settle(Caller::Service, id, release).await {
            Ok(_) | Err(CallError::Rejected(InventoryError::NoReservation(_))) => {}
            // Committed: the order was paid. The goods never left, so they go
            // back on hand.
            Err(CallError::Rejected(_)) => {
                let put_back = inventory::Settle::Return;
                match inventory.settle(Caller::Service, id, put_back).await {
                    Ok(_) => {}
                    Err(CallError::Rejected(no)) => {
                        tracing::error!(order = %id, reason = %no, "stock of a cancelled order could not be returned");
                    }
                    Err(e) => return Err(e.into_infra(Service::Inventory)),
                }
            }
            Err(e) => return Err(e.into_infra(Service::Inventory)),
        }
        match self.deps.payments.refund(id).await {
            Ok(true) => {
                let store = &self.deps.store;
                store
                    .record(&self.order, OrderEventKind::Refunded)
                    .await
                    .map_err(Failure::into_infra)
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e.into_infra(Service::Payments)),
        }
    }
}
