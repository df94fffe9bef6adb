//! Finds (or starts) the stock actor of a product on this node, and sweeps for
//! reservations that expired while their actor was not running (the node was
//! down, or the actor stopped when idle).

use std::time::Duration;

use deadpool_postgres::Pool;
use mart_schema::ProductId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::stock::{StockActor, StockArgs, StockMsg};
use crate::entities::Entities;
use crate::outbox::Outbox;

/// How often the router looks for overdue reservations.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The registry name of this node's router.
pub(crate) const ROUTER: &str = "mart.inventory.router";

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum RouterMsg {
    /// The stock actor of a product, started if needed.
    Route(ProductId, RpcReplyPort<Result<ActorRef<StockMsg>, String>>),
    /// Wake the actors of products with overdue reservations.
    Sweep,
}

#[derive(Debug)]
pub(crate) struct StockRouter;

#[derive(Debug)]
pub(crate) struct RouterState {
    pool: Pool,
    outbox: Outbox,
    actors: Entities<ProductId, StockMsg>,
}

impl Actor for StockRouter {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Self::State, ActorProcessingErr> {
        // At start-up first: reservations that fell due while the node was down.
        let _ = myself.cast(RouterMsg::Sweep);
        myself.send_interval(SWEEP_EVERY, || RouterMsg::Sweep);
        Ok(RouterState {
            pool,
            outbox: Outbox::new(mart_schema::Service::Inventory),
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
            RouterMsg::Route(product_id, reply) => {
                let _ = reply.send(state.actor(&myself, product_id));
            }
            RouterMsg::Sweep => {
                // The database may be briefly away; the next sweep tries again.
                match state.overdue().await {
                    Ok(products) => {
                        for product_id in products {
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
        state.actors.forget(&event);
        Ok(())
    }
}

impl RouterState {
    fn actor(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        product_id: ProductId,
    ) -> Result<ActorRef<StockMsg>, String> {
        let (pool, outbox) = (self.pool.clone(), self.outbox.clone());
        self.actors
            .get_or_start(product_id, &myself.get_cell(), || {
                (
                    StockActor,
                    StockArgs {
                        product_id,
                        pool,
                        outbox,
                    },
                )
            })
    }

    async fn overdue(&self) -> Result<Vec<ProductId>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query(
                "select distinct product_id from inventory.reservation_lines \
                 where status = 'reserved' and expires_at <= now()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
