//! Database plumbing shared by every service: pools, per-service migrations, and
//! the embedded PostgreSQL that `mart` runs when no `DATABASE_URL` is given.

mod embedded;
pub mod tls;

pub use embedded::{Durability, EmbeddedError, EmbeddedPostgres};

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use refinery::Migration;

use crate::Service;

/// Why a pool or migration could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot create pool: {0}")]
    Pool(String),
    #[error("cannot reach the database: {0}")]
    Connect(String),
    #[error("migration of {service} failed: {reason}")]
    Migrate {
        service: &'static str,
        reason: String,
    },
}

/// A connection pool for one service's database, over TLS as the URL's
/// `sslmode` says (see [`tls`]).
pub fn pool(url: &str, max_size: usize) -> Result<Pool, DbError> {
    let (pg, tls) = tls::connector(url)?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        // A caller never waits forever for a connection: a full pool is an error
        // it can report, not a hang.
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// `url` pointed at database `db`, every other setting kept (TLS included):
/// both the URL form and the key-value form.
pub fn with_dbname(url: &str, db: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        let (before_query, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        let authority = before_query
            .split_once('/')
            .map_or(before_query, |(a, _)| a);
        return match query {
            Some(query) => format!("{scheme}{authority}/{db}?{query}"),
            None => format!("{scheme}{authority}/{db}"),
        };
    }
    let mut parts: Vec<String> = url
        .split_whitespace()
        .filter(|part| !part.starts_with("dbname="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("dbname={db}"));
    parts.join(" ")
}

/// A `postgresql://` URL for `config` (TCP hosts only), e.g. to hand to
/// another process or to point at another database on the same server.
pub fn url_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgresql://{user}{password}@{host}:{port}/{db}")
}

/// The outbox tables, the same for every service, created in its own schema.
const OUTBOX_TEMPLATE: &str = include_str!("../migrations/outbox.sql");
/// The outbox's trace column, added to every service's outbox ({schema}).
const OUTBOX_TRACE: &str = include_str!("../migrations/outbox_trace.sql");
/// Every service's outbox without its event-id index ({schema}).
const OUTBOX_EVENT_INDEX: &str = include_str!("../migrations/outbox_event_index.sql");

/// The migrations of `service`, in order. V1 is always the outbox.
pub fn migrations(service: Service) -> Result<Vec<Migration>, DbError> {
    let schema = service.schema();
    let fail = |e: refinery::Error| DbError::Migrate {
        service: service.name(),
        reason: e.to_string(),
    };
    let own: &[(&str, &str)] = match service {
        Service::Users => &[
            (
                "V2__users",
                include_str!("../migrations/users/V2__users.sql"),
            ),
            (
                "V3__sessions",
                include_str!("../migrations/users/V3__sessions.sql"),
            ),
            (
                "V4__refresh_expiry",
                include_str!("../migrations/users/V4__refresh_expiry.sql"),
            ),
            ("V5__outbox_trace", OUTBOX_TRACE),
            ("V6__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
        Service::Products => &[
            (
                "V2__products",
                include_str!("../migrations/products/V2__products.sql"),
            ),
            (
                "V3__changes_feed",
                include_str!("../migrations/products/V3__changes_feed.sql"),
            ),
            ("V4__outbox_trace", OUTBOX_TRACE),
            ("V5__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
        Service::Inventory => &[
            (
                "V2__inventory",
                include_str!("../migrations/inventory/V2__inventory.sql"),
            ),
            (
                "V3__stock_version",
                include_str!("../migrations/inventory/V3__stock_version.sql"),
            ),
            (
                "V4__returned_lines",
                include_str!("../migrations/inventory/V4__returned_lines.sql"),
            ),
            ("V5__outbox_trace", OUTBOX_TRACE),
            (
                "V6__lines_without_stock_key",
                include_str!("../migrations/inventory/V6__lines_without_stock_key.sql"),
            ),
            ("V7__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
        Service::Orders => &[
            (
                "V2__orders",
                include_str!("../migrations/orders/V2__orders.sql"),
            ),
            ("V3__outbox_trace", OUTBOX_TRACE),
            ("V4__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
        Service::Payments => &[
            (
                "V2__payments",
                include_str!("../migrations/payments/V2__payments.sql"),
            ),
            (
                "V3__orders_learn_from_the_outbox",
                include_str!("../migrations/payments/V3__orders_learn_from_the_outbox.sql"),
            ),
            ("V4__outbox_trace", OUTBOX_TRACE),
            ("V5__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
        Service::Notifications => &[
            (
                "V2__notifications",
                include_str!("../migrations/notifications/V2__notifications.sql"),
            ),
            ("V3__outbox_trace", OUTBOX_TRACE),
            (
                "V4__traced_emails",
                include_str!("../migrations/notifications/V4__traced_emails.sql"),
            ),
            ("V5__outbox_event_index", OUTBOX_EVENT_INDEX),
        ],
    };
    let mut all = vec![
        Migration::unapplied("V1__outbox", &OUTBOX_TEMPLATE.replace("{schema}", schema))
            .map_err(fail)?,
    ];
    for (name, sql) in own {
        let sql = sql.replace("{schema}", schema);
        all.push(Migration::unapplied(name, &sql).map_err(fail)?);
    }
    Ok(all)
}

/// Creates the service's schema if needed and applies its pending migrations.
/// Each service keeps its own history table inside its schema, so services can
/// share one server or live on separate ones.
pub async fn migrate(pool: &Pool, service: Service) -> Result<usize, DbError> {
    let schema = service.schema();
    let fail = |reason: String| DbError::Migrate {
        service: service.name(),
        reason,
    };
    let mut client = pool.get().await.map_err(|e| DbError::Connect(chain(&e)))?;
    // Replicas started at the same moment on a fresh database take turns:
    // one applies, the others then find nothing to do. The lock is the
    // session's, so it is released below whatever happens in between.
    let lock = MIGRATION_LOCK + i64::from(service as u8);
    client
        .execute("select pg_advisory_lock($1)", &[&lock])
        .await
        .map_err(|e| fail(chain(&e)))?;
    let applied = async {
        client
            .batch_execute(&format!("create schema if not exists {schema}"))
            .await
            .map_err(|e| fail(chain(&e)))?;
        let report = refinery::Runner::new(&migrations(service)?)
            .set_migration_table_name(format!("{schema}.schema_history"))
            .run_async(&mut **client)
            .await
            .map_err(|e| fail(chain(&e)))?;
        Ok(report.applied_migrations().len())
    }
    .await;
    let unlocked = client
        .execute("select pg_advisory_unlock($1)", &[&lock])
        .await;
    if unlocked.is_err() {
        // A lock we cannot release must not go back to the pool with it.
        let _ = deadpool_postgres::Object::take(client);
    }
    applied
}

/// An error and every cause under it, on one line: `tokio_postgres` says
/// only "db error" itself, and what PostgreSQL or the resolver said (a wrong
/// password, an unknown database or host) is in its sources.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// The advisory lock key of service migrations ("mart" in ASCII, then the
/// service); PostgreSQL advisory keys are shared by the whole database.
const MIGRATION_LOCK: i64 = 0x6d61_7274 << 8;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod url_tests {
    #[test]
    fn another_database_keeps_every_other_setting() {
        assert_eq!(
            super::with_dbname(
                "postgres://u:p@db:5433/mart?sslmode=verify-full&sslrootcert=/ca.pem",
                "scratch"
            ),
            "postgres://u:p@db:5433/scratch?sslmode=verify-full&sslrootcert=/ca.pem"
        );
        assert_eq!(
            super::with_dbname("postgresql://db", "scratch"),
            "postgresql://db/scratch"
        );
        assert_eq!(
            super::with_dbname("host=db dbname=mart sslmode=require", "scratch"),
            "host=db sslmode=require dbname=scratch"
        );
    }
}
