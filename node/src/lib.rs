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
//! - [`App`]: a node built from its options (databases, cluster membership,
//!   hosted services, Kafka bridge, edge) and run until told to stop; used by
//!   `main` and by tests.
//! - `seed`: `mart seed`, the demo catalog and accounts.
//! - [`run`]: `serve`, `migrate`, `bench`, `seed` and `admin create`, used by `main`.

mod app;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod mail;
mod seed;
pub mod stripe_gateway;
pub mod stripe_server;
pub mod telemetry;

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::ExposeSecret;

use anyhow::Context;
use deadpool_postgres::Pool;
use mart_actors::auth::TokenKeys;
use mart_actors::users::{AdminOutcome, UserService};
use mart_schema::Service;
use mart_schema::db::{self, Durability, EmbeddedPostgres};

pub use crate::app::App;
use crate::config::{AdminAction, Cli, Command, NodeOptions};

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = cli.node;
    opts.validate().map_err(anyhow::Error::msg)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            App::build(opts)
                .await?
                .run_until_stopped(shutdown_signal())
                .await
        }
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
        Command::Seed => seed::seed(&opts).await,
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
        Command::BenchBareActors { count } => {
            let footprint = bench::bare_actor_footprint(count).await?;
            println!("{}", serde_json::to_string(&footprint)?);
            Ok(())
        }
        Command::Admin {
            action:
                AdminAction::Create {
                    email,
                    create_data_dir,
                    ..
                },
        } => {
            let embedded = opts.database_url(Service::Users).is_none();
            let data = opts.data_dir.join("postgres");
            if embedded && !create_data_dir && !data.exists() {
                anyhow::bail!(
                    "no database at {}: run this where the node runs (or pass --data-dir), \
                     set DATABASE_URL, or pass --create-data-dir to start a new one",
                    data.display()
                );
            }
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let dbs = Databases::open(&opts, &[Service::Users]).await?;
            let outcome = admin(&opts, &dbs, &email, password).await;
            dbs.close();
            let database = match opts.database_url(Service::Users) {
                Some(url) => redacted(&url),
                None => format!("the embedded database in {}", data.display()),
            };
            println!("{} (in {database})", outcome?);
            Ok(())
        }
    }
}

/// A database URL fit to print: its password replaced.
fn redacted(url: &str) -> String {
    match mart_schema::db::tls::connector(url) {
        Ok((config, _)) => {
            let host = config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_default();
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let db = config.get_dbname().unwrap_or("postgres");
            let user = config.get_user().unwrap_or("postgres");
            format!("postgresql://{user}@{host}:{port}/{db}")
        }
        Err(_) => "the configured database".into(),
    }
}

/// Pools for the hosted services, and the embedded server if one was needed.
#[derive(Debug)]
pub(crate) struct Databases {
    pub(crate) pools: BTreeMap<Service, Pool>,
    embedded: Option<EmbeddedPostgres>,
}

impl Databases {
    /// Opens (and migrates) each service's database. Services without a URL
    /// share the embedded PostgreSQL.
    pub(crate) async fn open(opts: &NodeOptions, services: &[Service]) -> anyhow::Result<Self> {
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

    pub(crate) fn close(self) {
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

/// The token keys: EdDSA from key files (or one generated into the data
/// directory), or HS256 from `MART_JWT_SECRET` (or a secret generated once and
/// kept in the data directory: fine for one node; a cluster must share one).
pub(crate) fn token_keys(opts: &NodeOptions) -> anyhow::Result<Arc<TokenKeys>> {
    if opts.jwt_algorithm == "eddsa" {
        return ed25519_keys(opts).map(Arc::new);
    }
    let given = opts.jwt_secret.as_ref().map(|s| s.expose_secret());
    let secret = match given {
        // HS256's key should be as long as its hash: 32 bytes.
        Some(secret) if secret.len() >= 32 => secret.to_owned(),
        Some(_) => {
            anyhow::bail!("MART_JWT_SECRET must be at least 32 bytes (e.g. openssl rand -hex 32)")
        }
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

fn ed25519_keys(opts: &NodeOptions) -> anyhow::Result<TokenKeys> {
    use anyhow::Context;
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading JWT key {}", path.display()))
    };
    let signing = match &opts.jwt_key_file {
        Some(path) => read(path)?,
        None => {
            let path = opts.data_dir.join("jwt-ed25519.der");
            match std::fs::read(&path) {
                Ok(key) => key,
                Err(_) => {
                    std::fs::create_dir_all(&opts.data_dir)?;
                    let key = mart_actors::auth::generate_ed25519();
                    write_private_bytes(&path, &key)?;
                    tracing::warn!(file = %path.display(), "MART_JWT_KEY_FILE is unset: generated an Ed25519 key; give every node of a cluster the same one");
                    key
                }
            }
        }
    };
    let previous = opts
        .jwt_previous_key_files
        .iter()
        .map(|path| read(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    TokenKeys::ed25519(&signing, &previous, opts.token_ttl)
        .context("MART_JWT_KEY_FILE / MART_JWT_PREVIOUS_KEY_FILES")
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    write_private_bytes(path, contents.as_bytes())
}

fn write_private_bytes(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

pub(crate) async fn admin(
    opts: &NodeOptions,
    dbs: &Databases,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let pool = dbs
        .pools
        .get(&Service::Users)
        .context("the user service's database is not configured")?;
    let users = UserService::new(
        mart_actors::pool::Pool::new(pool.clone(), Service::Users),
        token_keys(opts)?,
    );
    let outcome = users
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

pub async fn shutdown_signal() {
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
