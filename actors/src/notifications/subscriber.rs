//! Turns user and order events into pending emails, once per (event, template).

use std::sync::Arc;

use mart_schema::order::OrderEvent;
use mart_schema::user::{Caller, UserRegistered, UserUpdated};
use mart_schema::{EventEnvelope, Money, Service, UserId};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::sender::{SENDER, SenderMsg};
use super::store::NotificationStore;
use super::templates::Templates;
use crate::failure::Infra;
use crate::outbox::{SubscriberMsg, acknowledge, subscribe};
use crate::trace::consuming;
use crate::users::Users;
use tracing::Instrument;

/// The durable subscription (and registry) name of the subscriber.
pub(crate) const SUBSCRIBER: &str = "mart.notifications.events";

#[derive(Debug, Clone, Copy)]
pub(crate) struct NotificationSubscriber;

#[derive(Debug)]
pub(crate) struct SubscriberState {
    store: NotificationStore,
    templates: Arc<Templates>,
    users: Users,
}

impl Actor for NotificationSubscriber {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = NotificationStore;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        store: NotificationStore,
    ) -> Result<Self::State, ActorProcessingErr> {
        let templates = Arc::new(Templates::load()?);
        // Payment events send nothing today; the subscription keeps their history
        // available for templates to come.
        subscribe(
            &myself,
            &[Service::Users, Service::Orders, Service::Payments],
        );
        Ok(SubscriberState {
            store,
            templates,
            users: Users::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        acknowledge(msg, async |batch| {
            let mut handled = 0i64;
            let mut queued = false;
            for event in &batch {
                let span = consuming(event, SUBSCRIBER);
                match state.apply(event).instrument(span).await {
                    Ok(new) => {
                        handled += 1;
                        queued |= new;
                    }
                    Err(e) => {
                        tracing::warn!(event = %event.event_id, error = %e.chain(), "notification not prepared yet");
                        break;
                    }
                }
            }
            if queued && let Some(cell) = ractor::registry::where_is(SENDER) {
                let _ = ActorRef::<SenderMsg>::from(cell).cast(SenderMsg::Send);
            }
            handled
        })
        .await;
        Ok(())
    }
}

/// `12.50 USD`, from minor units.
fn money(amount: i64, currency: mart_schema::Currency) -> String {
    Money::new(amount, currency).to_string()
}

/// The template an order event sends, if any.
fn order_template(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "order.placed" => "order_placed",
        "order.paid" => "order_paid",
        "order.shipped" => "order_shipped",
        "order.delivered" => "order_delivered",
        "order.cancelled" => "order_cancelled",
        "order.expired" => "order_expired",
        _ => return None,
    })
}

impl SubscriberState {
    /// Prepares the email(s) for one event; `true` if any is new.
    async fn apply(&self, event: &EventEnvelope) -> Result<bool, Infra> {
        let data = event.data.clone();
        match event.event_type.as_str() {
            "user.registered" => {
                let user: UserRegistered = serde_json::from_value(data).map_err(Infra::bug)?;
                let store = &self.store;
                store
                    .remember(user.user_id, &user.username, &user.email)
                    .await?;
                let context = serde_json::json!({"username": user.username, "email": user.email});
                self.queue(event, "welcome", user.user_id, &user.email, &context)
                    .await
            }
            "user.updated" => {
                let user: UserUpdated = serde_json::from_value(data).map_err(Infra::bug)?;
                self.store.change_address(user.user_id, &user.email).await?;
                Ok(false)
            }
            kind => match order_template(kind) {
                Some(template) => {
                    let order: OrderEvent = serde_json::from_value(data).map_err(Infra::bug)?;
                    self.order_email(event, template, &order).await
                }
                None => Ok(false),
            },
        }
    }

    async fn order_email(
        &self,
        event: &EventEnvelope,
        template: &str,
        order: &OrderEvent,
    ) -> Result<bool, Infra> {
        let (username, email) = self.recipient(order.user_id).await?;
        let lines: Vec<serde_json::Value> = order
            .items
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name, "quantity": l.quantity,
                    "unit_price": money(l.unit_price, order.currency),
                    "line_total": money(l.line_total, order.currency),
                })
            })
            .collect();
        let expires = order.expires_at;
        let context = serde_json::json!({
            "username": username, "order_id": order.order_id.to_string(), "lines": lines,
            "total": money(order.total, order.currency), "refund_due": order.refund_due,
            "expires_at": format!("{} {:02}:{:02}", expires.date(), expires.hour(), expires.minute()),
        });
        self.queue(event, template, order.user_id, &email, &context)
            .await
    }

    /// Who to write to: kept from user events, else asked of the user service
    /// (order and user events come from different outboxes, in no fixed order).
    async fn recipient(&self, user: UserId) -> Result<(String, String), Infra> {
        if let Some(kept) = self.store.recipient(user).await? {
            return Ok(kept);
        }
        let found = self
            .users
            .get(Caller::Service, user)
            .await
            .map_err(|e| e.into_infra(Service::Users))?;
        self.store
            .remember(user, &found.username, &found.email)
            .await?;
        Ok((found.username, found.email))
    }

    async fn queue(
        &self,
        event: &EventEnvelope,
        template: &str,
        user: UserId,
        to: &str,
        context: &serde_json::Value,
    ) -> Result<bool, Infra> {
        let rendered = self
            .templates
            .render(template, context)
            .map_err(|e| Infra::other("rendering an email", e))?;
        self.store
            .queue(event.event_id, template, Some(user), to, &rendered)
            .await
    }
}
