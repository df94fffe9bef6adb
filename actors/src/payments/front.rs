//! The payment service's group member: which request goes where.

use crate::pool::Pool;
use mart_schema::Service;
use mart_schema::payment::PaymentError;
use mart_schema::user::Caller;

use super::gateway::GatewayError;
use super::store::PaymentStore;
use super::{PaymentDeps, PaymentsMsg};
use crate::call::{Serve, answer_in_task};
use crate::failure::Failure;
use crate::outbox::Outbox;

pub(super) type Outcome<T> = Result<T, Failure<PaymentError>>;

/// The payment service on this node: its store and its provider.
#[derive(Clone, Debug)]
pub(crate) struct PaymentService {
    pub(super) store: PaymentStore,
    pub(super) deps: PaymentDeps,
}

impl Serve for PaymentService {
    type Msg = PaymentsMsg;
    const SERVICE: Service = Service::Payments;

    fn serve(&self, msg: PaymentsMsg) {
        let s = self.clone();
        match msg {
            PaymentsMsg::Start(request, reply) => {
                answer_in_task(reply, request, move |caller, new| async move {
                    services_only(caller)?;
                    s.start(new).await
                })
            }
            PaymentsMsg::Get(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    let stored = s.store.get(id).await?;
                    match stored {
                        Some(p) if caller.may_act_for(p.payment.user_id) => Ok(p.payment),
                        _ => Err(PaymentError::NotFound.into()),
                    }
                })
            }
            PaymentsMsg::Confirm(request, reply) => {
                answer_in_task(reply, request, move |_, session| async move {
                    s.confirm(&session).await
                })
            }
            PaymentsMsg::Fail(request, reply) => {
                answer_in_task(reply, request, move |_, session| async move {
                    s.fail(&session).await
                })
            }
            PaymentsMsg::Webhook(request, reply) => {
                answer_in_task(reply, request, move |_, hook| async move {
                    s.webhook(&hook.body, &hook.signature).await
                })
            }
            PaymentsMsg::Refund(request, reply) => {
                answer_in_task(reply, request, move |caller, order| async move {
                    services_only(caller)?;
                    s.close(order).await
                })
            }
        }
    }
}

/// Requests only another mart service makes (the order service).
fn services_only(caller: Caller) -> Result<(), PaymentError> {
    match caller {
        Caller::Service => Ok(()),
        _ => Err(PaymentError::NotFound),
    }
}

/// The provider's "no" is the caller's; its being away is a 502 with
/// Retry-After, as it always was (the shopper can try again).
pub(super) fn provider(e: GatewayError) -> Failure<PaymentError> {
    match e {
        GatewayError::NotFound => Failure::Rejected(PaymentError::NotFound),
        GatewayError::Refused(reason) | GatewayError::Unreachable(reason) => {
            Failure::Rejected(PaymentError::Provider(reason))
        }
    }
}

impl PaymentService {
    pub(crate) fn new(pool: Pool, deps: PaymentDeps) -> Self {
        Self {
            store: PaymentStore::new(pool, Outbox::new(Service::Payments)),
            deps,
        }
    }
}
