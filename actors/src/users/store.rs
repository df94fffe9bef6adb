//! PostgreSQL access for the user service: the only writer of the `users` schema.
//! Every change and its events are one transaction.

use deadpool_postgres::Pool;
use mart_schema::UserId;
use mart_schema::user::{
    Role, User, UserDeleted, UserError, UserEvent, UserRegistered, UserUpdated,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::outbox::Outbox;

const COLUMNS: &str = "user_id, username, email, role, created_at";

/// Why the store failed: either a business answer or broken infrastructure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Rejected(#[from] UserError),
    #[error("database: {0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The unique indexes decide races between two registrations.
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let field = match e.as_db_error().and_then(|d| d.constraint()) {
                Some("users_username_key") => "username",
                _ => "email",
            };
            return StoreError::Rejected(UserError::Taken {
                field: field.into(),
            });
        }
        StoreError::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Database(e.to_string())
    }
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

fn to_user(row: &Row) -> Result<User, StoreError> {
    let role: String = row.get("role");
    Ok(User {
        id: row.get("user_id"),
        username: row.get("username"),
        email: row.get("email"),
        role: role.parse().map_err(StoreError::Database)?,
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
    ) -> Result<User, StoreError> {
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
            .await?;
        let user = to_user(&row)?;
        let event = UserEvent::Registered(UserRegistered {
            user_id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            role: user.role,
        });
        self.outbox.append(&tx, &[event]).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(user)
    }

    /// The user whose username or email is `login`, case-insensitively.
    pub(crate) async fn find_login(&self, login: &str) -> Result<Option<StoredUser>, StoreError> {
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

    pub(crate) async fn get(&self, id: UserId) -> Result<User, StoreError> {
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

    pub(crate) async fn find_email(&self, email: &str) -> Result<Option<User>, StoreError> {
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
    pub(crate) async fn list(
        &self,
        after: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
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

    pub(crate) async fn update(&self, id: UserId, changes: Changes) -> Result<User, StoreError> {
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
            .await?
            .ok_or(UserError::NotFound)?;
        let user = to_user(&row)?;
        let event = UserEvent::Updated(UserUpdated {
            user_id: user.id,
            email: user.email.clone(),
            role: user.role,
            password_changed: changes.password_hash.is_some(),
        });
        self.outbox.append(&tx, &[event]).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(user)
    }

    pub(crate) async fn delete(&self, id: UserId) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let deleted = tx
            .execute("delete from users.users where user_id = $1", &[&id])
            .await?;
        if deleted == 0 {
            return Err(UserError::NotFound.into());
        }
        self.outbox
            .append(&tx, &[UserEvent::Deleted(UserDeleted { user_id: id })])
            .await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(())
    }
}
