//! The catalog in memory, on every node: product reads and repeated listing
//! pages are served without PostgreSQL once warm.
//!
//! Freshness: the product service tells every node's [`CacheKeeper`] of each
//! change as it commits (group `mart.products.caches`), and each keeper also
//! asks for everything changed since its last look every [`SYNC_EVERY`], so a
//! lost message costs at most that long. A cache serves only while its last
//! successful look is younger than [`LEASE`]; past that (the product service
//! unreachable, the keeper stopped) reads go to the service as before. An
//! archive waits until every keeper has heard of it, or until [`LEASE`] has
//! passed (by then a keeper that did not hear has stopped serving), so an
//! archived product is never served after its delete returned.
//!
//! Entries carry the product's `updated_at` as their version: a change is
//! applied only over an older one, so a slow read can never put back what a
//! newer change (or an archive) replaced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use mart_schema::product::{Product, ProductQuery};
use mart_schema::{Page, ProductId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::Products;
use crate::wire::Wire;

/// How long a cache may serve after its last successful look at the changes.
pub const LEASE: Duration = Duration::from_secs(1);
/// How often a keeper looks at the changes.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Changes are looked for this far before the last look: a transaction's
/// `now()` is when it began, so one that committed late still shows.
const OVERLAP: time::Duration = time::Duration::seconds(2);
/// Listing pages remembered at most (any change forgets them all).
const MAX_LISTINGS: usize = 512;

/// The group every node's keeper joins.
pub(crate) const GROUP: &str = "mart.products.caches";

/// A product as it now stands: `None` once archived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductState {
    pub id: ProductId,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub product: Option<Product>,
}

/// What changed in the catalog after a point in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogChanges {
    /// Ask from here next time (the database's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
    pub changed: Vec<ProductState>,
}

/// A product ready to send: its JSON and its `ETag`, made once per version.
#[derive(Debug)]
pub struct ProductView {
    pub product: Product,
    pub json: bytes::Bytes,
    pub etag: String,
}

impl ProductView {
    pub fn of(product: Product) -> Arc<Self> {
        let json = serde_json::to_vec(&product).unwrap_or_default();
        let etag = format!("\"{}\"", &hex::encode(sha2::Sha256::digest(&json))[..16]);
        Arc::new(Self {
            product,
            json: json.into(),
            etag,
        })
    }
}

#[derive(Debug)]
enum Entry {
    Live(Arc<ProductView>),
    Archived(OffsetDateTime),
}

impl Entry {
    fn version(&self) -> OffsetDateTime {
        match self {
            Entry::Live(view) => view.product.updated_at,
            Entry::Archived(at) => *at,
        }
    }
}

#[derive(Debug, Default)]
struct Shelves {
    products: HashMap<ProductId, Entry>,
    /// Listing pages by query; any change forgets them all.
    listings: HashMap<String, Arc<Page<Product>>>,
    /// Counts changes, so a listing read across one is not remembered.
    generation: u64,
}

impl Shelves {
    /// Puts an entry unless what is there is newer (or archived: for good).
    fn put(&mut self, id: ProductId, entry: Entry) {
        let newer = match self.products.get(&id) {
            None => true,
            Some(Entry::Archived(_)) => false,
            Some(old) => old.version() < entry.version(),
        };
        if newer {
            self.products.insert(id, entry);
            self.listings.clear();
            self.generation += 1;
        }
    }
}

/// This process's catalog cache.
#[derive(Debug)]
pub struct CatalogCache {
    shelves: RwLock<Shelves>,
    /// When the keeper last looked successfully, in ms since `epoch`; 0: never.
    synced_ms: AtomicU64,
    epoch: Instant,
}

/// The one cache of this process (a node is a process, as ractor's groups are).
pub static CATALOG: LazyLock<CatalogCache> = LazyLock::new(|| CatalogCache {
    shelves: RwLock::default(),
    synced_ms: AtomicU64::new(0),
    epoch: Instant::now(),
});

impl CatalogCache {
    /// Whether the cache may serve now (its lease is current).
    pub fn is_fresh(&self) -> bool {
        let synced = self.synced_ms.load(Ordering::Acquire);
        synced > 0 && self.millis_now().saturating_sub(synced) < LEASE.as_millis() as u64
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn renew(&self) {
        self.synced_ms
            .store(self.millis_now().max(1), Ordering::Release);
    }

    /// The product, if the cache may serve and has it: `Some(None)` when it
    /// is known to be archived.
    pub fn product(&self, id: ProductId) -> Option<Option<Arc<ProductView>>> {
        if !self.is_fresh() {
            return None;
        }
        let shelves = self.shelves.read().ok()?;
        match shelves.products.get(&id)? {
            Entry::Live(view) => Some(Some(view.clone())),
            Entry::Archived(_) => Some(None),
        }
    }

    /// Puts a product as read or written, unless something newer is there.
    pub fn remember(&self, state: ProductState) {
        match state.product {
            Some(product) => {
                self.remember_view(ProductView::of(product));
            }
            None => {
                if let Ok(mut shelves) = self.shelves.write() {
                    shelves.put(state.id, Entry::Archived(state.updated_at));
                }
            }
        }
    }

    /// Puts a product ready to send, unless something newer is there.
    pub fn remember_view(&self, view: Arc<ProductView>) {
        if let Ok(mut shelves) = self.shelves.write() {
            shelves.put(view.product.id, Entry::Live(view));
        }
    }

    /// Forgets everything (a keeper starting has no record of what changed).
    fn clear(&self) {
        if let Ok(mut shelves) = self.shelves.write() {
            shelves.products.clear();
            shelves.listings.clear();
            shelves.generation += 1;
        }
    }

    /// The count of changes so far: pass it to [`Self::remember_listing`].
    pub fn generation(&self) -> u64 {
        self.shelves.read().map(|s| s.generation).unwrap_or(0)
    }

    /// A listing page remembered for exactly this query.
    pub fn listing(&self, query: &ProductQuery) -> Option<Arc<Page<Product>>> {
        if !self.is_fresh() {
            return None;
        }
        let key = serde_json::to_string(query).ok()?;
        self.shelves.read().ok()?.listings.get(&key).cloned()
    }

    /// Remembers a listing page read at `generation`, if no change came since.
    pub fn remember_listing(&self, query: &ProductQuery, page: Page<Product>, generation: u64) {
        let Ok(key) = serde_json::to_string(query) else {
            return;
        };
        if let Ok(mut shelves) = self.shelves.write() {
            if shelves.generation != generation {
                return;
            }
            if shelves.listings.len() >= MAX_LISTINGS {
                shelves.listings.clear();
            }
            shelves.listings.insert(key, Arc::new(page));
        }
    }
}

/// What a keeper is told.
#[derive(Debug, RactorClusterMessage)]
pub enum CacheMsg {
    /// A product changed; answered once applied.
    #[rpc]
    Changed(Wire<ProductState>, RpcReplyPort<Wire<()>>),
    /// Time to look at the changes.
    Sync(Wire<()>),
}

/// Keeps this node's catalog cache fresh.
#[derive(Debug, Clone, Copy)]
pub struct CacheKeeper;

#[derive(Debug)]
pub struct KeeperState {
    products: Products,
    since: Option<OffsetDateTime>,
}

impl Actor for CacheKeeper {
    type Msg = CacheMsg;
    type State = KeeperState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);
        CATALOG.clear();
        let _ = myself.cast(CacheMsg::Sync(Wire::Value(())));
        myself.send_interval(SYNC_EVERY, || CacheMsg::Sync(Wire::Value(())));
        Ok(KeeperState {
            products: Products::default(),
            since: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CacheMsg::Changed(change, reply) => {
                if let Wire::Value(change) = change {
                    CATALOG.remember(change);
                }
                let _ = reply.send(Wire::Value(()));
            }
            CacheMsg::Sync(_) => {
                let since = state.since.map(|at| at - OVERLAP);
                // Not reachable: the lease runs out and reads go to the service.
                if let Ok(changes) = state.products.changes(since).await {
                    for change in changes.changed {
                        CATALOG.remember(change);
                    }
                    state.since = Some(changes.as_of);
                    CATALOG.renew();
                }
            }
        }
        Ok(())
    }
}

/// Tells every keeper of a change, and waits (at most [`LEASE`] and a little)
/// until each has applied it when `wait` (an archive).
pub(crate) async fn publish(state: ProductState, wait: bool) {
    let keepers = ractor::pg::get_members(&GROUP.to_owned());
    let told = keepers.into_iter().map(|cell| {
        let keeper = ActorRef::<CacheMsg>::from(cell);
        let change = state.clone();
        async move {
            let ask = |reply| CacheMsg::Changed(Wire::Value(change), reply);
            keeper.call(ask, Some(LEASE + SYNC_EVERY)).await
        }
    });
    let all = futures::future::join_all(told);
    if wait {
        let _ = all.await;
    } else {
        tokio::spawn(all);
    }
}
