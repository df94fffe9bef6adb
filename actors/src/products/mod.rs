//! The product service: the catalog. Changes publish `product.*` events (with
//! the initial stock, for the inventory service).
//!
//! - `mod.rs` (here): the handle [`Products`] and its mailbox [`ProductsMsg`].
//! - `front`: the group member; every request runs in its own task. Stateless:
//!   the `products` schema is the truth.
//! - `store`: all of the service's SQL (keyset pages).
//! - `rules`: what makes a product or a listing request acceptable, and the
//!   opaque cursors (pure).

mod front;
mod rules;
mod store;

use mart_schema::product::{NewProduct, Product, ProductError, ProductPatch, ProductQuery};
use mart_schema::user::Caller;
use mart_schema::{Page, ProductId, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

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
        self.client.ask(caller, product, ProductsMsg::Create).await
    }

    pub async fn get(&self, id: ProductId) -> Answer<Product> {
        let caller = Caller::Anonymous;
        self.client.ask(caller, id, ProductsMsg::Get).await
    }

    pub async fn list(&self, query: ProductQuery) -> Answer<Page<Product>> {
        let caller = Caller::Anonymous;
        self.client.ask(caller, query, ProductsMsg::List).await
    }

    pub async fn update(
        &self,
        caller: Caller,
        id: ProductId,
        patch: ProductPatch,
    ) -> Answer<Product> {
        let change = ProductChange { id, patch };
        self.client.ask(caller, change, ProductsMsg::Update).await
    }

    pub async fn delete(&self, caller: Caller, id: ProductId) -> Answer<()> {
        self.client.ask(caller, id, ProductsMsg::Delete).await
    }
}
