//! PostgreSQL access for the product service: the only writer of `products`.

use crate::pool::Pool;
use mart_schema::product::{
    Product, ProductCreated, ProductDeleted, ProductError, ProductEvent, ProductUpdated,
};
use mart_schema::{Currency, ProductId};
use postgres_types::ToSql;
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::cache::{CatalogChanges, ProductState};
use crate::failure::{Failure, Infra};
use crate::outbox::Outbox;

const COLUMNS: &str = "product_id, name, description, price, currency, created_at, updated_at";

pub(crate) type StoreResult<T> = Result<T, Failure<ProductError>>;

fn to_product(row: &Row) -> StoreResult<Product> {
    let currency: String = row.get("currency");
    Ok(Product {
        id: row.get("product_id"),
        name: row.get("name"),
        description: row.get("description"),
        price: row.get("price"),
        currency: currency.parse().map_err(Infra::bug)?,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// A validated listing request.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) search: Option<String>,
    pub(crate) min_price: Option<i64>,
    pub(crate) max_price: Option<i64>,
    pub(crate) sort: Sort,
    pub(crate) after: Option<Key>,
    pub(crate) limit: i64,
}

/// The orders a listing can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    NewestFirst,
    PriceAscending,
    PriceDescending,
    Name,
}

/// Where the previous page ended, in the listing's order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Key {
    Created(
        #[serde(with = "time::serde::rfc3339")] OffsetDateTime,
        ProductId,
    ),
    Price(i64, ProductId),
    Name(String, ProductId),
}

impl Key {
    /// Whether this key can follow `sort`'s order: a cursor is client input,
    /// and a key of another shape (or text PostgreSQL cannot hold) must be
    /// refused before it becomes a query parameter.
    pub(crate) fn fits(&self, sort: Sort) -> bool {
        match (sort, self) {
            (Sort::NewestFirst, Key::Created(..)) => true,
            (Sort::PriceAscending | Sort::PriceDescending, Key::Price(..)) => true,
            (Sort::Name, Key::Name(name, _)) => !name.contains('\0'),
            _ => false,
        }
    }

    pub(crate) fn of(sort: Sort, product: &Product) -> Key {
        match sort {
            Sort::NewestFirst => Key::Created(product.created_at, product.id),
            Sort::PriceAscending | Sort::PriceDescending => Key::Price(product.price, product.id),
            Sort::Name => Key::Name(product.name.clone(), product.id),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ProductStore {
    pool: Pool,
    outbox: Outbox,
}

impl ProductStore {
    pub(crate) fn new(pool: Pool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    pub(crate) async fn insert(
        &self,
        name: &str,
        description: &str,
        price: i64,
        currency: Currency,
        stock: i64,
    ) -> StoreResult<Product> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                &format!(
                    "insert into products.products (product_id, name, description, price, currency) \
                     values ($1, $2, $3, $4, $5) returning {COLUMNS}"
                ),
                &[&ProductId::new(), &name, &description, &price, &currency.code()],
            )
            .await?;
        let product = to_product(&row)?;
        let event = ProductEvent::Created(ProductCreated {
            product_id: product.id,
            name: product.name.clone(),
            description: product.description.clone(),
            price: product.price,
            currency: product.currency,
            stock,
        });
        self.outbox.commit(tx, &[event]).await?;
        Ok(product)
    }

    pub(crate) async fn get(&self, id: ProductId) -> StoreResult<Product> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from products.products where product_id = $1 and archived_at is null"),
                &[&id],
            )
            .await?
            .ok_or(Failure::Rejected(ProductError::NotFound))?;
        to_product(&row)
    }

    pub(crate) async fn list(&self, listing: &Listing) -> StoreResult<Vec<Product>> {
        let mut sql = format!("select {COLUMNS} from products.products where archived_at is null");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let bind = |value: Box<dyn ToSql + Sync + Send>,
                    params: &mut Vec<Box<dyn ToSql + Sync + Send>>| {
            params.push(value);
            format!("${}", params.len())
        };
        if let Some(search) = &listing.search {
            let p = bind(Box::new(search.clone()), &mut params);
            sql.push_str(&format!(
                " and search @@ websearch_to_tsquery('english', {p})"
            ));
        }
        if let Some(min) = listing.min_price {
            let p = bind(Box::new(min), &mut params);
            sql.push_str(&format!(" and price >= {p}"));
        }
        if let Some(max) = listing.max_price {
            let p = bind(Box::new(max), &mut params);
            sql.push_str(&format!(" and price <= {p}"));
        }
        let (columns, direction) = match listing.sort {
            Sort::NewestFirst => ("created_at, product_id", "desc"),
            Sort::PriceAscending => ("price, product_id", "asc"),
            Sort::PriceDescending => ("price, product_id", "desc"),
            Sort::Name => ("name, product_id", "asc"),
        };
        if let Some(after) = &listing.after {
            let (a, b) = match after.clone() {
                Key::Created(at, id) => (
                    bind(Box::new(at), &mut params),
                    bind(Box::new(id), &mut params),
                ),
                Key::Price(price, id) => (
                    bind(Box::new(price), &mut params),
                    bind(Box::new(id), &mut params),
                ),
                Key::Name(name, id) => (
                    bind(Box::new(name), &mut params),
                    bind(Box::new(id), &mut params),
                ),
            };
            let op = if direction == "desc" { "<" } else { ">" };
            sql.push_str(&format!(" and ({columns}) {op} ({a}, {b})"));
        }
        let order: Vec<String> = columns
            .split(", ")
            .map(|c| format!("{c} {direction}"))
            .collect();
        let limit = bind(Box::new(listing.limit), &mut params);
        sql.push_str(&format!(" order by {} limit {limit}", order.join(", ")));

        let client = self.pool.get().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&sql, &refs).await?;
        rows.iter().map(to_product).collect()
    }

    pub(crate) async fn update(
        &self,
        id: ProductId,
        name: Option<String>,
        description: Option<String>,
        price: Option<i64>,
        currency: Option<Currency>,
    ) -> StoreResult<Product> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "update products.products set \
                       name = coalesce($2, name), description = coalesce($3, description), \
                       price = coalesce($4, price), currency = coalesce($5, currency), \
                       updated_at = now() \
                     where product_id = $1 and archived_at is null returning {COLUMNS}"
                ),
                &[
                    &id,
                    &name,
                    &description,
                    &price,
                    &currency.map(Currency::code),
                ],
            )
            .await?
            .ok_or(Failure::Rejected(ProductError::NotFound))?;
        let product = to_product(&row)?;
        let event = ProductEvent::Updated(ProductUpdated {
            product_id: product.id,
            name: product.name.clone(),
            description: product.description.clone(),
            price: product.price,
            currency: product.currency,
        });
        self.outbox.commit(tx, &[event]).await?;
        Ok(product)
    }

    /// Archives a product; answers when (the database's clock).
    pub(crate) async fn archive(&self, id: ProductId) -> StoreResult<OffsetDateTime> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "update products.products set archived_at = now(), updated_at = now() \
                 where product_id = $1 and archived_at is null returning price, currency, updated_at",
                &[&id],
            )
            .await?
            .ok_or(Failure::Rejected(ProductError::NotFound))?;
        let currency: String = row.get(1);
        let event = ProductEvent::Deleted(ProductDeleted {
            product_id: id,
            price: row.get(0),
            currency: currency.parse().map_err(Infra::bug)?,
        });
        self.outbox.commit(tx, &[event]).await?;
        Ok(row.get(2))
    }

    /// Every product changed after `since` (archived ones as `None`), and
    /// the database's time to ask from next.
    pub(crate) async fn changed_since(
        &self,
        since: Option<OffsetDateTime>,
    ) -> StoreResult<CatalogChanges> {
        let client = self.pool.get().await?;
        // Every node asks four times a second: prepared, and pipelined.
        let changed_sql = format!(
            "select {COLUMNS}, archived_at is not null as archived from products.products \
             where $1::timestamptz is not null and updated_at > $1"
        );
        let (now, changes) = futures::try_join!(
            client.prepare_cached("select now()"),
            client.prepare_cached(&changed_sql),
        )?;
        let params: [&(dyn ToSql + Sync); 1] = [&since];
        let (as_of, rows) =
            futures::try_join!(client.query_one(&now, &[]), client.query(&changes, &params))?;
        let as_of: OffsetDateTime = as_of.get(0);
        let mut changed = Vec::with_capacity(rows.len());
        for row in &rows {
            let product = to_product(row)?;
            let archived: bool = row.get("archived");
            changed.push(ProductState {
                id: product.id,
                updated_at: product.updated_at,
                product: (!archived).then_some(product),
            });
        }
        Ok(CatalogChanges { as_of, changed })
    }
}
