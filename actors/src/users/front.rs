//! The user service's group member and what it does for each request.

use std::sync::Arc;

use mart_schema::user::{
    Caller, Credentials, PasswordChange, PasswordReset, Registration, Role, TokenGrant, User,
    UserError,
};
use mart_schema::{FieldErrors, Page, PageRequest, Service, UserId};

use super::store::{Changes, Refreshed, StoredUser, UserStore};
use super::{UserChange, UsersMsg, rules};
use crate::auth::TokenKeys;
use crate::call::{Serve, answer_in_task};
use crate::failure::{Failure, Infra};
use crate::outbox::Outbox;

type Outcome<T> = Result<T, Failure<UserError>>;

/// The user service on this node; also used by the admin CLI.
#[derive(Clone, Debug)]
pub struct UserService {
    store: UserStore,
    keys: Arc<TokenKeys>,
}

impl Serve for UserService {
    type Msg = UsersMsg;
    const SERVICE: Service = Service::Users;

    fn serve(&self, msg: UsersMsg) {
        let s = self.clone();
        match msg {
            UsersMsg::Register(request, reply) => answer_in_task(
                reply,
                request,
                move |_, r| async move { s.register(r).await },
            ),
            UsersMsg::IssueToken(request, reply) => answer_in_task(
                reply,
                request,
                move |_, c| async move { s.issue_token(c).await },
            ),
            UsersMsg::Get(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    s.get(caller, id).await
                })
            }
            UsersMsg::List(request, reply) => {
                answer_in_task(reply, request, move |caller, page| async move {
                    s.list(caller, page).await
                })
            }
            UsersMsg::Update(request, reply) => {
                answer_in_task(reply, request, move |caller, change| async move {
                    s.update(caller, change).await
                })
            }
            UsersMsg::Delete(request, reply) => {
                answer_in_task(reply, request, move |caller, id| async move {
                    s.delete(caller, id).await
                })
            }
            UsersMsg::Refresh(request, reply) => {
                answer_in_task(reply, request, move |_, secret| async move {
                    s.refresh(secret).await
                })
            }
            UsersMsg::Logout(request, reply) => {
                answer_in_task(reply, request, move |_, secret| async move {
                    s.store.logout(&secret).await.map(|_| ())
                })
            }
            UsersMsg::ChangePassword(request, reply) => {
                answer_in_task(reply, request, move |caller, change| async move {
                    s.change_password(caller, change).await
                })
            }
            UsersMsg::ResetPassword(request, reply) => {
                answer_in_task(reply, request, move |caller, (id, reset)| async move {
                    s.reset_password(caller, id, reset).await
                })
            }
            UsersMsg::Floors(request, reply) => {
                answer_in_task(reply, request, move |caller, subjects| async move {
                    caller.staff_or(UserError::Forbidden)?;
                    s.store.floors(&subjects).await
                })
            }
            UsersMsg::FloorsSince(request, reply) => {
                answer_in_task(reply, request, move |caller, since| async move {
                    caller.staff_or(UserError::Forbidden)?;
                    // A minute's leeway over the token life: clocks differ.
                    let life = s.keys.ttl() + std::time::Duration::from_secs(60);
                    s.store.floors_since(since, life).await
                })
            }
        }
    }
}

/// How long a refresh token (and so a session without activity) lasts.
const REFRESH_LIFE: time::Duration = time::Duration::days(30);

/// A new refresh token's secret: 256 random bits, URL-safe.
fn refresh_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl UserService {
    pub fn new(pool: crate::pool::Pool, keys: Arc<TokenKeys>) -> Self {
        Self {
            store: UserStore::new(pool, Outbox::new(Service::Users)),
            keys,
        }
    }

    async fn register(&self, r: Registration) -> Outcome<User> {
        let mut errors = FieldErrors::default();
        rules::check_username(&mut errors, &r.username);
        rules::check_email(&mut errors, "email", &r.email);
        rules::check_password(
            &mut errors,
            "password",
            &r.password,
            &[&r.username, &r.email],
        );
        errors.into_result().map_err(UserError::Invalid)?;
        let hash = hash_password(r.password).await?;
        self.store
            .insert(&r.username, &r.email, &hash, Role::Customer)
            .await
    }

    async fn issue_token(&self, c: Credentials) -> Outcome<TokenGrant> {
        let found = self.store.find_login(c.username.trim()).await?;
        // Verify against a dummy hash when the user is unknown, so the answer takes
        // as long either way and does not reveal which usernames exist.
        let hash = found
            .as_ref()
            .map_or(DUMMY_HASH.to_owned(), |stored| stored.password_hash.clone());
        let matches = verify_password(c.password, hash).await?;
        match (found, matches) {
            (Some(stored), true) => {
                let secret = refresh_secret();
                let expires_at = mart_schema::now() + REFRESH_LIFE;
                let session = self
                    .store
                    .open_session(stored.user.id, &secret, expires_at)
                    .await?;
                self.grant(&stored, session, secret)
            }
            _ => Err(UserError::BadCredentials.into()),
        }
    }

    /// An access token for `stored` in `session`, with its refresh token.
    fn grant(
        &self,
        stored: &StoredUser,
        session: uuid::Uuid,
        refresh: String,
    ) -> Outcome<TokenGrant> {
        let mut grant = self
            .keys
            .issue(&stored.user, stored.version, Some(session))
            .map_err(Infra::bug)?;
        grant.refresh_token = Some(refresh);
        Ok(grant)
    }

    async fn refresh(&self, secret: String) -> Outcome<TokenGrant> {
        let next = refresh_secret();
        let expires_at = mart_schema::now() + REFRESH_LIFE;
        match self.store.refresh(&secret, &next, expires_at).await? {
            Refreshed::Rotated(stored, session) => self.grant(&stored, session, next),
            Refreshed::Reused(session) => {
                tracing::warn!(%session, "a used refresh token came back: session ended");
                Err(UserError::BadRefresh.into())
            }
            Refreshed::Refused => Err(UserError::BadRefresh.into()),
        }
    }

    /// The signed-in user's own change: the current password proves it.
    async fn change_password(&self, caller: Caller, change: PasswordChange) -> Outcome<()> {
        let id = caller.user_id().ok_or(UserError::Forbidden)?;
        let stored = self.store.stored(id).await?;
        let mut errors = FieldErrors::default();
        let context = [stored.user.username.as_str(), stored.user.email.as_str()];
        rules::check_password(&mut errors, "new_password", &change.new_password, &context);
        errors.into_result().map_err(UserError::Invalid)?;
        if !verify_password(change.current_password, stored.password_hash).await? {
            let wrong = FieldErrors::single("current_password", "is not your password");
            return Err(UserError::Invalid(wrong).into());
        }
        self.set_password(id, change.new_password).await
    }

    /// An admin's reset, without the old password.
    async fn reset_password(
        &self,
        caller: Caller,
        id: UserId,
        reset: PasswordReset,
    ) -> Outcome<()> {
        if !caller.is_admin() {
            return Err(UserError::Forbidden.into());
        }
        let user = self.store.get(id).await?;
        let mut errors = FieldErrors::default();
        let context = [user.username.as_str(), user.email.as_str()];
        rules::check_password(&mut errors, "new_password", &reset.new_password, &context);
        errors.into_result().map_err(UserError::Invalid)?;
        self.set_password(id, reset.new_password).await
    }

    /// A new password; every earlier token of the user is revoked with it.
    async fn set_password(&self, id: UserId, password: String) -> Outcome<()> {
        let changes = Changes {
            password_hash: Some(hash_password(password).await?),
            ..Changes::default()
        };
        self.store.update(id, changes).await.map(|_| ())
    }

    async fn get(&self, caller: Caller, id: UserId) -> Outcome<User> {
        // Someone else's id looks like a missing one unless you are staff.
        if !caller.may_act_for(id) {
            return Err(UserError::NotFound.into());
        }
        self.store.get(id).await
    }

    async fn list(&self, caller: Caller, page: PageRequest) -> Outcome<Page<User>> {
        caller.staff_or(UserError::Forbidden)?;
        let limit = page.limit().map_err(UserError::Invalid)?;
        let after = page.cursor_key::<UserId>().map_err(UserError::Invalid)?;
        let items = self
            .store
            .list(after, PageRequest::overfetch(limit))
            .await?;
        Ok(Page::from_overfetch(items, limit, |u| u.id.to_string()))
    }

    async fn update(&self, caller: Caller, UserChange { id, patch }: UserChange) -> Outcome<User> {
        if !caller.may_act_for(id) {
            return Err(UserError::NotFound.into());
        }
        if patch.role.is_some() {
            caller.staff_or(UserError::Forbidden)?;
        }
        let mut errors = FieldErrors::default();
        if let Some(email) = &patch.email {
            rules::check_email(&mut errors, "email", email);
        }
        if let Some(password) = &patch.password {
            // Whoever holds a token must not be able to take the account
            // over: the owner changes it giving the current one.
            if !caller.is_admin() {
                errors.add(
                    "password",
                    "change it with POST /user_profile/password, giving the current one",
                );
            } else {
                // Not built from the account's own names, as anywhere else.
                let user = self.store.get(id).await?;
                let email = patch.email.as_deref().unwrap_or(&user.email);
                let context = [user.username.as_str(), email, user.email.as_str()];
                rules::check_password(&mut errors, "password", password, &context);
            }
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
        self.store.update(id, changes).await
    }

    async fn delete(&self, caller: Caller, id: UserId) -> Outcome<()> {
        caller.staff_or(UserError::Forbidden)?;
        self.store.delete(id).await
    }

    /// Makes sure an admin with this email exists: creates one (username = the
    /// part before `@`) or promotes the existing account. Used at start-up with
    /// `MART_ADMIN_EMAIL`/`MART_ADMIN_PASSWORD` and by `mart admin create`.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<AdminOutcome, String> {
        let mut errors = FieldErrors::default();
        rules::check_email(&mut errors, "email", email);
        rules::check_password(&mut errors, "password", password, &[email]);
        if !errors.is_empty() {
            return Err(errors.to_string());
        }
        let described = |e: Failure<UserError>| match e {
            Failure::Rejected(no) => format!("{no:?}"),
            Failure::Infra(infra) => infra.chain(),
        };
        if let Some(existing) = self.store.find_email(email).await.map_err(described)? {
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
                .map_err(described)?;
            return Ok(AdminOutcome::Promoted(promoted));
        }
        let hash = hash_password(password.to_owned())
            .await
            .map_err(described)?;
        let username = rules::username_from_email(email);
        match self
            .store
            .insert(&username, email, &hash, Role::Admin)
            .await
        {
            Ok(user) => Ok(AdminOutcome::Created(user)),
            // Another replica starting at the same moment created it.
            Err(Failure::Rejected(UserError::Taken { .. })) => {
                match self.store.find_email(email).await.map_err(described)? {
                    Some(user) if user.role == Role::Admin => Ok(AdminOutcome::Existed(user)),
                    _ => Err(format!(
                        "the username {username} is taken by another account"
                    )),
                }
            }
            Err(e) => Err(described(e)),
        }
    }
}

/// What [`UserService::ensure_admin`] did.
#[derive(Debug, Clone)]
pub enum AdminOutcome {
    Created(User),
    Promoted(User),
    Existed(User),
}

/// A valid argon2id hash of a random password, used to spend the same time on
/// unknown usernames as on known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$6N3tQOJgF4t4O5gvdTq6kkBOV0J6yZB3Q0m3WcGT3TY";

async fn hash_password(password: String) -> Outcome<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Infra::bug(format!("hashing: {e}")))
    })
    .await
    .map_err(|e| Infra::other("password hashing task", e))?
    .map_err(Failure::Infra)
}

async fn verify_password(password: String, hash: String) -> Outcome<bool> {
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordVerifier;
        let parsed = argon2::password_hash::phc::PasswordHash::new(&hash)
            .map_err(|e| Infra::bug(format!("stored hash: {e}")))?;
        Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Infra::other("password hashing task", e))?
    .map_err(Failure::Infra)
}
