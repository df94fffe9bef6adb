//! PostgreSQL access for the inventory service: all of its SQL, and the only
//! writer of the `inventory` schema.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::pool::Pool;
use deadpool_postgres::Transaction;
use mart_schema::inventory::{InventoryEvent, LineStatus, ReservedLine};
use mart_schema::product::{ProductCreated, ProductDeleted};
use mart_schema::{EventEnvelope, OrderId, ProductId, Service};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

use super::state::{Levels, Line};
use crate::batch;
use crate::failure::Infra;
use crate::outbox::{Outbox, OutboxRows};

/// One product's decided batch, to be written: its new levels (with the
/// version they were decided on), the lines it changed, its events.
#[derive(Debug, Clone)]
pub(crate) struct StockWrite {
    pub(crate) product_id: ProductId,
    pub(crate) levels: Levels,
    pub(crate) lines: BTreeMap<OrderId, Line>,
    pub(crate) events: Vec<InventoryEvent>,
    /// Per event, the trace it continues.
    pub(crate) traces: Vec<Option<String>>,
    /// Orders whose lines the batch took for new without looking (a new
    /// reservation); the write checks none exists.
    pub(crate) assumed_new: Vec<OrderId>,
}

/// A product's levels and open lines, as loaded.
pub(crate) type Loaded = (Levels, HashMap<OrderId, Line>);

/// What became of one product's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    Committed,
    /// Another actor wrote the product since this one loaded: it moved.
    Fenced,
    /// A line taken for new exists: decide again, having looked it up.
    Stale,
}

/// The products among the (product, order) pairs in arrays `$a`, `$b` whose
/// reservation line exists. One primary-key probe per pair: a plain join may
/// be planned, while the table is young, as a scan of every line ever kept.
macro_rules! existing_lines {
    ($products:literal, $orders:literal) => {
        concat!(
            "select distinct n.product_id from unnest(",
            $products,
            "::uuid[], ",
            $orders,
            "::uuid[]) as n(product_id, order_id) \
             cross join lateral (select 1 from inventory.reservation_lines l \
               where l.order_id = n.order_id and l.product_id = n.product_id limit 1) l"
        )
    };
}

/// Every product's levels, if every version is still the one decided on and
/// no line its batch took for new exists; otherwise a division by zero
/// aborts the transaction.
const UPDATE_ALL: &str = concat!(
    "with clash as (",
    existing_lines!("$7", "$8"),
    "), \
     u as ( \
       update inventory.stock s set on_hand = u.on_hand, reserved = u.reserved, \
         archived = s.archived or u.archived, version = s.version + 1, updated_at = now() \
       from unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[]) \
         as u(product_id, on_hand, reserved, archived, version) \
       where s.product_id = u.product_id and s.version = u.version \
         and u.product_id not in (select product_id from clash) \
       returning 1) \
     select 1 / (case when count(*) = $6 then 1 else 0 end) from u"
);

/// The levels of the products whose version still holds and whose lines
/// taken for new do not exist; answers those written.
const UPDATE_SOME: &str = concat!(
    "with clash as (",
    existing_lines!("$6", "$7"),
    ") \
     update inventory.stock s set on_hand = u.on_hand, reserved = u.reserved, \
       archived = s.archived or u.archived, version = s.version + 1, updated_at = now() \
     from unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[]) \
       as u(product_id, on_hand, reserved, archived, version) \
     where s.product_id = u.product_id and s.version = u.version \
       and u.product_id not in (select product_id from clash) \
     returning s.product_id"
);

/// Products' levels and open lines, for `$1`, the products.
///
/// A flash sale leaves one product with most reservation lines, and the
/// planner then expects every product to join that many: it hash-joined all
/// of them on each load (10 ms and more a batch instead of a fraction of
/// one). So the statement is planned for the products it names, and the
/// lines' own `= any($1)` lets their statistics size each product's share
/// (the join condition alone does not carry over to that side).
pub(super) const LOAD_MANY: &str = "select s.product_id, s.on_hand, s.reserved, \
        s.low_stock_threshold, s.archived, s.version, l.order_id, l.quantity, l.expires_at \
     from inventory.stock s \
     left join inventory.reservation_lines l \
       on l.product_id = s.product_id and l.status = 'reserved' and l.product_id = any($1) \
     where s.product_id = any($1)";

/// The products of the given (product, order) lines that exist.
const EXISTING: &str = existing_lines!("$1", "$2");

/// Lines a batch took for new. A plain insert: the same transaction's stock
/// update has checked that none of them exists (`UPDATE_ALL`, `UPDATE_SOME`),
/// and only the product's owner, fenced by the stock row's version, writes
/// its lines. An upsert cost each line a speculative insertion and its
/// confirmation (WAL records and an index probe) for a conflict that cannot
/// happen.
const INSERT_NEW_LINES: &str = "insert into inventory.reservation_lines \
       (order_id, product_id, quantity, status, expires_at) \
     select o, p, q, s, e from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::timestamptz[]) \
       as t(o, p, q, s, e)";

/// Lines known to memory or looked up: they may exist or not.
const UPSERT_LINES: &str = "insert into inventory.reservation_lines \
       (order_id, product_id, quantity, status, expires_at) \
     select o, p, q, s, e from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::timestamptz[]) \
       as t(o, p, q, s, e) \
     on conflict (order_id, product_id) do update set status = excluded.status, updated_at = now()";

type Params<'a> = Vec<&'a (dyn postgres_types::ToSql + Sync)>;

/// Products' new levels as the columns of one update.
struct LevelColumns {
    products: Vec<uuid::Uuid>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    archived: Vec<bool>,
    versions: Vec<i64>,
    /// (product, order) of every line a batch took for new.
    new_products: Vec<uuid::Uuid>,
    new_orders: Vec<uuid::Uuid>,
}

impl LevelColumns {
    fn of(batches: &[StockWrite]) -> Self {
        Self {
            products: batches.iter().map(|b| b.product_id.0).collect(),
            on_hand: batches.iter().map(|b| b.levels.on_hand).collect(),
            reserved: batches.iter().map(|b| b.levels.reserved).collect(),
            archived: batches.iter().map(|b| b.levels.archived).collect(),
            versions: batches.iter().map(|b| b.levels.version).collect(),
            new_products: batches
                .iter()
                .flat_map(|b| b.assumed_new.iter().map(|_| b.product_id.0))
                .collect(),
            new_orders: batches
                .iter()
                .flat_map(|b| b.assumed_new.iter().map(|o| o.0))
                .collect(),
        }
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.products,
            &self.on_hand,
            &self.reserved,
            &self.archived,
            &self.versions,
        ]
    }
}

/// Reservation lines as the columns of one upsert.
struct LineColumns {
    orders: Vec<uuid::Uuid>,
    products: Vec<uuid::Uuid>,
    quantities: Vec<i64>,
    statuses: Vec<&'static str>,
    expiries: Vec<OffsetDateTime>,
}

impl LineColumns {
    /// The lines of `batches` taken for new (`new`), or the others.
    fn of(batches: &[&StockWrite], new: bool) -> Self {
        let lines: Vec<(ProductId, OrderId, Line)> = batches
            .iter()
            .flat_map(|b| {
                b.lines
                    .iter()
                    .filter(move |(order, _)| b.assumed_new.contains(order) == new)
                    .map(|(order, line)| (b.product_id, *order, *line))
            })
            .collect();
        Self {
            orders: lines.iter().map(|(_, o, _)| o.0).collect(),
            products: lines.iter().map(|(p, ..)| p.0).collect(),
            quantities: lines.iter().map(|(.., l)| l.quantity).collect(),
            statuses: lines.iter().map(|(.., l)| l.status.as_str()).collect(),
            expiries: lines.iter().map(|(.., l)| l.expires_at).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.orders,
            &self.products,
            &self.quantities,
            &self.statuses,
            &self.expiries,
        ]
    }
}

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

    /// Several products' levels and open lines, in the order asked, in one
    /// query (one snapshot); `None` for a product without a stock record.
    pub(crate) async fn load_many(
        &self,
        products: &[ProductId],
    ) -> Result<Vec<Option<Loaded>>, Infra> {
        let client = self.pool.get().await?;
        let ids: Vec<uuid::Uuid> = products.iter().map(|p| p.0).collect();
        // Planned for these products each time (an unnamed statement, in one
        // round trip): see `LOAD_MANY`.
        let rows = client
            .query_typed(LOAD_MANY, &[(&ids, postgres_types::Type::UUID_ARRAY)])
            .await?;
        let mut found: HashMap<ProductId, Loaded> = HashMap::new();
        for row in rows {
            let (_, open) = found.entry(row.get(0)).or_insert_with(|| {
                let levels = Levels {
                    on_hand: row.get(1),
                    reserved: row.get(2),
                    threshold: row.get(3),
                    archived: row.get(4),
                    version: row.get(5),
                };
                (levels, HashMap::new())
            });
            if let Some(order_id) = row.get::<_, Option<OrderId>>(6) {
                let line = Line {
                    quantity: row.get(7),
                    status: LineStatus::Reserved,
                    expires_at: row.get(8),
                };
                open.insert(order_id, line);
            }
        }
        // A product asked twice in one batch (two of its actors starting)
        // gets a copy; otherwise its lines (a hot product's may be many
        // thousands) are moved, not copied.
        Ok(products
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if products[i + 1..].contains(p) {
                    found.get(p).cloned()
                } else {
                    found.remove(p)
                }
            })
            .collect())
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

    /// Writes the decided batches of several products (levels, changed
    /// lines, events) in one transaction sent in one round trip, as long as
    /// every product's version is still the one it was decided on; if any
    /// is not (ownership moved: rare), it falls back to
    /// [`Self::write_partly`], which writes the others.
    pub(crate) async fn write_batch(&self, batches: &[StockWrite]) -> Result<Vec<Wrote>, Infra> {
        let client = self.pool.get().await?;
        let (update, insert, upsert, outbox) = futures::try_join!(
            client.prepare_cached(UPDATE_ALL),
            client.prepare_cached(INSERT_NEW_LINES),
            client.prepare_cached(UPSERT_LINES),
            self.outbox.prepare(&client),
        )?;
        let levels = LevelColumns::of(batches);
        let all: Vec<&StockWrite> = batches.iter().collect();
        let (new, known) = (LineColumns::of(&all, true), LineColumns::of(&all, false));
        let (events, traces) = events_of(batches.iter());
        let appended = OutboxRows::traced(&events, |i| traces[i].clone());
        let count = i64::try_from(batches.len()).map_err(Infra::bug)?;
        let mut params = levels.params();
        params.push(&count);
        params.push(&levels.new_products);
        params.push(&levels.new_orders);
        let mut statements = vec![(&update, params)];
        for (statement, lines) in [(&insert, &new), (&upsert, &known)] {
            if !lines.is_empty() {
                statements.push((statement, lines.params()));
            }
        }
        statements.extend(appended.statements(&outbox));
        match batch::one_round_trip(&client, &statements).await {
            Ok(_) => {
                self.outbox.committed(&events);
                Ok(vec![Wrote::Committed; batches.len()])
            }
            // Some product was written by another actor since: sort it out
            // product by product.
            Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                drop(client);
                self.write_partly(batches).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the decided batches of several products (levels, changed
    /// lines, events) in one transaction. Each product's write is a
    /// compare-and-set on its version: those another actor wrote since are
    /// left out, lines and events included. Answers which were written.
    pub(crate) async fn write_partly(&self, batches: &[StockWrite]) -> Result<Vec<Wrote>, Infra> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let update = tx.prepare_cached(UPDATE_SOME).await?;
        let levels = LevelColumns::of(batches);
        let mut params = levels.params();
        params.push(&levels.new_products);
        params.push(&levels.new_orders);
        let written: HashSet<ProductId> = tx
            .query(&update, &params)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let committed: Vec<&StockWrite> = batches
            .iter()
            .filter(|b| written.contains(&b.product_id))
            .collect();
        let (events, traces) = events_of(committed.iter().copied());
        let rows = OutboxRows::traced(&events, |i| traces[i].clone());
        // Pipelined: the lines and the events go together.
        futures::try_join!(self.write_lines(&tx, &committed), async {
            self.outbox
                .append_rows(&tx, &rows)
                .await
                .map_err(Infra::from)
        })?;
        // Left out because a line taken for new exists: decided on a wrong
        // picture, not fenced.
        let stale: HashSet<ProductId> = tx
            .query(EXISTING, &[&levels.new_products, &levels.new_orders])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.commit().await?;
        self.outbox.committed(&events);
        Ok(batches
            .iter()
            .map(|b| {
                match (
                    written.contains(&b.product_id),
                    stale.contains(&b.product_id),
                ) {
                    (true, _) => Wrote::Committed,
                    (false, true) => Wrote::Stale,
                    (false, false) => Wrote::Fenced,
                }
            })
            .collect())
    }

    async fn write_lines(
        &self,
        tx: &Transaction<'_>,
        batches: &[&StockWrite],
    ) -> Result<(), Infra> {
        for (sql, new) in [(INSERT_NEW_LINES, true), (UPSERT_LINES, false)] {
            let lines = LineColumns::of(batches, new);
            if !lines.is_empty() {
                let statement = tx.prepare_cached(sql).await?;
                tx.execute(&statement, &lines.params()).await?;
            }
        }
        Ok(())
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

/// The events of several products' batches, and the trace each continues.
fn events_of<'a>(
    batches: impl Iterator<Item = &'a StockWrite>,
) -> (Vec<InventoryEvent>, Vec<Option<String>>) {
    let mut events = Vec::new();
    let mut traces = Vec::new();
    for batch in batches {
        events.extend(batch.events.iter().cloned());
        traces.extend(batch.traces.iter().cloned());
    }
    (events, traces)
}
