//! mart's services as supervised `ractor` actor groups. The only crate with
//! business rules.
//!
//! - [`services`]: what a node hosts — a root [`supervisor`] with one supervised
//!   group per service (request workers + outbox dispatcher).
//! - [`call`]: [`ServiceClient`](call::ServiceClient), the one way to reach a
//!   service anywhere in the cluster, and [`CallError`](call::CallError).
//! - [`wire`]: [`Wire`](wire::Wire), how payloads cross nodes without a malformed
//!   frame ever panicking a node.
//! - [`outbox`]: events written with the state change, delivered in order to
//!   durable subscribers until acknowledged.
//! - [`owners`]: which node owns an entity (a product's stock, an order):
//!   rendezvous hashing over the live owner routers, fenced in PostgreSQL.
//! - [`auth`]: signing and verifying access tokens.
//! - [`idempotency`]: `Idempotency-Key` handling for requests that create things.
//! - [`users`], [`products`], [`inventory`], [`orders`], [`payments`], [`notifications`]: the services and their handles.
//!
//! Invariant: a handler's `Err` means broken infrastructure (the actor crashes and
//! is restarted); every business "no" travels back in the reply.

pub mod auth;
pub mod call;
mod entities;
pub mod idempotency;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod owners;
pub mod payments;
pub mod products;
pub mod services;
pub mod supervisor;
pub mod users;
pub mod wire;

pub use call::CallError;
pub use inventory::Inventory;
pub use notifications::Notifications;
pub use orders::Orders;
pub use payments::Payments;
pub use products::Products;
pub use services::{Hosted, ServiceDeps, ServiceSettings};
pub use users::Users;
