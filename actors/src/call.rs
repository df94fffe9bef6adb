//! Calling a service and answering it: the one way every caller (the edge,
//! other services) talks to a service, wherever in the cluster it runs, and
//! the one way every service answers.
//!
//! - A request travels as a [`Request`]: who it is for ([`Caller`]), how long
//!   its caller will still wait, and the body. The edge sets a deadline per
//!   HTTP request ([`within`]); every call made while serving it, on any node,
//!   gets what is left of it ([`deadline`]), so no inner call outlives the
//!   request it serves.
//! - [`ServiceClient`] finds the live members of the service's process group
//!   (local ones first, else remote ones, round-robin), sends one message, and
//!   turns every way that can go wrong into a [`CallError`].
//! - [`Front`] is the group member of every service: it joins the group and
//!   hands each request to the service's [`Serve`] implementation, which
//!   answers it in a task of its own ([`answer_in_task`]), so a slow request
//!   never holds up the mailbox.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mart_schema::Service;
use mart_schema::user::Caller;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::failure::{Failure, Infra, Refusal, Rejection};
use crate::trace::{TARGET, TraceParent};
use crate::wire::Wire;
use tracing::Instrument;

/// How long a request may take when nobody set a deadline (background work:
/// sweeps, subscribers, saga steps).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(5);

tokio::task_local! {
    static DEADLINE: Instant;
    /// The service whose front is handing out the current message (for the
    /// metrics of the request it starts).
    static SERVING: Service;
}

/// When the request this task works for must be answered by.
pub fn deadline() -> Instant {
    DEADLINE
        .try_with(|d| *d)
        .unwrap_or_else(|_| Instant::now() + DEFAULT_BUDGET)
}

/// What is left of this task's deadline.
pub fn remaining() -> Duration {
    deadline().saturating_duration_since(Instant::now())
}

/// Runs `work` under `deadline`: every call it makes gets what is left.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// One request as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<T> {
    pub caller: Caller,
    /// How long the caller still waits, in milliseconds, when it sent this
    /// (a duration, not a time: the nodes' clocks may differ).
    budget_ms: u64,
    /// The span that sent it, when traces are on: the serving side's span
    /// continues its trace, on whichever node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<TraceParent>,
    pub body: T,
}

impl<T> Request<T> {
    /// A request with what is left of this task's deadline.
    pub fn new(caller: Caller, body: T) -> Self {
        Self {
            caller,
            budget_ms: u64::try_from(remaining().as_millis()).unwrap_or(u64::MAX),
            trace: crate::trace::current(),
            body,
        }
    }

    /// The deadline on this node.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.budget_ms)
    }

    /// A span for serving this request in `service`, continuing its
    /// sender's trace.
    pub(crate) fn span(&self, service: Option<Service>) -> tracing::Span {
        let span = tracing::info_span!(
            target: TARGET,
            "serve",
            otel.name = %format_args!(
                "{} {}",
                service.map_or("entity", |s| s.name()),
                short_type_name::<T>()
            ),
            otel.kind = "server",
            rpc.system = "ractor",
            otel.status_code = tracing::field::Empty,
        );
        crate::trace::continue_from(&span, self.trace.as_ref());
        span
    }
}

/// `NewOrder` for `mart_schema::order::NewOrder`: what a request asks, in
/// its span's name.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}

/// The reply port of every service request: a result that may travel.
pub type Reply<T, E> = RpcReplyPort<Wire<Result<T, Refusal<E>>>>;

/// Why a call did not produce the service's own answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError<E> {
    /// The service answered "no"; `E` says why.
    #[error("rejected: {0:?}")]
    Rejected(E),
    /// No live member, a member that went away, or one broken for a moment:
    /// trying again soon may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// The service failed (a bug, a SQL error); the cause, for the log.
    #[error("failed: {0}")]
    Failed(String),
}

impl<E: std::fmt::Debug> CallError<E> {
    /// Keeps the transport outcome and converts the rejection.
    pub fn map_rejection<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self {
            CallError::Rejected(e) => CallError::Rejected(f(e)),
            CallError::Unavailable(why) => CallError::Unavailable(why),
            CallError::Timeout => CallError::Timeout,
            CallError::Failed(cause) => CallError::Failed(cause),
        }
    }

    /// As broken infrastructure of the service that called `service`: a
    /// rejection the caller did not handle is a bug.
    pub fn into_infra(self, service: Service) -> Infra {
        match self {
            CallError::Rejected(no) => Infra::Remote {
                service,
                cause: format!("unexpected answer: {no:?}"),
            },
            CallError::Unavailable(why) => Infra::Unavailable { service, why },
            CallError::Timeout => Infra::Unavailable {
                service,
                why: "no answer in time".into(),
            },
            CallError::Failed(cause) => Infra::Remote { service, cause },
        }
    }
}

/// A typed handle on one service's process group. Cheap to clone.
pub struct ServiceClient<M> {
    service: Service,
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
            next: self.next.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M: ractor::Message> ServiceClient<M> {
    pub fn new(service: Service) -> Self {
        Self {
            service,
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

    /// Sends `body` for `caller` as message `variant` to one member and waits
    /// for its answer, at most until this task's deadline.
    pub async fn ask<B, T, E>(
        &self,
        caller: Caller,
        body: B,
        variant: fn(Wire<Request<B>>, Reply<T, E>) -> M,
    ) -> Result<T, CallError<E>>
    where
        B: Clone,
        T: Send + 'static,
        E: Send + 'static,
    {
        let span = tracing::info_span!(
            target: TARGET,
            "call",
            otel.name = %format_args!("{} {}", self.service, short_type_name::<B>()),
            otel.kind = "client",
            rpc.system = "ractor",
        );
        let answer = self
            .ask_once(caller, body, variant)
            .instrument(span.clone())
            .await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(CallError::Rejected(_)) => "rejected",
            Err(CallError::Unavailable(_)) => "unavailable",
            Err(CallError::Timeout) => "timeout",
            Err(CallError::Failed(_)) => "failed",
        };
        if !matches!(answer, Ok(_) | Err(CallError::Rejected(_))) {
            crate::trace::failed(&span, outcome);
        }
        crate::measure::called(self.service, outcome);
        answer
    }

    async fn ask_once<B, T, E>(
        &self,
        caller: Caller,
        body: B,
        variant: fn(Wire<Request<B>>, Reply<T, E>) -> M,
    ) -> Result<T, CallError<E>>
    where
        B: Clone,
        T: Send + 'static,
        E: Send + 'static,
    {
        let members = self.members();
        if members.is_empty() {
            return Err(CallError::Unavailable(format!(
                "no {} member is live",
                self.service
            )));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A member that can't even take the message (it just died) never saw it,
        // so trying the next one is safe; once delivered, we never resend.
        for attempt in 0..members.len().min(2) {
            let wait = remaining();
            if wait.is_zero() {
                return Err(CallError::Timeout);
            }
            let member = &members[(start + attempt) % members.len()];
            let build = |reply| variant(Request::new(caller, body.clone()).into(), reply);
            match member.call(build, Some(wait)).await {
                Ok(CallResult::Success(Wire::Value(answer))) => {
                    return answer.map_err(|refusal| match refusal {
                        Refusal::No(no) => CallError::Rejected(no),
                        Refusal::Fault(f) if f.transient => CallError::Unavailable(f.cause),
                        Refusal::Fault(f) => CallError::Failed(f.cause),
                    });
                }
                Ok(CallResult::Success(Wire::Malformed(reason))) => {
                    return Err(CallError::Failed(format!(
                        "{}: malformed reply: {reason}",
                        self.service
                    )));
                }
                Ok(CallResult::Timeout) => return Err(CallError::Timeout),
                Ok(CallResult::SenderError) => {
                    return Err(CallError::Unavailable(format!(
                        "the {} member went away mid-request",
                        self.service
                    )));
                }
                Err(_) => continue,
            }
        }
        Err(CallError::Unavailable(format!(
            "no {} member took the request",
            self.service
        )))
    }
}

/// Answers one request in a task of its own, under the caller's deadline: the
/// value, the service's "no", or the fault (logged by whoever gives up on it:
/// the edge, with its request id).
pub fn answer_in_task<B, T, E, F, Fut>(reply: Reply<T, E>, request: Wire<Request<B>>, run: F)
where
    B: Send + 'static,
    T: Send + 'static,
    E: Rejection,
    F: FnOnce(Caller, B) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Failure<E>>> + Send + 'static,
{
    let request = match request.into_result() {
        Ok(request) => request,
        Err(reason) => {
            let _ = reply.send(Wire::Value(Err(Refusal::No(E::malformed(reason)))));
            return;
        }
    };
    let deadline = request.deadline();
    let service = SERVING.try_with(|s| *s).ok();
    let span = request.span(service);
    let traced = span.clone();
    if let Some(service) = service {
        crate::measure::in_flight(service, 1.0);
    }
    let work = within(deadline, async move {
        let started = Instant::now();
        let outcome = run(request.caller, request.body).await;
        if let Some(service) = service {
            let label = match &outcome {
                Ok(_) => "ok",
                Err(Failure::Rejected(_)) => "rejected",
                Err(Failure::Infra(_)) => "failed",
            };
            crate::measure::served(service, label, started.elapsed());
            crate::measure::in_flight(service, -1.0);
        }
        if let Err(Failure::Infra(fault)) = &outcome {
            crate::trace::failed(&traced, &fault.to_string());
        }
        let _ = reply.send(Wire::Value(outcome.map_err(Refusal::from)));
    });
    tokio::spawn(work.instrument(span));
}

/// What a service's group member serves: its mailbox, and how each request is
/// answered (each with [`answer_in_task`]).
pub(crate) trait Serve: Clone + Send + Sync + 'static {
    type Msg: ractor::Message;
    const SERVICE: Service;

    fn serve(&self, msg: Self::Msg);
}

/// The `mart.<service>` group member on a node hosting the service. It never
/// waits: every request runs in a task of its own, so one slow request (a
/// password hash, a call to another service) holds up no other.
pub(crate) struct Front<S>(PhantomData<fn() -> S>);

impl<S> Front<S> {
    pub(crate) fn new() -> Self {
        Front(PhantomData)
    }
}

impl<S> Clone for Front<S> {
    fn clone(&self) -> Self {
        Front::new()
    }
}

impl<S> std::fmt::Debug for Front<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Front")
    }
}

impl<S: Serve> Actor for Front<S> {
    type Msg = S::Msg;
    type State = S;
    type Arguments = S;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        service: S,
    ) -> Result<S, ActorProcessingErr> {
        ractor::pg::join(S::SERVICE.group(), vec![myself.get_cell()]);
        Ok(service)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        service: &mut S,
    ) -> Result<(), ActorProcessingErr> {
        SERVING.sync_scope(S::SERVICE, || service.serve(msg));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inner_calls_get_what_is_left_of_the_deadline() {
        let outside = remaining();
        assert!(outside > DEFAULT_BUDGET - Duration::from_secs(1));
        let soon = Instant::now() + Duration::from_millis(300);
        within(soon, async {
            let request = Request::new(Caller::Anonymous, ());
            assert!(request.budget_ms <= 300 && request.budget_ms > 100);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(remaining().is_zero());
        })
        .await;
    }
}
