//! PostgreSQL access for the user service: the only writer of the `users` schema.
//! Every change and its events are one transaction.

use crate::pool::Pool;
use mart_schema::UserId;
use mart_schema::user::{
    Role, User, UserDeleted, UserError, UserEvent, UserRegistered, UserUpdated,
};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::auth::revocations::{Floor, FloorChanges};

use crate::failure::{Failure, Infra};
use crate::outbox::Outbox;

const COLUMNS: &str = "user_id, username, email, role, created_at";

type Outcome<T> = Result<T, Failure<UserError>>;

/// The unique indexes decide races between two registrations: a violation is
/// the caller's "taken", anything else broken infrastructure.
fn taken(e: tokio_postgres::Error) -> Failure<UserError> {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let field = match e.as_db_error().and_then(|d| d.constraint()) {
            Some("users_username_key") => "username",
            _ => "email",
        };
        return UserError::Taken {
            field: field.into(),
        }
        .into();
    }
    e.into()
}

/// A user with the secret the store keeps, and the token version new
/// tokens carry.
pub(crate) struct StoredUser {
    pub(crate) user: User,
    pub(crate) password_hash: String,
    pub(crate) version: i32,
}

/// What presenting a refresh token did.
pub(crate) enum Refreshed {
    /// Rotated: the user, their token version, and the session.
    Rotated(StoredUser, Uuid),
    /// Unknown, expired, or its user is gone.
    Refused,
    /// Used before: its session is ended.
    Reused(Uuid),
}

/// A floor that no token version reaches: an ended session, a deleted user.
const REVOKED: i32 = i32::MAX;

/// Raises `subject`'s floor by one, or to `$2` when given.
const RAISE: &str = "insert into users.revocations (subject, version) values ($1, coalesce($2, 1)) \
     on conflict (subject) do update \
       set version = coalesce($2, users.revocations.version + 1), changed_at = clock_timestamp()";

/// A session's next refresh token.
const NEW_REFRESH: &str = "insert into users.refresh_tokens (token_hash, family, user_id, expires_at) \
     values ($1, $2, $3, $4)";

/// The user's row with its hash and token version.
const STORED: &str = "select u.user_id, u.username, u.email, u.role, u.created_at, u.password_hash, \
       coalesce(r.version, 0) as version \
     from users.users u left join users.revocations r on r.subject = u.user_id";

fn to_stored(row: &Row) -> Outcome<StoredUser> {
    Ok(StoredUser {
        user: to_user(row)?,
        password_hash: row.get("password_hash"),
        version: row.get("version"),
    })
}

/// A refresh token's secret as stored: its SHA-256.
pub(crate) fn refresh_hash(secret: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).to_vec()
}

/// What an update changes. `None` leaves a field as it is.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) email: Option<String>,
    pub(crate) password_hash: Option<String>,
    pub(crate) role: Option<Role>,
}

#[derive(Clone, Debug)]
pub(crate) struct UserStore {
    pool: Pool,
    outbox: Outbox,
}

fn to_user(row: &Row) -> Outcome<User> {
    let role: String = row.get("role");
    Ok(User {
        id: row.get("user_id"),
        username: row.get("username"),
        email: row.get("email"),
        role: role.parse().map_err(Infra::bug)?,
        created_at: row.get("created_at"),
    })
}

impl UserStore {
    pub(crate) fn new(pool: Pool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    pub(crate) async fn insert(
        &self,
        username: &str,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Outcome<User> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                &format!(
                    "insert into users.users (user_id, username, email, password_hash, role) \
                     values ($1, $2, $3, $4, $5) returning {COLUMNS}"
                ),
                &[
                    &UserId::new(),
                    &username,
                    &email,
                    &password_hash,
                    &role.as_str(),
                ],
            )
            .await
            .map_err(taken)?;
        let user = to_user(&row)?;
        let event = UserEvent::Registered(UserRegistered {
            user_id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            role: user.role,
        });
        self.outbox.commit(tx, &[event]).await?;
        Ok(user)
    }

    /// The user whose username or email is `login`, case-insensitively.
    pub(crate) async fn find_login(&self, login: &str) -> Outcome<Option<StoredUser>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "{STORED} where lower(u.username) = lower($1) or lower(u.email) = lower($1) \
                     limit 1"
                ),
                &[&login],
            )
            .await?;
        row.as_ref().map(to_stored).transpose()
    }

    /// The user with their hash and token version.
    pub(crate) async fn stored(&self, id: UserId) -> Outcome<StoredUser> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(&format!("{STORED} where u.user_id = $1"), &[&id])
            .await?
            .ok_or(UserError::NotFound)?;
        to_stored(&row)
    }

    /// Starts a session: its first refresh token, valid until `expires_at`.
    pub(crate) async fn open_session(
        &self,
        user: UserId,
        secret: &str,
        expires_at: OffsetDateTime,
    ) -> Outcome<Uuid> {
        let client = self.pool.get().await?;
        let family = Uuid::new_v4();
        client
            .execute(
                NEW_REFRESH,
                &[&refresh_hash(secret), &family, &user, &expires_at],
            )
            .await?;
        Ok(family)
    }

    /// Presents a refresh token: rotates it to `next` (valid until
    /// `expires_at`), or, if it was used before, ends its session.
    pub(crate) async fn refresh(
        &self,
        secret: &str,
        next: &str,
        expires_at: OffsetDateTime,
    ) -> Outcome<Refreshed> {
        let presented = refresh_hash(secret);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "select family, user_id, used_at is not null as used, expires_at < now() as expired \
                 from users.refresh_tokens where token_hash = $1 for update",
                &[&presented],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Refreshed::Refused);
        };
        let (family, user): (Uuid, UserId) = (row.get("family"), row.get("user_id"));
        if row.get::<_, bool>("used") {
            end_session(&tx, family).await?;
            tx.commit().await?;
            return Ok(Refreshed::Reused(family));
        }
        if row.get::<_, bool>("expired") {
            return Ok(Refreshed::Refused);
        }
        let stored = tx
            .query_opt(&format!("{STORED} where u.user_id = $1"), &[&user])
            .await?;
        let Some(stored) = stored else {
            return Ok(Refreshed::Refused);
        };
        tx.execute(
            "update users.refresh_tokens set used_at = now() where token_hash = $1",
            &[&presented],
        )
        .await?;
        tx.execute(
            NEW_REFRESH,
            &[&refresh_hash(next), &family, &user, &expires_at],
        )
        .await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated(to_stored(&stored)?, family))
    }

    /// Ends the session `secret` belongs to (a logout); false if unknown.
    pub(crate) async fn logout(&self, secret: &str) -> Outcome<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let family: Option<Uuid> = tx
            .query_opt(
                "select family from users.refresh_tokens where token_hash = $1",
                &[&refresh_hash(secret)],
            )
            .await?
            .map(|row| row.get(0));
        let Some(family) = family else {
            return Ok(false);
        };
        end_session(&tx, family).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The floors of `subjects`, in order (0 where none was raised).
    pub(crate) async fn floors(&self, subjects: &[Uuid]) -> Outcome<Vec<i32>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select subject, version from users.revocations where subject = any($1)",
                &[&subjects],
            )
            .await?;
        let raised: std::collections::HashMap<Uuid, i32> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(subjects
            .iter()
            .map(|s| raised.get(s).copied().unwrap_or_default())
            .collect())
    }

    /// Floors raised after `since` (and after `life` ago: older ones concern
    /// no live token).
    pub(crate) async fn floors_since(
        &self,
        since: Option<OffsetDateTime>,
        life: Duration,
    ) -> Outcome<FloorChanges> {
        let client = self.pool.get().await?;
        // One round trip, every 250 ms on every node: the database's clock
        // (the next look starts there) comes with the rows, or alone.
        let rows = client
            .query(
                "select n.as_of, n.as_of - make_interval(secs => $2) as horizon, \
                   r.subject, r.version, r.changed_at \
                 from (select clock_timestamp() as as_of) n \
                 left join users.revocations r \
                   on r.changed_at > greatest($1, n.as_of - make_interval(secs => $2))",
                &[&since, &life.as_secs_f64()],
            )
            .await?;
        let first = rows.first().ok_or_else(|| Infra::bug("no clock row"))?;
        let (as_of, horizon): (OffsetDateTime, OffsetDateTime) = (first.get(0), first.get(1));
        let floors = rows
            .iter()
            .filter_map(|r| {
                Some(Floor {
                    subject: r.get::<_, Option<Uuid>>(2)?,
                    version: r.get(3),
                    changed_at: r.get(4),
                })
            })
            .collect();
        Ok(FloorChanges {
            as_of,
            horizon,
            floors,
        })
    }

    pub(crate) async fn get(&self, id: UserId) -> Outcome<User> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from users.users where user_id = $1"),
                &[&id],
            )
            .await?
            .ok_or(UserError::NotFound)?;
        to_user(&row)
    }

    pub(crate) async fn find_email(&self, email: &str) -> Outcome<Option<User>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from users.users where lower(email) = lower($1)"),
                &[&email],
            )
            .await?;
        row.as_ref().map(to_user).transpose()
    }

    /// Up to `limit` users after `after`, in id (= creation) order.
    pub(crate) async fn list(&self, after: Option<UserId>, limit: i64) -> Outcome<Vec<User>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from users.users \
                     where $1::uuid is null or user_id > $1 order by user_id limit $2"
                ),
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(to_user).collect()
    }

    pub(crate) async fn update(&self, id: UserId, changes: Changes) -> Outcome<User> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "update users.users set \
                       email = coalesce($2, email), \
                       password_hash = coalesce($3, password_hash), \
                       role = coalesce($4, role), \
                       updated_at = now() \
                     where user_id = $1 returning {COLUMNS}"
                ),
                &[
                    &id,
                    &changes.email,
                    &changes.password_hash,
                    &changes.role.map(Role::as_str),
                ],
            )
            .await
            .map_err(taken)?
            .ok_or(UserError::NotFound)?;
        let user = to_user(&row)?;
        // Tokens carry the role, and a new password must lock out whoever
        // knew the old one: every earlier token is revoked.
        if changes.password_hash.is_some() || changes.role.is_some() {
            tx.execute(RAISE, &[&id, &None::<i32>]).await?;
        }
        let event = UserEvent::Updated(UserUpdated {
            user_id: user.id,
            email: user.email.clone(),
            role: user.role,
            password_changed: changes.password_hash.is_some(),
        });
        self.outbox.commit(tx, &[event]).await?;
        Ok(user)
    }

    pub(crate) async fn delete(&self, id: UserId) -> Outcome<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let deleted = tx
            .execute("delete from users.users where user_id = $1", &[&id])
            .await?;
        if deleted == 0 {
            return Err(UserError::NotFound.into());
        }
        tx.execute(RAISE, &[&id, &Some(REVOKED)]).await?;
        tx.execute(
            "delete from users.refresh_tokens where user_id = $1",
            &[&id],
        )
        .await?;
        let event = UserEvent::Deleted(UserDeleted { user_id: id });
        self.outbox.commit(tx, &[event]).await?;
        Ok(())
    }
}

/// Ends a session: its refresh tokens go, and its access tokens are refused.
async fn end_session(tx: &tokio_postgres::Transaction<'_>, family: Uuid) -> Outcome<()> {
    tx.execute(
        "delete from users.refresh_tokens where family = $1",
        &[&family],
    )
    .await?;
    tx.execute(RAISE, &[&family, &Some(REVOKED)]).await?;
    Ok(())
}
