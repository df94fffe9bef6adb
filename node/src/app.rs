//! A node: built from its options, run until told to stop. `main` and the
//! tests start nodes the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;

use anyhow::Context;
use mart_actors::auth::TokenKeys;
use mart_actors::payments::PaymentDeps;
use mart_actors::supervisor::SupervisorMsg;
use mart_actors::{Hosted, ServiceDeps, ServiceSettings};
use mart_schema::Service;
use ractor::ActorRef;
use tokio::net::TcpListener;

use crate::config::NodeOptions;
use crate::{Databases, admin, cluster, mail, stripe_gateway, stripe_server, token_keys};

/// A node with everything started: databases migrated, cluster joined,
/// hosted services running, the edge bound (not yet serving).
#[derive(Debug)]
pub struct App {
    opts: NodeOptions,
    dbs: Databases,
    hosted: Arc<Hosted>,
    membership: Option<Arc<cluster::Membership>>,
    bridge: Option<Bridge>,
    edge: Option<TcpListener>,
    /// `--metrics-addr`: Prometheus scrapes here instead of the edge.
    metrics_listener: Option<TcpListener>,
    keys: Arc<TokenKeys>,
}

impl App {
    /// Opens (and migrates) the hosted services' databases, creates the
    /// Binds the edge, opens the databases, makes sure of the configured
    /// admin, joins the cluster, and starts the hosted services and the Kafka
    /// bridge.
    pub async fn build(opts: NodeOptions) -> anyhow::Result<App> {
        // Bound first: a port in use fails the start before anything else
        // runs, and nothing started here (the embedded PostgreSQL, the Stripe
        // test server) can be handed the edge's port by the kernel meanwhile.
        let edge = match opts.http_addr.0 {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --http-addr {addr}"))?,
            ),
            None => None,
        };
        let metrics_listener = match opts.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?,
            ),
            None => None,
        };
        // Before the services start, so nothing they count is lost.
        crate::telemetry::metrics();
        // Checked before anything starts: a setting librdkafka refuses would
        // have the bridge restart forever while the node looks healthy.
        let kafka = bridge_config(&opts)?;
        let hosting = opts.services.0.clone();
        let dbs = Databases::open(&opts, &hosting).await?;
        if let (Some(email), Some(password), true) = (
            &opts.admin_email,
            &opts.admin_password,
            hosting.contains(&Service::Users),
        ) {
            // Outside the macro: a log level that drops the line must not
            // drop the admin with it.
            let outcome = admin(&opts, &dbs, email, password.expose_secret()).await?;
            tracing::info!("{outcome}");
        }
        let membership = match opts.cluster_addr {
            Some(addr) => Some(Arc::new(
                cluster::Membership::join(
                    &opts.node_name,
                    addr,
                    opts.cluster_advertise.clone(),
                    opts.cookie
                        .as_ref()
                        .map(|c| c.expose_secret().to_owned())
                        .unwrap_or_default(),
                    opts.peers.clone(),
                    tls_files(&opts),
                )
                .await?,
            )),
            None => None,
        };
        let keys = token_keys(&opts)?;
        let deps = ServiceDeps {
            mailer: match hosting.contains(&Service::Notifications) {
                true => Some(mailer(&opts)?),
                false => None,
            },
            payments: match hosting.contains(&Service::Payments) {
                true => Some(payment_deps(&opts).await?),
                false => None,
            },
            pools: dbs.pools.clone(),
            keys: keys.clone(),
            settings: ServiceSettings {
                reservation_ttl: opts.reservation_ttl,
            },
        };
        let hosted = Hosted::start(&opts.node_name, deps)
            .await
            .map_err(anyhow::Error::msg)?;
        tracing::info!(node = %opts.node_name, services = ?hosted.services(), "services started");
        let bridge = kafka.map(start_bridge);
        Ok(App {
            opts,
            dbs,
            hosted: Arc::new(hosted),
            membership,
            bridge,
            edge,
            metrics_listener,
            keys,
        })
    }

    /// Where the edge listens, if this node has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.edge.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then leaves the cluster gracefully.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The recorder installed in `build`; this only takes its handle.
        let render = crate::telemetry::metrics();
        let sampling = tokio::spawn(sample(
            self.dbs
                .pools
                .iter()
                .map(|(service, pool)| (*service, pool.clone()))
                .collect(),
            self.membership.clone(),
        ));
        let scraping = match (self.metrics_listener, &render) {
            (Some(listener), Some(render)) => {
                tracing::info!("metrics at http://{}/metrics", listener.local_addr()?);
                let render = render.clone();
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let render = render.clone();
                        async move { mart_http::metrics_text(&render) }
                    }),
                );
                Some(tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }))
            }
            _ => None,
        };
        // On the edge only when not served on a port of their own.
        let edge_metrics = render.filter(|_| scraping.is_none());
        match self.edge {
            Some(listener) => {
                // This node among the configured peers is not a peer.
                let peers = self
                    .membership
                    .as_ref()
                    .map_or_else(Vec::new, |m| m.peers().to_vec());
                let (membership, me) = (self.membership.clone(), self.opts.node_name.clone());
                let cluster: mart_http::ClusterView = Arc::new(move || {
                    let (membership, me, peers) = (membership.clone(), me.clone(), peers.clone());
                    Box::pin(async move { cluster::view(membership.as_deref(), &me, &peers).await })
                });
                let state = mart_http::AppState::new(
                    self.keys.clone(),
                    self.opts.call_timeout,
                    self.hosted.clone(),
                    cluster,
                )
                .with_cors(self.opts.cors());
                let state = match edge_metrics {
                    Some(render) => state.with_metrics(render),
                    None => state,
                };
                let app = mart_http::router(state);
                tracing::info!("edge listening on http://{}", listener.local_addr()?);
                // With each connection's address: logins are throttled per address.
                axum::serve(
                    listener,
                    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                        std::net::SocketAddr,
                    >(app),
                )
                .with_graceful_shutdown(shutdown)
                .await?;
            }
            None => shutdown.await,
        }
        tracing::info!("shutting down");
        sampling.abort();
        if let Some(scraping) = scraping {
            scraping.abort();
        }
        // Not behind Arc::try_unwrap: a clone still held by a connection task
        // would silently skip the graceful leave, and with it the outbox flush and
        // the wait for actors mid-message (a mail sent twice by the next owner).
        let leaving = std::time::Instant::now();
        self.hosted.stop().await;
        tracing::info!(took = ?leaving.elapsed(), "services stopped");
        if let Some(bridge) = self.bridge {
            bridge.stop().await;
        }
        if let Some(membership) = self.membership {
            membership.leave();
        }
        self.dbs.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every few seconds, the gauges nobody updates as they change: the
/// connection pools, and the cluster as this node sees it.
async fn sample(
    pools: Vec<(Service, deadpool_postgres::Pool)>,
    membership: Option<Arc<cluster::Membership>>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        for (service, pool) in &pools {
            mart_actors::measure::pool(*service, pool.status());
        }
        if let Some(membership) = &membership {
            let connected = membership.sessions().await.len();
            metrics::gauge!("mart_cluster_peers_connected").set(connected as f64);
            metrics::gauge!("mart_cluster_peers_configured").set(membership.peers().len() as f64);
        }
    }
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

/// The Kafka bridge, starting in the background: creating its topics may
/// wait seconds on brokers that are slow or away, and nothing else (the
/// edge, the services, whose outboxes keep every event) waits for it.
#[derive(Debug)]
struct Bridge {
    starting: tokio::task::JoinHandle<()>,
    started: Arc<std::sync::OnceLock<ActorRef<SupervisorMsg>>>,
}

impl Bridge {
    /// Stops the bridge once its batch in hand is produced and answered: a
    /// process that exits first leaves that batch unacknowledged, and the
    /// next node's bridge produces it again.
    async fn stop(self) {
        self.starting.abort();
        if let Some(bridge) = self.started.get() {
            let reason = Some("node shutting down".into());
            let _ = bridge
                .stop_and_wait(reason, Some(std::time::Duration::from_secs(5)))
                .await;
        }
    }
}

/// The Kafka bridge's settings, checked, when brokers are configured; off
/// (said once) otherwise.
fn bridge_config(opts: &NodeOptions) -> anyhow::Result<Option<mart_bridge::BridgeConfig>> {
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
    config.check().map_err(anyhow::Error::msg)?;
    Ok(Some(config))
}

/// Starts the Kafka bridge in the background.
fn start_bridge(config: mart_bridge::BridgeConfig) -> Bridge {
    let started = Arc::new(std::sync::OnceLock::new());
    let handle = started.clone();
    let starting = tokio::spawn(async move {
        // Before the first record: topics made by a broker's auto-create
        // would get its defaults, not the configured partitions.
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
        .await;
        match supervisor {
            Ok(supervisor) => {
                let _ = handle.set(supervisor);
            }
            Err(e) => tracing::error!(error = %e, "the Kafka bridge could not start"),
        }
    });
    Bridge { starting, started }
}

/// How mail leaves: SMTP when configured, else `.eml` files in the data directory.
fn mailer(opts: &NodeOptions) -> anyhow::Result<Arc<dyn mart_actors::notifications::Mailer>> {
    match &opts.smtp_url {
        Some(url) => Ok(Arc::new(mail::LettreMailer::smtp(
            url.expose_secret(),
            &opts.mail_from,
        )?)),
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
        let gateway = stripe_gateway::StripeGateway::new(
            key.expose_secret(),
            opts.stripe_api_base.as_deref(),
        )?;
        return Ok(PaymentDeps {
            gateway: Arc::new(gateway),
            public_url,
            webhook_secrets: opts
                .stripe_webhook_secret
                .iter()
                .map(|s| s.expose_secret().to_owned())
                .collect(),
            reconcile_after,
            return_urls: return_urls(opts),
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
        return_urls: return_urls(opts),
    })
}

fn return_urls(opts: &NodeOptions) -> mart_actors::payments::ReturnUrls {
    mart_actors::payments::ReturnUrls {
        success: opts.checkout_success_url.clone(),
        cancel: opts.checkout_cancel_url.clone(),
    }
}
