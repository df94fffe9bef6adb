//! Which node owns an entity (a product's stock, an open order), cluster-wide.
//!
//! Every node hosting a service with per-entity actors runs one owner router,
//! registered as `mart.<svc>.owner@<node>` and joined to `mart.<svc>.owners`.
//! The owner of an entity is chosen by rendezvous hashing of the entity id
//! against the routers' names: every node computes the same owner from the
//! same membership, only the entities of a node that joins or leaves move, and
//! names (unlike ractor's per-session node ids) are the same on every node.
//!
//! Views of the membership can differ for a moment while it changes, so two
//! nodes may briefly both act for one entity. Each service's writes are fenced
//! in PostgreSQL as a compare-and-set (a stock row's `version`, an order's
//! status): a write succeeds only if nobody wrote since the actor loaded, so a
//! stale actor's write fails, it stops, and its callers are told to retry (see
//! [`Owned::Moved`]).

use std::time::Duration;

use mart_schema::Service;
use mart_schema::user::Caller;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::call::{Request, remaining, within};
use crate::failure::{Failure, Infra, Rejection};
use crate::wire::Wire;

/// The group of `service`'s owner routers.
pub(crate) fn group(service: Service) -> String {
    format!("{}.owners", service.group())
}

/// The registry name of `service`'s owner router on `node`.
pub(crate) fn router_name(service: Service, node: &str) -> String {
    format!("{}.owner@{node}", service.group())
}

/// The node name in a router's registry name.
pub fn node_of(router_name: &str) -> &str {
    router_name
        .split_once(".owner@")
        .map_or(router_name, |(_, node)| node)
}

/// The router owning `key` among the live members of `service`'s owner group.
pub(crate) fn owner_of(service: Service, key: Uuid) -> Option<ActorCell> {
    ractor::pg::get_members(&group(service))
        .into_iter()
        .filter_map(|cell| {
            let score = score(&cell.get_name()?, key);
            Some((score, cell))
        })
        .max_by_key(|(score, _)| *score)
        .map(|(_, cell)| cell)
}

/// The node owning `key` now, if any member is live (for operators).
pub fn owner_node(service: Service, key: Uuid) -> Option<String> {
    owner_of(service, key)
        .and_then(|cell| cell.get_name())
        .map(|name| node_of(&name).to_owned())
}

/// Whether this node owns `key` now.
pub(crate) fn is_mine(service: Service, key: Uuid) -> bool {
    owner_of(service, key).is_some_and(|cell| cell.get_id().is_local())
}

/// A hash that is the same on every node and every build (std's hasher makes
/// no such promise across Rust versions, and nodes of a rolling upgrade differ).
fn score(name: &str, key: Uuid) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    first
}

/// Why an owner did not produce the entity's own answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Owned<E> {
    /// The entity's answer: "no", and why.
    Rejected(E),
    /// Nothing was written: the actor lost ownership or stopped before it took
    /// the request. Asking the owner again is safe.
    Moved(String),
    /// The outcome is unknown (the actor or its database failed mid-way).
    Failed(String),
}

/// What a fenced write did: everything, or nothing because another actor
/// wrote the entity since this one loaded it (ownership moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Committed,
    Fenced,
}

/// How many times a request looks for an entity's owner again after ownership
/// moved (a node joined or left), with growing pauses: about 2.5 s in all.
const OWNER_ATTEMPTS: u32 = 6;

/// The reply port of an owner router.
pub(crate) type OwnerReply<T, E> = RpcReplyPort<Wire<Result<T, Owned<E>>>>;

/// Asks the router owning `key` in `service`, wherever it runs, at most until
/// this task's deadline. Ownership that moved mid-request (nothing was
/// written) is asked again; an unknown outcome (the owner failed or its node
/// died mid-way) only when `retry_unknown`, that is when the request is
/// idempotent.
pub(crate) async fn ask_owner<M, B, T, E>(
    service: Service,
    key: Uuid,
    retry_unknown: bool,
    body: B,
    variant: fn(Wire<Request<B>>, OwnerReply<T, E>) -> M,
) -> Result<T, Failure<E>>
where
    M: ractor::Message,
    B: Clone,
    T: Send + 'static,
    E: Send + 'static,
{
    let unavailable = |why: String| Failure::Infra(Infra::Unavailable { service, why });
    let mut last = String::new();
    for attempt in 0..OWNER_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
        }
        // No member at all: nobody can answer; say so now, not in 2.5 s.
        let Some(owner) = owner_of(service, key) else {
            return Err(unavailable(format!("no {service} node is live")));
        };
        let wait = remaining();
        if wait.is_zero() {
            break;
        }
        let build = |reply| variant(Request::new(Caller::Service, body.clone()).into(), reply);
        match ActorRef::<M>::from(owner).call(build, Some(wait)).await {
            Ok(CallResult::Success(Wire::Value(answer))) => match answer {
                Ok(value) => return Ok(value),
                Err(Owned::Rejected(no)) => return Err(Failure::Rejected(no)),
                Err(Owned::Moved(why)) => {
                    crate::measure::moved(service);
                    last = why;
                }
                Err(Owned::Failed(why)) if retry_unknown => last = why,
                Err(Owned::Failed(cause)) => {
                    return Err(Failure::Infra(Infra::Remote { service, cause }));
                }
            },
            Ok(CallResult::Success(Wire::Malformed(why))) => {
                return Err(Failure::Infra(Infra::Remote {
                    service,
                    cause: format!("malformed answer: {why}"),
                }));
            }
            Ok(CallResult::Timeout) => {
                return Err(unavailable(format!("{service} owner timed out")));
            }
            // The owner's node went away mid-request.
            Ok(CallResult::SenderError) if retry_unknown => {
                last = format!("{service} owner went away")
            }
            Ok(CallResult::SenderError) => {
                return Err(unavailable(format!("{service} owner went away")));
            }
            // It never took the request.
            Err(_) => last = format!("{service} owner went away"),
        }
    }
    Err(unavailable(format!("entity {key}: {last}")))
}

/// Serves one request at the owner: decodes it (a malformed one is refused),
/// finds the entity's actor with `actor`, and answers with what `ask` gets
/// from it, under the caller's deadline, in a task of its own, so the router
/// keeps routing meanwhile.
pub(crate) fn serve<Req, A, T, E, F>(
    reply: OwnerReply<T, E>,
    request: Wire<Request<Req>>,
    actor: impl FnOnce(&Req) -> Result<A, String>,
    ask: impl FnOnce(A, Req) -> F,
) where
    E: Rejection,
    T: Send + 'static,
    F: Future<Output = Result<T, Owned<E>>> + Send + 'static,
{
    let found = request
        .into_result()
        .map_err(|reason| Owned::Rejected(E::malformed(reason)))
        .and_then(|request| match actor(&request.body) {
            Ok(found) => Ok((
                request.deadline(),
                request.span(None),
                ask(found, request.body),
            )),
            Err(e) => Err(Owned::Failed(e)),
        });
    match found {
        Ok((deadline, span, asked)) => {
            let work = within(deadline, async move {
                let _ = reply.send(Wire::Value(asked.await));
            });
            tokio::spawn(tracing::Instrument::instrument(work, span));
        }
        Err(no) => {
            let _ = reply.send(Wire::Value(Err(no)));
        }
    }
}

/// Asks an entity's actor on this node, at most until this task's deadline,
/// turning how the call can fail into an [`Owned`] answer for the caller
/// (`what` names the actor in messages).
pub(crate) async fn ask_entity<M, T, E>(
    actor: ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<Result<T, Owned<E>>>) -> M,
    what: &str,
) -> Result<T, Owned<E>>
where
    M: ractor::Message,
    T: Send + 'static,
    E: Send + 'static,
{
    match actor.call(build, Some(remaining())).await {
        Ok(CallResult::Success(answer)) => answer,
        Ok(CallResult::Timeout) => Err(Owned::Failed(format!("{what} timed out"))),
        Ok(CallResult::SenderError) => Err(Owned::Failed(format!("{what} failed mid-request"))),
        // It stopped (idle, closed, handed off) before taking the request:
        // nothing was done.
        Err(_) => Err(Owned::Moved(format!("{what} stopped"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_come_back_out_of_router_names() {
        let name = router_name(Service::Inventory, "node-a@10.0.0.1");
        assert_eq!(name, "mart.inventory.owner@node-a@10.0.0.1");
        assert_eq!(node_of(&name), "node-a@10.0.0.1");
    }

    #[test]
    fn ownership_spreads_and_only_a_leaver_s_keys_move() {
        let names = ["a", "b", "c"].map(|n| router_name(Service::Orders, n));
        let owner = |members: &[String], key: Uuid| {
            members
                .iter()
                .max_by_key(|name| score(name, key))
                .cloned()
                .expect("members")
        };
        let keys: Vec<Uuid> = (0..3000).map(|_| Uuid::new_v4()).collect();
        let before: Vec<String> = keys.iter().map(|k| owner(&names, *k)).collect();
        for name in &names {
            let share = before.iter().filter(|o| *o == name).count();
            assert!((800..1200).contains(&share), "{name} owns {share} of 3000");
        }
        let survivors = [names[0].clone(), names[2].clone()];
        for (key, old) in keys.iter().zip(&before) {
            let new = owner(&survivors, *key);
            if *old != names[1] {
                assert_eq!(&new, old, "a key of a surviving node moved");
            }
        }
    }
}
