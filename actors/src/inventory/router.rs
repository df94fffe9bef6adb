//! Finds (or starts) the stock actor of a product on this node, and sweeps for
//! reservations that expired while their actor was not running (the node was
//! down, or the actor stopped when idle).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use mart_schema::ProductId;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::stock::{StockActor, StockArgs, StockMsg};
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
    actors: HashMap<ProductId, ActorRef<StockMsg>>,
    products: HashMap<ActorId, ProductId>,
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
            actors: HashMap::new(),
            products: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for actor in state.actors.values() {
            actor.stop(Some("router stopping".into()));
        }
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
                let _ = reply.send(state.actor(&myself, product_id).await);
            }
            RouterMsg::Sweep => {
                // The database may be briefly away; the next sweep tries again.
                match state.overdue().await {
                    Ok(products) => {
                        for product_id in products {
                            if let Ok(actor) = state.actor(&myself, product_id).await {
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
        let id = match &event {
            SupervisionEvent::ActorTerminated(cell, ..) => cell.get_id(),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!(error = %err, "stock actor crashed; it reloads on next use");
                cell.get_id()
            }
            _ => return Ok(()),
        };
        if let Some(product_id) = state.products.remove(&id)
            && state
                .actors
                .get(&product_id)
                .is_some_and(|a| a.get_id() == id)
        {
            state.actors.remove(&product_id);
        }
        Ok(())
    }
}

impl RouterState {
    async fn actor(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        product_id: ProductId,
    ) -> Result<ActorRef<StockMsg>, String> {
        if let Some(actor) = self.actors.get(&product_id) {
            // One that is stopping (idle, or no record) is replaced right away,
            // without waiting for its termination notice.
            if matches!(
                actor.get_status(),
                ractor::ActorStatus::Running | ractor::ActorStatus::Starting
            ) {
                return Ok(actor.clone());
            }
            self.actors.remove(&product_id);
        }
        let args = StockArgs {
            product_id,
            pool: self.pool.clone(),
            outbox: self.outbox.clone(),
        };
        // Loading a product's state takes a few database round trips; do not make
        // every other product wait for it. Messages queue until it has loaded.
        let (actor, starting) =
            ractor::ActorRuntime::spawn_linked_instant(None, StockActor, args, myself.get_cell())
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Ok(Err(e)) = starting.await {
                tracing::warn!(%product_id, error = %e, "stock actor could not load");
            }
        });
        self.products.insert(actor.get_id(), product_id);
        self.actors.insert(product_id, actor.clone());
        Ok(actor)
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
