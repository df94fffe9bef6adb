//! The product service: the catalog. Changes publish `product.*` events (with
//! the initial stock, for the inventory service).
//!
//! - `mod.rs` (here): the handle [`Products`] and its mailbox [`ProductsMsg`].
//! - `front`: the group member; every request runs in its own task. Stateless:
//!   the `products` schema is the truth.
//! - `store`: all of the service's SQL (keyset pages).
//! - `rules`: what makes a product or a listing request acceptable, and the
//!   opaque cursors (pure).
//! - `cache`: the catalog in memory on every node, kept fresh by the
//!   service's change notices and a look at the changes every 250 ms; the
//!   handle reads through it.

pub mod cache;
mod front;
mod rules;
mod store;

use std::sync::Arc;

use mart_schema::product::{NewProduct, Product, ProductError, ProductPatch, ProductQuery};
use mart_schema::user::Caller;
use mart_schema::{Page, ProductId, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use cache::{CATALOG, CatalogChanges, ProductState, ProductView};
pub(crate) use front::ProductService;

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::wire::Wire;

rejection!(ProductError);

/// A change to one product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductChange {
    pub id: ProductId,
    pub patch: ProductPatch,
}

/// Which changes a cache keeper asks for: all since `since` (`None`: only
/// the time to ask from next).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChangesSince {
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
}

/// The product service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum ProductsMsg {
    #[rpc]
    Create(
        Wire<Request<NewProduct>>,
        RpcReplyPort<Wire<Result<Product, Refusal<ProductError>>>>,
    ),
    #[rpc]
    Get(
        Wire<Request<ProductId>>,
        RpcReplyPort<Wire<Result<Product, Refusal<ProductError>>>>,
    ),
    #[rpc]
    List(
        Wire<Request<ProductQuery>>,
        RpcReplyPort<Wire<Result<Page<Product>, Refusal<ProductError>>>>,
    ),
    #[rpc]
    Update(
        Wire<Request<ProductChange>>,
        RpcReplyPort<Wire<Result<Product, Refusal<ProductError>>>>,
    ),
    #[rpc]
    Delete(
        Wire<Request<ProductId>>,
        RpcReplyPort<Wire<Result<(), Refusal<ProductError>>>>,
    ),
    #[rpc]
    Changes(
        Wire<Request<ChangesSince>>,
        RpcReplyPort<Wire<Result<CatalogChanges, Refusal<ProductError>>>>,
    ),
}

/// Handle on the product service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Products {
    client: ServiceClient<ProductsMsg>,
}

type Answer<T> = Result<T, CallError<ProductError>>;

impl Default for Products {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Products),
        }
    }
}

impl Products {
    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    pub async fn create(&self, caller: Caller, product: NewProduct) -> Answer<Product> {
        let created = self
            .client
            .ask(caller, product, ProductsMsg::Create)
            .await?;
        // Read-your-writes on this node, whatever the keeper has heard.
        CATALOG.remember_view(ProductView::of(created.clone()));
        Ok(created)
    }

    /// One product, from this node's catalog cache when it may serve.
    pub async fn get(&self, id: ProductId) -> Answer<Product> {
        self.view(id).await.map(|view| view.product.clone())
    }

    /// One product ready to send (its JSON and `ETag`).
    pub async fn view(&self, id: ProductId) -> Answer<Arc<ProductView>> {
        match CATALOG.product(id) {
            Some(Some(view)) => return Ok(view),
            Some(None) => return Err(CallError::Rejected(ProductError::NotFound)),
            None => {}
        }
        let caller = Caller::Anonymous;
        let product = self.client.ask(caller, id, ProductsMsg::Get).await?;
        let view = ProductView::of(product);
        CATALOG.remember_view(view.clone());
        Ok(view)
    }

    /// A page of the catalog; a page asked for before, unchanged since, from
    /// memory.
    pub async fn list(&self, query: ProductQuery) -> Answer<Page<Product>> {
        if let Some(page) = CATALOG.listing(&query) {
            return Ok(Page::clone(&page));
        }
        let generation = CATALOG.generation();
        let caller = Caller::Anonymous;
        let asked = query.clone();
        let page = self.client.ask(caller, asked, ProductsMsg::List).await?;
        CATALOG.remember_listing(&query, page.clone(), generation);
        Ok(page)
    }

    pub async fn update(
        &self,
        caller: Caller,
        id: ProductId,
        patch: ProductPatch,
    ) -> Answer<Product> {
        let change = ProductChange { id, patch };
        let updated = self.client.ask(caller, change, ProductsMsg::Update).await?;
        CATALOG.remember_view(ProductView::of(updated.clone()));
        Ok(updated)
    }

    /// Archives a product; once this returns no node serves it.
    pub async fn delete(&self, caller: Caller, id: ProductId) -> Answer<()> {
        self.client.ask(caller, id, ProductsMsg::Delete).await?;
        let archived = ProductState {
            id,
            updated_at: mart_schema::now(),
            product: None,
        };
        CATALOG.remember(archived);
        Ok(())
    }

    /// What changed since `since` (for the cache keepers).
    pub(crate) async fn changes(&self, since: Option<OffsetDateTime>) -> Answer<CatalogChanges> {
        let asked = ChangesSince { since };
        let caller = Caller::Service;
        self.client.ask(caller, asked, ProductsMsg::Changes).await
    }
}
