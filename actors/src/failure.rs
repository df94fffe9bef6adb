//! How a request fails inside a service, and how that failure travels.
//!
//! A service's handler returns [`Failure`]: either its business "no" (`E`,
//! answered to the caller and becoming a 4xx) or broken infrastructure
//! ([`Infra`], typed, keeping its `source()` chain). Crossing to the caller
//! (possibly on another node), an `Infra` becomes a [`Fault`]: whether trying
//! again soon may help (503) or not (500), and the cause as text for the
//! edge's log. The edge logs it once, with the request id; no client ever
//! sees it.

use std::error::Error;

use mart_schema::Service;
use serde::{Deserialize, Serialize};

/// Broken infrastructure: nothing the caller did wrong.
#[derive(Debug, thiserror::Error)]
pub enum Infra {
    #[error("database")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Another service could not be reached, or did not answer in time.
    #[error("{service} is unavailable: {why}")]
    Unavailable { service: Service, why: String },
    /// Another service failed; its cause as it reported it.
    #[error("{service} failed: {cause}")]
    Remote { service: Service, cause: String },
    /// Something that cannot happen did (a stored value that does not parse,
    /// an answer of the wrong kind): a bug.
    #[error("{0}")]
    Bug(String),
    /// One failure shared by several requests (a batch they were written in).
    #[error(transparent)]
    Shared(std::sync::Arc<Infra>),
    /// A provider or library failed in a way a retry will not fix.
    #[error("{what}")]
    Other {
        what: &'static str,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
}

impl Infra {
    pub fn bug(what: impl std::fmt::Display) -> Self {
        Infra::Bug(what.to_string())
    }

    pub fn other(what: &'static str, source: impl Error + Send + Sync + 'static) -> Self {
        Infra::Other {
            what,
            source: Box::new(source),
        }
    }

    /// Whether trying again soon may work (a database or service briefly
    /// away, a pool exhausted) rather than the same failure every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Infra::Pool(_) | Infra::Unavailable { .. } => true,
            // An error PostgreSQL reported is about the statement; anything
            // else is the connection.
            Infra::Database(e) => e.as_db_error().is_none(),
            Infra::Shared(inner) => inner.is_transient(),
            Infra::Remote { .. } | Infra::Bug(_) | Infra::Other { .. } => false,
        }
    }

    /// PostgreSQL refused a value (SQLSTATE class 22: text it cannot store,
    /// a number out of range): the request's fault, never the database's.
    pub fn is_data_exception(&self) -> bool {
        match self {
            Infra::Database(e) => e.code().is_some_and(|c| c.code().starts_with("22")),
            Infra::Shared(inner) => inner.is_data_exception(),
            _ => false,
        }
    }

    /// The error and every cause under it, on one line.
    pub fn chain(&self) -> String {
        mart_schema::db::chain(self)
    }

    /// How this failure travels to the caller.
    pub fn fault(&self) -> Fault {
        Fault {
            transient: self.is_transient(),
            cause: self.chain(),
        }
    }
}

/// Why a request failed inside a service.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    /// The service's answer: "no", and why.
    #[error("rejected: {0:?}")]
    Rejected(E),
    #[error(transparent)]
    Infra(#[from] Infra),
}

impl<E: std::fmt::Debug> Failure<E> {
    /// For work that expects no "no" (a store call on a row known to exist,
    /// background work): a rejection there is a bug.
    pub fn into_infra(self) -> Infra {
        match self {
            Failure::Rejected(no) => Infra::Bug(format!("unexpected rejection: {no:?}")),
            Failure::Infra(infra) => infra,
        }
    }
}

impl<E> From<tokio_postgres::Error> for Failure<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Infra(e.into())
    }
}

impl<E> From<deadpool_postgres::PoolError> for Failure<E> {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Failure::Infra(e.into())
    }
}

/// Broken infrastructure as it reaches a caller on any node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Trying again soon may work (503 + Retry-After), or not (500).
    pub transient: bool,
    /// What went wrong, for the log; never shown to a client.
    pub cause: String,
}

/// A service's answer other than its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal<E> {
    No(E),
    Fault(Fault),
}

impl<E: Rejection> From<Failure<E>> for Refusal<E> {
    fn from(failure: Failure<E>) -> Self {
        match failure {
            Failure::Rejected(no) => Refusal::No(no),
            Failure::Infra(infra) if infra.is_data_exception() => {
                Refusal::No(E::malformed(unstorable(&infra)))
            }
            Failure::Infra(infra) => Refusal::Fault(infra.fault()),
        }
    }
}

/// What to tell a caller whose value PostgreSQL refused.
pub(crate) fn unstorable(infra: &Infra) -> String {
    let said = match infra {
        Infra::Database(e) => e.as_db_error().map(|db| db.message().to_owned()),
        Infra::Shared(inner) => return unstorable(inner),
        _ => None,
    };
    format!(
        "holds a value that cannot be stored ({})",
        said.unwrap_or_else(|| "data exception".into())
    )
}

/// A service's "no" type: it can also describe a request that did not decode,
/// and `?` turns it into a [`Failure`].
pub trait Rejection: std::fmt::Debug + Send + 'static {
    fn malformed(reason: String) -> Self;
}

/// Implements [`Rejection`] (a malformed request is a 422 naming `request`)
/// and `From<E> for Failure<E>` for a service's error type.
macro_rules! rejection {
    ($error:ty) => {
        impl $crate::failure::Rejection for $error {
            fn malformed(reason: String) -> Self {
                <$error>::Invalid(mart_schema::FieldErrors::single("request", reason))
            }
        }

        impl From<$error> for $crate::failure::Failure<$error> {
            fn from(e: $error) -> Self {
                $crate::failure::Failure::Rejected(e)
            }
        }
    };
}
pub(crate) use rejection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_keeps_the_whole_chain_and_says_whether_to_retry() {
        let io = std::io::Error::other("disk on fire");
        let infra = Infra::other("mail transport", io);
        let fault = infra.fault();
        assert_eq!(fault.cause, "mail transport: disk on fire");
        assert!(!fault.transient);
        let away = Infra::Unavailable {
            service: Service::Inventory,
            why: "no member".into(),
        };
        assert!(away.fault().transient);
    }
}
