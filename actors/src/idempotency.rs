//! `Idempotency-Key` for requests that create things (`POST /orders/`,
//! `POST /payments/`): per user, kept 24 h. The same key with the same request
//! gets the first outcome again; with another request, a mismatch; while the
//! first is still running, "in progress".
//!
//! A service keeps its keys in `<schema>.idempotency_keys`. An accepted request
//! records its outcome in the transaction that writes what it created.

use crate::pool::Pool;
use deadpool_postgres::Transaction;
use mart_schema::UserId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest;

use crate::failure::{Failure, Infra};

/// A request running longer than this is taken as abandoned (its node died).
const ABANDONED_AFTER_SECS: f64 = 60.0;

/// How a key stands.
#[derive(Debug)]
pub enum Claim {
    /// First use: go ahead.
    New,
    /// The first request with this key is still running.
    Running,
    /// Done before: its outcome.
    Done(serde_json::Value),
    /// Used before with another request.
    Mismatch,
}

/// The idempotency keys of one service.
#[derive(Clone, Debug)]
pub struct Idempotency {
    claim: String,
    read: String,
    finish: String,
    forget: String,
}

/// A stable fingerprint of a request body.
pub fn fingerprint<T: serde::Serialize>(request: &T) -> String {
    let json = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&json))
}

impl Idempotency {
    pub fn new(schema: &str) -> Self {
        Self {
            // Keys older than a day are forgotten; an abandoned run is taken over.
            claim: format!(
                "insert into {schema}.idempotency_keys as k (user_id, key, request_hash) values ($1, $2, $3) \
                 on conflict (user_id, key) do update set request_hash = excluded.request_hash, \
                   outcome = null, created_at = now() \
                 where k.created_at < now() - interval '24 hours' \
                    or (k.outcome is null and k.created_at < now() - make_interval(secs => $4)) \
                 returning 1"
            ),
            read: format!(
                "select request_hash, outcome from {schema}.idempotency_keys where user_id = $1 and key = $2"
            ),
            finish: format!(
                "update {schema}.idempotency_keys set outcome = $3 where user_id = $1 and key = $2"
            ),
            forget: format!(
                "delete from {schema}.idempotency_keys where user_id = $1 and key = $2 and outcome is null"
            ),
        }
    }

    pub async fn claim(
        &self,
        pool: &Pool,
        user: UserId,
        key: &str,
        hash: &str,
    ) -> Result<Claim, Infra> {
        let client = pool.get().await?;
        let inserted = client
            .query_opt(&self.claim, &[&user, &key, &hash, &ABANDONED_AFTER_SECS])
            .await?;
        if inserted.is_some() {
            return Ok(Claim::New);
        }
        let row = client.query_one(&self.read, &[&user, &key]).await?;
        let stored: String = row.get(0);
        let outcome: Option<serde_json::Value> = row.get(1);
        Ok(match (stored == hash, outcome) {
            (false, _) => Claim::Mismatch,
            (true, None) => Claim::Running,
            (true, Some(outcome)) => Claim::Done(outcome),
        })
    }

    /// Records the outcome inside the transaction that wrote the result.
    pub async fn finish_in(
        &self,
        tx: &Transaction<'_>,
        user: UserId,
        key: &str,
        outcome: &serde_json::Value,
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute(&self.finish, &[&user, &key, outcome])
            .await
            .map(|_| ())
    }

    /// The statement that records an outcome (`$1` user, `$2` key, `$3`
    /// outcome), for a transaction sent in one round trip.
    pub(crate) fn finish_sql(&self) -> &str {
        &self.finish
    }

    /// Records a rejection as the key's outcome.
    pub async fn finish(
        &self,
        pool: &Pool,
        user: UserId,
        key: &str,
        outcome: &serde_json::Value,
    ) -> Result<(), Infra> {
        let client = pool.get().await?;
        client
            .execute(&self.finish, &[&user, &key, outcome])
            .await?;
        Ok(())
    }

    /// Forgets a key whose request failed for reasons a retry may fix.
    pub async fn forget(&self, pool: &Pool, user: UserId, key: &str) {
        if let Ok(client) = pool.get().await {
            let _ = client.execute(&self.forget, &[&user, &key]).await;
        }
    }
}

/// What a keyed request's first run produced.
#[derive(Debug)]
pub struct FirstRun<T> {
    pub value: T,
    /// The outcome was already recorded with what it wrote (in its transaction).
    pub recorded: bool,
}

/// The rejections a service answers for key misuse.
#[derive(Debug, Clone)]
pub struct KeyErrors<E> {
    pub in_progress: E,
    pub mismatch: E,
}

impl Idempotency {
    /// Runs a request under its optional `Idempotency-Key`: the first time it
    /// runs `first` (given the key to record with what it writes); afterwards
    /// it replays the recorded outcome. The flag says whether this is a replay.
    /// A rejection is recorded too; broken infrastructure forgets the key so a
    /// retry may succeed.
    pub async fn run<T, E>(
        &self,
        pool: &Pool,
        user: UserId,
        key: Option<&str>,
        request: &impl Serialize,
        errors: KeyErrors<E>,
        first: impl AsyncFnOnce(Option<&str>) -> Result<FirstRun<T>, Failure<E>>,
    ) -> Result<(T, bool), Failure<E>>
    where
        T: Serialize + DeserializeOwned,
        E: Serialize + DeserializeOwned + Clone,
    {
        let Some(key) = key else {
            return first(None).await.map(|run| (run.value, false));
        };
        match self.claim(pool, user, key, &fingerprint(request)).await? {
            Claim::Running => Err(Failure::Rejected(errors.in_progress)),
            Claim::Mismatch => Err(Failure::Rejected(errors.mismatch)),
            Claim::Done(outcome) => {
                let replay: Result<T, E> = serde_json::from_value(outcome).map_err(Infra::bug)?;
                replay.map(|value| (value, true)).map_err(Failure::Rejected)
            }
            Claim::New => match first(Some(key)).await {
                Ok(run) => {
                    if !run.recorded {
                        let outcome =
                            serde_json::to_value(Ok::<&T, E>(&run.value)).unwrap_or_default();
                        self.finish(pool, user, key, &outcome).await?;
                    }
                    Ok((run.value, false))
                }
                Err(Failure::Rejected(no)) => {
                    let outcome = serde_json::to_value(Err::<T, &E>(&no)).unwrap_or_default();
                    self.finish(pool, user, key, &outcome).await?;
                    Err(Failure::Rejected(no))
                }
                Err(failure) => {
                    self.forget(pool, user, key).await;
                    Err(failure)
                }
            },
        }
    }
}
