//! PostgreSQL access for the order service: the only writer of `orders`.

use deadpool_postgres::Pool;
use mart_schema::order::{Order, OrderError, OrderEvent, OrderLine, OrderStatus};
use mart_schema::{OrderId, UserId};
use tokio_postgres::Row;

use crate::failure::{Failure, Infra};
use crate::idempotency::Idempotency;
use crate::outbox::Outbox;
use crate::owners::Written;

pub(crate) type StoreResult<T> = Result<T, Failure<OrderError>>;

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

    /// Writes a new order, its lines, `order.placed` and (if any) the
    /// idempotency outcome, in one transaction.
    pub(crate) async fn insert(
        &self,
        order: &Order,
        idempotency: Option<(&str, &serde_json::Value)>,
    ) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "insert into orders.orders \
             (order_id, user_id, status, currency, total, expires_at, created_at, updated_at, stock_settled) \
             values ($1, $2, $3, $4, $5, $6, $7, $7, true)",
            &[
                &order.id,
                &order.user_id,
                &order.status.as_str(),
                &order.currency.code(),
                &order.total,
                &order.expires_at,
                &order.created_at,
            ],
        )
        .await?;
        for (no, line) in (1i32..).zip(&order.items) {
            tx.execute(
                "insert into orders.order_lines \
                 (order_id, line_no, product_id, name, unit_price, quantity, line_total) \
                 values ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &order.id,
                    &no,
                    &line.product_id,
                    &line.name,
                    &line.unit_price,
                    &i32::try_from(line.quantity).map_err(Infra::bug)?,
                    &line.line_total,
                ],
            )
            .await?;
        }
        if let Some((key, outcome)) = idempotency {
            self.keys
                .finish_in(&tx, order.user_id, key, outcome)
                .await?;
        }
        let event = OrderEvent::of(mart_schema::order::OrderEventKind::Placed, order);
        self.outbox.commit(tx, &[event]).await?;
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
    pub(crate) async fn record(
        &self,
        order: &Order,
        kind: mart_schema::order::OrderEventKind,
    ) -> StoreResult<()> {
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
