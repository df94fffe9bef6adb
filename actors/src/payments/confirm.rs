//! Confirming a payment from what Stripe says (redirects, webhooks, the
//! reconciler), failing an abandoned attempt, and giving money back.

use mart_schema::payment::{PaymentError, PaymentOutcome, PaymentStatus};
use mart_schema::{FieldErrors, OrderId, PaymentId};

use super::front::{Outcome, PaymentService, provider};
use super::gateway::CheckoutSession;
use super::store::StoredPayment;
use super::webhook;
use crate::failure::{Failure, Infra};

impl PaymentService {
    async fn outcome(&self, id: PaymentId) -> Outcome<PaymentOutcome> {
        let stored = self.stored(id).await?;
        Ok(PaymentOutcome {
            order_id: stored.payment.order_id,
            payment_id: stored.payment.id,
            status: stored.payment.status,
        })
    }

    async fn stored(&self, id: PaymentId) -> Outcome<StoredPayment> {
        self.store
            .get(id)
            .await?
            .ok_or(Failure::Rejected(PaymentError::NotFound))
    }

    /// Our payment for a checkout session, and what Stripe says of the session:
    /// a redirect or a webhook is never trusted on its own.
    async fn payment_and_session(
        &self,
        session_id: &str,
    ) -> Outcome<(StoredPayment, CheckoutSession)> {
        let stored = self
            .store
            .by_session(session_id)
            .await?
            .ok_or(Failure::Rejected(PaymentError::NotFound))?;
        let session = self
            .deps
            .gateway
            .session(session_id.to_owned())
            .await
            .map_err(provider)?;
        Ok((stored, session))
    }

    pub(super) async fn confirm(&self, session_id: &str) -> Outcome<PaymentOutcome> {
        let (stored, session) = self.payment_and_session(session_id).await?;
        if session.payment_status == "paid" {
            let intent = session.payment_intent.as_deref();
            self.settle_paid(stored.clone(), intent).await?;
        }
        self.outcome(stored.payment.id).await
    }

    /// The money is in: record it once (`payment.succeeded` tells the order),
    /// or give it back if the attempt was given up on meanwhile.
    pub(super) async fn settle_paid(
        &self,
        mut stored: StoredPayment,
        intent: Option<&str>,
    ) -> Outcome<()> {
        if stored.payment.status == PaymentStatus::Pending {
            let (from, to) = (PaymentStatus::Pending, PaymentStatus::Succeeded);
            if self.store.transition(&stored, from, to, intent).await? {
                return Ok(());
            }
            // Moved by someone else meanwhile: see where it is now.
            stored = self.stored(stored.payment.id).await?;
        }
        match stored.payment.status {
            PaymentStatus::Failed | PaymentStatus::Expired => {
                let from = stored.payment.status;
                self.refund_stored(&stored, intent, from).await
            }
            _ => Ok(()),
        }
    }

    async fn refund_stored(
        &self,
        stored: &StoredPayment,
        intent: Option<&str>,
        from: PaymentStatus,
    ) -> Outcome<()> {
        let intent = intent
            .map(str::to_owned)
            .or_else(|| stored.payment_intent.clone())
            .ok_or_else(|| Infra::bug("paid session without a payment intent"))?;
        let key = format!("refund-{}", stored.payment.id);
        let gateway = &self.deps.gateway;
        gateway.refund(intent, key).await.map_err(provider)?;
        self.store
            .transition(stored, from, PaymentStatus::Refunded, None)
            .await?;
        Ok(())
    }

    pub(super) async fn fail(&self, session_id: &str) -> Outcome<PaymentOutcome> {
        let (stored, session) = self.payment_and_session(session_id).await?;
        if session.payment_status != "paid" && stored.payment.status == PaymentStatus::Pending {
            let (from, to) = (PaymentStatus::Pending, PaymentStatus::Failed);
            self.store.transition(&stored, from, to, None).await?;
            // Then closed at Stripe: a failed attempt whose page could still
            // be paid would charge an order left unpaid. If it was paid in
            // between, confirmation finds it failed and refunds it.
            if session.status == "open"
                && let Err(e) = self
                    .deps
                    .gateway
                    .expire_session(session_id.to_owned())
                    .await
            {
                tracing::warn!(session = session_id, error = %e, "could not close a failed checkout; a late payment will be refunded");
            }
        }
        self.outcome(stored.payment.id).await
    }

    /// The order is over: its succeeded payment is refunded (`true`), or its
    /// open checkout closed. A checkout Stripe will not close (paid at this
    /// very moment) is left to the reconciler, which confirms it; the order
    /// service then refunds it.
    pub(super) async fn close(&self, order: OrderId) -> Outcome<bool> {
        let Some(live) = self.store.live_for_order(order).await? else {
            return Ok(false);
        };
        match (live.payment.status, live.session_id.clone()) {
            (PaymentStatus::Succeeded, _) => {
                self.refund_stored(&live, None, PaymentStatus::Succeeded)
                    .await?;
                Ok(true)
            }
            (PaymentStatus::Pending, Some(session)) => {
                if self.deps.gateway.expire_session(session).await.is_ok() {
                    let (from, to) = (PaymentStatus::Pending, PaymentStatus::Expired);
                    self.store.transition(&live, from, to, None).await?;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn webhook(&self, body: &[u8], signature: &str) -> Outcome<()> {
        let now = mart_schema::now().unix_timestamp();
        if !webhook::verify(&self.deps.webhook_secrets, signature, body, now) {
            return Err(PaymentError::BadSignature.into());
        }
        let event: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| Failure::Rejected(PaymentError::BadSignature))?;
        let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
            let invalid = FieldErrors::single("body", "not a Stripe event");
            return Err(PaymentError::Invalid(invalid).into());
        };
        if !self.store.first_sighting(id).await? {
            return Ok(());
        }
        let handled = self.handle_event(kind, &event["data"]["object"]).await;
        if let Err(Failure::Infra(_)) = &handled {
            // Let Stripe's retry of this event be processed.
            self.store.forget_event(id).await;
        }
        match handled {
            // Sessions that are not ours (or gone) are not an error for Stripe.
            Err(Failure::Rejected(PaymentError::NotFound)) => Ok(()),
            other => other,
        }
    }

    async fn handle_event(&self, kind: &str, object: &serde_json::Value) -> Outcome<()> {
        let session = object["id"].as_str().unwrap_or_default();
        match kind {
            // A completed session may still be awaiting an async payment method.
            "checkout.session.completed" if object["payment_status"] == "paid" => {
                self.confirm(session).await?;
            }
            "checkout.session.async_payment_succeeded" => {
                self.confirm(session).await?;
            }
            "checkout.session.async_payment_failed" => {
                self.fail(session).await?;
            }
            "checkout.session.expired" => {
                if let Some(stored) = self.store.by_session(session).await?
                    && stored.payment.status == PaymentStatus::Pending
                {
                    let (from, to) = (PaymentStatus::Pending, PaymentStatus::Expired);
                    self.store.transition(&stored, from, to, None).await?;
                }
            }
            "charge.refunded" => {
                if let Some(intent) = object["payment_intent"].as_str()
                    && let Some(stored) = self.store.by_intent(intent).await?
                    && stored.payment.status == PaymentStatus::Succeeded
                {
                    let (from, to) = (PaymentStatus::Succeeded, PaymentStatus::Refunded);
                    self.store.transition(&stored, from, to, None).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
