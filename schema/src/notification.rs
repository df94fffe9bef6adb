//! The notification service's vocabulary.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{NotificationId, UserId};

/// Where an email stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Pending,
    Sent,
    Failed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for NotificationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(NotificationStatus::Pending),
            "sent" => Ok(NotificationStatus::Sent),
            "failed" => Ok(NotificationStatus::Failed),
            other => Err(format!("unknown status {other:?} (pending, sent, failed)")),
        }
    }
}

/// One email in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    pub user_id: Option<UserId>,
    pub template: String,
    pub subject: String,
    pub recipient: String,
    pub status: NotificationStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
}

/// `GET /notifications/`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `pending`, `sent` or `failed`.
    #[param(value_type = Option<NotificationStatus>)]
    pub status: Option<String>,
    /// Only this user's (admin).
    pub user_id: Option<UserId>,
}

/// Why the notification service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum NotificationError {
    #[error("invalid input: {0}")]
    Invalid(crate::FieldErrors),
    #[error("no such notification")]
    NotFound,
    #[error("not allowed")]
    Forbidden,
}

/// `notification.sent` / `notification.failed`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationEvent {
    pub notification_id: NotificationId,
    pub user_id: Option<UserId>,
    pub template: String,
    pub recipient: String,
    pub status: NotificationStatus,
    pub last_error: Option<String>,
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> &'static str {
        match self.status {
            NotificationStatus::Failed => "notification.failed",
            _ => "notification.sent",
        }
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        self.notification_id.0
    }
}
