//! The payment service: Stripe Checkout for orders.
//!
//! A payment is one checkout session for one order; an order has at most one
//! live (pending or succeeded) payment, so it is never charged twice. A payment
//! is confirmed only from what Stripe says about the session (never from a
//! redirect's query alone), by whichever comes first of the success redirect,
//! the webhook and the reconciler, exactly once: the `pending → succeeded`
//! update is conditional, and telling the order goes through that order's
//! actor, which accepts "paid" once. A payment that arrives for an order that
//! can no longer take it is refunded.
//!
//! - `gateway`: the provider interface (implemented by the node with async-stripe).
//! - `webhook`: Stripe's signature scheme.
//! - `store`: SQL.

pub mod gateway;
mod store;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use mart_schema::order::{OrderError, OrderStatus};
use mart_schema::payment::{Payment, PaymentError, PaymentOutcome, PaymentStatus};
use mart_schema::user::{Caller, Role};
use mart_schema::{FieldErrors, OrderId, PaymentId, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use time::OffsetDateTime;

use crate::call::{CallError, Failure, Rejection, ServiceClient, spawn_answer};
use crate::idempotency::{FirstRun, KeyErrors};
use crate::orders::Orders;
use crate::outbox::Outbox;
use crate::wire::Wire;
use gateway::{CheckoutGateway, CheckoutLine, CheckoutSession, GatewayError, NewCheckout};
use store::{PaymentStore, Row2};

/// The payment service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum PaymentsMsg {
    #[rpc]
    Create(
        Wire<(Caller, Option<String>, OrderId)>,
        RpcReplyPort<Wire<Result<(Payment, bool), PaymentError>>>,
    ),
    #[rpc]
    Get(
        Wire<(Caller, PaymentId)>,
        RpcReplyPort<Wire<Result<Payment, PaymentError>>>,
    ),
    #[rpc]
    Confirm(
        Wire<String>,
        RpcReplyPort<Wire<Result<PaymentOutcome, PaymentError>>>,
    ),
    #[rpc]
    Fail(
        Wire<String>,
        RpcReplyPort<Wire<Result<PaymentOutcome, PaymentError>>>,
    ),
    #[rpc]
    Webhook(
        Wire<(Vec<u8>, String)>,
        RpcReplyPort<Wire<Result<(), PaymentError>>>,
    ),
    #[rpc]
    Refund(
        Wire<OrderId>,
        RpcReplyPort<Wire<Result<bool, PaymentError>>>,
    ),
}

/// Handle on the payment service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Payments {
    client: ServiceClient<PaymentsMsg>,
}

type Answer<T> = Result<T, CallError<PaymentError>>;

impl Payments {
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Payments, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// Starts (or returns the live) payment of an order.
    pub async fn create(
        &self,
        caller: Caller,
        key: Option<String>,
        order: OrderId,
    ) -> Answer<(Payment, bool)> {
        self.client
            .ask(|reply| PaymentsMsg::Create((caller, key.clone(), order).into(), reply))
            .await
    }

    pub async fn get(&self, caller: Caller, id: PaymentId) -> Answer<Payment> {
        self.client
            .ask(|reply| PaymentsMsg::Get((caller, id).into(), reply))
            .await
    }

    /// The success redirect: confirms if Stripe says the session is paid.
    pub async fn confirm(&self, session: String) -> Answer<PaymentOutcome> {
        self.client
            .ask(|reply| PaymentsMsg::Confirm(session.clone().into(), reply))
            .await
    }

    /// The cancel redirect: marks the attempt failed if Stripe says it is unpaid.
    pub async fn fail(&self, session: String) -> Answer<PaymentOutcome> {
        self.client
            .ask(|reply| PaymentsMsg::Fail(session.clone().into(), reply))
            .await
    }

    /// A Stripe webhook: the raw body and its `Stripe-Signature`.
    pub async fn webhook(&self, body: Vec<u8>, signature: String) -> Answer<()> {
        self.client
            .ask(|reply| PaymentsMsg::Webhook((body.clone(), signature.clone()).into(), reply))
            .await
    }

    /// Refunds an order's succeeded payment; `false` if it had none.
    pub async fn refund(&self, order: OrderId) -> Answer<bool> {
        self.client
            .ask(|reply| PaymentsMsg::Refund(order.into(), reply))
            .await
    }
}

impl Rejection for PaymentError {
    fn malformed(reason: String) -> Self {
        PaymentError::Invalid(FieldErrors::single("request", reason))
    }
}

type Outcome<T> = Result<T, Failure<PaymentError>>;

/// What the payment service needs from the node.
#[derive(Clone, Debug)]
pub struct PaymentDeps {
    pub gateway: Arc<dyn CheckoutGateway>,
    /// Base URL shoppers' browsers reach the edge at (`MART_PUBLIC_URL`).
    pub public_url: String,
    /// Webhook signing secrets; several during a rotation.
    pub webhook_secrets: Vec<String>,
    /// Pending payments older than this are asked about at Stripe.
    pub reconcile_after: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct PaymentService {
    store: PaymentStore,
    orders: Orders,
    deps: PaymentDeps,
}

impl PaymentService {
    pub(crate) fn new(pool: Pool, deps: PaymentDeps, call_timeout: Duration) -> Self {
        Self {
            store: PaymentStore::new(pool, Outbox::new(Service::Payments)),
            orders: Orders::new(call_timeout),
            deps,
        }
    }
}

fn provider(e: GatewayError) -> Failure<PaymentError> {
    match e {
        GatewayError::NotFound => Failure::Rejected(PaymentError::NotFound),
        GatewayError::Refused(reason) | GatewayError::Unreachable(reason) => {
            Failure::Rejected(PaymentError::Provider(reason))
        }
    }
}

/// The `mart.payments` group member on a node hosting payments.
#[derive(Debug)]
pub(crate) struct PaymentsFront;

impl Actor for PaymentsFront {
    type Msg = PaymentsMsg;
    type State = PaymentService;
    type Arguments = PaymentService;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        service: PaymentService,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(Service::Payments.group(), vec![myself.get_cell()]);
        Ok(service)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        service: &mut PaymentService,
    ) -> Result<(), ActorProcessingErr> {
        let s = service.clone();
        match msg {
            PaymentsMsg::Create(request, reply) => {
                spawn_answer(reply, request, move |(caller, key, order)| async move {
                    s.create(caller, key, order).await
                })
            }
            PaymentsMsg::Get(request, reply) => {
                spawn_answer(reply, request, move |(caller, id)| async move {
                    let row = s
                        .store
                        .get(id)
                        .await?
                        .ok_or(Failure::Rejected(PaymentError::NotFound))?;
                    if !caller.is_admin() && caller.user_id != row.payment.user_id {
                        return Err(PaymentError::NotFound.into());
                    }
                    Ok(row.payment)
                })
            }
            PaymentsMsg::Confirm(request, reply) => {
                spawn_answer(reply, request, move |session| async move {
                    s.confirm(&session).await
                })
            }
            PaymentsMsg::Fail(request, reply) => {
                spawn_answer(reply, request, move |session| async move {
                    s.fail(&session).await
                })
            }
            PaymentsMsg::Webhook(request, reply) => {
                spawn_answer(reply, request, move |(body, signature)| async move {
                    s.webhook(&body, &signature).await
                })
            }
            PaymentsMsg::Refund(request, reply) => spawn_answer(
                reply,
                request,
                move |order| async move { s.refund(order).await },
            ),
        }
        Ok(())
    }
}

/// Stripe wants a session to live between 30 minutes and 24 hours.
fn session_expiry(order_expires: OffsetDateTime) -> i64 {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    order_expires
        .unix_timestamp()
        .clamp(now + 31 * 60, now + 24 * 3600 - 60)
}

impl PaymentService {
    async fn create(
        &self,
        caller: Caller,
        key: Option<String>,
        order: OrderId,
    ) -> Outcome<(Payment, bool)> {
        let errors = KeyErrors {
            in_progress: PaymentError::IdempotencyInProgress,
            mismatch: PaymentError::IdempotencyMismatch,
        };
        let store = &self.store;
        store
            .keys
            .run(
                &store.pool,
                caller.user_id,
                key.as_deref(),
                &order,
                errors,
                async |key| self.create_once(caller, order, key).await,
            )
            .await
    }

    async fn create_once(
        &self,
        caller: Caller,
        order_id: OrderId,
        key: Option<&str>,
    ) -> Outcome<FirstRun<Payment>> {
        let order = match self.orders.get(caller, order_id).await {
            Ok(order) => order,
            Err(CallError::Rejected(OrderError::NotFound)) => {
                return Err(PaymentError::OrderNotFound.into());
            }
            Err(e) => return Err(Failure::Infrastructure(format!("orders: {e}"))),
        };
        if order.status != OrderStatus::AwaitingPayment {
            return Err(PaymentError::OrderNotPayable(order.status.to_string()).into());
        }
        let payment = Payment {
            id: PaymentId::new(),
            order_id,
            user_id: order.user_id,
            status: PaymentStatus::Pending,
            amount: order.total,
            currency: order.currency,
            checkout_url: None,
            created_at: OffsetDateTime::now_utc(),
        };
        // One live payment per order: a concurrent second request gets the
        // first one's checkout session.
        for _ in 0..50 {
            if self.store.insert_pending(&payment).await? {
                break;
            }
            match self.store.live_for_order(order_id).await? {
                Some(live) if live.payment.status == PaymentStatus::Succeeded => {
                    return Err(PaymentError::OrderNotPayable("paid".into()).into());
                }
                // A concurrent click's payment: its outcome is recorded under
                // its own key, not this one.
                Some(live) if live.session_id.is_some() => {
                    return Ok(FirstRun {
                        value: live.payment,
                        recorded: false,
                    });
                }
                // Being created right now, or just went away: look again shortly.
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let public = self.deps.public_url.trim_end_matches('/');
        let checkout = NewCheckout {
            idempotency_key: format!("checkout-{}", payment.id),
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
            order_id: order_id.to_string(),
            payment_id: payment.id.to_string(),
            success_url: format!(
                "{public}/stripe-callback/payment-success/?session_id={{CHECKOUT_SESSION_ID}}"
            ),
            cancel_url: format!(
                "{public}/stripe-callback/payment-fail/?session_id={{CHECKOUT_SESSION_ID}}"
            ),
            expires_at: session_expiry(order.expires_at),
        };
        let session = match self.deps.gateway.create_session(checkout).await {
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

    async fn outcome(&self, id: PaymentId) -> Outcome<PaymentOutcome> {
        let row = self
            .store
            .get(id)
            .await?
            .ok_or(Failure::Rejected(PaymentError::NotFound))?;
        Ok(PaymentOutcome {
            order_id: row.payment.order_id,
            payment_id: row.payment.id,
            status: row.payment.status,
        })
    }

    /// Our payment for a checkout session, and what Stripe says of the session:
    /// a redirect or a webhook is never trusted on its own.
    async fn payment_and_session(&self, session_id: &str) -> Outcome<(Row2, CheckoutSession)> {
        let row = self
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
        Ok((row, session))
    }

    async fn confirm(&self, session_id: &str) -> Outcome<PaymentOutcome> {
        let (row, session) = self.payment_and_session(session_id).await?;
        if session.payment_status == "paid" {
            self.settle_paid(row.clone(), session.payment_intent.as_deref())
                .await?;
        }
        self.outcome(row.payment.id).await
    }

    /// The money is in: record it once, then tell the order (or give the money
    /// back if the order can no longer take it).
    async fn settle_paid(&self, row: Row2, intent: Option<&str>) -> Outcome<()> {
        let mut row = row;
        if row.payment.status == PaymentStatus::Pending {
            self.store
                .transition(
                    &row,
                    PaymentStatus::Pending,
                    PaymentStatus::Succeeded,
                    intent,
                )
                .await?;
            row = self
                .store
                .get(row.payment.id)
                .await?
                .ok_or(Failure::Rejected(PaymentError::NotFound))?;
        }
        match row.payment.status {
            PaymentStatus::Succeeded if !row.order_notified => {}
            PaymentStatus::Failed | PaymentStatus::Expired => {
                // Paid for an attempt given up on: return the money.
                return self.refund_row(&row, intent, row.payment.status).await;
            }
            _ => return Ok(()),
        }
        match self
            .orders
            .transition(None, row.payment.order_id, OrderStatus::Paid)
            .await
        {
            Ok(_) => self.store.mark_notified(row.payment.id).await,
            Err(CallError::Rejected(OrderError::IllegalTransition { current, .. })) => {
                tracing::warn!(order = %row.payment.order_id, %current, "payment for an order that cannot take it; refunding");
                self.refund_row(&row, intent, PaymentStatus::Succeeded)
                    .await?;
                self.store.mark_notified(row.payment.id).await
            }
            // Orders unreachable: the reconciler tries again.
            Err(e) => Err(Failure::Infrastructure(format!("orders: {e}"))),
        }
    }

    async fn refund_row(
        &self,
        row: &Row2,
        intent: Option<&str>,
        from: PaymentStatus,
    ) -> Outcome<()> {
        let intent = intent
            .map(str::to_owned)
            .or_else(|| row.payment_intent.clone())
            .ok_or_else(|| {
                Failure::Infrastructure("paid session without a payment intent".into())
            })?;
        self.deps
            .gateway
            .refund(intent, format!("refund-{}", row.payment.id))
            .await
            .map_err(provider)?;
        self.store
            .transition(row, from, PaymentStatus::Refunded, None)
            .await?;
        Ok(())
    }

    async fn fail(&self, session_id: &str) -> Outcome<PaymentOutcome> {
        let (row, session) = self.payment_and_session(session_id).await?;
        if session.payment_status != "paid" && row.payment.status == PaymentStatus::Pending {
            self.store
                .transition(&row, PaymentStatus::Pending, PaymentStatus::Failed, None)
                .await?;
        }
        self.outcome(row.payment.id).await
    }

    async fn refund(&self, order: OrderId) -> Outcome<bool> {
        match self.store.live_for_order(order).await? {
            Some(row) if row.payment.status == PaymentStatus::Succeeded => {
                self.refund_row(&row, None, PaymentStatus::Succeeded)
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn webhook(&self, body: &[u8], signature: &str) -> Outcome<()> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if !webhook::verify(&self.deps.webhook_secrets, signature, body, now) {
            return Err(PaymentError::BadSignature.into());
        }
        let event: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| Failure::Rejected(PaymentError::BadSignature))?;
        let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
            return Err(
                PaymentError::Invalid(FieldErrors::single("body", "not a Stripe event")).into(),
            );
        };
        if !self.store.first_sighting(id).await? {
            return Ok(());
        }
        let handled = self.handle_event(kind, &event["data"]["object"]).await;
        if let Err(Failure::Infrastructure(_)) = &handled {
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
                if let Some(row) = self.store.by_session(session).await?
                    && row.payment.status == PaymentStatus::Pending
                {
                    self.store
                        .transition(&row, PaymentStatus::Pending, PaymentStatus::Expired, None)
                        .await?;
                }
            }
            "charge.refunded" => {
                if let Some(intent) = object["payment_intent"].as_str()
                    && let Some(row) = self.store.by_intent(intent).await?
                    && row.payment.status == PaymentStatus::Succeeded
                {
                    self.store
                        .transition(
                            &row,
                            PaymentStatus::Succeeded,
                            PaymentStatus::Refunded,
                            None,
                        )
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Settles what neither redirect nor webhook settled.
    pub(crate) async fn reconcile(&self) -> Outcome<()> {
        let after = self.deps.reconcile_after.as_secs_f64();
        for row in self.store.unsettled(after).await? {
            let result = match (row.payment.status, row.session_id.clone()) {
                (PaymentStatus::Succeeded, _) => self.settle_paid(row.clone(), None).await,
                (PaymentStatus::Pending, Some(session_id)) => {
                    self.reconcile_pending(row.clone(), session_id).await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(payment = %row.payment.id, error = ?e, "reconciling a payment failed; will retry");
            }
        }
        Ok(())
    }

    async fn reconcile_pending(&self, row: Row2, session_id: String) -> Outcome<()> {
        let session = self
            .deps
            .gateway
            .session(session_id.clone())
            .await
            .map_err(provider)?;
        if session.payment_status == "paid" {
            return self
                .settle_paid(row, session.payment_intent.as_deref())
                .await;
        }
        if session.status == "expired" {
            self.store
                .transition(&row, PaymentStatus::Pending, PaymentStatus::Expired, None)
                .await?;
            return Ok(());
        }
        // Still open at Stripe but the order is gone: close the checkout.
        let owner = Caller {
            user_id: row.payment.user_id,
            role: Role::Customer,
        };
        if let Ok(order) = self.orders.get(owner, row.payment.order_id).await
            && order.status != OrderStatus::AwaitingPayment
            && order.status != OrderStatus::Paid
        {
            self.deps
                .gateway
                .expire_session(session_id)
                .await
                .map_err(provider)?;
            self.store
                .transition(&row, PaymentStatus::Pending, PaymentStatus::Expired, None)
                .await?;
        }
        Ok(())
    }
}

/// Asks Stripe about payments nobody settled, periodically.
#[derive(Debug)]
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
