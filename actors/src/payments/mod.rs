//! The payment service: Stripe Checkout for orders.
//!
//! A payment is one checkout session for one order; an order has at most one
//! live (pending or succeeded) payment, so it is never charged twice. A payment
//! is confirmed only from what Stripe says about the session (never from a
//! redirect's query alone), by whichever comes first of the success redirect,
//! the webhook and the reconciler, exactly once: the `pending → succeeded`
//! update is conditional and publishes `payment.succeeded`, from which the
//! order service learns its order is paid. A payment that arrives for an
//! attempt given up on is refunded.
//!
//! The payment service never calls the order service: the order service
//! hands it the order to pay ([`Payments::start`]) and asks it to close an
//! order's payment ([`Payments::refund`]).
//!
//! - `mod.rs` (here): the handle [`Payments`] and its mailbox [`PaymentsMsg`].
//! - `front`: the group member; every request runs in its own task.
//! - `checkout`: starting a payment (the Checkout Session).
//! - `confirm`: confirming, failing, refunding; Stripe's webhooks.
//! - `reconciler`: asks Stripe about payments nobody settled.
//! - `store`: all of the service's SQL.
//! - `gateway`: the provider interface (implemented by the node with async-stripe).
//! - `webhook`: Stripe's signature scheme.

mod checkout;
mod confirm;
mod front;
pub mod gateway;
mod reconciler;
mod store;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use mart_schema::order::Order;
use mart_schema::payment::{Payment, PaymentError, PaymentOutcome};
use mart_schema::user::Caller;
use mart_schema::{OrderId, PaymentId, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

pub(crate) use front::PaymentService;
pub(crate) use reconciler::Reconciler;

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::wire::Wire;
use gateway::CheckoutGateway;

rejection!(PaymentError);

/// What the payment service needs from the node.
#[derive(Clone)]
pub struct PaymentDeps {
    pub gateway: Arc<dyn CheckoutGateway>,
    /// Base URL shoppers' browsers reach the edge at (`MART_PUBLIC_URL`).
    pub public_url: String,
    /// Webhook signing secrets; several during a rotation.
    pub webhook_secrets: Vec<String>,
    /// Pending payments older than this are asked about at Stripe.
    pub reconcile_after: Duration,
    /// Where Stripe sends the shopper back, if not to the edge's own
    /// callbacks (a storefront's order page): `{ORDER_ID}` becomes the
    /// order's id, `{CHECKOUT_SESSION_ID}` Stripe fills in.
    pub return_urls: ReturnUrls,
}

/// Where shoppers land after Checkout; `None`: the edge's callback pages.
#[derive(Clone, Debug, Default)]
pub struct ReturnUrls {
    pub success: Option<String>,
    pub cancel: Option<String>,
}

impl std::fmt::Debug for PaymentDeps {
    // The webhook secrets never show in a log line or a panic.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentDeps")
            .field("gateway", &self.gateway)
            .field("public_url", &self.public_url)
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("reconcile_after", &self.reconcile_after)
            .finish()
    }
}

/// An order to pay, handed over by the order service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPayment {
    /// Who pays: the order's owner (or an admin); Idempotency-Keys are theirs.
    pub payer: Caller,
    pub key: Option<String>,
    pub order: Order,
}

/// A payment started, and whether this answer replays an earlier request's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub payment: Payment,
    pub replayed: bool,
}

/// A Stripe webhook as it arrived: the raw body and its `Stripe-Signature`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeWebhook {
    pub body: Vec<u8>,
    pub signature: String,
}

/// The payment service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum PaymentsMsg {
    /// From the order service only.
    #[rpc]
    Start(
        Wire<Request<NewPayment>>,
        RpcReplyPort<Wire<Result<Started, Refusal<PaymentError>>>>,
    ),
    #[rpc]
    Get(
        Wire<Request<PaymentId>>,
        RpcReplyPort<Wire<Result<Payment, Refusal<PaymentError>>>>,
    ),
    #[rpc]
    Confirm(
        Wire<Request<String>>,
        RpcReplyPort<Wire<Result<PaymentOutcome, Refusal<PaymentError>>>>,
    ),
    #[rpc]
    Fail(
        Wire<Request<String>>,
        RpcReplyPort<Wire<Result<PaymentOutcome, Refusal<PaymentError>>>>,
    ),
    #[rpc]
    Webhook(
        Wire<Request<StripeWebhook>>,
        RpcReplyPort<Wire<Result<(), Refusal<PaymentError>>>>,
    ),
    /// From the order service only: the order is over.
    #[rpc]
    Refund(
        Wire<Request<OrderId>>,
        RpcReplyPort<Wire<Result<bool, Refusal<PaymentError>>>>,
    ),
}

/// Handle on the payment service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Payments {
    client: ServiceClient<PaymentsMsg>,
}

type Answer<T> = Result<T, CallError<PaymentError>>;

impl Default for Payments {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Payments),
        }
    }
}

impl Payments {
    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// Starts (or returns the live) payment of `order` for `payer`.
    pub(crate) async fn start(
        &self,
        payer: Caller,
        key: Option<String>,
        order: Order,
    ) -> Answer<Started> {
        let new = NewPayment { payer, key, order };
        self.client
            .ask(Caller::Service, new, PaymentsMsg::Start)
            .await
    }

    pub async fn get(&self, caller: Caller, id: PaymentId) -> Answer<Payment> {
        self.client.ask(caller, id, PaymentsMsg::Get).await
    }

    /// The success redirect: confirms if Stripe says the session is paid.
    pub async fn confirm(&self, session: String) -> Answer<PaymentOutcome> {
        let caller = Caller::Anonymous;
        self.client.ask(caller, session, PaymentsMsg::Confirm).await
    }

    /// The cancel redirect: marks the attempt failed if Stripe says it is unpaid.
    pub async fn fail(&self, session: String) -> Answer<PaymentOutcome> {
        let caller = Caller::Anonymous;
        self.client.ask(caller, session, PaymentsMsg::Fail).await
    }

    /// A Stripe webhook: the raw body and its `Stripe-Signature`.
    pub async fn webhook(&self, body: Vec<u8>, signature: String) -> Answer<()> {
        let hook = StripeWebhook { body, signature };
        let caller = Caller::Anonymous;
        self.client.ask(caller, hook, PaymentsMsg::Webhook).await
    }

    /// The order is over: refunds its succeeded payment (`true`) or closes
    /// its open checkout session.
    pub(crate) async fn refund(&self, order: OrderId) -> Answer<bool> {
        let caller = Caller::Service;
        self.client.ask(caller, order, PaymentsMsg::Refund).await
    }
}
