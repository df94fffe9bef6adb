//! A service's PostgreSQL pool, timing every checkout: how long a caller
//! waited for a connection is the first sign of a pool too small for its
//! load (`mart_db_pool_checkout_seconds`).

use std::time::Instant;

use mart_schema::Service;

/// A service's pool, whose checkouts are timed.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    service: Service,
}

impl Pool {
    pub fn new(inner: deadpool_postgres::Pool, service: Service) -> Self {
        Self { inner, service }
    }

    /// A connection, once one is free (or the pool's wait timed out).
    pub async fn get(&self) -> Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
        let started = Instant::now();
        let got = self.inner.get().await;
        crate::measure::pool_checkout(self.service, started.elapsed());
        got
    }
}
