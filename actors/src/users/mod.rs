//! The user service: registration, login (token issue), profiles and admin user
//! management.
//!
//! - `mod.rs` (here): the handle [`Users`] and its mailbox [`UsersMsg`].
//! - `front`: the group member; every request runs in its own task. Stateless:
//!   the database is the truth, so any member on any node may answer.
//!   Password hashing runs on the blocking pool.
//! - `store`: all of the service's SQL.
//! - `rules`: what makes a username, an email or a password acceptable (pure).
//! - `sweeper`: deletes refresh tokens past their expiry, every ten minutes.
//! - `keeper`: [`TokenKeeper`], on every node, keeps the revocation floors
//!   the edge checks tokens against (see [`crate::auth::revocations`]).

mod front;
mod keeper;
mod rules;
mod store;
mod sweeper;

use mart_schema::user::{
    Caller, Credentials, PasswordChange, PasswordReset, Registration, TokenGrant, User, UserError,
    UserPatch,
};
use mart_schema::{Page, PageRequest, Service, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::revocations::FloorChanges;
pub use keeper::TokenKeeper;
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
pub(crate) use sweeper::RefreshSweeper;
pub use sweeper::sweep_expired_refresh_tokens;

pub use front::{AdminOutcome, UserService};

use crate::call::{CallError, Request, ServiceClient};
use crate::failure::{Refusal, rejection};
use crate::wire::Wire;

rejection!(UserError);

/// A change to one user's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserChange {
    pub id: UserId,
    pub patch: UserPatch,
}

/// The user service's mailbox. Variants are tagged by name on the wire: add new
/// ones freely, never rename.
#[derive(Debug, RactorClusterMessage)]
pub enum UsersMsg {
    #[rpc]
    Register(
        Wire<Request<Registration>>,
        RpcReplyPort<Wire<Result<User, Refusal<UserError>>>>,
    ),
    #[rpc]
    IssueToken(
        Wire<Request<Credentials>>,
        RpcReplyPort<Wire<Result<TokenGrant, Refusal<UserError>>>>,
    ),
    #[rpc]
    Get(
        Wire<Request<UserId>>,
        RpcReplyPort<Wire<Result<User, Refusal<UserError>>>>,
    ),
    #[rpc]
    List(
        Wire<Request<PageRequest>>,
        RpcReplyPort<Wire<Result<Page<User>, Refusal<UserError>>>>,
    ),
    #[rpc]
    Update(
        Wire<Request<UserChange>>,
        RpcReplyPort<Wire<Result<User, Refusal<UserError>>>>,
    ),
    #[rpc]
    Delete(
        Wire<Request<UserId>>,
        RpcReplyPort<Wire<Result<(), Refusal<UserError>>>>,
    ),
    /// A refresh token for a new pair (the old one is used up).
    #[rpc]
    Refresh(
        Wire<Request<String>>,
        RpcReplyPort<Wire<Result<TokenGrant, Refusal<UserError>>>>,
    ),
    /// Ends the session of a refresh token.
    #[rpc]
    Logout(
        Wire<Request<String>>,
        RpcReplyPort<Wire<Result<(), Refusal<UserError>>>>,
    ),
    #[rpc]
    ChangePassword(
        Wire<Request<PasswordChange>>,
        RpcReplyPort<Wire<Result<(), Refusal<UserError>>>>,
    ),
    #[rpc]
    ResetPassword(
        Wire<Request<(UserId, PasswordReset)>>,
        RpcReplyPort<Wire<Result<(), Refusal<UserError>>>>,
    ),
    /// The revocation floors of some subjects (users, sessions).
    #[rpc]
    Floors(
        Wire<Request<Vec<Uuid>>>,
        RpcReplyPort<Wire<Result<Vec<i32>, Refusal<UserError>>>>,
    ),
    /// The floors raised since a point in time (a keeper's look).
    #[rpc]
    FloorsSince(
        Wire<Request<Option<OffsetDateTime>>>,
        RpcReplyPort<Wire<Result<FloorChanges, Refusal<UserError>>>>,
    ),
}

/// Handle on the user service, wherever it runs.
#[derive(Clone, Debug)]
pub struct Users {
    client: ServiceClient<UsersMsg>,
}

type Answer<T> = Result<T, CallError<UserError>>;

impl Default for Users {
    fn default() -> Self {
        Self {
            client: ServiceClient::new(Service::Users),
        }
    }
}

impl Users {
    pub fn is_reachable(&self) -> bool {
        self.client.is_reachable()
    }

    pub async fn register(&self, registration: Registration) -> Answer<User> {
        let caller = Caller::Anonymous;
        self.client
            .ask(caller, registration, UsersMsg::Register)
            .await
    }

    pub async fn issue_token(&self, credentials: Credentials) -> Answer<TokenGrant> {
        let caller = Caller::Anonymous;
        self.client
            .ask(caller, credentials, UsersMsg::IssueToken)
            .await
    }

    pub async fn get(&self, caller: Caller, id: UserId) -> Answer<User> {
        self.client.ask(caller, id, UsersMsg::Get).await
    }

    pub async fn list(&self, caller: Caller, page: PageRequest) -> Answer<Page<User>> {
        self.client.ask(caller, page, UsersMsg::List).await
    }

    pub async fn update(&self, caller: Caller, id: UserId, patch: UserPatch) -> Answer<User> {
        let change = UserChange { id, patch };
        self.client.ask(caller, change, UsersMsg::Update).await
    }

    pub async fn delete(&self, caller: Caller, id: UserId) -> Answer<()> {
        self.client.ask(caller, id, UsersMsg::Delete).await
    }

    pub async fn refresh(&self, refresh_token: String) -> Answer<TokenGrant> {
        let caller = Caller::Anonymous;
        self.client
            .ask(caller, refresh_token, UsersMsg::Refresh)
            .await
    }

    pub async fn logout(&self, refresh_token: String) -> Answer<()> {
        let caller = Caller::Anonymous;
        self.client
            .ask(caller, refresh_token, UsersMsg::Logout)
            .await
    }

    pub async fn change_password(&self, caller: Caller, change: PasswordChange) -> Answer<()> {
        self.client
            .ask(caller, change, UsersMsg::ChangePassword)
            .await
    }

    pub async fn reset_password(
        &self,
        caller: Caller,
        id: UserId,
        reset: PasswordReset,
    ) -> Answer<()> {
        self.client
            .ask(caller, (id, reset), UsersMsg::ResetPassword)
            .await
    }

    /// The revocation floors of `subjects`, in order.
    pub async fn floors(&self, subjects: Vec<Uuid>) -> Answer<Vec<i32>> {
        self.client
            .ask(Caller::Service, subjects, UsersMsg::Floors)
            .await
    }

    pub async fn floors_since(&self, since: Option<OffsetDateTime>) -> Answer<FloorChanges> {
        self.client
            .ask(Caller::Service, since, UsersMsg::FloorsSince)
            .await
    }
}
