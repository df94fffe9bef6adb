//! Reaching a service: the one way every caller (the edge, other services) talks
//! to a service, wherever in the cluster it runs.
//!
//! A [`ServiceClient`] finds the live members of the service's process group
//! (local ones first, else remote ones, round-robin), sends one message with a
//! timeout, and turns every way that can go wrong into a [`CallError`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mart_schema::Service;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::wire::Wire;

/// How long a caller waits for a service by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call did not produce the service's own answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError<E> {
    /// The service answered "no"; `E` says why.
    #[error("rejected: {0}")]
    Rejected(E),
    /// No live member of the service, or it went away before answering.
    #[error("service unavailable")]
    Unavailable,
    /// No answer in time.
    #[error("service timed out")]
    Timeout,
}

impl<E> CallError<E> {
    /// Keeps the transport outcome and converts the rejection.
    pub fn map_rejection<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self {
            CallError::Rejected(e) => CallError::Rejected(f(e)),
            CallError::Unavailable => CallError::Unavailable,
            CallError::Timeout => CallError::Timeout,
        }
    }
}

/// The reply port type of every service request: a result that may travel.
pub type Reply<T, E> = RpcReplyPort<Wire<Result<T, E>>>;

/// A typed handle on one service's process group. Cheap to clone.
pub struct ServiceClient<M> {
    service: Service,
    timeout: Duration,
    next: Arc<AtomicUsize>,
    _msg: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for ServiceClient<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("service", &self.service)
            .finish()
    }
}

impl<M> Clone for ServiceClient<M> {
    fn clone(&self) -> Self {
        Self {
            service: self.service,
            timeout: self.timeout,
            next: self.next.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M: ractor::Message> ServiceClient<M> {
    pub fn new(service: Service, timeout: Duration) -> Self {
        Self {
            service,
            timeout,
            next: Arc::new(AtomicUsize::new(0)),
            _msg: PhantomData,
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// Live members able to serve now: local ones if any (no network hop), else
    /// remote ones.
    pub fn members(&self) -> Vec<ActorRef<M>> {
        let all = ractor::pg::get_members(&self.service.group());
        let (local, remote): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|cell| cell.get_id().is_local());
        let chosen = if local.is_empty() { remote } else { local };
        chosen.into_iter().map(ActorRef::from).collect()
    }

    /// Whether some member is reachable now.
    pub fn is_reachable(&self) -> bool {
        !ractor::pg::get_members(&self.service.group()).is_empty()
    }

    /// Sends the message built by `build` to one member and waits for its answer.
    pub async fn ask<T, E>(&self, build: impl Fn(Reply<T, E>) -> M) -> Result<T, CallError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let members = self.members();
        if members.is_empty() {
            return Err(CallError::Unavailable);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A member that can't even take the message (it just died) never saw it,
        // so trying the next one is safe; once delivered, we never resend.
        for attempt in 0..members.len().min(2) {
            let member = &members[(start + attempt) % members.len()];
            match member.call(&build, Some(self.timeout)).await {
                Ok(CallResult::Success(Wire::Value(answer))) => {
                    return answer.map_err(CallError::Rejected);
                }
                Ok(CallResult::Success(Wire::Malformed(reason))) => {
                    tracing::warn!(service = %self.service, %reason, "malformed reply");
                    return Err(CallError::Unavailable);
                }
                Ok(CallResult::Timeout) => return Err(CallError::Timeout),
                Ok(CallResult::SenderError) => return Err(CallError::Unavailable),
                Err(_) => continue,
            }
        }
        Err(CallError::Unavailable)
    }
}

/// Answers a reply port, ignoring a caller that stopped waiting.
pub fn answer<T, E>(reply: Reply<T, E>, result: Result<T, E>) {
    let _ = reply.send(Wire::Value(result));
}

/// A service's "no" that can also describe a request that did not decode.
pub trait Rejection: Send + 'static {
    fn malformed(reason: String) -> Self;
}

/// Why a request failed inside a service: a business answer for the caller, or
/// broken infrastructure that the caller sees as "unavailable".
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    #[error("rejected: {0}")]
    Rejected(E),
    #[error("{0}")]
    Infrastructure(String),
}

impl<E> From<E> for Failure<E> {
    fn from(e: E) -> Self {
        Failure::Rejected(e)
    }
}

/// Runs one request and answers it. A business "no" is an answer; broken
/// infrastructure drops the reply (the caller sees "unavailable") and returns
/// the handler's `Err`, crashing the actor so its supervisor starts a fresh one.
pub async fn respond<Req, T, E, F>(
    reply: Reply<T, E>,
    request: Wire<Req>,
    run: impl FnOnce(Req) -> F,
) -> Result<(), ractor::ActorProcessingErr>
where
    E: Rejection,
    F: Future<Output = Result<T, Failure<E>>>,
{
    let request = match request.into_result() {
        Ok(request) => request,
        Err(reason) => {
            answer(reply, Err(E::malformed(reason)));
            return Ok(());
        }
    };
    match run(request).await {
        Ok(value) => answer(reply, Ok(value)),
        Err(Failure::Rejected(no)) => answer(reply, Err(no)),
        Err(Failure::Infrastructure(e)) => {
            drop(reply);
            return Err(e.into());
        }
    }
    Ok(())
}

/// Like [`respond`], but in a task of its own, so the actor that received the
/// request keeps taking others (requests that call other services or wait on
/// PostgreSQL). Broken infrastructure drops the reply: the caller sees
/// "unavailable", and the cause is logged here.
pub fn spawn_answer<Req, T, E, F, Fut>(reply: Reply<T, E>, request: Wire<Req>, run: F)
where
    Req: Send + 'static,
    T: Send + 'static,
    E: Rejection,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Failure<E>>> + Send + 'static,
{
    tokio::spawn(async move {
        let request = match request.into_result() {
            Ok(request) => request,
            Err(reason) => return answer(reply, Err(E::malformed(reason))),
        };
        match run(request).await {
            Ok(value) => answer(reply, Ok(value)),
            Err(Failure::Rejected(no)) => answer(reply, Err(no)),
            Err(Failure::Infrastructure(e)) => tracing::warn!(error = %e, "request failed"),
        }
    });
}
