//! Starting a payment: one live payment per order, one Checkout Session per
//! payment, under the payer's optional Idempotency-Key.

use std::time::Duration;

use mart_schema::PaymentId;
use mart_schema::order::{Order, OrderStatus};
use mart_schema::payment::{Payment, PaymentError, PaymentStatus};
use time::OffsetDateTime;

use super::front::{Outcome, PaymentService, provider};
use super::gateway::{CheckoutLine, NewCheckout};
use super::{NewPayment, Started};
use crate::idempotency::{FirstRun, KeyErrors};

/// Stripe wants a session to live between 30 minutes and 24 hours.
fn session_expiry(order_expires: OffsetDateTime) -> i64 {
    let now = mart_schema::now().unix_timestamp();
    order_expires
        .unix_timestamp()
        .clamp(now + 31 * 60, now + 24 * 3600 - 60)
}

impl PaymentService {
    pub(super) async fn start(&self, new: NewPayment) -> Outcome<Started> {
        let NewPayment { payer, key, order } = new;
        let mut invalid = mart_schema::FieldErrors::default();
        invalid.check_idempotency_key(key.as_deref());
        invalid.into_result().map_err(PaymentError::Invalid)?;
        let errors = KeyErrors {
            in_progress: PaymentError::IdempotencyInProgress,
            mismatch: PaymentError::IdempotencyMismatch,
        };
        // Keys are the payer's; a request without a person behind it has none.
        let user = payer.user_id().unwrap_or(order.user_id);
        let key = key.filter(|_| payer.user_id().is_some());
        let store = &self.store;
        let (payment, replayed) = store
            .keys
            .run(
                &store.pool,
                user,
                key.as_deref(),
                &order.id,
                errors,
                async |key| self.start_once(&order, key).await,
            )
            .await?;
        Ok(Started { payment, replayed })
    }

    async fn start_once(&self, order: &Order, key: Option<&str>) -> Outcome<FirstRun<Payment>> {
        if order.status != OrderStatus::AwaitingPayment {
            return Err(PaymentError::OrderNotPayable(order.status.to_string()).into());
        }
        let payment = Payment {
            id: PaymentId::new(),
            order_id: order.id,
            user_id: order.user_id,
            status: PaymentStatus::Pending,
            amount: order.total,
            currency: order.currency,
            checkout_url: None,
            created_at: mart_schema::now(),
        };
        if let Some(live) = self.claim_live_slot(&payment).await? {
            // A concurrent click's payment: its outcome is recorded under its
            // own key, not this one.
            return Ok(FirstRun {
                value: live,
                recorded: false,
            });
        }
        let session = match self
            .deps
            .gateway
            .create_session(self.checkout(order, payment.id))
            .await
        {
            Ok(session) => session,
            Err(e) => {
                self.store.delete_pending(payment.id).await;
                return Err(provider(e));
            }
        };
        let payment = Payment {
            checkout_url: session.url.clone(),
            ..payment
        };
        let outcome = key.map(|_| {
            serde_json::to_value(Ok::<&Payment, PaymentError>(&payment)).unwrap_or_default()
        });
        self.store
            .attach_session(&payment, &session.id, key.zip(outcome.as_ref()))
            .await?;
        Ok(FirstRun {
            value: payment,
            recorded: true,
        })
    }

    /// Takes the order's one live payment slot for `payment`; or, if a
    /// concurrent request holds it with its session, that request's payment.
    async fn claim_live_slot(&self, payment: &Payment) -> Outcome<Option<Payment>> {
        for _ in 0..50 {
            if self.store.insert_pending(payment).await? {
                return Ok(None);
            }
            match self.store.live_for_order(payment.order_id).await? {
                Some(live) if live.payment.status == PaymentStatus::Succeeded => {
                    return Err(PaymentError::OrderNotPayable("paid".into()).into());
                }
                Some(live) if live.session_id.is_some() => return Ok(Some(live.payment)),
                // Being created right now, or just went away: look again shortly.
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(PaymentError::IdempotencyInProgress.into())
    }

    fn checkout(&self, order: &Order, payment: PaymentId) -> NewCheckout {
        let public = self.deps.public_url.trim_end_matches('/');
        let callback = |outcome: &str, configured: &Option<String>| match configured {
            Some(url) => url.replace("{ORDER_ID}", &order.id.to_string()),
            None => format!(
                "{public}/stripe-callback/payment-{outcome}/?session_id={{CHECKOUT_SESSION_ID}}"
            ),
        };
        let urls = &self.deps.return_urls;
        NewCheckout {
            idempotency_key: format!("checkout-{payment}"),
            currency: order.currency.code().to_owned(),
            lines: order
                .items
                .iter()
                .map(|l| CheckoutLine {
                    name: l.name.clone(),
                    unit_amount: l.unit_price,
                    quantity: u64::try_from(l.quantity).unwrap_or(0),
                })
                .collect(),
            order_id: order.id.to_string(),
            payment_id: payment.to_string(),
            success_url: callback("success", &urls.success),
            cancel_url: callback("fail", &urls.cancel),
            expires_at: session_expiry(order.expires_at),
        }
    }
}
