//! mart's services as supervised `ractor` actor groups. The only crate with
//! business rules.
//!
//! - [`services`]: what a node hosts — a root [`supervisor`] with one supervised
//!   group per service (request workers + outbox dispatcher).
//! - [`call`]: [`ServiceClient`](call::ServiceClient), the one way to reach a
//!   service anywhere in the cluster, and [`CallError`](call::CallError);
//!   every request carries its [`Caller`](mart_schema::user::Caller) and what
//!   is left of the edge's deadline; `Front`, the one group member every
//!   service uses.
//! - [`failure`]: a service's "no" versus broken infrastructure
//!   ([`Infra`](failure::Infra), typed, keeping its cause), and how a fault
//!   travels to the edge (500, or 503 when a retry may help).
//! - [`wire`]: [`Wire`](wire::Wire), how payloads cross nodes without a malformed
//!   frame ever panicking a node.
//! - [`outbox`]: events written with the state change, delivered in order to
//!   durable subscribers until acknowledged.
//! - [`owners`]: which node owns an entity (a product's stock, an order):
//!   rendezvous hashing over the live owner routers, fenced in PostgreSQL.
//! - [`auth`]: signing and verifying access tokens.
//! - `batch`: batched round trips — a node's writes of one kind (stock, new
//!   orders) that queue up while a transaction is written go together in the
//!   next (group commit); stock actors starting together load in one query.
//! - [`idempotency`]: `Idempotency-Key` handling for requests that create things.
//! - [`outage`]: an outside dependency's outage, logged once, reminded, ended.
//! - [`pool`]: a service's PostgreSQL pool, its checkouts timed.
//! - [`trace`]: trace context across hops (calls, outbox events, Kafka
//!   records, subscribers' work) as W3C `traceparent`s.
//! - [`measure`]: the metrics the services record (requests, calls, entity
//!   actors, domain events, outbox lag, pools), named in one place.
//! - [`users`], [`products`], [`inventory`], [`orders`], [`payments`],
//!   [`notifications`]: the services, each laid out the same way: `mod.rs`
//!   (handle and messages), `front.rs` (the group member), `store.rs` (all
//!   SQL), and for services with entities `state.rs` (pure decisions) and
//!   `actor.rs` (load → decide → write → reply).
//!
//! Invariant: every business "no" travels back in the reply. A group member
//! never crashes on a request (each runs in a task of its own and answers a
//! fault); an entity actor whose write failed crashes and reloads from
//! PostgreSQL.

pub mod auth;
mod batch;
pub mod call;
mod entities;
pub mod failure;
pub mod idempotency;
pub mod inventory;
pub mod measure;
pub mod notifications;
pub mod orders;
pub mod outage;
pub mod outbox;
pub mod owners;
pub mod payments;
pub mod pool;
pub mod products;
pub mod services;
pub mod supervisor;
pub mod trace;
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
