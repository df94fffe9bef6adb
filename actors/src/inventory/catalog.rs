//! The inventory service's subscription to the catalog: every product gets its
//! stock record, created from `product.created` (which carries the initial
//! stock) as delivered by the product outbox. Delivery retries until we
//! acknowledge, so a product created while inventory was down is not missed.

use mart_schema::{EventEnvelope, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::store::StockStore;
use crate::failure::Infra;
use crate::outbox::{SubscriberMsg, acknowledge, subscribe};
use crate::trace::consuming;
use tracing::Instrument;

/// The durable subscription name (and registry name) of this subscriber.
pub(crate) const CATALOG_SUBSCRIBER: &str = "mart.inventory.catalog";

#[derive(Debug, Clone, Copy)]
pub(crate) struct CatalogSubscriber;

impl Actor for CatalogSubscriber {
    type Msg = SubscriberMsg;
    type State = StockStore;
    type Arguments = StockStore;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        store: StockStore,
    ) -> Result<StockStore, ActorProcessingErr> {
        subscribe(&myself, &[Service::Products]);
        Ok(store)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        store: &mut StockStore,
    ) -> Result<(), ActorProcessingErr> {
        acknowledge(msg, async |batch| {
            let mut handled = 0;
            for event in &batch {
                let span = consuming(event, CATALOG_SUBSCRIBER);
                if let Err(e) = apply(store, event).instrument(span).await {
                    // Acknowledge what is done; the rest comes again.
                    tracing::warn!(event = %event.event_id, error = %e.chain(), "catalog event not applied yet");
                    break;
                }
                handled += 1;
            }
            handled
        })
        .await;
        Ok(())
    }
}

async fn apply(store: &StockStore, event: &EventEnvelope) -> Result<(), Infra> {
    if let Some(product) = store.apply_catalog(event).await? {
        // The record says archived already; a live actor that did not hear
        // this only keeps selling until it next loads.
        if let Err(e) = super::front::archive_live(product).await {
            tracing::warn!(%product, error = ?e, "could not tell the stock owner about the archive");
        }
    }
    Ok(())
}
