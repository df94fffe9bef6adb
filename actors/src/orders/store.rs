//! PostgreSQL access for the order service: the only writer of `orders`.

use deadpool_postgres::{Pool, Transaction};
use mart_schema::order::{Order, OrderError, OrderEvent, OrderEventKind, OrderLine, OrderStatus};
use mart_schema::{OrderId, UserId};
use postgres_types::ToSql;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::failure::{Failure, Infra};
use crate::idempotency::Idempotency;
use crate::outbox::Outbox;
use crate::owners::Written;

pub(crate) type StoreResult<T> = Result<T, Failure<OrderError>>;

/// A new order to write, with its Idempotency-Key's outcome if it has a key.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) order: Order,
    pub(crate) key: Option<(String, serde_json::Value)>,
}

/// Order lines as the columns of one insert.
#[derive(Default)]
struct LineColumns<'a> {
    order: Vec<uuid::Uuid>,
    no: Vec<i32>,
    product: Vec<uuid::Uuid>,
    name: Vec<&'a str>,
    unit_price: Vec<i64>,
    quantity: Vec<i32>,
    total: Vec<i64>,
}

/// An order as stored, with its saga progress.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) order: Order,
    /// The step its last transition called for is done.
    pub(crate) settled: bool,
}

const COLUMNS: &str =
    "order_id, user_id, status, currency, total, expires_at, created_at, updated_at, stock_settled";

#[derive(Clone, Debug)]
pub(crate) struct OrderStore {
    pub(crate) pool: Pool,
    outbox: Outbox,
    pub(crate) keys: Idempotency,
}

fn order_of(row: &Row, items: Vec<OrderLine>) -> StoreResult<Loaded> {
    let status: String = row.get("status");
    let currency: String = row.get("currency");
    Ok(Loaded {
        order: Order {
            id: row.get("order_id"),
            user_id: row.get("user_id"),
            status: status.parse().map_err(Infra::bug)?,
            items,
            total: row.get("total"),
            currency: currency.parse().map_err(Infra::bug)?,
            expires_at: row.get("expires_at"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        },
        settled: row.get("stock_settled"),
    })
}

impl OrderStore {
    pub(crate) fn new(pool: Pool, outbox: Outbox) -> Self {
        Self {
            pool,
            outbox,
            keys: Idempotency::new("orders"),
        }
    }

    /// Writes new orders, their lines, their `order.placed` events and
    /// their Idempotency-Key outcomes, all in one transaction: one flush of
    /// the order writer, however many callers it serves.
    pub(crate) async fn insert_batch(&self, placed: &[NewRow]) -> Result<(), Infra> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let orders = tx
            .prepare_cached(
                "insert into orders.orders \
                 (order_id, user_id, status, currency, total, expires_at, created_at, updated_at, stock_settled) \
                 select o, u, s, c, t, e, a, a, true from \
                 unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::timestamptz[]) \
                 as x(o, u, s, c, t, e, a)",
            )
            .await?;
        let rows: Vec<&Order> = placed.iter().map(|p| &p.order).collect();
        let ids: Vec<uuid::Uuid> = rows.iter().map(|o| o.id.0).collect();
        let users: Vec<uuid::Uuid> = rows.iter().map(|o| o.user_id.0).collect();
        let statuses: Vec<&str> = rows.iter().map(|o| o.status.as_str()).collect();
        let currencies: Vec<&str> = rows.iter().map(|o| o.currency.code()).collect();
        let totals: Vec<i64> = rows.iter().map(|o| o.total).collect();
        let expiries: Vec<OffsetDateTime> = rows.iter().map(|o| o.expires_at).collect();
        let created: Vec<OffsetDateTime> = rows.iter().map(|o| o.created_at).collect();
        let params: [&(dyn ToSql + Sync); 7] = [
            &ids,
            &users,
            &statuses,
            &currencies,
            &totals,
            &expiries,
            &created,
        ];
        tx.execute(&orders, &params).await?;
        self.insert_lines(&tx, &rows).await?;
        let keyed: Vec<&NewRow> = placed.iter().filter(|p| p.key.is_some()).collect();
        for row in keyed {
            if let Some((key, outcome)) = &row.key {
                let user = row.order.user_id;
                self.keys.finish_in(&tx, user, key, outcome).await?;
            }
        }
        let events: Vec<OrderEvent> = rows
            .iter()
            .map(|o| OrderEvent::of(OrderEventKind::Placed, o))
            .collect();
        self.outbox.commit(tx, &events).await?;
        Ok(())
    }

    async fn insert_lines(&self, tx: &Transaction<'_>, orders: &[&Order]) -> Result<(), Infra> {
        let lines = tx
            .prepare_cached(
                "insert into orders.order_lines \
                 (order_id, line_no, product_id, name, unit_price, quantity, line_total) \
                 select * from unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::bigint[], \
                   $6::int[], $7::bigint[])",
            )
            .await?;
        let mut columns = LineColumns::default();
        for order in orders {
            for (no, line) in (1i32..).zip(&order.items) {
                columns.order.push(order.id.0);
                columns.no.push(no);
                columns.product.push(line.product_id.0);
                columns.name.push(line.name.as_str());
                columns.unit_price.push(line.unit_price);
                columns
                    .quantity
                    .push(i32::try_from(line.quantity).map_err(Infra::bug)?);
                columns.total.push(line.line_total);
            }
        }
        let params: [&(dyn ToSql + Sync); 7] = [
            &columns.order,
            &columns.no,
            &columns.product,
            &columns.name,
            &columns.unit_price,
            &columns.quantity,
            &columns.total,
        ];
        tx.execute(&lines, &params).await?;
        Ok(())
    }

    async fn lines(&self, ids: &[OrderId]) -> StoreResult<Vec<(OrderId, OrderLine)>> {
        let client = self.pool.get().await?;
        let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
        let rows = client
            .query(
                "select order_id, product_id, name, unit_price, quantity, line_total from orders.order_lines \
                 where order_id = any($1) order by order_id, line_no",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    OrderLine {
                        product_id: r.get(1),
                        name: r.get(2),
                        unit_price: r.get(3),
                        quantity: i64::from(r.get::<_, i32>(4)),
                        line_total: r.get(5),
                    },
                )
            })
            .collect())
    }

    /// The order and whether its stock step is done.
    pub(crate) async fn load(&self, id: OrderId) -> StoreResult<Loaded> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from orders.orders where order_id = $1"),
                &[&id],
            )
            .await?
            .ok_or(Failure::Rejected(OrderError::NotFound))?;
        drop(client);
        let items = self
            .lines(&[id])
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        order_of(&row, items)
    }

    /// Up to `limit` orders after `after`, newest first.
    pub(crate) async fn list(
        &self,
        user: Option<UserId>,
        status: Option<OrderStatus>,
        after: Option<OrderId>,
        limit: i64,
    ) -> StoreResult<Vec<Order>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from orders.orders \
                     where ($1::uuid is null or user_id = $1) and ($2::text is null or status = $2) \
                       and ($3::uuid is null or order_id < $3) \
                     order by order_id desc limit $4"
                ),
                &[&user, &status.map(OrderStatus::as_str), &after, &limit],
            )
            .await?;
        drop(client);
        let ids: Vec<OrderId> = rows.iter().map(|r| r.get("order_id")).collect();
        let mut lines = self.lines(&ids).await?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: OrderId = row.get("order_id");
            let mine: Vec<OrderLine> = lines
                .iter()
                .filter(|(o, _)| *o == id)
                .map(|(_, l)| l.clone())
                .collect();
            lines.retain(|(o, _)| *o != id);
            orders.push(order_of(row, mine)?.order);
        }
        Ok(orders)
    }

    /// Moves the order from `from` to its current status and queues `event`;
    /// `settled` says whether the step it calls for is done already. Fenced:
    /// someone else moved it first (ownership moved).
    pub(crate) async fn transition(
        &self,
        order: &Order,
        from: OrderStatus,
        settled: bool,
        event: OrderEvent,
    ) -> StoreResult<Written> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "update orders.orders set status = $2, stock_settled = $3, updated_at = $4 \
                 where order_id = $1 and status = $5",
                &[
                    &order.id,
                    &order.status.as_str(),
                    &settled,
                    &order.updated_at,
                    &from.as_str(),
                ],
            )
            .await?;
        if changed == 0 {
            return Ok(Written::Fenced);
        }
        self.outbox.commit(tx, &[event]).await?;
        Ok(Written::Committed)
    }

    /// Publishes an event about the order without changing it (`order.refunded`).
    pub(crate) async fn record(&self, order: &Order, kind: OrderEventKind) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        self.outbox
            .commit(tx, &[OrderEvent::of(kind, order)])
            .await?;
        Ok(())
    }

    pub(crate) async fn mark_settled(&self, id: OrderId) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update orders.orders set stock_settled = true where order_id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Orders with work left: unpaid past their deadline, or a stock step not done.
    pub(crate) async fn due(&self) -> StoreResult<Vec<OrderId>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select order_id from orders.orders \
                 where (status = 'awaiting_payment' and expires_at <= now()) or not stock_settled",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
