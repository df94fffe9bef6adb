//! PostgreSQL access for the notification service: all of its SQL, and the
//! only writer of the `notifications` schema.

use std::collections::HashMap;
use std::time::Duration;

use crate::pool::Pool;
use mart_schema::notification::{Notification, NotificationEvent, NotificationStatus};
use mart_schema::{EventId, NotificationId, Service, UserId};
use tokio_postgres::Row;

use super::Email;
use super::templates::Rendered;
use crate::failure::Infra;
use crate::outbox::{Outbox, OutboxRows};

const COLUMNS: &str = "notification_id, user_id, template, subject, recipient, status, attempts, last_error, created_at, sent_at";

fn read(row: &Row) -> Result<Notification, Infra> {
    let status: String = row.get("status");
    Ok(Notification {
        id: row.get("notification_id"),
        user_id: row.get("user_id"),
        template: row.get("template"),
        subject: row.get("subject"),
        recipient: row.get("recipient"),
        status: status.parse().map_err(Infra::bug)?,
        attempts: row.get("attempts"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
        sent_at: row.get("sent_at"),
    })
}

/// An email to write, for the event it is sent for.
#[derive(Debug)]
pub(crate) struct NewEmail {
    pub(crate) event: EventId,
    pub(crate) template: &'static str,
    pub(crate) user: Option<UserId>,
    pub(crate) to: String,
    pub(crate) rendered: Rendered,
    /// The trace of the span that prepared it: the send continues it.
    pub(crate) trace: Option<String>,
}

/// One email to send, locked for this sender until its outcome is written.
#[derive(Debug)]
pub(crate) struct Due {
    pub(crate) email: Email,
    pub(crate) user: Option<UserId>,
    pub(crate) template: String,
    pub(crate) attempts: i32,
    /// The trace of the event it is sent for.
    pub(crate) trace: Option<crate::trace::TraceParent>,
}

/// What became of one attempt at an email.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) status: NotificationStatus,
    pub(crate) error: Option<String>,
    /// Seconds until the next attempt, if it is still pending.
    pub(crate) backoff_secs: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct NotificationStore {
    pub(crate) pool: Pool,
    outbox: Outbox,
}

impl NotificationStore {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            outbox: Outbox::new(Service::Notifications),
        }
    }

    /// Up to `limit` notifications after `after`, newest first.
    pub(crate) async fn list(
        &self,
        user: Option<UserId>,
        status: Option<NotificationStatus>,
        after: Option<NotificationId>,
        limit: i64,
    ) -> Result<Vec<Notification>, Infra> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from notifications.notifications \
                     where ($1::uuid is null or user_id = $1) and ($2::text is null or status = $2) \
                       and ($3::uuid is null or notification_id < $3) \
                     order by notification_id desc limit $4"
                ),
                &[&user, &status.map(NotificationStatus::as_str), &after, &limit],
            )
            .await?;
        rows.iter().map(read).collect()
    }

    pub(crate) async fn get(&self, id: NotificationId) -> Result<Option<Notification>, Infra> {
        let client = self.pool.get().await?;
        let get = client
            .prepare_cached(&format!(
                "select {COLUMNS} from notifications.notifications where notification_id = $1"
            ))
            .await?;
        let row = client.query_opt(&get, &[&id]).await?;
        row.as_ref().map(read).transpose()
    }

    /// Keeps a user's name and address for the emails to come.
    pub(crate) async fn remember(
        &self,
        user: UserId,
        username: &str,
        email: &str,
    ) -> Result<(), Infra> {
        let client = self.pool.get().await?;
        client
            .execute(
                "insert into notifications.recipients (user_id, username, email) values ($1, $2, $3) \
                 on conflict (user_id) do update set username = excluded.username, email = excluded.email, updated_at = now()",
                &[&user, &username, &email],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn change_address(&self, user: UserId, email: &str) -> Result<(), Infra> {
        let client = self.pool.get().await?;
        client
            .execute(
                "update notifications.recipients set email = $2, updated_at = now() where user_id = $1",
                &[&user, &email],
            )
            .await?;
        Ok(())
    }

    /// The names and addresses kept of `users`.
    pub(crate) async fn recipients(
        &self,
        users: &[UserId],
    ) -> Result<HashMap<UserId, (String, String)>, Infra> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.pool.get().await?;
        let recipients = client
            .prepare_cached(
                "select user_id, username, email from notifications.recipients where user_id = any($1)",
            )
            .await?;
        let rows = client.query(&recipients, &[&users]).await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect())
    }

    /// Writes each email once per (event, template), all in one statement
    /// (one transaction); answers how many are new.
    pub(crate) async fn queue(&self, emails: &[NewEmail]) -> Result<u64, Infra> {
        if emails.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let queue = client
            .prepare_cached(
                "insert into notifications.notifications \
                 (notification_id, event_id, template, user_id, recipient, subject, body_text, body_html, \
                  traceparent) \
                 select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], \
                   $6::text[], $7::text[], $8::text[], $9::text[]) \
                 on conflict (event_id, template) do nothing",
            )
            .await?;
        let column = |f: fn(&NewEmail) -> &str| emails.iter().map(f).collect::<Vec<&str>>();
        let ids: Vec<NotificationId> = emails.iter().map(|_| NotificationId::new()).collect();
        let events: Vec<EventId> = emails.iter().map(|e| e.event).collect();
        let users: Vec<Option<UserId>> = emails.iter().map(|e| e.user).collect();
        let traces: Vec<Option<&str>> = emails.iter().map(|e| e.trace.as_deref()).collect();
        let inserted = client
            .execute(
                &queue,
                &[
                    &ids,
                    &events,
                    &column(|e| e.template),
                    &users,
                    &column(|e| &e.to),
                    &column(|e| &e.rendered.subject),
                    &column(|e| &e.rendered.text),
                    &column(|e| &e.rendered.html),
                    &traces,
                ],
            )
            .await?;
        Ok(inserted)
    }

    /// Claims up to `limit` emails due for `lease` (nobody else sends them
    /// meanwhile, on any node); one the sender dies with is due again after.
    pub(crate) async fn claim(&self, limit: i64, lease: Duration) -> Result<Vec<Due>, Infra> {
        let client = self.pool.get().await?;
        let claim = client
            .prepare_cached(
                "update notifications.notifications n set next_attempt_at = now() + make_interval(secs => $2) \
                 where n.notification_id in ( \
                   select notification_id from notifications.notifications \
                   where status = 'pending' and next_attempt_at <= now() \
                   order by next_attempt_at limit $1 for update skip locked) \
                 returning n.notification_id, n.user_id, n.template, n.recipient, n.subject, \
                   n.body_text, n.body_html, n.attempts, n.traceparent",
            )
            .await?;
        let rows = client
            .query(&claim, &[&limit, &lease.as_secs_f64()])
            .await?;
        Ok(rows
            .iter()
            .map(|row| Due {
                email: Email {
                    id: row.get(0),
                    to: row.get(3),
                    subject: row.get(4),
                    text: row.get(5),
                    html: row.get(6),
                },
                user: row.get(1),
                template: row.get(2),
                attempts: row.get(7),
                trace: row
                    .get::<_, Option<String>>(8)
                    .and_then(|t| crate::trace::TraceParent::parse(&t)),
            })
            .collect())
    }

    /// Gives claimed emails back, due now (the sender stopped short of them).
    pub(crate) async fn unclaim(&self, ids: &[uuid::Uuid]) -> Result<(), Infra> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        client
            .execute(
                "update notifications.notifications set next_attempt_at = now() \
                 where notification_id = any($1) and status = 'pending'",
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Records an attempt and, once the email is sent or failed for good,
    /// publishes that, in one transaction sent in one round trip.
    pub(crate) async fn finish(&self, due: &Due, attempt: Attempt) -> Result<(), Infra> {
        let client = self.pool.get().await?;
        let (outcome, outbox) = futures::try_join!(
            client.prepare_cached(
                "update notifications.notifications set status = $2, attempts = attempts + 1, last_error = $3, \
                   sent_at = case when $2 = 'sent' then now() else sent_at end, \
                   next_attempt_at = now() + make_interval(secs => $4) \
                 where notification_id = $1",
            ),
            self.outbox.prepare(&client),
        )?;
        let mut events = Vec::new();
        if attempt.status != NotificationStatus::Pending {
            events.push(NotificationEvent {
                notification_id: due.email.id,
                user_id: due.user,
                template: due.template.clone(),
                recipient: due.email.to.clone(),
                status: attempt.status,
                last_error: attempt.error.clone(),
            });
        }
        let backoff = attempt.backoff_secs as f64;
        let status = attempt.status.as_str();
        let params: Vec<&(dyn postgres_types::ToSql + Sync)> =
            vec![&due.email.id, &status, &attempt.error, &backoff];
        let mut statements = vec![(&outcome, params)];
        let rows = OutboxRows::of(&events);
        statements.extend(rows.statements(&outbox));
        crate::batch::one_round_trip(&client, &statements).await?;
        self.outbox.committed(&events);
        Ok(())
    }
}
