//! This node's inventory owner router: runs the stock actors of the products
//! this node owns (see [`crate::owners`]), answers stock requests for them from
//! any node, hands products off when membership changes, and sweeps for
//! reservations that expired while no actor was watching (the owner was down,
//! or the actor stopped when idle).

use std::time::Duration;

use mart_schema::inventory::{InventoryError, StockLevels};
use mart_schema::{ProductId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::actor::{Parked, StockActor, StockArgs, StockMsg};
use super::state::{OpDone, StockOp};
use super::store::StockStore;
use crate::call::Request;
use crate::entities::Entities;
use crate::owners::{self, Owned};
use crate::wire::Wire;

/// How often the router looks for overdue reservations.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
pub(crate) type OpAnswer = Result<OpDone, Owned<InventoryError>>;
pub(crate) type LevelsAnswer = Result<StockLevels, Owned<InventoryError>>;

/// A change to one product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProductOp {
    pub(crate) product: ProductId,
    pub(crate) op: StockOp,
}

#[derive(Debug, RactorClusterMessage)]
pub(crate) enum RouterMsg {
    /// A change to a product this node owns, from any node.
    #[rpc]
    Op(Wire<Request<ProductOp>>, RpcReplyPort<Wire<OpAnswer>>),
    #[rpc]
    Levels(Wire<Request<ProductId>>, RpcReplyPort<Wire<LevelsAnswer>>),
    /// Wake the actors of owned products with overdue reservations.
    Sweep(Wire<()>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StockRouter;

#[derive(Debug)]
pub(crate) struct RouterState {
    store: StockStore,
    actors: Entities<ProductId, StockMsg, Parked>,
}

impl Actor for StockRouter {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = StockStore;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        store: StockStore,
    ) -> Result<Self::State, ActorProcessingErr> {
        let actors = Entities::join(Service::Inventory, &myself.get_cell());
        // At start-up first: reservations that fell due while the node was down.
        let _ = myself.cast(RouterMsg::Sweep(Wire::Value(())));
        myself.send_interval(SWEEP_EVERY, || RouterMsg::Sweep(Wire::Value(())));
        Ok(RouterState { store, actors })
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
            RouterMsg::Op(request, reply) => owners::serve(
                reply,
                request,
                |asked| state.actor(&myself, asked.product),
                |actor, asked| {
                    owners::ask_entity(
                        actor,
                        |reply| StockMsg::Op(asked.op, Some(reply), crate::trace::current()),
                        "stock actor",
                    )
                },
            ),
            RouterMsg::Levels(request, reply) => owners::serve(
                reply,
                request,
                |product| state.actor(&myself, *product),
                |actor, _| owners::ask_entity(actor, StockMsg::Levels, "stock actor"),
            ),
            RouterMsg::Sweep(_) => {
                state.actors.swept(|| StockMsg::Tick);
                // The database may be briefly away; the next sweep tries again.
                match state.store.overdue().await {
                    Ok(products) => {
                        for product_id in products {
                            if !state.actors.owns(product_id) {
                                continue;
                            }
                            if let Ok(actor) = state.actor(&myself, product_id) {
                                let _ = actor.cast(StockMsg::ExpireDue);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reservation sweep failed"),
                }
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
        state.actors.supervise(event, Parked::of);
        Ok(())
    }
}

impl RouterState {
    fn actor(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        product_id: ProductId,
    ) -> Result<ActorRef<StockMsg>, String> {
        let store = self.store.clone();
        self.actors
            .get_or_start(product_id, &myself.get_cell(), |parked| {
                (
                    StockActor,
                    StockArgs {
                        product_id,
                        store,
                        parked,
                    },
                )
            })
    }
}
