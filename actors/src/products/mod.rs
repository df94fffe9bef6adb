//! The product service: the catalog. Stateless workers in the `mart.products`
//! group; reads and writes go to the `products` schema, changes publish
//! `product.*` events (with the initial stock, for the inventory service).

mod store;

use deadpool_postgres::Pool;
use mart_schema::product::{NewProduct, Product, ProductError, ProductPatch, ProductQuery};
use mart_schema::user::Caller;
use mart_schema::{Currency, FieldErrors, Page, PageRequest, ProductId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::call::{CallError, Failure, Rejection, ServiceClient, respond};
use crate::outbox::Outbox;
use crate::wire::Wire;
use store::{Key, Listing, ProductStore, Sort};

/// Largest price accepted, in minor units (ten billion of the major unit).
const MAX_PRICE: i64 = 1_000_000_000_000;
/// Largest initial stock accepted.
const MAX_STOCK: i64 = 1_000_000_000;

/// The product service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum ProductsMsg {
    #[rpc]
    Create(
        Wire<(Caller, NewProduct)>,
        RpcReplyPort<Wire<Result<Product, ProductError>>>,
    ),
    #[rpc]
    Get(
        Wire<ProductId>,
        RpcReplyPort<Wire<Result<Product, ProductError>>>,
    ),
    #[rpc]
    List(
        Wire<ProductQuery>,
        RpcReplyPort<Wire<Result<Page<Product>, ProductError>>>,
    ),
    #[rpc]
    Update(
        Wire<(Caller, ProductId, ProductPatch)>,
        RpcReplyPort<Wire<Result<Product, ProductError>>>,
    ),
    #[rpc]
    Delete(
        Wire<(Caller, ProductId)>,
        RpcReplyPort<Wire<Result<(), ProductError>>>,
    ),
}

/// Handle on the product service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Products {
    client: ServiceClient<ProductsMsg>,
}

type Answer<T> = Result<T, CallError<ProductError>>;

impl Products {
    pub fn new(timeout: std::time::Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Products, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    pub async fn create(&self, caller: Caller, product: NewProduct) -> Answer<Product> {
        self.client
            .ask(|reply| ProductsMsg::Create((caller, product.clone()).into(), reply))
            .await
    }

    pub async fn get(&self, id: ProductId) -> Answer<Product> {
        self.client
            .ask(|reply| ProductsMsg::Get(id.into(), reply))
            .await
    }

    pub async fn list(&self, query: ProductQuery) -> Answer<Page<Product>> {
        self.client
            .ask(|reply| ProductsMsg::List(query.clone().into(), reply))
            .await
    }

    pub async fn update(
        &self,
        caller: Caller,
        id: ProductId,
        patch: ProductPatch,
    ) -> Answer<Product> {
        self.client
            .ask(|reply| ProductsMsg::Update((caller, id, patch.clone()).into(), reply))
            .await
    }

    pub async fn delete(&self, caller: Caller, id: ProductId) -> Answer<()> {
        self.client
            .ask(|reply| ProductsMsg::Delete((caller, id).into(), reply))
            .await
    }
}

impl Rejection for ProductError {
    fn malformed(reason: String) -> Self {
        ProductError::Invalid(FieldErrors::single("request", reason))
    }
}

type Outcome<T> = Result<T, Failure<ProductError>>;

/// The catalog's rules.
#[derive(Clone, Debug)]
pub(crate) struct ProductRules {
    store: ProductStore,
}

fn admin_only(caller: &Caller) -> Result<(), ProductError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ProductError::Forbidden)
    }
}

fn check_text(errors: &mut FieldErrors, name: Option<&str>, description: Option<&str>) {
    if let Some(name) = name {
        if name.trim().is_empty() {
            errors.add("name", "must not be empty");
        } else if name.chars().count() > 200 {
            errors.add("name", "must be at most 200 characters");
        }
    }
    if description.is_some_and(|d| d.chars().count() > 10_000) {
        errors.add("description", "must be at most 10000 characters");
    }
}

fn check_price(errors: &mut FieldErrors, field: &str, price: Option<i64>) {
    match price {
        Some(p) if p < 0 => errors.add(field, "must not be negative"),
        Some(p) if p > MAX_PRICE => errors.add(field, format!("must be at most {MAX_PRICE}")),
        _ => {}
    }
}

fn parse_currency(errors: &mut FieldErrors, code: Option<&str>) -> Option<Currency> {
    let code = code?;
    match code.parse() {
        Ok(currency) => Some(currency),
        Err(e) => {
            errors.add("currency", e.to_string());
            None
        }
    }
}

impl ProductRules {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            store: ProductStore::new(pool, Outbox::new(Service::Products)),
        }
    }

    async fn create(&self, caller: Caller, new: NewProduct) -> Outcome<Product> {
        admin_only(&caller)?;
        let mut errors = FieldErrors::default();
        check_text(&mut errors, Some(&new.name), Some(&new.description));
        check_price(&mut errors, "price", Some(new.price));
        let currency = parse_currency(&mut errors, Some(new.currency.as_deref().unwrap_or("usd")));
        let stock = new.stock.unwrap_or(0);
        if !(0..=MAX_STOCK).contains(&stock) {
            errors.add("stock", format!("must be between 0 and {MAX_STOCK}"));
        }
        errors.into_result().map_err(ProductError::Invalid)?;
        let currency = currency.unwrap_or(Currency::USD);
        self.store
            .insert(
                new.name.trim(),
                &new.description,
                new.price,
                currency,
                stock,
            )
            .await
    }

    async fn list(&self, query: ProductQuery) -> Outcome<Page<Product>> {
        let mut errors = FieldErrors::default();
        let page = PageRequest {
            limit: query.limit,
            cursor: None,
        };
        let limit = page.limit().map_err(|e| errors.0.extend(e.0)).unwrap_or(0);
        check_price(&mut errors, "min_price", query.min_price);
        check_price(&mut errors, "max_price", query.max_price);
        if let (Some(min), Some(max)) = (query.min_price, query.max_price)
            && min > max
        {
            errors.add("min_price", "must not exceed max_price");
        }
        let sort = match query.sort.as_deref().unwrap_or("created_at") {
            "created_at" | "-created_at" => Sort::NewestFirst,
            "price" => Sort::PriceAscending,
            "-price" => Sort::PriceDescending,
            "name" => Sort::Name,
            _ => {
                errors.add("sort", "must be one of created_at, price, -price, name");
                Sort::NewestFirst
            }
        };
        let search = query
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty());
        if search.as_ref().is_some_and(|q| q.chars().count() > 200) {
            errors.add("q", "must be at most 200 characters");
        }
        let after = match query.cursor.as_deref().map(decode_cursor) {
            None => None,
            Some(Some((cursor_sort, key))) if cursor_sort == sort_name(sort) => Some(key),
            Some(_) => {
                errors.add(
                    "cursor",
                    "is not a cursor this list returned (with this sort)",
                );
                None
            }
        };
        errors.into_result().map_err(ProductError::Invalid)?;
        let listing = Listing {
            search,
            min_price: query.min_price,
            max_price: query.max_price,
            sort,
            after,
            limit: i64::from(limit) + 1,
        };
        let mut items = self.store.list(&listing).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|p| encode_cursor(sort, &Key::of(sort, p)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, caller: Caller, id: ProductId, patch: ProductPatch) -> Outcome<Product> {
        admin_only(&caller)?;
        let mut errors = FieldErrors::default();
        check_text(
            &mut errors,
            patch.name.as_deref(),
            patch.description.as_deref(),
        );
        check_price(&mut errors, "price", patch.price);
        let currency = parse_currency(&mut errors, patch.currency.as_deref());
        errors.into_result().map_err(ProductError::Invalid)?;
        let name = patch.name.map(|n| n.trim().to_owned());
        self.store
            .update(id, name, patch.description, patch.price, currency)
            .await
    }

    async fn delete(&self, caller: Caller, id: ProductId) -> Outcome<()> {
        admin_only(&caller)?;
        self.store.archive(id).await
    }
}

fn sort_name(sort: Sort) -> &'static str {
    match sort {
        Sort::NewestFirst => "created_at",
        Sort::PriceAscending => "price",
        Sort::PriceDescending => "-price",
        Sort::Name => "name",
    }
}

/// Cursors are opaque to clients: hex of the sort and the last key.
fn encode_cursor(sort: Sort, key: &Key) -> String {
    let json = serde_json::to_vec(&(sort_name(sort), key)).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<(String, Key)> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    serde_json::from_slice(&bytes?).ok()
}

/// A request worker of the product service.
#[derive(Debug)]
pub(crate) struct ProductsWorker;

impl Actor for ProductsWorker {
    type Msg = ProductsMsg;
    type State = ProductRules;
    type Arguments = ProductRules;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        rules: ProductRules,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(Service::Products.group(), vec![myself.get_cell()]);
        Ok(rules)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        rules: &mut ProductRules,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProductsMsg::Create(request, reply) => {
                respond(reply, request, |(caller, new)| rules.create(caller, new)).await
            }
            ProductsMsg::Get(request, reply) => {
                respond(reply, request, |id| rules.store.get(id)).await
            }
            ProductsMsg::List(request, reply) => respond(reply, request, |q| rules.list(q)).await,
            ProductsMsg::Update(request, reply) => {
                respond(reply, request, |(caller, id, patch)| {
                    rules.update(caller, id, patch)
                })
                .await
            }
            ProductsMsg::Delete(request, reply) => {
                respond(reply, request, |(caller, id)| rules.delete(caller, id)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = Key::Name("Mug".into(), ProductId::new());
        let cursor = encode_cursor(Sort::Name, &key);
        assert_eq!(decode_cursor(&cursor), Some(("name".to_owned(), key)));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}
