//! PostgreSQL access for the order service: the only writer of `orders`.

use crate::pool::Pool;
use mart_schema::order::{Order, OrderError, OrderEvent, OrderEventKind, OrderLine, OrderStatus};
use mart_schema::{OrderId, UserId};
use postgres_types::ToSql;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::batch;
use crate::failure::{Failure, Infra};
use crate::idempotency::Idempotency;
use crate::outbox::{Outbox, OutboxRows};
use crate::owners::Written;

pub(crate) type StoreResult<T> = Result<T, Failure<OrderError>>;

/// A new order to write, with its Idempotency-Key's outcome if it has a key.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) order: Order,
    pub(crate) key: Option<(String, serde_json::Value)>,
    /// The trace of the request placing it.
    pub(crate) trace: Option<String>,
}

const INSERT_ORDERS: &str = "insert into orders.orders \
     (order_id, user_id, status, currency, total, expires_at, created_at, updated_at, stock_settled) \
     select o, u, s, c, t, e, a, a, true from \
     unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::timestamptz[]) \
     as x(o, u, s, c, t, e, a)";

const INSERT_LINES: &str = "insert into orders.order_lines \
     (order_id, line_no, product_id, name, unit_price, quantity, line_total) \
     select * from unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::bigint[], \
       $6::int[], $7::bigint[])";

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// New orders as the columns of one insert.
struct OrderColumns<'a> {
    ids: Vec<uuid::Uuid>,
    users: Vec<uuid::Uuid>,
    statuses: Vec<&'a str>,
    currencies: Vec<&'a str>,
    totals: Vec<i64>,
    expiries: Vec<OffsetDateTime>,
    created: Vec<OffsetDateTime>,
}

impl<'a> OrderColumns<'a> {
    fn of(orders: &[&'a Order]) -> Self {
        Self {
            ids: orders.iter().map(|o| o.id.0).collect(),
            users: orders.iter().map(|o| o.user_id.0).collect(),
            statuses: orders.iter().map(|o| o.status.as_str()).collect(),
            currencies: orders.iter().map(|o| o.currency.code()).collect(),
            totals: orders.iter().map(|o| o.total).collect(),
            expiries: orders.iter().map(|o| o.expires_at).collect(),
            created: orders.iter().map(|o| o.created_at).collect(),
        }
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.ids,
            &self.users,
            &self.statuses,
            &self.currencies,
            &self.totals,
            &self.expiries,
            &self.created,
        ]
    }
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

impl<'a> LineColumns<'a> {
    fn of(orders: &[&'a Order]) -> Result<Self, Infra> {
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
        Ok(columns)
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.order,
            &self.no,
            &self.product,
            &self.name,
            &self.unit_price,
            &self.quantity,
            &self.total,
        ]
    }
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
        let client = self.pool.get().await?;
        let (orders, lines, finish, outbox) = futures::try_join!(
            client.prepare_cached(INSERT_ORDERS),
            client.prepare_cached(INSERT_LINES),
            client.prepare_cached(self.keys.finish_sql()),
            self.outbox.prepare(&client),
        )?;
        let rows: Vec<&Order> = placed.iter().map(|p| &p.order).collect();
        let columns = OrderColumns::of(&rows);
        let lines_of = LineColumns::of(&rows)?;
        let mut statements = vec![(&orders, columns.params()), (&lines, lines_of.params())];
        for row in placed {
            if let Some((key, outcome)) = &row.key {
                let params: Vec<&(dyn ToSql + Sync)> = vec![&row.order.user_id, key, outcome];
                statements.push((&finish, params));
            }
        }
        let events: Vec<OrderEvent> = rows
            .iter()
            .map(|o| OrderEvent::of(OrderEventKind::Placed, o))
            .collect();
        let appended = OutboxRows::traced(&events, |i| placed[i].trace.clone());
        statements.extend(appended.statements(&outbox));
        batch::one_round_trip(&client, &statements).await?;
        self.outbox.committed(&events);
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
