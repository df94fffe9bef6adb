//! Throwaway databases for tests: one private PostgreSQL cluster per test process
//! (or the server in `DATABASE_URL` when set), and a fresh, migrated database
//! per test, so tests never see each other's rows.

use std::path::PathBuf;
use std::sync::OnceLock;

use deadpool_postgres::Pool;

use super::{Durability, EmbeddedPostgres};
use crate::Service;

static CLUSTER: OnceLock<Result<EmbeddedPostgres, String>> = OnceLock::new();

/// A fresh database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// URL of this test's database, for processes the test starts.
    pub url: String,
    /// A pool on it.
    pub pool: Pool,
}

impl TestDb {
    /// A new empty database with every service's migrations applied.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        for service in Service::ALL {
            super::migrate(&db.pool, *service)
                .await
                .unwrap_or_else(|e| panic!("migrating the test database: {e}"));
        }
        db
    }

    /// A new database with nothing in it, for tests of migration itself.
    pub async fn empty() -> Self {
        let admin_url = server_url("postgres");
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("create database {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        drop(client);
        let _ = connection.await;
        let url = server_url(&name);
        let pool = super::pool(&url, 16).unwrap_or_else(|e| panic!("pool: {e}"));
        Self { url, pool }
    }
}

/// URL of database `db` on the test server.
pub fn server_url(db: &str) -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let mut config: tokio_postgres::Config =
            url.parse().unwrap_or_else(|e| panic!("DATABASE_URL: {e}"));
        config.dbname(db);
        return super::url_of(&config);
    }
    let cluster = CLUSTER.get_or_init(|| {
        let root = std::env::temp_dir().join("mart-test-pg");
        remove_stale(&root);
        EmbeddedPostgres::start(
            &root.join(std::process::id().to_string()),
            Durability::Throwaway,
        )
        .map_err(|e| e.to_string())
    });
    match cluster {
        Ok(pg) => pg.url(db),
        Err(e) => panic!("test PostgreSQL: {e}"),
    }
}

/// Clusters of test processes that have ended: their servers died with them
/// (parent-death signal), so only the files are left.
fn remove_stale(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
