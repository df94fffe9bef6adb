//! The product service's group member and what it does for each request.

use crate::pool::Pool;
use mart_schema::product::{NewProduct, Product, ProductError, ProductQuery};
use mart_schema::user::Caller;
use mart_schema::{Currency, FieldErrors, Page, ProductId, Service};

use super::cache::{self, ProductState};
use super::rules::{self, MAX_STOCK};
use super::store::{Key, ProductStore};
use super::{ProductChange, ProductsMsg};
use crate::call::{Serve, answer_in_task};
use crate::failure::Failure;
use crate::outbox::Outbox;

type Outcome<T> = Result<T, Failure<ProductError>>;

/// The catalog on this node.
#[derive(Clone, Debug)]
pub(crate) struct ProductService {
    store: ProductStore,
}

impl Serve for ProductService {
    type Msg = ProductsMsg;
    const SERVICE: Service = Service::Products;

    fn serve(&self, msg: ProductsMsg) {
        let s = self.clone();
        match msg {
            ProductsMsg::Create(request, reply) => {
                answer_in_task(reply, request, move |caller, new| async move {
                    s.create(caller, new).await
                })
            }
            ProductsMsg::Get(request, reply) => answer_in_task(
                reply,
                request,
                move |_, id| async move { s.store.get(id).await },
            ),
            ProductsMsg::List(request, reply) => {
                answer_in_task(reply, request, move |_, query| async move {
                    s.list(query).await
                })
            }
            ProductsMsg::Update(request, reply) => {
                answer_in_task(reply, request, move |caller, change| async move {
                    s.update(caller, change).await
                })
            }
            ProductsMsg::Delete(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    s.delete(caller, id).await
                })
            }
            ProductsMsg::Changes(request, reply) => {
                answer_in_task(reply, request, move |_, asked| async move {
                    s.store.changed_since(asked.since).await
                })
            }
        }
    }
}

fn live(product: &Product) -> ProductState {
    ProductState {
        id: product.id,
        updated_at: product.updated_at,
        product: Some(product.clone()),
    }
}

impl ProductService {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            store: ProductStore::new(pool, Outbox::new(Service::Products)),
        }
    }

    async fn create(&self, caller: Caller, new: NewProduct) -> Outcome<Product> {
        caller.staff_or(ProductError::Forbidden)?;
        let mut errors = FieldErrors::default();
        rules::check_text(&mut errors, Some(&new.name), Some(&new.description));
        rules::check_price(&mut errors, "price", Some(new.price));
        let code = new.currency.as_deref().unwrap_or("usd");
        let currency = rules::parse_currency(&mut errors, Some(code));
        let stock = new.stock.unwrap_or(0);
        if !(0..=MAX_STOCK).contains(&stock) {
            errors.add("stock", format!("must be between 0 and {MAX_STOCK}"));
        }
        errors.into_result().map_err(ProductError::Invalid)?;
        let currency = currency.unwrap_or(Currency::USD);
        let name = new.name.trim();
        let store = &self.store;
        let product = store
            .insert(name, &new.description, new.price, currency, stock)
            .await?;
        cache::publish(live(&product), false).await;
        Ok(product)
    }

    async fn list(&self, query: ProductQuery) -> Outcome<Page<Product>> {
        let (listing, limit) = rules::listing(query).map_err(ProductError::Invalid)?;
        let sort = listing.sort;
        let items = self.store.list(&listing).await?;
        Ok(Page::from_overfetch(items, limit, |p| {
            rules::encode_cursor(sort, &Key::of(sort, p))
        }))
    }

    async fn update(&self, caller: Caller, change: ProductChange) -> Outcome<Product> {
        caller.staff_or(ProductError::Forbidden)?;
        let ProductChange { id, patch } = change;
        let mut errors = FieldErrors::default();
        let (name, description) = (patch.name.as_deref(), patch.description.as_deref());
        rules::check_text(&mut errors, name, description);
        rules::check_price(&mut errors, "price", patch.price);
        let currency = rules::parse_currency(&mut errors, patch.currency.as_deref());
        errors.into_result().map_err(ProductError::Invalid)?;
        let name = patch.name.map(|n| n.trim().to_owned());
        let store = &self.store;
        let product = store
            .update(id, name, patch.description, patch.price, currency)
            .await?;
        cache::publish(live(&product), false).await;
        Ok(product)
    }

    /// Archives a product, and answers once no node's cache serves it.
    async fn delete(&self, caller: Caller, id: ProductId) -> Outcome<()> {
        caller.staff_or(ProductError::Forbidden)?;
        let updated_at = self.store.archive(id).await?;
        let archived = ProductState {
            id,
            updated_at,
            product: None,
        };
        cache::publish(archived, true).await;
        Ok(())
    }
}
