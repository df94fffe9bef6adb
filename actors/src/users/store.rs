//! PostgreSQL access for the user service: the only writer of the `users` schema.
//! Every change and its events are one transaction.

use deadpool_postgres::Pool;
use mart_schema::UserId;
use mart_schema::user::{
    Role, User, UserDeleted, UserError, UserEvent, UserRegistered, UserUpdated,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

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

/// A user with the secret the store keeps.
pub(crate) struct StoredUser {
    pub(crate) user: User,
    pub(crate) password_hash: String,
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
                    "select {COLUMNS}, password_hash from users.users \
                     where lower(username) = lower($1) or lower(email) = lower($1) limit 1"
                ),
                &[&login],
            )
            .await?;
        row.map(|row| {
            Ok(StoredUser {
                user: to_user(&row)?,
                password_hash: row.get("password_hash"),
            })
        })
        .transpose()
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
        let event = UserEvent::Deleted(UserDeleted { user_id: id });
        self.outbox.commit(tx, &[event]).await?;
        Ok(())
    }
}
