//! The `mart` binary's library: configuration, telemetry, wiring, CLI.
//!
//! - [`config`]: clap options (every one also a `MART_*` variable).
//! - [`cluster`]: the `ractor_cluster` listener and the peer keeper.
//! - [`telemetry`]: tracing subscriber.
//! - [`mail`]: how mail leaves (lettre: SMTP or `.eml` files).
//! - [`stripe_gateway`]: Stripe Checkout through async-stripe.
//! - [`stripe_server`]: mart's Stripe test server (`mart stripe-test-server`,
//!   or in-process when no Stripe key is set).
//! - [`bench`]: `mart bench`, the inventory throughput benchmark.
//! - [`run`]: `serve`, `migrate`, `bench` and `admin create`, used by `main`.

pub mod bench;
pub mod cluster;
pub mod config;
pub mod mail;
pub mod stripe_gateway;
pub mod stripe_server;
pub mod telemetry;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::Pool;
use mart_actors::auth::TokenKeys;
use mart_actors::payments::PaymentDeps;
use mart_actors::users::{AdminOutcome, UserRules};
use mart_actors::{
    Hosted, Inventory, Notifications, Orders, Payments, Products, ServiceDeps, ServiceSettings,
    Users,
};
use mart_schema::Service;
use mart_schema::db::{self, Durability, EmbeddedPostgres};

use crate::config::{AdminAction, Cli, Command, NodeOptions};

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = cli.node;
    opts.validate().map_err(anyhow::Error::msg)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(opts).await,
        Command::KafkaDevBroker => {
            let bootstrap = mart_bridge::dev_broker().map_err(anyhow::Error::msg)?;
            println!("{bootstrap}");
            tracing::warn!(%bootstrap, "Kafka dev broker (librdkafka mock cluster): in memory only, NOT durable");
            shutdown_signal().await;
            Ok(())
        }
        Command::StripeTestServer(o) => {
            let listener = tokio::net::TcpListener::bind(o.listen)
                .await
                .with_context(|| format!("cannot listen on {}", o.listen))?;
            let config = stripe_server::StripeTestConfig {
                api_key: o.api_key,
                webhook_url: o.webhook_url,
                webhook_secret: o.webhook_secret,
                public_base: match o.public_url {
                    Some(url) => url.trim_end_matches('/').to_owned(),
                    None => format!("http://{}", listener.local_addr()?),
                },
            };
            tracing::warn!(api = %config.public_base, "mart's Stripe TEST server: no money moves");
            axum::serve(listener, stripe_server::router(config))
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            Ok(())
        }
        Command::Migrate => {
            let dbs = Databases::open(&opts, &opts.services.0).await?;
            dbs.close();
            Ok(())
        }
        Command::Bench(options) => {
            let (url, embedded) = match opts.database_url(Service::Inventory) {
                Some(url) => (url, None),
                None => {
                    let pg = start_embedded(&opts).await?;
                    (pg.url("postgres"), Some(pg))
                }
            };
            let outcome = bench::run(&url, &options).await;
            if let Some(pg) = embedded {
                pg.stop();
            }
            outcome
        }
        Command::Admin {
            action: AdminAction::Create { email, .. },
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let dbs = Databases::open(&opts, &[Service::Users]).await?;
            let outcome = admin(&opts, &dbs, &email, password).await;
            dbs.close();
            println!("{}", outcome?);
            Ok(())
        }
    }
}

/// Pools for the hosted services, and the embedded server if one was needed.
struct Databases {
    pools: BTreeMap<Service, Pool>,
    embedded: Option<EmbeddedPostgres>,
}

impl Databases {
    /// Opens (and migrates) each service's database. Services without a URL
    /// share the embedded PostgreSQL.
    async fn open(opts: &NodeOptions, services: &[Service]) -> anyhow::Result<Self> {
        let mut embedded = None;
        let mut pools = BTreeMap::new();
        for &service in services {
            let url = match opts.database_url(service) {
                Some(url) => url,
                None => {
                    if embedded.is_none() {
                        embedded = Some(start_embedded(opts).await?);
                    }
                    embedded
                        .as_ref()
                        .map(|pg: &EmbeddedPostgres| pg.url("mart"))
                        .unwrap_or_default()
                }
            };
            let pool = db::pool(&url, 16).with_context(|| format!("database of {service}"))?;
            let applied = db::migrate(&pool, service)
                .await
                .with_context(|| format!("database of {service}"))?;
            if applied > 0 {
                tracing::info!(%service, applied, "migrations applied");
            }
            pools.insert(service, pool);
        }
        Ok(Self { pools, embedded })
    }

    fn close(self) {
        for pool in self.pools.values() {
            pool.close();
        }
        if let Some(pg) = self.embedded {
            pg.stop();
        }
    }
}

async fn start_embedded(opts: &NodeOptions) -> anyhow::Result<EmbeddedPostgres> {
    let dir = opts.data_dir.join("postgres");
    let pg =
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, Durability::Durable))
            .await??;
    tracing::info!(dir = %pg.dir().display(), "DATABASE_URL is unset: using the embedded PostgreSQL");
    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt("select 1 from pg_database where datname = 'mart'", &[])
        .await?
        .is_some();
    if !exists {
        client.batch_execute("create database mart").await?;
    }
    drop(client);
    let _ = connection.await;
    Ok(pg)
}

/// The token keys: `MART_JWT_SECRET`, or a secret generated once and kept in
/// the data directory (fine for one node; a cluster must share one).
fn token_keys(opts: &NodeOptions) -> anyhow::Result<Arc<TokenKeys>> {
    let secret = match &opts.jwt_secret {
        Some(secret) if secret.len() >= 16 => secret.clone(),
        Some(_) => anyhow::bail!("MART_JWT_SECRET must be at least 16 characters"),
        None => {
            let path = opts.data_dir.join("jwt-secret");
            match std::fs::read_to_string(&path) {
                Ok(secret) => secret.trim().to_owned(),
                Err(_) => {
                    std::fs::create_dir_all(&opts.data_dir)?;
                    let secret = format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    );
                    write_private(&path, &secret)?;
                    tracing::warn!(file = %path.display(), "MART_JWT_SECRET is unset: generated one; set the same MART_JWT_SECRET on every node of a cluster");
                    secret
                }
            }
        }
    };
    Ok(Arc::new(TokenKeys::new(secret.as_bytes(), opts.token_ttl)))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

async fn admin(
    opts: &NodeOptions,
    dbs: &Databases,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let pool = dbs
        .pools
        .get(&Service::Users)
        .context("the user service's database is not configured")?;
    let rules = UserRules::new(pool.clone(), token_keys(opts)?);
    let outcome = rules
        .ensure_admin(email, password)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(match outcome {
        AdminOutcome::Created(u) => {
            format!("created admin {} ({}, id {})", u.username, u.email, u.id)
        }
        AdminOutcome::Promoted(u) => format!("promoted {} ({}) to admin", u.username, u.email),
        AdminOutcome::Existed(u) => format!("{} ({}) is already an admin", u.username, u.email),
    })
}

async fn serve(opts: NodeOptions) -> anyhow::Result<()> {
    let hosting = opts.services.0.clone();
    let keys = token_keys(&opts)?;
    let dbs = Databases::open(&opts, &hosting).await?;
    if let (Some(email), Some(password), true) = (
        &opts.admin_email,
        &opts.admin_password,
        hosting.contains(&Service::Users),
    ) {
        tracing::info!("{}", admin(&opts, &dbs, email, password).await?);
    }

    let membership = match opts.cluster_addr {
        Some(addr) => Some(Arc::new(
            cluster::Membership::join(
                &opts.node_name,
                addr,
                opts.cluster_advertise.clone(),
                opts.cookie.clone().unwrap_or_default(),
                opts.peers.clone(),
                tls_files(&opts),
            )
            .await?,
        )),
        None => None,
    };

    let hosted = Hosted::start(
        &opts.node_name,
        ServiceDeps {
            mailer: if hosting.contains(&Service::Notifications) {
                Some(mailer(&opts)?)
            } else {
                None
            },
            payments: if hosting.contains(&Service::Payments) {
                Some(payment_deps(&opts).await?)
            } else {
                None
            },
            pools: dbs.pools.clone(),
            keys: keys.clone(),
            settings: ServiceSettings {
                reservation_ttl: opts.reservation_ttl,
                call_timeout: opts.call_timeout,
            },
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    tracing::info!(node = %opts.node_name, services = ?hosted.services(), "services started");
    let bridge = start_bridge(&opts).await?;
    let hosted = Arc::new(hosted);

    let shutdown = shutdown_signal();
    if let Some(addr) = opts.http_addr.0 {
        let users = Users::new(opts.call_timeout);
        let products = Products::new(opts.call_timeout);
        let inventory = Inventory::new(opts.call_timeout);
        let orders = Orders::new(opts.call_timeout);
        let payments = Payments::new(opts.call_timeout);
        let notifications = Notifications::new(opts.call_timeout);
        let readiness: mart_http::Readiness = {
            let hosted = hosted.clone();
            let (users, products, inventory, orders, payments, notifications) = (
                users.clone(),
                products.clone(),
                inventory.clone(),
                orders.clone(),
                payments.clone(),
                notifications.clone(),
            );
            Arc::new(move || {
                let hosted = hosted.clone();
                let reachable = serde_json::json!({
                    "users": users.is_reachable(),
                    "products": products.is_reachable(),
                    "inventory": inventory.is_reachable(),
                    "orders": orders.is_reachable(),
                    "payments": payments.is_reachable(),
                    "notifications": notifications.is_reachable(),
                });
                Box::pin(async move {
                    let services = hosted.health().await;
                    let hosted_ok = services.iter().all(|s| s.database && s.joined);
                    let all_reachable = reachable
                        .as_object()
                        .is_some_and(|m| m.values().all(|v| v.as_bool() == Some(true)));
                    let ok = hosted_ok && all_reachable;
                    let report = serde_json::json!({
                        "status": if ok { "ready" } else { "not ready" },
                        "hosted": services,
                        "reachable": reachable,
                    });
                    (ok, report)
                })
            })
        };
        let cluster: mart_http::ClusterView = {
            let (membership, me, peers) = (
                membership.clone(),
                opts.node_name.clone(),
                opts.peers.clone(),
            );
            Arc::new(move || {
                let (membership, me, peers) = (membership.clone(), me.clone(), peers.clone());
                Box::pin(async move { cluster::view(membership.as_deref(), &me, &peers).await })
            })
        };
        let app = mart_http::router(mart_http::AppState {
            cluster,
            users,
            products,
            inventory,
            orders,
            payments,
            notifications,
            keys,
            readiness,
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --http-addr {addr}"))?;
        tracing::info!("edge listening on http://{}", listener.local_addr()?);
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
    } else {
        shutdown.await;
    }

    tracing::info!("shutting down");
    // Not behind Arc::try_unwrap: a clone still held by a connection task
    // would silently skip the graceful leave, and with it the outbox flush and
    // the wait for actors mid-message (a mail sent twice by the next owner).
    let leaving = std::time::Instant::now();
    hosted.stop().await;
    tracing::info!(took = ?leaving.elapsed(), "services stopped");
    if let Some(bridge) = bridge {
        bridge.stop(Some("node shutting down".into()));
    }
    if let Some(membership) = membership {
        membership.leave();
    }
    dbs.close();
    tracing::info!("stopped");
    Ok(())
}

fn tls_files(opts: &NodeOptions) -> Option<cluster::TlsFiles> {
    match (
        &opts.cluster_tls_cert,
        &opts.cluster_tls_key,
        &opts.cluster_tls_ca,
    ) {
        (Some(cert), Some(key), Some(ca)) => Some(cluster::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    }
}

/// The Kafka bridge, when brokers are configured; off (said once) otherwise.
async fn start_bridge(
    opts: &NodeOptions,
) -> anyhow::Result<Option<ractor::ActorRef<mart_actors::supervisor::SupervisorMsg>>> {
    let Some(brokers) = opts.kafka_brokers.clone() else {
        tracing::info!(
            "MART_KAFKA_BROKERS is unset: the Kafka bridge is off; the outboxes keep every event for when it is on"
        );
        return Ok(None);
    };
    let brokers = if brokers == "embedded" {
        let bootstrap = mart_bridge::dev_broker().map_err(anyhow::Error::msg)?;
        tracing::warn!(%bootstrap, "Kafka: embedded mock cluster, in memory only, NOT durable");
        bootstrap
    } else {
        brokers
    };
    let config = mart_bridge::BridgeConfig {
        brokers,
        topic_prefix: opts.kafka_topic_prefix.clone(),
        partitions: opts.kafka_partitions,
        replication: opts.kafka_replication,
        settings: mart_bridge::BridgeConfig::librdkafka_settings_from_env(),
    };
    mart_bridge::ensure_topics(&config).await;
    let child = mart_actors::supervisor::ChildSpec::new("kafka", move |parent| {
        let config = config.clone();
        async move { mart_bridge::start(config, Some(parent)).await }
    });
    let supervisor = mart_actors::supervisor::Supervisor::start(
        "mart.bridge.supervisor".into(),
        vec![child],
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(Some(supervisor))
}

/// How mail leaves: SMTP when configured, else `.eml` files in the data directory.
fn mailer(opts: &NodeOptions) -> anyhow::Result<Arc<dyn mart_actors::notifications::Mailer>> {
    match &opts.smtp_url {
        Some(url) => Ok(Arc::new(mail::LettreMailer::smtp(url, &opts.mail_from)?)),
        None => {
            let dir = opts.data_dir.join("mail");
            tracing::info!(dir = %dir.display(), "MART_SMTP_URL is unset: mail is written to files");
            Ok(Arc::new(mail::LettreMailer::files(&dir, &opts.mail_from)?))
        }
    }
}

/// The payment provider: Stripe when a key is set, else mart's own Stripe test
/// server, started here.
async fn payment_deps(opts: &NodeOptions) -> anyhow::Result<PaymentDeps> {
    let public_url = opts
        .public_url
        .clone()
        .unwrap_or_else(|| match opts.http_addr.0 {
            Some(addr) => format!("http://{addr}"),
            None => "http://127.0.0.1:8080".to_owned(),
        });
    let reconcile_after = opts.payment_reconcile_after;
    if let Some(key) = &opts.stripe_secret_key {
        if opts.stripe_webhook_secret.is_empty() {
            anyhow::bail!(
                "MART_STRIPE_SECRET_KEY needs MART_STRIPE_WEBHOOK_SECRET (whsec_...) to verify webhooks"
            );
        }
        let gateway = stripe_gateway::StripeGateway::new(key, opts.stripe_api_base.as_deref())?;
        return Ok(PaymentDeps {
            gateway: Arc::new(gateway),
            public_url,
            webhook_secrets: opts.stripe_webhook_secret.clone(),
            reconcile_after,
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_key = format!("sk_test_mart_{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let config = stripe_server::StripeTestConfig {
        api_key: api_key.clone(),
        webhook_url: Some(format!(
            "{}/stripe/webhook",
            public_url.trim_end_matches('/')
        )),
        webhook_secret: webhook_secret.clone(),
        public_base: base.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, stripe_server::router(config)).await {
            tracing::error!(error = %e, "Stripe test server stopped");
        }
    });
    tracing::warn!(
        stripe = %base,
        "TEST MODE: MART_STRIPE_SECRET_KEY is unset, so payments go to mart's own Stripe test server; no money moves"
    );
    Ok(PaymentDeps {
        gateway: Arc::new(stripe_gateway::StripeGateway::new(&api_key, Some(&base))?),
        public_url,
        webhook_secrets: vec![webhook_secret],
        reconcile_after,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
