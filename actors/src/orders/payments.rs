//! How the order service learns that an order was paid: `payment.succeeded`
//! on the payment outbox, delivered until acknowledged (so a payment
//! confirmed while orders were down is not missed). The order's owner moves
//! it to paid once; a payment for an order that was cancelled or expired
//! meanwhile is refunded.

use mart_schema::order::{OrderError, OrderStatus};
use mart_schema::payment::PaymentEvent;
use mart_schema::user::Caller;
use mart_schema::{EventEnvelope, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::StatusRequest;
use super::front::transition;
use crate::failure::{Failure, Infra};
use crate::outbox::{SubscriberMsg, acknowledge, subscribe};
use crate::payments::Payments;
use crate::trace::consuming;
use tracing::Instrument;

/// The durable subscription name (and registry name) of this subscriber.
pub(crate) const PAYMENTS_SUBSCRIBER: &str = "mart.orders.payments";

#[derive(Debug, Clone, Copy)]
pub(crate) struct PaymentSubscriber;

impl Actor for PaymentSubscriber {
    type Msg = SubscriberMsg;
    type State = Payments;
    type Arguments = Payments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        payments: Payments,
    ) -> Result<Payments, ActorProcessingErr> {
        subscribe(&myself, &[Service::Payments]);
        Ok(payments)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        payments: &mut Payments,
    ) -> Result<(), ActorProcessingErr> {
        acknowledge(msg, async |batch| {
            let mut handled = 0;
            for event in &batch {
                let span = consuming(event, PAYMENTS_SUBSCRIBER);
                if let Err(e) = apply(payments, event).instrument(span).await {
                    // Acknowledge what is done; the rest comes again.
                    tracing::warn!(event = %event.event_id, error = %e.chain(), "payment event not applied yet");
                    break;
                }
                handled += 1;
            }
            handled
        })
        .await;
        Ok(())
    }
}

/// Applies one payment event; applying it again changes nothing.
async fn apply(payments: &Payments, event: &EventEnvelope) -> Result<(), Infra> {
    if event.event_type != "payment.succeeded" {
        return Ok(());
    }
    let paid: PaymentEvent = serde_json::from_value(event.data.clone()).map_err(Infra::bug)?;
    let order = paid.order_id;
    let asked = StatusRequest {
        id: order,
        status: OrderStatus::Paid,
    };
    match transition(Caller::Service, asked).await {
        Ok(_) => Ok(()),
        // Paid too late: the money goes back (refunding twice is a no-op).
        Err(Failure::Rejected(OrderError::IllegalTransition { current, .. }))
            if matches!(current, OrderStatus::Cancelled | OrderStatus::Expired) =>
        {
            tracing::warn!(%order, %current, "payment for an order that cannot take it; refunding");
            match payments.refund(order).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.into_infra(Service::Payments)),
            }
        }
        // Already past paid (shipped, delivered): this event was applied before.
        Err(Failure::Rejected(OrderError::IllegalTransition { .. })) => Ok(()),
        Err(Failure::Rejected(no)) => {
            tracing::error!(%order, reason = ?no, "a payment for an order that cannot be paid");
            Ok(())
        }
        Err(Failure::Infra(e)) => Err(e),
    }
}
