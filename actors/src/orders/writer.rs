//! Group commit for new orders (see [`crate::batch`]): the orders placed on
//! this node while one transaction is written go together in the next.

use super::store::{NewRow, OrderStore};
use crate::batch::Batched;
use crate::failure::Infra;

/// Writes new orders, many to a transaction.
#[derive(Debug, Clone)]
pub(crate) struct OrderWriter(pub(crate) OrderStore);

impl Batched for OrderWriter {
    type Item = NewRow;
    type Done = ();
    const NAME: &'static str = "mart.orders.writer";
    const SERVICE: mart_schema::Service = mart_schema::Service::Orders;
    const MAX_BATCH: usize = 512;

    async fn run(&self, rows: &[NewRow]) -> Result<Vec<()>, Infra> {
        self.0.insert_batch(rows).await?;
        Ok(vec![(); rows.len()])
    }
}
