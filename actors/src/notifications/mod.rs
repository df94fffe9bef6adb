//! The notification service: exactly one email per (business event, template).
//!
//! - `NotificationSubscriber` takes user and order events from those services'
//!   outboxes, keeps recipients (from `user.registered`/`user.updated`, else it
//!   asks the user service), renders the templates and writes one row per
//!   (event, template) — the unique key that makes a redelivered event a no-op —
//!   before acknowledging.
//! - `MailSender` sends pending rows through the node's [`Mailer`] (SMTP or
//!   files), marks them sent after the server accepted them, retries transient
//!   failures with a capped backoff (also across restarts: the rows are the
//!   queue), and marks permanent (5xx) rejections failed with the server's reply.
//! - `NotificationsFront` answers the admin and "my notifications" reads.

mod templates;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use mart_schema::notification::{
    Notification, NotificationError, NotificationEvent, NotificationQuery, NotificationStatus,
};
use mart_schema::order::OrderEvent;
use mart_schema::user::{Caller, Role, UserRegistered, UserUpdated};
use mart_schema::{
    EventEnvelope, FieldErrors, Money, NotificationId, Page, PageRequest, Service, UserId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio_postgres::Row;

use crate::call::{CallError, Failure, Rejection, ServiceClient, spawn_answer};
use crate::outbox::{Outbox, SubscriberMsg, acknowledge, subscribe};
use crate::users::Users;
use crate::wire::Wire;
use templates::Templates;

/// The durable subscription (and registry) name of the subscriber.
pub(crate) const SUBSCRIBER: &str = "mart.notifications.events";
/// The registry name of the sender on this node.
pub(crate) const SENDER: &str = "mart.notifications.sender";
/// The longest pause between attempts at one email.
const MAX_BACKOFF_SECS: i64 = 300;

/// One email to send.
#[derive(Debug, Clone)]
pub struct Email {
    /// Also the `Message-ID`, so a receiver can spot a resend after a crash.
    pub id: NotificationId,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Why sending failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MailError {
    /// The server refused for good (5xx): do not retry.
    #[error("rejected: {0}")]
    Permanent(String),
    /// Try again later (server down, 4xx).
    #[error("{0}")]
    Transient(String),
}

/// How mail leaves mart: SMTP, or files in the data directory.
pub trait Mailer: Send + Sync + std::fmt::Debug {
    fn send(&self, email: Email) -> BoxFuture<'_, Result<(), MailError>>;
}

/// The notification service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum NotificationsMsg {
    #[rpc]
    List(
        Wire<(Caller, NotificationQuery, bool)>,
        RpcReplyPort<Wire<Result<Page<Notification>, NotificationError>>>,
    ),
    #[rpc]
    Get(
        Wire<(Caller, NotificationId)>,
        RpcReplyPort<Wire<Result<Notification, NotificationError>>>,
    ),
}

/// Handle on the notification service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Notifications {
    client: ServiceClient<NotificationsMsg>,
}

impl Notifications {
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Notifications, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// The log (admin), or only the caller's own with `mine_only`.
    pub async fn list(
        &self,
        caller: Caller,
        query: NotificationQuery,
        mine_only: bool,
    ) -> Result<Page<Notification>, CallError<NotificationError>> {
        self.client
            .ask(|reply| NotificationsMsg::List((caller, query.clone(), mine_only).into(), reply))
            .await
    }

    pub async fn get(
        &self,
        caller: Caller,
        id: NotificationId,
    ) -> Result<Notification, CallError<NotificationError>> {
        self.client
            .ask(|reply| NotificationsMsg::Get((caller, id).into(), reply))
            .await
    }
}

impl Rejection for NotificationError {
    fn malformed(reason: String) -> Self {
        NotificationError::Invalid(FieldErrors::single("request", reason))
    }
}

const COLUMNS: &str = "notification_id, user_id, template, subject, recipient, status, attempts, last_error, created_at, sent_at";

fn read(row: &Row) -> Result<Notification, String> {
    let status: String = row.get("status");
    Ok(Notification {
        id: row.get("notification_id"),
        user_id: row.get("user_id"),
        template: row.get("template"),
        subject: row.get("subject"),
        recipient: row.get("recipient"),
        status: status.parse()?,
        attempts: row.get("attempts"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
        sent_at: row.get("sent_at"),
    })
}

/// The `mart.notifications` group member: reads of the log.
#[derive(Debug)]
pub(crate) struct NotificationsFront;

impl Actor for NotificationsFront {
    type Msg = NotificationsMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pool: Pool,
    ) -> Result<Pool, ActorProcessingErr> {
        ractor::pg::join(Service::Notifications.group(), vec![myself.get_cell()]);
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        pool: &mut Pool,
    ) -> Result<(), ActorProcessingErr> {
        let pool = pool.clone();
        match msg {
            NotificationsMsg::List(request, reply) => {
                spawn_answer(reply, request, move |(caller, query, mine)| async move {
                    list(&pool, caller, query, mine).await
                })
            }
            NotificationsMsg::Get(request, reply) => {
                spawn_answer(reply, request, move |(caller, id)| async move {
                    get(&pool, caller, id).await
                })
            }
        }
        Ok(())
    }
}

fn infra(e: impl std::fmt::Display) -> Failure<NotificationError> {
    Failure::Infrastructure(e.to_string())
}

async fn list(
    pool: &Pool,
    caller: Caller,
    query: NotificationQuery,
    mine: bool,
) -> Result<Page<Notification>, Failure<NotificationError>> {
    if !mine && !caller.is_admin() {
        return Err(NotificationError::Forbidden.into());
    }
    let page = PageRequest {
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    let mut errors = FieldErrors::default();
    let limit = page.limit().map_err(|e| errors.0.extend(e.0)).unwrap_or(0);
    let after = page
        .cursor_key::<NotificationId>()
        .map_err(|e| errors.0.extend(e.0))
        .unwrap_or(None);
    let status = match query
        .status
        .as_deref()
        .map(str::parse::<NotificationStatus>)
    {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            errors.add("status", e);
            None
        }
        None => None,
    };
    errors.into_result().map_err(NotificationError::Invalid)?;
    let user = if mine {
        Some(caller.user_id)
    } else {
        query.user_id
    };
    let client = pool.get().await.map_err(infra)?;
    let rows = client
        .query(
            &format!(
                "select {COLUMNS} from notifications.notifications \
                 where ($1::uuid is null or user_id = $1) and ($2::text is null or status = $2) \
                   and ($3::uuid is null or notification_id < $3) \
                 order by notification_id desc limit $4"
            ),
            &[
                &user,
                &status.map(NotificationStatus::as_str),
                &after,
                &(i64::from(limit) + 1),
            ],
        )
        .await
        .map_err(infra)?;
    let mut items = rows
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()
        .map_err(infra)?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|n| n.id.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

async fn get(
    pool: &Pool,
    caller: Caller,
    id: NotificationId,
) -> Result<Notification, Failure<NotificationError>> {
    if !caller.is_admin() {
        return Err(NotificationError::Forbidden.into());
    }
    let client = pool.get().await.map_err(infra)?;
    let row = client
        .query_opt(
            &format!(
                "select {COLUMNS} from notifications.notifications where notification_id = $1"
            ),
            &[&id],
        )
        .await
        .map_err(infra)?
        .ok_or(Failure::Rejected(NotificationError::NotFound))?;
    read(&row).map_err(infra)
}

/// Turns user and order events into pending emails.
#[derive(Debug)]
pub(crate) struct NotificationSubscriber;

#[derive(Debug)]
pub(crate) struct SubscriberState {
    pool: Pool,
    templates: Arc<Templates>,
    users: Users,
}

impl Actor for NotificationSubscriber {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = (Pool, Duration);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (pool, timeout): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let templates = Arc::new(Templates::load()?);
        // Payment events send nothing today; the subscription keeps their history
        // available for templates to come.
        subscribe(
            &myself,
            &[Service::Users, Service::Orders, Service::Payments],
        );
        Ok(SubscriberState {
            pool,
            templates,
            users: Users::new(timeout),
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
                match state.apply(event).await {
                    Ok(new) => {
                        handled += 1;
                        queued |= new;
                    }
                    Err(e) => {
                        tracing::warn!(event = %event.event_id, error = %e, "notification not prepared yet");
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

impl SubscriberState {
    /// Prepares the email(s) for one event; `true` if any is new.
    async fn apply(&self, event: &EventEnvelope) -> Result<bool, String> {
        match event.event_type.as_str() {
            "user.registered" => {
                let user: UserRegistered =
                    serde_json::from_value(event.data.clone()).map_err(|e| e.to_string())?;
                self.remember(user.user_id, &user.username, &user.email)
                    .await?;
                let context = serde_json::json!({"username": user.username, "email": user.email});
                self.queue(event, "welcome", Some(user.user_id), &user.email, &context)
                    .await
            }
            "user.updated" => {
                let user: UserUpdated =
                    serde_json::from_value(event.data.clone()).map_err(|e| e.to_string())?;
                let client = self.pool.get().await.map_err(|e| e.to_string())?;
                client
                    .execute(
                        "update notifications.recipients set email = $2, updated_at = now() where user_id = $1",
                        &[&user.user_id, &user.email],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(false)
            }
            kind if kind.starts_with("order.") => {
                let template = match kind {
                    "order.placed" => "order_placed",
                    "order.paid" => "order_paid",
                    "order.shipped" => "order_shipped",
                    "order.delivered" => "order_delivered",
                    "order.cancelled" => "order_cancelled",
                    "order.expired" => "order_expired",
                    _ => return Ok(false),
                };
                let order: OrderEvent =
                    serde_json::from_value(event.data.clone()).map_err(|e| e.to_string())?;
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
                self.queue(event, template, Some(order.user_id), &email, &context)
                    .await
            }
            _ => Ok(false),
        }
    }

    async fn remember(&self, user: UserId, username: &str, email: &str) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "insert into notifications.recipients (user_id, username, email) values ($1, $2, $3) \
                 on conflict (user_id) do update set username = excluded.username, email = excluded.email, updated_at = now()",
                &[&user, &username, &email],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Who to write to: kept from user events, else asked of the user service
    /// (order and user events come from different outboxes, in no fixed order).
    async fn recipient(&self, user: UserId) -> Result<(String, String), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        if let Some(row) = client
            .query_opt(
                "select username, email from notifications.recipients where user_id = $1",
                &[&user],
            )
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok((row.get(0), row.get(1)));
        }
        drop(client);
        let me = Caller {
            user_id: user,
            role: Role::Customer,
        };
        let found = self
            .users
            .get(me, user)
            .await
            .map_err(|e| format!("users: {e}"))?;
        self.remember(user, &found.username, &found.email).await?;
        Ok((found.username, found.email))
    }

    /// Writes the email once per (event, template); `true` if it is new.
    async fn queue(
        &self,
        event: &EventEnvelope,
        template: &str,
        user: Option<UserId>,
        to: &str,
        context: &serde_json::Value,
    ) -> Result<bool, String> {
        let rendered = self.templates.render(template, context)?;
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let inserted = client
            .execute(
                "insert into notifications.notifications \
                 (notification_id, event_id, template, user_id, recipient, subject, body_text, body_html) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (event_id, template) do nothing",
                &[
                    &NotificationId::new(),
                    &event.event_id,
                    &template,
                    &user,
                    &to,
                    &rendered.subject,
                    &rendered.text,
                    &rendered.html,
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(inserted == 1)
    }
}

/// Sends pending emails.
#[derive(Debug)]
pub(crate) struct MailSender;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum SenderMsg {
    Send,
}

#[derive(Debug)]
pub(crate) struct SenderState {
    pool: Pool,
    mailer: Arc<dyn Mailer>,
    outbox: Outbox,
}

impl Actor for MailSender {
    type Msg = SenderMsg;
    type State = SenderState;
    type Arguments = (Pool, Arc<dyn Mailer>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (pool, mailer): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || SenderMsg::Send);
        Ok(SenderState {
            pool,
            mailer,
            outbox: Outbox::new(Service::Notifications),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut SenderState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = state.send_due().await {
            tracing::warn!(error = %e, "sending notifications failed; will retry");
        }
        Ok(())
    }
}

impl SenderState {
    async fn send_due(&self) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        loop {
            let tx = client.transaction().await.map_err(|e| e.to_string())?;
            // One at a time, locked: two nodes hosting notifications never send
            // the same row.
            let Some(row) = tx
                .query_opt(
                    "select notification_id, user_id, template, recipient, subject, body_text, body_html, attempts \
                     from notifications.notifications \
                     where status = 'pending' and next_attempt_at <= now() \
                     order by next_attempt_at limit 1 for update skip locked",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            let id: NotificationId = row.get(0);
            let user: Option<UserId> = row.get(1);
            let template: String = row.get(2);
            let to: String = row.get(3);
            let attempts: i32 = row.get(7);
            let email = Email {
                id,
                to: to.clone(),
                subject: row.get(4),
                text: row.get(5),
                html: row.get(6),
            };
            let outcome = self.mailer.send(email).await;
            let (status, error) = match &outcome {
                Ok(()) => (NotificationStatus::Sent, None),
                Err(MailError::Permanent(reply)) => {
                    (NotificationStatus::Failed, Some(reply.clone()))
                }
                Err(MailError::Transient(reason)) => {
                    (NotificationStatus::Pending, Some(reason.clone()))
                }
            };
            let backoff = 2i64
                .saturating_pow(u32::try_from(attempts).unwrap_or(0).min(16))
                .min(MAX_BACKOFF_SECS);
            tx.execute(
                "update notifications.notifications set status = $2, attempts = attempts + 1, last_error = $3, \
                   sent_at = case when $2 = 'sent' then now() else sent_at end, \
                   next_attempt_at = now() + make_interval(secs => $4) \
                 where notification_id = $1",
                &[&id, &status.as_str(), &error, &(backoff as f64)],
            )
            .await
            .map_err(|e| e.to_string())?;
            if status != NotificationStatus::Pending {
                let event = NotificationEvent {
                    notification_id: id,
                    user_id: user,
                    template,
                    recipient: to,
                    status,
                    last_error: error,
                };
                self.outbox
                    .append(&tx, &[event])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            self.outbox.wake();
            if let Err(MailError::Transient(reason)) = outcome {
                // The server is away: leave the rest for the next round.
                return Err(reason);
            }
        }
    }
}
