//! Every node's keeper of the revocation floors (see
//! [`crate::auth::revocations`]): it asks the user service, wherever it runs,
//! for the floors raised since its last look, every
//! [`revocations::SYNC_EVERY`](crate::auth::revocations::SYNC_EVERY).

use ractor::{Actor, ActorProcessingErr, ActorRef};
use time::OffsetDateTime;

use super::Users;
use crate::auth::revocations;

/// Floors are asked for this far before the last look: a transaction's
/// clock reads when it wrote, not when it committed.
const OVERLAP: time::Duration = time::Duration::seconds(2);

#[derive(Debug, Clone, Copy)]
pub struct TokenKeeper;

#[derive(Debug)]
pub struct KeeperState {
    users: Users,
    since: Option<OffsetDateTime>,
}

#[derive(Debug, ractor_cluster::RactorMessage)]
pub enum KeeperMsg {
    Sync,
}

impl Actor for TokenKeeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        revocations::forget();
        let _ = myself.cast(KeeperMsg::Sync);
        myself.send_interval(revocations::SYNC_EVERY, || KeeperMsg::Sync);
        Ok(KeeperState {
            users: Users::default(),
            since: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        KeeperMsg::Sync: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let since = state.since.map(|at| at - OVERLAP);
        // Not reachable: the lease runs out and the edge asks per token.
        if let Ok(changes) = state.users.floors_since(since).await {
            state.since = Some(changes.as_of);
            revocations::learn(changes);
        }
        Ok(())
    }
}
