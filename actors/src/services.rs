//! The services one node hosts: a root supervisor with one supervised group per
//! service (its request workers and its outbox dispatcher).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use mart_schema::Service;
use ractor::{Actor, ActorRef};

use crate::auth::TokenKeys;
use crate::inventory::{CATALOG_SUBSCRIBER, CatalogSubscriber, InventoryFront, StockRouter};
use crate::notifications::{
    MailSender, Mailer, NotificationSubscriber, NotificationsFront, SENDER, SUBSCRIBER,
};
use crate::orders::{OrderRouter, OrderServiceDeps, OrdersFront};
use crate::outbox::{Dispatcher, DispatcherArgs, dispatcher_name};
use crate::owners;
use crate::payments::{PaymentDeps, PaymentService, PaymentsFront, Reconciler};
use crate::products::{ProductRules, ProductsWorker};
use crate::supervisor::{ChildSpec, Supervisor, SupervisorMsg};
use crate::users::{UserRules, worker::UsersWorker};

/// Request workers per service on one node: enough to overlap database round
/// trips and password hashing on a small machine.
const WORKERS: usize = 4;

/// What the hosted services need from the node.
#[derive(Clone, Debug)]
pub struct ServiceDeps {
    /// One pool per hosted service.
    pub pools: BTreeMap<Service, Pool>,
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
    /// How long one service waits for another.
    pub call_timeout: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(30 * 60),
            call_timeout: crate::call::DEFAULT_CALL_TIMEOUT,
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

impl Hosted {
    /// Starts a root supervisor named after the node, hosting `deps.pools`' services.
    pub async fn start(node: &str, deps: ServiceDeps) -> Result<Self, String> {
        let mut groups = Vec::new();
        for (&service, pool) in &deps.pools {
            let children = service_children(node, service, pool.clone(), &deps)?;
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

    /// Leaves gracefully: stops taking new work (peers route requests and
    /// entities elsewhere), lets entity actors finish what they hold, delivers
    /// pending events once more, then stops every hosted service.
    pub async fn stop(&self) {
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
        // Events written by requests that just finished go out before we leave.
        for service in self.services() {
            crate::outbox::flush(service).await;
        }
        let _ = self
            .root
            .stop_and_wait(
                Some("node shutting down".into()),
                Some(Duration::from_secs(15)),
            )
            .await;
    }
}

fn service_children(
    node: &str,
    service: Service,
    pool: Pool,
    deps: &ServiceDeps,
) -> Result<Vec<ChildSpec>, String> {
    let (keys, settings) = (deps.keys.clone(), deps.settings);
    let dispatcher_pool = pool.clone();
    let mut children = vec![ChildSpec::new("outbox", move |parent| {
        let args = DispatcherArgs {
            service,
            pool: dispatcher_pool.clone(),
        };
        async move {
            Actor::spawn_linked(Some(dispatcher_name(service)), Dispatcher, args, parent)
                .await
                .map(|(actor, _)| actor.get_cell())
                .map_err(|e| e.to_string())
        }
    })];
    match service {
        Service::Products => {
            let rules = ProductRules::new(pool);
            for i in 0..WORKERS {
                let rules = rules.clone();
                children.push(ChildSpec::new(format!("worker-{i}"), move |parent| {
                    let rules = rules.clone();
                    async move { spawn(ProductsWorker, rules, parent).await }
                }));
            }
        }
        Service::Inventory => {
            let router_pool = pool.clone();
            let name = owners::router_name(Service::Inventory, node);
            children.push(ChildSpec::new("router", move |parent| {
                let (pool, name) = (router_pool.clone(), name.clone());
                async move {
                    Actor::spawn_linked(Some(name), StockRouter, pool, parent)
                        .await
                        .map(|(actor, _)| actor.get_cell())
                        .map_err(|e| e.to_string())
                }
            }));
            let front_pool = pool.clone();
            children.push(ChildSpec::new("front", move |parent| {
                let pool = front_pool.clone();
                async move { spawn(InventoryFront, pool, parent).await }
            }));
            children.push(ChildSpec::new("catalog", move |parent| {
                let pool = pool.clone();
                async move {
                    Actor::spawn_linked(
                        Some(CATALOG_SUBSCRIBER.into()),
                        CatalogSubscriber,
                        pool,
                        parent,
                    )
                    .await
                    .map(|(actor, _)| actor.get_cell())
                    .map_err(|e| e.to_string())
                }
            }));
        }
        Service::Orders => {
            let deps = OrderServiceDeps::new(pool, settings.reservation_ttl, settings.call_timeout);
            let actor_deps = deps.actor_deps();
            let name = owners::router_name(Service::Orders, node);
            children.push(ChildSpec::new("router", move |parent| {
                let (deps, name) = (actor_deps.clone(), name.clone());
                async move {
                    Actor::spawn_linked(Some(name), OrderRouter, deps, parent)
                        .await
                        .map(|(actor, _)| actor.get_cell())
                        .map_err(|e| e.to_string())
                }
            }));
            children.push(ChildSpec::new("front", move |parent| {
                let deps = deps.clone();
                async move { spawn(OrdersFront, deps, parent).await }
            }));
        }
        Service::Payments => {
            let payment_deps = deps
                .payments
                .clone()
                .ok_or("hosting payments needs a payment provider (Stripe or the test server)")?;
            let service = PaymentService::new(pool, payment_deps, settings.call_timeout);
            let reconciling = service.clone();
            children.push(ChildSpec::new("front", move |parent| {
                let service = service.clone();
                async move { spawn(PaymentsFront, service, parent).await }
            }));
            children.push(ChildSpec::new("reconciler", move |parent| {
                let service = reconciling.clone();
                async move { spawn(Reconciler, service, parent).await }
            }));
        }
        Service::Notifications => {
            let mailer = deps
                .mailer
                .clone()
                .ok_or("hosting notifications needs a mailer (SMTP or files)")?;
            let (front_pool, sender_pool) = (pool.clone(), pool.clone());
            let timeout = settings.call_timeout;
            children.push(ChildSpec::new("front", move |parent| {
                let pool = front_pool.clone();
                async move { spawn(NotificationsFront, pool, parent).await }
            }));
            children.push(ChildSpec::new("sender", move |parent| {
                let args = (sender_pool.clone(), mailer.clone());
                async move {
                    Actor::spawn_linked(Some(SENDER.into()), MailSender, args, parent)
                        .await
                        .map(|(actor, _)| actor.get_cell())
                        .map_err(|e| e.to_string())
                }
            }));
            children.push(ChildSpec::new("subscriber", move |parent| {
                let args = (pool.clone(), timeout);
                async move {
                    Actor::spawn_linked(
                        Some(SUBSCRIBER.into()),
                        NotificationSubscriber,
                        args,
                        parent,
                    )
                    .await
                    .map(|(actor, _)| actor.get_cell())
                    .map_err(|e| e.to_string())
                }
            }));
        }
        Service::Users => {
            let rules = UserRules::new(pool, keys);
            for i in 0..WORKERS {
                let rules = rules.clone();
                children.push(ChildSpec::new(format!("worker-{i}"), move |parent| {
                    let rules = rules.clone();
                    async move { spawn(UsersWorker, rules, parent).await }
                }));
            }
        }
    }
    Ok(children)
}

/// Spawns an unnamed child linked to `parent`.
async fn spawn<A: Actor>(
    actor: A,
    args: A::Arguments,
    parent: ractor::ActorCell,
) -> Result<ractor::ActorCell, String> {
    Actor::spawn_linked(None, actor, args, parent)
        .await
        .map(|(actor, _)| actor.get_cell())
        .map_err(|e| e.to_string())
}
