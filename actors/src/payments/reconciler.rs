//! Settles what neither redirect nor webhook settled: pending payments
//! older than `reconcile_after` are asked about at Stripe, periodically.

use std::time::Duration;

use mart_schema::payment::PaymentStatus;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::front::{Outcome, PaymentService, provider};
use super::gateway::GatewayError;
use super::store::StoredPayment;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reconciler;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum ReconcilerMsg {
    Tick,
}

impl Actor for Reconciler {
    type Msg = ReconcilerMsg;
    type State = PaymentService;
    type Arguments = PaymentService;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        service: PaymentService,
    ) -> Result<Self::State, ActorProcessingErr> {
        let every = (service.deps.reconcile_after / 2)
            .clamp(Duration::from_millis(500), Duration::from_secs(30));
        myself.send_interval(every, || ReconcilerMsg::Tick);
        Ok(service)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        service: &mut PaymentService,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = service.reconcile().await {
            tracing::warn!(error = ?e, "payment reconciliation failed; will retry");
        }
        Ok(())
    }
}

impl PaymentService {
    async fn reconcile(&self) -> Outcome<()> {
        let after = self.deps.reconcile_after.as_secs_f64();
        for stored in self.store.unsettled(after).await? {
            let id = stored.payment.id;
            if let Err(e) = self.reconcile_pending(stored).await {
                tracing::warn!(payment = %id, error = ?e, "reconciling a payment failed; will retry");
            }
        }
        Ok(())
    }

    async fn reconcile_pending(&self, stored: StoredPayment) -> Outcome<()> {
        let Some(session_id) = stored.session_id.clone() else {
            return Ok(());
        };
        let gateway = &self.deps.gateway;
        let session = match gateway.session(session_id.clone()).await {
            Ok(session) => session,
            // Gone at Stripe (a test server that restarted, another account):
            // nobody can pay it any more. Over, so the order can be paid anew;
            // asking again would only warn forever.
            Err(GatewayError::NotFound) => {
                tracing::warn!(payment = %stored.payment.id, session = %session_id, "Stripe does not know this checkout session; the attempt is expired and the order can be paid again");
                let (from, to) = (PaymentStatus::Pending, PaymentStatus::Expired);
                return self
                    .store
                    .transition(&stored, from, to, None)
                    .await
                    .map(drop);
            }
            Err(e) => return Err(provider(e)),
        };
        if session.payment_status == "paid" {
            let intent = session.payment_intent.as_deref();
            return self.settle_paid(stored, intent).await;
        }
        if session.status == "expired" {
            let (from, to) = (PaymentStatus::Pending, PaymentStatus::Expired);
            self.store.transition(&stored, from, to, None).await?;
        }
        Ok(())
    }
}
