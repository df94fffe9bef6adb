//! Turns user and order events into pending emails, once per (event, template):
//! a delivered batch's emails are written together.

use std::collections::HashMap;
use std::sync::Arc;

use mart_schema::order::OrderEvent;
use mart_schema::user::{Caller, UserRegistered, UserUpdated};
use mart_schema::{EventEnvelope, Money, Service, UserId};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::sender::{SENDER, SenderMsg};
use super::store::{NewEmail, NotificationStore};
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
            // One query for the batch's recipients and one statement for its
            // emails: an order burst is many events at once, and one round
            // trip and commit each left the emails far behind the orders.
            let mut known = match state.store.recipients(&order_users(&batch)).await {
                Ok(known) => known,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "notifications not prepared yet");
                    return 0;
                }
            };
            let mut handled = 0i64;
            let mut emails = Vec::new();
            for event in &batch {
                let span = consuming(event, SUBSCRIBER);
                match state.apply(event, &mut known).instrument(span).await {
                    Ok(email) => {
                        handled += 1;
                        emails.extend(email);
                    }
                    Err(e) => {
                        tracing::warn!(event = %event.event_id, error = %e.chain(), "notification not prepared yet");
                        break;
                    }
                }
            }
            match state.store.queue(&emails).await {
                Ok(0) => {}
                Ok(_) => {
                    if let Some(cell) = ractor::registry::where_is(SENDER) {
                        let _ = ActorRef::<SenderMsg>::from(cell).cast(SenderMsg::Send);
                    }
                }
                Err(e) => {
                    // None written: the whole batch comes again.
                    tracing::warn!(error = %e.chain(), "notifications not written yet");
                    return 0;
                }
            }
            handled
        })
        .await;
        Ok(())
    }
}

/// The users whom the order events of `batch` write to.
fn order_users(batch: &[EventEnvelope]) -> Vec<UserId> {
    let mut users: Vec<UserId> = batch
        .iter()
        .filter(|e| order_template(&e.event_type).is_some())
        .filter_map(|e| serde_json::from_value(e.data.get("user_id")?.clone()).ok())
        .collect();
    users.sort_unstable_by_key(|u| u.0);
    users.dedup();
    users
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

/// Names and addresses by user, as far as known.
type Known = HashMap<UserId, (String, String)>;

impl SubscriberState {
    /// The email one event sends, if any, ready to write.
    async fn apply(
        &self,
        event: &EventEnvelope,
        known: &mut Known,
    ) -> Result<Option<NewEmail>, Infra> {
        let data = event.data.clone();
        match event.event_type.as_str() {
            "user.registered" => {
                let user: UserRegistered = serde_json::from_value(data).map_err(Infra::bug)?;
                let store = &self.store;
                store
                    .remember(user.user_id, &user.username, &user.email)
                    .await?;
                let context = serde_json::json!({"username": user.username, "email": user.email});
                self.email(event, "welcome", user.user_id, user.email, &context)
                    .map(Some)
            }
            "user.updated" => {
                let user: UserUpdated = serde_json::from_value(data).map_err(Infra::bug)?;
                self.store.change_address(user.user_id, &user.email).await?;
                Ok(None)
            }
            kind => match order_template(kind) {
                Some(template) => {
                    let order: OrderEvent = serde_json::from_value(data).map_err(Infra::bug)?;
                    self.order_email(event, template, &order, known)
                        .await
                        .map(Some)
                }
                None => Ok(None),
            },
        }
    }

    async fn order_email(
        &self,
        event: &EventEnvelope,
        template: &'static str,
        order: &OrderEvent,
        known: &mut Known,
    ) -> Result<NewEmail, Infra> {
        let (username, email) = self.recipient(order.user_id, known).await?;
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
        self.email(event, template, order.user_id, email, &context)
    }

    /// Who to write to: kept from user events, else asked of the user service
    /// (order and user events come from different outboxes, in no fixed order).
    async fn recipient(&self, user: UserId, known: &mut Known) -> Result<(String, String), Infra> {
        if let Some(kept) = known.get(&user) {
            return Ok(kept.clone());
        }
        let found = self
            .users
            .get(Caller::Service, user)
            .await
            .map_err(|e| e.into_infra(Service::Users))?;
        self.store
            .remember(user, &found.username, &found.email)
            .await?;
        let kept = (found.username, found.email);
        known.insert(user, kept.clone());
        Ok(kept)
    }

    fn email(
        &self,
        event: &EventEnvelope,
        template: &'static str,
        user: UserId,
        to: String,
        context: &serde_json::Value,
    ) -> Result<NewEmail, Infra> {
        let rendered = self
            .templates
            .render(template, context)
            .map_err(|e| Infra::other("rendering an email", e))?;
        Ok(NewEmail {
            event: event.event_id,
            template,
            user: Some(user),
            to,
            rendered,
            // The span preparing it: the send continues its trace.
            trace: crate::trace::current().map(String::from),
        })
    }
}

#[cfg(test)]
#[path = "subscriber_tests.rs"]
mod tests;
