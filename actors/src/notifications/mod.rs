//! The notification service: exactly one email per (business event, template).
//!
//! - `mod.rs` (here): the handle [`Notifications`], its mailbox
//!   [`NotificationsMsg`], and how mail leaves ([`Mailer`], [`Email`]).
//! - `front`: the group member answering the admin's log and "my
//!   notifications" reads; every request runs in its own task.
//! - `subscriber`: takes user and order events from those services' outboxes,
//!   keeps recipients (from `user.registered`/`user.updated`, else it asks the
//!   user service), renders the templates and writes one row per (event,
//!   template) — the unique key that makes a redelivered event a no-op —
//!   before acknowledging.
//! - `sender`: sends pending rows through the node's [`Mailer`] (SMTP or
//!   files), marks them sent after the server accepted them, retries
//!   transient failures with a capped backoff (also across restarts: the rows
//!   are the queue), and marks permanent (5xx) rejections failed.
//! - `templates`: minijinja, files in `actors/templates/email`.
//! - `store`: all of the service's SQL.

mod front;
mod sender;
mod store;
mod subscriber;
mod templates;

use futures::future::BoxFuture;
use mart_schema::notification::{Notification, NotificationError, NotificationQuery};
use mart_schema::user::Caller;
use mart_schema::{NotificationId, Page, Service};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

pub(crate) use front::NotificationService;
pub(crate) use sender::{MailSender, SENDER};
pub(crate) use store::NotificationStore;
pub(crate) use subscriber::{NotificationSubscriber, SUBSCRIBER};

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::wire::Wire;

rejection!(NotificationError);

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

/// Which notifications to list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationListing {
    pub query: NotificationQuery,
    /// Only the caller's own, even for an admin.
    pub mine_only: bool,
}

/// The notification service's mailbox.
#[derive(Debug, RactorClusterMessage)]
pub enum NotificationsMsg {
    #[rpc]
    List(
        Wire<Request<NotificationListing>>,
        RpcReplyPort<Wire<Result<Page<Notification>, Refusal<NotificationError>>>>,
    ),
    #[rpc]
    Get(
        Wire<Request<NotificationId>>,
        RpcReplyPort<Wire<Result<Notification, Refusal<NotificationError>>>>,
    ),
}

/// Handle on the notification service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Notifications {
    client: ServiceClient<NotificationsMsg>,
}

type Answer<T> = Result<T, CallError<NotificationError>>;

impl Default for Notifications {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Notifications),
        }
    }
}

impl Notifications {
    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    /// The log (admin), or only the caller's own with `mine_only`.
    pub async fn list(
        &self,
        caller: Caller,
        query: NotificationQuery,
        mine_only: bool,
    ) -> Answer<Page<Notification>> {
        let listing = NotificationListing { query, mine_only };
        self.client
            .ask(caller, listing, NotificationsMsg::List)
            .await
    }

    pub async fn get(&self, caller: Caller, id: NotificationId) -> Answer<Notification> {
        self.client.ask(caller, id, NotificationsMsg::Get).await
    }
}
