//! Which access tokens are revoked, known on every node with an edge.
//!
//! A revocation is a floor for a subject: a user's token version (raised by
//! a password or role change, or a delete) or a session (ended by a logout or
//! a reused refresh token). A token passes when its version is at least its
//! user's floor and its session has none. Each node's
//! [`crate::users::TokenKeeper`] asks the user service for the floors raised
//! since its last look every [`SYNC_EVERY`]; the edge trusts what it knows only
//! while that look is younger than [`LEASE`], and otherwise asks the user
//! service about the token's own subjects (no answer: 503, never a revoked
//! token let through). Floors older than the longest access-token life concern
//! no live token and are forgotten.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::Verified;

/// How often each node looks for floors raised since its last look.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// How long what a node knows is trusted after its last successful look.
pub const LEASE: Duration = Duration::from_secs(1);

/// A raised floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    pub subject: Uuid,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
}

/// The floors raised after a point in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorChanges {
    /// Ask from here next time (the database's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
    /// Floors raised before this concern no live token.
    #[serde(with = "time::serde::rfc3339")]
    pub horizon: OffsetDateTime,
    pub floors: Vec<Floor>,
}

/// The floor of every subject a token names, in the order [`subjects`] gives.
pub fn subjects(token: &Verified) -> Vec<Uuid> {
    std::iter::once(token.user.0).chain(token.session).collect()
}

/// Whether `token` passes the floors `floors` (of [`subjects`]`(token)`).
pub fn passes(token: &Verified, floors: &[i32]) -> bool {
    let user = floors.first().copied().unwrap_or_default();
    let session = floors.get(1).copied().unwrap_or_default();
    token.version >= user && session == 0
}

/// Why [`check`] did not pass a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpassed {
    Revoked,
    /// This node's knowledge is older than [`LEASE`]: ask the user service.
    Unknown,
}

#[derive(Default)]
struct Known {
    floors: HashMap<Uuid, (i32, OffsetDateTime)>,
    synced: Option<Instant>,
}

static KNOWN: LazyLock<RwLock<Known>> = LazyLock::new(RwLock::default);

/// Whether `token` is revoked, from what this node knows.
pub fn check(token: &Verified) -> Result<(), Unpassed> {
    let known = KNOWN
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if known.synced.is_none_or(|at| at.elapsed() > LEASE) {
        return Err(Unpassed::Unknown);
    }
    let floors: Vec<i32> = subjects(token)
        .iter()
        .map(|s| known.floors.get(s).map_or(0, |(version, _)| *version))
        .collect();
    if passes(token, &floors) {
        Ok(())
    } else {
        Err(Unpassed::Revoked)
    }
}

/// Applies what a look at the user service found, and renews the lease.
pub(crate) fn learn(changes: FloorChanges) {
    let mut known = KNOWN
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for floor in changes.floors {
        let entry = known
            .floors
            .entry(floor.subject)
            .or_insert((floor.version, floor.changed_at));
        if floor.version >= entry.0 {
            *entry = (floor.version, floor.changed_at);
        }
    }
    known
        .floors
        .retain(|_, (_, changed_at)| *changed_at >= changes.horizon);
    known.synced = Some(Instant::now());
}

/// Forgets everything (a keeper starting): nothing is trusted until a look.
pub(crate) fn forget() {
    let mut known = KNOWN
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *known = Known::default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use mart_schema::UserId;
    use mart_schema::user::{Caller, Role};

    fn token(version: i32, session: Option<Uuid>) -> Verified {
        let user = UserId::new();
        Verified {
            caller: Caller::user(user, Role::Customer),
            user,
            version,
            session,
        }
    }

    #[test]
    fn a_token_passes_at_or_above_its_user_s_floor_in_a_live_session() {
        let session = Some(Uuid::new_v4());
        assert!(passes(&token(0, None), &[0]));
        assert!(passes(&token(2, session), &[2, 0]));
        assert!(
            !passes(&token(1, session), &[2, 0]),
            "password changed since"
        );
        assert!(!passes(&token(2, session), &[2, 1]), "session ended");
        assert!(!passes(&token(5, None), &[i32::MAX]), "user deleted");
    }
}
