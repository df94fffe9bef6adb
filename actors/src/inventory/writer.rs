//! Batched round trips for stock (see [`crate::batch`]):
//! - group commit: the decided batches of every product this node owns,
//!   written together in one transaction, each product's still fenced by its
//!   own version;
//! - group load: the stock actors starting at once, loaded in one query.

use std::collections::HashSet;

use mart_schema::ProductId;

use super::store::{Loaded, StockStore, StockWrite, Wrote};
use crate::batch::Batched;
use crate::failure::Infra;

/// Writes decided stock batches, many products to a transaction.
#[derive(Debug, Clone)]
pub(crate) struct StockWriter(pub(crate) StockStore);

impl Batched for StockWriter {
    type Item = StockWrite;
    type Done = Wrote;
    const NAME: &'static str = "mart.inventory.writer";
    const SERVICE: mart_schema::Service = mart_schema::Service::Inventory;
    const MAX_BATCH: usize = 512;

    async fn run(&self, writes: &[StockWrite]) -> Result<Vec<Wrote>, Infra> {
        let mut seen = HashSet::new();
        if writes.iter().all(|w| seen.insert(w.product_id)) {
            return self.0.write_batch(writes).await;
        }
        // A product appears once per transaction (its update is one row);
        // a second batch of one product (rare: an actor replaced mid-write)
        // goes in the next.
        let mut done = vec![Wrote::Fenced; writes.len()];
        let mut left: Vec<(usize, &StockWrite)> = writes.iter().enumerate().collect();
        while !left.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) = left
                .into_iter()
                .partition(|(_, w)| seen.insert(w.product_id));
            let places: Vec<usize> = round.iter().map(|(place, _)| *place).collect();
            let round: Vec<StockWrite> = round.into_iter().map(|(_, w)| w.clone()).collect();
            for (place, written) in places.into_iter().zip(self.0.write_batch(&round).await?) {
                done[place] = written;
            }
            left = later;
        }
        Ok(done)
    }
}

/// Loads the products whose stock actors start at once, in one query: a
/// cold product costs a query plan and a round trip, which a sweep over
/// thousands of products (or a hand-off reloading every one) paid each.
#[derive(Debug, Clone)]
pub(crate) struct StockLoader(pub(crate) StockStore);

impl Batched for StockLoader {
    type Item = ProductId;
    type Done = Option<Loaded>;
    const NAME: &'static str = "mart.inventory.loader";
    const SERVICE: mart_schema::Service = mart_schema::Service::Inventory;
    const MAX_BATCH: usize = 256;

    async fn run(&self, products: &[ProductId]) -> Result<Vec<Option<Loaded>>, Infra> {
        self.0.load_many(products).await
    }
}
