//! One actor per entity (a product's stock, an open order) on this node: the
//! map an owner router keeps, written once.
//!
//! The router joins its service's owner group (see [`crate::owners`]) and
//! watches it: when membership changes, entity actors finish what is in their
//! mailboxes and stop; each entity's (new or same) owner loads it again from
//! PostgreSQL on its next request or sweep.
//!
//! An entity's actor is started without waiting for it to load (its messages
//! queue meanwhile), so one slow load never holds up the router. One that is
//! stopping is replaced at once; one that ended is forgotten, and the next
//! message for its entity starts it again from PostgreSQL, or from what it
//! left when it stopped idle (`P`, parked here for [`PARKED_FOR`]: an actor
//! costs ~14 kB of ractor's channels and task, a parked entity a few hundred
//! bytes). A hand-off forgets every parked entity: they reload.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use mart_schema::Service;
use ractor::{Actor, ActorCell, ActorId, ActorRef, SupervisionEvent};

use crate::owners;

#[derive(Debug)]
pub(crate) struct Entities<K, M, P = ()> {
    service: Service,
    actors: HashMap<K, ActorRef<M>>,
    keys: HashMap<ActorId, K>,
    /// What idle actors left, and since when.
    parked: HashMap<K, (P, Instant)>,
    sweeps: u64,
}

/// Every this many sweeps of its router (10 s) an entity actor is asked
/// whether it has been idle long enough to stop.
const TICK_EVERY_SWEEPS: u64 = 2;
/// How long what an idle actor left is kept for its next request.
const PARKED_FOR: Duration = Duration::from_secs(600);

impl<K, M, P> Entities<K, M, P>
where
    K: Eq + Hash + Copy + std::fmt::Display + Into<uuid::Uuid> + Send + 'static,
    M: ractor::Message,
{
    /// Joins `router` to `service`'s owner group and watches the group; the
    /// (empty) map of the entities it will run.
    pub(crate) fn join(service: Service, router: &ActorCell) -> Self {
        ractor::pg::join(owners::group(service), vec![router.clone()]);
        ractor::pg::monitor(owners::group(service), router.clone());
        Self {
            service,
            actors: HashMap::new(),
            keys: HashMap::new(),
            parked: HashMap::new(),
            sweeps: 0,
        }
    }

    /// Whether this node owns `key` now.
    pub(crate) fn owns(&self, key: K) -> bool {
        owners::is_mine(self.service, key.into())
    }

    /// The running actor of `key`, or a new one made by `make` (from what
    /// the last one parked, if anything), linked to `parent`.
    pub(crate) fn get_or_start<A>(
        &mut self,
        key: K,
        parent: &ActorCell,
        make: impl FnOnce(Option<P>) -> (A, A::Arguments),
    ) -> Result<ActorRef<M>, String>
    where
        A: Actor<Msg = M>,
    {
        if let Some(actor) = self.actors.get(&key) {
            // A just-spawned actor is `Unstarted` until its task first runs;
            // taking that for dead started a duplicate per concurrent request
            // (each then fenced by the other's write, its callers retrying).
            use ractor::ActorStatus::{Running, Starting, Unstarted, Upgrading};
            if matches!(
                actor.get_status(),
                Unstarted | Starting | Running | Upgrading
            ) {
                return Ok(actor.clone());
            }
            self.actors.remove(&key);
        }
        let parked = self.parked.remove(&key).map(|(parked, _)| parked);
        let (handler, args) = make(parked);
        let (actor, starting) =
            ractor::ActorRuntime::spawn_linked_instant(None, handler, args, parent.clone())
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Ok(Err(e)) = starting.await {
                tracing::warn!(entity = %key, error = %e, "entity actor could not load");
            }
        });
        self.keys.insert(actor.get_id(), key);
        self.actors.insert(key, actor.clone());
        crate::measure::entity_actors(self.service, self.actors.len());
        Ok(actor)
    }

    /// Counts the router's sweeps; every [`TICK_EVERY_SWEEPS`]th sends
    /// `tick()` to every entity actor (the idle check: one timer on the router
    /// instead of one per actor).
    pub(crate) fn swept(&mut self, tick: impl Fn() -> M) {
        self.sweeps += 1;
        if self.sweeps.is_multiple_of(TICK_EVERY_SWEEPS) {
            for actor in self.actors.values() {
                let _ = actor.cast(tick());
            }
            let before = self.parked.len();
            self.parked
                .retain(|_, (_, since)| since.elapsed() < PARKED_FOR);
            if self.parked.len() != before {
                self.parked.shrink_to_fit();
                crate::measure::entities_parked(self.service, self.parked.len());
            }
        }
    }

    /// The router is stopping: peers stop routing here, and every entity
    /// actor stops once its mailbox is empty.
    pub(crate) fn leave(&self, router: &ActorCell) {
        ractor::pg::leave(owners::group(self.service), vec![router.clone()]);
        for actor in self.actors.values() {
            let _ = actor.drain();
        }
    }

    /// A supervision event of the router: membership changed, or an entity
    /// actor ended. What an actor that ended leaves (its state `S`) is
    /// parked if `park` makes something of it and this node still owns it.
    pub(crate) fn supervise<S: ractor::State>(
        &mut self,
        event: SupervisionEvent,
        park: impl FnOnce(S) -> Option<P>,
    ) {
        match event {
            SupervisionEvent::ProcessGroupChanged(_) => self.hand_off(),
            SupervisionEvent::ActorTerminated(cell, left, _) => {
                let Some(key) = self.forget(cell.get_id()) else {
                    return;
                };
                let parked = left
                    .and_then(|mut left| left.take::<S>().ok())
                    .and_then(park);
                if let Some(parked) = parked
                    && self.owns(key)
                {
                    self.parked.insert(key, (parked, Instant::now()));
                    crate::measure::entities_parked(self.service, self.parked.len());
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!(error = %err, "entity actor crashed; it reloads on next use");
                self.forget(cell.get_id());
            }
            _ => {}
        }
    }

    /// Membership changed: every entity actor finishes what is already in its
    /// mailbox, then stops. Those this node no longer owns move to their new
    /// owner; the others reload too, because while views of the membership
    /// differed another node may have written them, and an actor that only
    /// reads would never notice its memory is stale.
    fn hand_off(&mut self) {
        if !self.actors.is_empty() {
            let actors = self.actors.len();
            // This node's own router left: the node is stopping, and its
            // entities load on their new owners, not here.
            if ractor::pg::get_local_members(&owners::group(self.service)).is_empty() {
                tracing::info!(service = %self.service, actors, "leaving; entity actors finish and stop");
            } else {
                tracing::info!(service = %self.service, actors, "membership changed; entity actors reload");
            }
        }
        for (_, actor) in self.actors.drain() {
            let _ = actor.drain();
        }
        // The drained actors are not this map's any more: nothing they leave
        // is parked, and what was parked may be stale by now.
        self.keys.clear();
        self.parked = HashMap::new();
        crate::measure::ownership_changed(self.service);
        crate::measure::entity_actors(self.service, 0);
        crate::measure::entities_parked(self.service, 0);
    }

    /// Forgets an actor that ended; its entity's key if it was the entity's
    /// current actor.
    fn forget(&mut self, id: ActorId) -> Option<K> {
        let key = self.keys.remove(&id)?;
        if self.actors.get(&key).is_none_or(|a| a.get_id() != id) {
            return None;
        }
        self.actors.remove(&key);
        crate::measure::entity_actors(self.service, self.actors.len());
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mart_schema::ProductId;
    use ractor::ActorProcessingErr;

    struct Idle;

    #[derive(Debug, ractor_cluster::RactorMessage)]
    enum Nothing {}

    impl Actor for Idle {
        type Msg = Nothing;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<Nothing>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_for_an_entity_whose_actor_has_not_run_yet_share_it() {
        let (parent, _) = Actor::spawn(None, Idle, ()).await.expect("parent");
        let mut entities: Entities<ProductId, Nothing> = Entities {
            service: Service::Inventory,
            actors: HashMap::new(),
            keys: HashMap::new(),
            parked: HashMap::new(),
            sweeps: 0,
        };
        let key = ProductId::new();
        // No await in between: the first actor's task has not run yet.
        let first = entities
            .get_or_start(key, &parent.get_cell(), |_| (Idle, ()))
            .expect("first");
        let second = entities
            .get_or_start(key, &parent.get_cell(), |_| (Idle, ()))
            .expect("second");
        assert_eq!(first.get_id(), second.get_id());
        assert_eq!(entities.actors.len(), 1);
        parent.stop(None);
    }
}
