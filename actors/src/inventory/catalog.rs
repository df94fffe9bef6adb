//! The inventory service's subscription to the catalog: every product gets its
//! stock record, created from `product.created` (which carries the initial
//! stock) as delivered by the product outbox. Delivery retries until we
//! acknowledge, so a product created while inventory was down is not missed.

use deadpool_postgres::Pool;
use mart_schema::product::{ProductCreated, ProductDeleted};
use mart_schema::{EventEnvelope, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::outbox::{SubscriberMsg, acknowledge, subscribe};

/// The durable subscription name (and registry name) of this subscriber.
pub(crate) const CATALOG_SUBSCRIBER: &str = "mart.inventory.catalog";

#[derive(Debug)]
pub(crate) struct CatalogSubscriber;

impl Actor for CatalogSubscriber {
    type Msg = SubscriberMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Pool, ActorProcessingErr> {
        subscribe(&myself, &[Service::Products]);
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        pool: &mut Pool,
    ) -> Result<(), ActorProcessingErr> {
        acknowledge(msg, async |batch| {
            let mut handled = 0;
            for event in &batch {
                if let Err(e) = apply(pool, event).await {
                    // Acknowledge what is done; the rest comes again.
                    tracing::warn!(event = %event.event_id, error = %e, "catalog event not applied yet");
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

/// Applies one event exactly once: the event id is recorded in the same
/// transaction as its effect.
async fn apply(pool: &Pool, event: &EventEnvelope) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let first = tx
        .execute(
            "insert into inventory.processed_events (event_id) values ($1) on conflict do nothing",
            &[&event.event_id],
        )
        .await
        .map_err(|e| e.to_string())?;
    if first == 0 {
        return Ok(());
    }
    let mut archived = None;
    match event.event_type.as_str() {
        "product.created" => {
            let created: ProductCreated =
                serde_json::from_value(event.data.clone()).map_err(|e| e.to_string())?;
            tx.execute(
                "insert into inventory.stock (product_id, on_hand) values ($1, $2) on conflict do nothing",
                &[&created.product_id, &created.stock],
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        "product.deleted" => {
            let deleted: ProductDeleted =
                serde_json::from_value(event.data.clone()).map_err(|e| e.to_string())?;
            tx.execute(
                // A new version: a live stock actor's next write fails and it reloads.
                "update inventory.stock set archived = true, version = version + 1, updated_at = now() \
                 where product_id = $1",
                &[&deleted.product_id],
            )
            .await
            .map_err(|e| e.to_string())?;
            archived = Some(deleted.product_id);
        }
        _ => {}
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    if let Some(product) = archived {
        // The record says archived already; a live actor that did not hear
        // this only keeps selling until it next loads.
        if let Err(e) = super::archive_live(product).await {
            tracing::warn!(%product, error = ?e, "could not tell the stock owner about the archive");
        }
    }
    Ok(())
}
