//! This node's order owner router: runs the actors of the orders this node
//! owns, answers transitions for them from any node, hands orders off when
//! membership changes, and sweeps for owned orders with work left (due for
//! expiry, or a step not finished) — including those of a node that died.

use std::time::Duration;

use mart_schema::order::OrderStatus;
use mart_schema::user::Caller;
use mart_schema::{OrderId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::actor::{OrderActor, OrderDeps, OrderMsg, TransitionAnswer};
use crate::call::Request;
use crate::entities::Entities;
use crate::owners;
use crate::wire::Wire;

/// How often the router looks for orders with work left.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A move of one order, on behalf of `caller`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Transition {
    pub(crate) id: OrderId,
    pub(crate) caller: Caller,
    pub(crate) status: OrderStatus,
}

#[derive(Debug, RactorClusterMessage)]
pub(crate) enum RouterMsg {
    #[rpc]
    Transition(
        Wire<Request<Transition>>,
        RpcReplyPort<Wire<TransitionAnswer>>,
    ),
    Sweep(Wire<()>),
}

#[derive(Debug, Clone, Copy)]
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
                |asked| state.actor(&myself, asked.id),
                |actor, asked| {
                    owners::ask_entity(
                        actor,
                        move |reply| OrderMsg::Transition(asked.caller, asked.status, reply),
                        "order actor",
                    )
                },
            ),
            RouterMsg::Sweep(_) => {
                state.actors.swept(|| OrderMsg::Tick);
                state.sweep(&myself).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // An order actor leaves nothing to park: orders load on demand.
        state
            .actors
            .supervise(event, |_: <OrderActor as Actor>::State| None);
        Ok(())
    }
}

impl RouterState {
    /// Wakes the owned orders with work left.
    async fn sweep(&mut self, myself: &ActorRef<RouterMsg>) {
        let due = match self.deps.store.due().await {
            Ok(due) => due,
            Err(e) => return tracing::warn!(error = ?e, "order sweep failed"),
        };
        let owned: Vec<OrderId> = due.into_iter().filter(|id| self.actors.owns(*id)).collect();
        for id in owned {
            if let Ok(actor) = self.actor(myself, id) {
                let _ = actor.cast(OrderMsg::Resume);
            }
        }
    }

    fn actor(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        id: OrderId,
    ) -> Result<ActorRef<OrderMsg>, String> {
        let deps = self.deps.clone();
        self.actors
            .get_or_start(id, &myself.get_cell(), |_| (OrderActor, (id, deps)))
    }
}
