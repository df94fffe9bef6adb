//! The refresh-token sweeper, on every node hosting users: deletes refresh
//! tokens past their expiry, a bounded chunk at a time. Used tokens are kept
//! until then, since presenting a used one is how a stolen token is caught.
//! Several nodes sweeping at once only share the work.

use std::time::Duration;

use crate::pool::Pool;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// How often the sweeper looks.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement: short transactions, whatever the backlog.
const CHUNK: i64 = 1000;

const SWEEP: &str = "delete from users.refresh_tokens where token_hash in ( \
       select token_hash from users.refresh_tokens where expires_at < now() limit $1)";

/// Deletes expired refresh tokens; how many went.
pub async fn sweep_expired_refresh_tokens(pool: &Pool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let mut swept = 0;
    loop {
        let deleted = client
            .execute(SWEEP, &[&CHUNK])
            .await
            .map_err(|e| crate::failure::Infra::from(e).chain())?;
        swept += deleted;
        if deleted < CHUNK.unsigned_abs() {
            return Ok(swept);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshSweeper;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum SweeperMsg {
    Sweep,
}

impl Actor for RefreshSweeper {
    type Msg = SweeperMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Self::State, ActorProcessingErr> {
        let _ = myself.cast(SweeperMsg::Sweep);
        myself.send_interval(SWEEP_EVERY, || SweeperMsg::Sweep);
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        SweeperMsg::Sweep: Self::Msg,
        pool: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A database outage is not a crash: the next round tries again.
        match sweep_expired_refresh_tokens(pool).await {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(swept, "expired refresh tokens swept"),
            Err(e) => tracing::debug!(error = %e, "refresh token sweep failed; will retry"),
        }
        Ok(())
    }
}
