//! PostgreSQL access for the inventory service: all of its SQL, and the only
//! writer of the `inventory` schema.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use mart_schema::inventory::{InventoryEvent, LineStatus, ReservedLine};
use mart_schema::product::{ProductCreated, ProductDeleted};
use mart_schema::{EventEnvelope, OrderId, ProductId, Service};
use time::OffsetDateTime;

use super::state::{Levels, Line, Scratch};
use crate::failure::Infra;
use crate::outbox::Outbox;
use crate::owners::Written;

#[derive(Clone, Debug)]
pub(crate) struct StockStore {
    pool: Pool,
    outbox: Outbox,
}

fn status(text: &str) -> Result<LineStatus, Infra> {
    text.parse().map_err(Infra::bug)
}

impl StockStore {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            outbox: Outbox::new(Service::Inventory),
        }
    }

    /// A product's levels and open lines, in one round trip (one snapshot);
    /// `None` without a stock record.
    pub(crate) async fn load(
        &self,
        product: ProductId,
    ) -> Result<Option<(Levels, HashMap<OrderId, Line>)>, Infra> {
        let client = self.pool.get().await?;
        let load = client
            .prepare_cached(
                "select s.on_hand, s.reserved, s.low_stock_threshold, s.archived, \
                        l.order_id, l.quantity, l.expires_at, s.version \
                 from inventory.stock s \
                 left join inventory.reservation_lines l \
                   on l.product_id = s.product_id and l.status = 'reserved' \
                 where s.product_id = $1",
            )
            .await?;
        let rows = client.query(&load, &[&product]).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let levels = Levels {
            on_hand: first.get(0),
            reserved: first.get(1),
            threshold: first.get(2),
            archived: first.get(3),
            version: first.get(7),
        };
        let mut open = HashMap::new();
        for row in &rows {
            if let Some(order_id) = row.get::<_, Option<OrderId>>(4) {
                let line = Line {
                    quantity: row.get(5),
                    status: LineStatus::Reserved,
                    expires_at: row.get(6),
                };
                open.insert(order_id, line);
            }
        }
        Ok(Some((levels, open)))
    }

    /// The lines of `orders` for `product`, whatever their status.
    pub(crate) async fn lines(
        &self,
        product: ProductId,
        orders: &[OrderId],
    ) -> Result<HashMap<OrderId, Line>, Infra> {
        if orders.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.pool.get().await?;
        let ids: Vec<uuid::Uuid> = orders.iter().map(|o| o.0).collect();
        let lookup = client
            .prepare_cached(
                "select order_id, quantity, status, expires_at from inventory.reservation_lines \
                 where product_id = $1 and order_id = any($2)",
            )
            .await?;
        let mut found = HashMap::new();
        for row in client.query(&lookup, &[&product, &ids]).await? {
            let line = Line {
                quantity: row.get(1),
                status: status(row.get(2))?,
                expires_at: row.get(3),
            };
            found.insert(row.get(0), line);
        }
        Ok(found)
    }

    /// Writes a decided batch (levels, changed lines, events) in one
    /// transaction, if nobody wrote the product since `loaded_version`.
    pub(crate) async fn write(
        &self,
        batch: &Scratch,
        loaded_version: i64,
        events: &[InventoryEvent],
    ) -> Result<Written, Infra> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let update = tx
            .prepare_cached(
                "update inventory.stock set on_hand = $2, reserved = $3, archived = archived or $4, \
                   version = version + 1, updated_at = now() \
                 where product_id = $1 and version = $5",
            )
            .await?;
        let levels = &batch.levels;
        let params: [&(dyn postgres_types::ToSql + Sync); 5] = [
            &batch.product_id,
            &levels.on_hand,
            &levels.reserved,
            &levels.archived,
            &loaded_version,
        ];
        if tx.execute(&update, &params).await? == 0 {
            return Ok(Written::Fenced);
        }
        if !batch.touched.is_empty() {
            let lines = &batch.touched;
            let orders: Vec<uuid::Uuid> = lines.keys().map(|o| o.0).collect();
            let quantities: Vec<i64> = lines.values().map(|l| l.quantity).collect();
            let statuses: Vec<&str> = lines.values().map(|l| l.status.as_str()).collect();
            let expiries: Vec<OffsetDateTime> = lines.values().map(|l| l.expires_at).collect();
            let upsert = tx
                .prepare_cached(
                    "insert into inventory.reservation_lines (order_id, product_id, quantity, status, expires_at) \
                     select o, $1, q, s, e from unnest($2::uuid[], $3::bigint[], $4::text[], $5::timestamptz[]) \
                       as t(o, q, s, e) \
                     on conflict (order_id, product_id) do update set status = excluded.status, updated_at = now()",
                )
                .await?;
            let params: [&(dyn postgres_types::ToSql + Sync); 5] = [
                &batch.product_id,
                &orders,
                &quantities,
                &statuses,
                &expiries,
            ];
            tx.execute(&upsert, &params).await?;
        }
        self.outbox.commit(tx, events).await?;
        Ok(Written::Committed)
    }

    /// The products an order's reservation has lines for, in product order.
    pub(crate) async fn products_of(&self, order: OrderId) -> Result<Vec<ProductId>, Infra> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select product_id from inventory.reservation_lines where order_id = $1 order by product_id",
                &[&order],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// An order's reservation lines as stored, in product order.
    pub(crate) async fn reservation(&self, order: OrderId) -> Result<Vec<ReservedLine>, Infra> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select product_id, quantity, status, expires_at from inventory.reservation_lines \
                 where order_id = $1 order by product_id",
                &[&order],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ReservedLine {
                    product_id: row.get(0),
                    quantity: row.get(1),
                    status: status(row.get(2))?,
                    expires_at: row.get(3),
                })
            })
            .collect()
    }

    /// Products with reservations past their time.
    pub(crate) async fn overdue(&self) -> Result<Vec<ProductId>, Infra> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select distinct product_id from inventory.reservation_lines \
                 where status = 'reserved' and expires_at <= now()",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Applies one catalog event exactly once (its id is recorded in the same
    /// transaction as its effect): `product.created` makes the stock record,
    /// `product.deleted` archives it. Answers the product archived, if any.
    pub(crate) async fn apply_catalog(
        &self,
        event: &EventEnvelope,
    ) -> Result<Option<ProductId>, Infra> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let first = tx
            .execute(
                "insert into inventory.processed_events (event_id) values ($1) on conflict do nothing",
                &[&event.event_id],
            )
            .await?;
        if first == 0 {
            return Ok(None);
        }
        let data = event.data.clone();
        let mut archived = None;
        match event.event_type.as_str() {
            "product.created" => {
                let created: ProductCreated = serde_json::from_value(data).map_err(Infra::bug)?;
                tx.execute(
                    "insert into inventory.stock (product_id, on_hand) values ($1, $2) on conflict do nothing",
                    &[&created.product_id, &created.stock],
                )
                .await?;
            }
            "product.deleted" => {
                let deleted: ProductDeleted = serde_json::from_value(data).map_err(Infra::bug)?;
                tx.execute(
                    // A new version: a live stock actor's next write fails and it reloads.
                    "update inventory.stock set archived = true, version = version + 1, updated_at = now() \
                     where product_id = $1",
                    &[&deleted.product_id],
                )
                .await?;
                archived = Some(deleted.product_id);
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(archived)
    }
}
