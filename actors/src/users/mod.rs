//! The user service: registration, login (token issue), profiles and admin user
//! management.
//!
//! Requests reach a pool of [`worker::UsersWorker`]s through the `mart.users`
//! process group; each worker is stateless (the database is the truth), so any
//! member on any node may answer. Password hashing runs on the blocking pool so a
//! worker's mailbox keeps moving.

mod rules;
mod store;
pub(crate) mod worker;

use std::sync::Arc;

use mart_schema::user::{
    Caller, Credentials, Registration, Role, TokenGrant, User, UserError, UserPatch,
};
use mart_schema::{FieldErrors, Page, PageRequest, Service, UserId};
use ractor_cluster::RactorClusterMessage;

use crate::auth::TokenKeys;
use crate::call::{CallError, Failure, Rejection, ServiceClient};
use crate::outbox::Outbox;
use crate::wire::Wire;
use ractor::RpcReplyPort;
use store::{Changes, StoreError, UserStore};

/// The user service's mailbox. Variants are tagged by name on the wire: add new
/// ones freely, never rename.
#[derive(Debug, RactorClusterMessage)]
pub enum UsersMsg {
    #[rpc]
    Register(
        Wire<Registration>,
        RpcReplyPort<Wire<Result<User, UserError>>>,
    ),
    #[rpc]
    IssueToken(
        Wire<Credentials>,
        RpcReplyPort<Wire<Result<TokenGrant, UserError>>>,
    ),
    #[rpc]
    Get(
        Wire<(Caller, UserId)>,
        RpcReplyPort<Wire<Result<User, UserError>>>,
    ),
    #[rpc]
    List(
        Wire<(Caller, PageRequest)>,
        RpcReplyPort<Wire<Result<Page<User>, UserError>>>,
    ),
    #[rpc]
    Update(
        Wire<(Caller, UserId, UserPatch)>,
        RpcReplyPort<Wire<Result<User, UserError>>>,
    ),
    #[rpc]
    Delete(
        Wire<(Caller, UserId)>,
        RpcReplyPort<Wire<Result<(), UserError>>>,
    ),
}

/// Handle on the user service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Users {
    client: ServiceClient<UsersMsg>,
}

type Answer<T> = Result<T, CallError<UserError>>;

impl Users {
    pub fn new(timeout: std::time::Duration) -> Self {
        Self {
            client: ServiceClient::new(Service::Users, timeout),
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    pub async fn register(&self, registration: Registration) -> Answer<User> {
        self.client
            .ask(|reply| UsersMsg::Register(registration.clone().into(), reply))
            .await
    }

    pub async fn issue_token(&self, credentials: Credentials) -> Answer<TokenGrant> {
        self.client
            .ask(|reply| UsersMsg::IssueToken(credentials.clone().into(), reply))
            .await
    }

    pub async fn get(&self, caller: Caller, id: UserId) -> Answer<User> {
        self.client
            .ask(|reply| UsersMsg::Get((caller, id).into(), reply))
            .await
    }

    pub async fn list(&self, caller: Caller, page: PageRequest) -> Answer<Page<User>> {
        self.client
            .ask(|reply| UsersMsg::List((caller, page.clone()).into(), reply))
            .await
    }

    pub async fn update(&self, caller: Caller, id: UserId, patch: UserPatch) -> Answer<User> {
        self.client
            .ask(|reply| UsersMsg::Update((caller, id, patch.clone()).into(), reply))
            .await
    }

    pub async fn delete(&self, caller: Caller, id: UserId) -> Answer<()> {
        self.client
            .ask(|reply| UsersMsg::Delete((caller, id).into(), reply))
            .await
    }
}

/// The rules of the user service, shared by its workers and the admin CLI.
#[derive(Clone, Debug)]
pub struct UserRules {
    store: UserStore,
    keys: Arc<TokenKeys>,
}

impl UserRules {
    pub fn new(pool: deadpool_postgres::Pool, keys: Arc<TokenKeys>) -> Self {
        Self {
            store: UserStore::new(pool, Outbox::new(Service::Users)),
            keys,
        }
    }

    pub(crate) async fn register(&self, r: Registration) -> Result<User, ServiceFailure> {
        let mut errors = FieldErrors::default();
        rules::check_username(&mut errors, &r.username);
        rules::check_email(&mut errors, "email", &r.email);
        rules::check_password(&mut errors, &r.password);
        errors.into_result().map_err(UserError::Invalid)?;
        let hash = hash_password(r.password).await?;
        Ok(self
            .store
            .insert(&r.username, &r.email, &hash, Role::Customer)
            .await?)
    }

    pub(crate) async fn issue_token(&self, c: Credentials) -> Result<TokenGrant, ServiceFailure> {
        let found = self.store.find_login(c.username.trim()).await?;
        // Verify against a dummy hash when the user is unknown, so the answer takes
        // as long either way and does not reveal which usernames exist.
        let (hash, user) = match found {
            Some(stored) => (stored.password_hash, Some(stored.user)),
            None => (DUMMY_HASH.to_owned(), None),
        };
        let matches = verify_password(c.password, hash).await?;
        match (user, matches) {
            (Some(user), true) => Ok(self
                .keys
                .issue(&user)
                .map_err(ServiceFailure::Infrastructure)?),
            _ => Err(UserError::BadCredentials.into()),
        }
    }

    pub(crate) async fn get(&self, caller: Caller, id: UserId) -> Result<User, ServiceFailure> {
        // Someone else's id looks like a missing one unless you are an admin.
        if !caller.is_admin() && caller.user_id != id {
            return Err(UserError::NotFound.into());
        }
        Ok(self.store.get(id).await?)
    }

    pub(crate) async fn list(
        &self,
        caller: Caller,
        page: PageRequest,
    ) -> Result<Page<User>, ServiceFailure> {
        if !caller.is_admin() {
            return Err(UserError::Forbidden.into());
        }
        let limit = page.limit().map_err(UserError::Invalid)?;
        let after = page.cursor_key::<UserId>().map_err(UserError::Invalid)?;
        let mut items = self.store.list(after, i64::from(limit) + 1).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|u| u.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub(crate) async fn update(
        &self,
        caller: Caller,
        id: UserId,
        patch: UserPatch,
    ) -> Result<User, ServiceFailure> {
        if !caller.is_admin() && caller.user_id != id {
            return Err(UserError::NotFound.into());
        }
        if patch.role.is_some() && !caller.is_admin() {
            return Err(UserError::Forbidden.into());
        }
        let mut errors = FieldErrors::default();
        if let Some(email) = &patch.email {
            rules::check_email(&mut errors, "email", email);
        }
        if let Some(password) = &patch.password {
            rules::check_password(&mut errors, password);
        }
        errors.into_result().map_err(UserError::Invalid)?;
        let password_hash = match patch.password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let changes = Changes {
            email: patch.email,
            password_hash,
            role: patch.role,
        };
        Ok(self.store.update(id, changes).await?)
    }

    pub(crate) async fn delete(&self, caller: Caller, id: UserId) -> Result<(), ServiceFailure> {
        if !caller.is_admin() {
            return Err(UserError::Forbidden.into());
        }
        Ok(self.store.delete(id).await?)
    }

    /// Makes sure an admin with this email exists: creates one (username = the
    /// part before `@`) or promotes the existing account. Used at start-up with
    /// `MART_ADMIN_EMAIL`/`MART_ADMIN_PASSWORD` and by `mart admin create`.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<AdminOutcome, String> {
        let mut errors = FieldErrors::default();
        rules::check_email(&mut errors, "email", email);
        rules::check_password(&mut errors, password);
        if !errors.is_empty() {
            return Err(errors.to_string());
        }
        let failure = |e: ServiceFailure| e.to_string();
        if let Some(existing) = self
            .store
            .find_email(email)
            .await
            .map_err(|e| failure(e.into()))?
        {
            if existing.role == Role::Admin {
                return Ok(AdminOutcome::Existed(existing));
            }
            let changes = Changes {
                role: Some(Role::Admin),
                ..Changes::default()
            };
            let promoted = self
                .store
                .update(existing.id, changes)
                .await
                .map_err(|e| failure(e.into()))?;
            return Ok(AdminOutcome::Promoted(promoted));
        }
        let hash = hash_password(password.to_owned()).await.map_err(failure)?;
        let username = rules::username_from_email(email);
        let user = self
            .store
            .insert(&username, email, &hash, Role::Admin)
            .await
            .map_err(|e| failure(e.into()))?;
        Ok(AdminOutcome::Created(user))
    }
}

/// What [`UserRules::ensure_admin`] did.
#[derive(Debug, Clone)]
pub enum AdminOutcome {
    Created(User),
    Promoted(User),
    Existed(User),
}

type ServiceFailure = Failure<UserError>;

impl Rejection for UserError {
    fn malformed(reason: String) -> Self {
        UserError::Invalid(FieldErrors::single("request", reason))
    }
}

impl From<StoreError> for ServiceFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(e) => Failure::Rejected(e),
            StoreError::Database(e) => Failure::Infrastructure(e),
        }
    }
}

/// A valid argon2id hash of a random password, used to spend the same time on
/// unknown usernames as on known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$6N3tQOJgF4t4O5gvdTq6kkBOV0J6yZB3Q0m3WcGT3TY";

async fn hash_password(password: String) -> Result<String, ServiceFailure> {
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Failure::Infrastructure(format!("hashing: {e}")))
    })
    .await
    .map_err(|e| Failure::Infrastructure(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> Result<bool, ServiceFailure> {
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordVerifier;
        let parsed = argon2::password_hash::phc::PasswordHash::new(&hash)
            .map_err(|e| Failure::Infrastructure(format!("stored hash: {e}")))?;
        Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Failure::Infrastructure(e.to_string()))?
}
