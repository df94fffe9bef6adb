//! The services one node hosts: a root supervisor with one supervised group per
//! service (its request workers and its outbox dispatcher).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use mart_schema::Service;
use ractor::{Actor, ActorRef};

use crate::auth::TokenKeys;
use crate::batch::{Batched, Batcher};
use crate::call::{Front, Serve};
use crate::inventory::{
    CATALOG_SUBSCRIBER, CatalogSubscriber, InventoryService, StockLoader, StockRouter, StockStore,
    StockWriter,
};
use crate::notifications::{
    MailSender, Mailer, NotificationService, NotificationStore, NotificationSubscriber, SENDER,
    SUBSCRIBER,
};
use crate::orders::{
    OrderDeps, OrderRouter, OrderService, OrderWriter, PAYMENTS_SUBSCRIBER, PaymentSubscriber,
};
use crate::outbox::{Dispatcher, DispatcherArgs, dispatcher_name};
use crate::owners;
use crate::payments::{PaymentDeps, PaymentService, Reconciler};
use crate::products::ProductService;
use crate::products::cache::CacheKeeper;
use crate::supervisor::{ChildSpec, Supervisor, SupervisorMsg};
use crate::users::TokenKeeper;
use crate::users::{RefreshSweeper, UserService};

/// What the hosted services need from the node.
#[derive(Clone, Debug)]
pub struct ServiceDeps {
    /// One pool per hosted service.
    pub pools: BTreeMap<Service, deadpool_postgres::Pool>,
    pub keys: Arc<TokenKeys>,
    pub settings: ServiceSettings,
    /// The payment provider; required when payments are hosted.
    pub payments: Option<PaymentDeps>,
    /// How mail leaves; required when notifications are hosted.
    pub mailer: Option<Arc<dyn Mailer>>,
}

/// Tunables of the services.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSettings {
    /// How long an unpaid order holds its stock (`MART_RESERVATION_TTL`).
    pub reservation_ttl: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// The services running on this node.
#[derive(Debug)]
pub struct Hosted {
    root: ActorRef<SupervisorMsg>,
    deps: ServiceDeps,
}

/// Health of one hosted service.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceHealth {
    pub service: Service,
    pub database: bool,
    pub joined: bool,
    /// Per durable subscriber (the Kafka bridge is `mart.bridge.kafka`): events
    /// not yet acknowledged, and the age of the oldest.
    pub lag: Vec<crate::outbox::SubscriberLag>,
}

/// Whether this node can serve: every hosted service has its database and
/// joined its group, and every service the edge needs is reachable
/// somewhere in the cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    #[serde(skip)]
    pub ready: bool,
    /// `ready` or `not ready` (the HTTP status is `status`, a number, in
    /// both answers of `/health/ready`).
    pub state: &'static str,
    pub hosted: Vec<ServiceHealth>,
    pub reachable: BTreeMap<Service, bool>,
}

impl Hosted {
    /// Starts a root supervisor named after the node, hosting `deps.pools`' services.
    pub async fn start(node: &str, deps: ServiceDeps) -> Result<Self, String> {
        // Every node reads the catalog (the edge, orders' prices) from memory.
        let mut groups = vec![
            unnamed("catalog-cache", CacheKeeper, ()),
            // Every node's edge checks tokens against the revocation floors.
            unnamed("token-keeper", TokenKeeper, ()),
        ];
        for (&service, pool) in &deps.pools {
            let children =
                service_children(node, service, Pool::new(pool.clone(), service), &deps)?;
            let name = format!("{}.supervisor", service.group());
            groups.push(ChildSpec::new(name.clone(), move |parent| {
                let (name, children) = (name.clone(), children.clone());
                async move {
                    Supervisor::start(name, children, Some(parent))
                        .await
                        .map(|actor| actor.get_cell())
                }
            }));
        }
        let root = Supervisor::start(format!("mart.node.{node}"), groups, None).await?;
        Ok(Self { root, deps })
    }

    pub fn services(&self) -> Vec<Service> {
        self.deps.pools.keys().copied().collect()
    }

    /// Database reachable and group joined, per hosted service.
    pub async fn health(&self) -> Vec<ServiceHealth> {
        let mut report = Vec::new();
        for (&service, pool) in &self.deps.pools {
            let (database, lag) =
                match tokio::time::timeout(Duration::from_secs(2), pool.get()).await {
                    Ok(Ok(client)) => {
                        let up = client.execute("select 1", &[]).await.is_ok();
                        (
                            up,
                            crate::outbox::lag(&client, service)
                                .await
                                .unwrap_or_default(),
                        )
                    }
                    _ => (false, Vec::new()),
                };
            let joined = ractor::pg::get_members(&service.group())
                .iter()
                .any(|cell| cell.get_id().is_local());
            report.push(ServiceHealth {
                service,
                database,
                joined,
                lag,
            });
        }
        report
    }

    /// This node's readiness, with the report behind it.
    pub async fn readiness(&self) -> Readiness {
        let reachable: BTreeMap<Service, bool> = Service::ALL
            .iter()
            .map(|&s| (s, !ractor::pg::get_members(&s.group()).is_empty()))
            .collect();
        let hosted = self.health().await;
        // A node is ready for its own job: what it hosts works, and its edge
        // has somewhere to send requests. Requiring every service would keep
        // an edge in front of a partial cluster (edge + users) out of its load
        // balancer forever, and take every edge out when one service is down
        // (its requests get a prompt 503 instead; `reachable` says which).
        let ready =
            hosted.iter().all(|s| s.database && s.joined) && reachable.values().any(|&up| up);
        Readiness {
            ready,
            state: if ready { "ready" } else { "not ready" },
            hosted,
            reachable,
        }
    }

    /// Leaves gracefully: stops taking new work (peers route requests and
    /// entities elsewhere), lets entity actors finish what they hold, delivers
    /// pending events once more, then stops every hosted service.
    pub async fn stop(&self) {
        let started = std::time::Instant::now();
        for service in self.services() {
            let fronts = ractor::pg::get_local_members(&service.group());
            ractor::pg::leave(service.group(), fronts);
            let routers = ractor::pg::get_local_members(&owners::group(service));
            ractor::pg::leave(owners::group(service), routers.clone());
            // Their entities load on the new owners from what is written here.
            for router in routers {
                router
                    .drain_children_and_wait(Some(Duration::from_secs(10)))
                    .await;
            }
        }
        tracing::debug!(took = ?started.elapsed(), "entities drained");
        // Events written by requests that just finished go out before we leave.
        futures::future::join_all(self.services().into_iter().map(crate::outbox::flush)).await;
        tracing::debug!(took = ?started.elapsed(), "outboxes flushed");
        let _ = self
            .root
            .stop_and_wait(
                Some("node shutting down".into()),
                Some(Duration::from_secs(15)),
            )
            .await;
        tracing::debug!(took = ?started.elapsed(), "services stopped");
    }
}

fn service_children(
    node: &str,
    service: Service,
    pool: Pool,
    deps: &ServiceDeps,
) -> Result<Vec<ChildSpec>, String> {
    let dispatcher = DispatcherArgs {
        service,
        pool: pool.clone(),
    };
    let mut children = vec![named(
        "outbox",
        dispatcher_name(service),
        Dispatcher,
        dispatcher,
    )];
    match service {
        Service::Users => {
            children.push(front(UserService::new(pool.clone(), deps.keys.clone())));
            children.push(unnamed("refresh-sweeper", RefreshSweeper, pool));
        }
        Service::Products => children.push(front(ProductService::new(pool))),
        Service::Inventory => {
            let store = StockStore::new(pool);
            children.push(batcher(StockWriter(store.clone())));
            children.push(batcher(StockLoader(store.clone())));
            let router = owners::router_name(Service::Inventory, node);
            children.push(named("router", router, StockRouter, store.clone()));
            children.push(front(InventoryService::new(store.clone())));
            let catalog = CATALOG_SUBSCRIBER.to_owned();
            children.push(named("catalog", catalog, CatalogSubscriber, store));
        }
        Service::Orders => {
            let orders = OrderService::new(pool, deps.settings.reservation_ttl);
            let actor_deps = OrderDeps {
                store: orders.store.clone(),
                inventory: orders.inventory.clone(),
                payments: orders.payments.clone(),
            };
            let router = owners::router_name(Service::Orders, node);
            children.push(named("router", router, OrderRouter, actor_deps));
            children.push(batcher(OrderWriter(orders.store.clone())));
            let payments = orders.payments.clone();
            let subscriber = PAYMENTS_SUBSCRIBER.to_owned();
            children.push(named("payments", subscriber, PaymentSubscriber, payments));
            children.push(front(orders));
        }
        Service::Payments => {
            let provider = deps
                .payments
                .clone()
                .ok_or("hosting payments needs a payment provider (Stripe or the test server)")?;
            let payments = PaymentService::new(pool, provider);
            children.push(unnamed("reconciler", Reconciler, payments.clone()));
            children.push(front(payments));
        }
        Service::Notifications => {
            let mailer = deps
                .mailer
                .clone()
                .ok_or("hosting notifications needs a mailer (SMTP or files)")?;
            let store = NotificationStore::new(pool);
            let sender = (store.clone(), mailer);
            children.push(named("sender", SENDER.to_owned(), MailSender, sender));
            let subscriber = SUBSCRIBER.to_owned();
            let reader = NotificationService::new(store.clone());
            children.push(named(
                "subscriber",
                subscriber,
                NotificationSubscriber,
                store,
            ));
            children.push(front(reader));
        }
    }
    Ok(children)
}

/// A node's batcher of `batched`'s items (group commit, group load), found
/// by its name; the supervisor tells its children apart by the name's last
/// part ("writer", "loader").
fn batcher<W: Batched + std::fmt::Debug>(batched: W) -> ChildSpec {
    let id = W::NAME.rsplit('.').next().unwrap_or(W::NAME);
    named(id, W::NAME.to_owned(), Batcher::<W>::new(), batched)
}

/// The service's group member, serving `service`'s requests.
fn front<S: Serve>(service: S) -> ChildSpec {
    unnamed("front", Front::<S>::new(), service)
}

/// A child registered under `name` (subscribers and routers are found by it).
fn named<A>(id: &str, name: String, actor: A, args: A::Arguments) -> ChildSpec
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    spec(id, Some(name), actor, args)
}

fn unnamed<A>(id: &str, actor: A, args: A::Arguments) -> ChildSpec
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    spec(id, None, actor, args)
}

/// How the supervisor (re)starts a child: linked to it, with fresh arguments.
fn spec<A>(id: &str, name: Option<String>, actor: A, args: A::Arguments) -> ChildSpec
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    ChildSpec::new(id, move |parent| {
        let (name, actor, args) = (name.clone(), actor.clone(), args.clone());
        async move {
            Actor::spawn_linked(name, actor, args, parent)
                .await
                .map(|(actor, _)| actor.get_cell())
                .map_err(|e| e.to_string())
        }
    })
}
