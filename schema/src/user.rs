//! The user service's vocabulary: what callers send, what they get back, the
//! events it publishes and the reasons it can say no.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::DomainEvent;
use crate::{FieldErrors, UserId};

/// What a user may do. Stored as text; the allowed values are checked in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (customer or admin)")),
        }
    }
}

/// A user as everyone outside the user service sees it: never a password hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Who a request is made for: the one caller type every service takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// Nobody signed in: registration, login, the catalog, Stripe's redirects
    /// and webhooks.
    Anonymous,
    /// A person: the verified subject of an access token.
    User { id: UserId, role: Role },
    /// Another mart service acting on its own (a saga step, a subscriber):
    /// trusted like an admin.
    Service,
}

impl Caller {
    pub fn user(id: UserId, role: Role) -> Self {
        Caller::User { id, role }
    }

    /// The signed-in person, if any.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Caller::User { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Caller::User {
                role: Role::Admin,
                ..
            }
        )
    }

    /// An admin or another service: may do what the shop's staff may.
    pub fn is_staff(&self) -> bool {
        self.is_admin() || *self == Caller::Service
    }

    /// Staff goes ahead; anyone else gets `no`.
    pub fn staff_or<E>(&self, no: E) -> Result<(), E> {
        if self.is_staff() { Ok(()) } else { Err(no) }
    }

    /// May see or act on what `owner` owns: the owner, or staff. Everyone else
    /// is told it does not exist.
    pub fn may_act_for(&self, owner: UserId) -> bool {
        self.is_staff() || self.user_id() == Some(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_staff_may_act_for_a_user_nobody_else() {
        let (alice, bob) = (UserId::new(), UserId::new());
        assert!(Caller::user(alice, Role::Customer).may_act_for(alice));
        assert!(!Caller::user(bob, Role::Customer).may_act_for(alice));
        assert!(Caller::user(bob, Role::Admin).may_act_for(alice));
        assert!(Caller::Service.may_act_for(alice));
        assert!(!Caller::Anonymous.may_act_for(alice));
        assert!(Caller::Service.is_staff() && !Caller::Service.is_admin());
        assert!(!Caller::Anonymous.is_staff());
    }
}

/// `POST /register`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// `POST /token`: the username field may hold the email.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// `POST /token` (RFC 6749 §4.3 and §6): a password grant or a refresh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// `password` (the default) or `refresh_token`.
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    /// Ignored: mart tokens carry no scopes.
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A signed access token, and the refresh token that renews it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenGrant {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: `grant_type=refresh_token` answers a new pair. Using one
    /// twice ends its session (all its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// `POST /logout`: ends the session the refresh token belongs to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Logout {
    pub refresh_token: Option<String>,
}

/// `POST /user_profile/password`: the current password proves it is you.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /users/{id}/password` (admin): a new password, set without the old.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    pub new_password: String,
}

/// `PATCH /users/{id}`: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<String>,
    pub password: Option<String>,
    /// Only an admin may change roles.
    pub role: Option<Role>,
}

/// Why the user service said no.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum UserError {
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    #[error("{field} is already taken")]
    Taken { field: String },
    #[error("no such user")]
    NotFound,
    #[error("invalid username or password")]
    BadCredentials,
    /// A refresh token that is unknown, expired, or already used.
    #[error("invalid or expired refresh token")]
    BadRefresh,
    #[error("not allowed")]
    Forbidden,
}

/// What happened to a user. Published through the user service's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserEvent {
    Registered(UserRegistered),
    Updated(UserUpdated),
    Deleted(UserDeleted),
}

/// `user.registered`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    pub username: String,
    pub email: String,
    pub role: Role,
}

/// `user.updated`: the state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub password_changed: bool,
}

/// `user.deleted`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: UserId,
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Registered(_) => "user.registered",
            UserEvent::Updated(_) => "user.updated",
            UserEvent::Deleted(_) => "user.deleted",
        }
    }

    fn aggregate_id(&self) -> uuid::Uuid {
        match self {
            UserEvent::Registered(e) => e.user_id.0,
            UserEvent::Updated(e) => e.user_id.0,
            UserEvent::Deleted(e) => e.user_id.0,
        }
    }
}
