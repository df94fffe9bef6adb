//! Typed identifiers. Every id is a UUID v7 (time-ordered, so ids sort by creation
//! and make good keyset-pagination cursors), wrapped in its own type so a `UserId`
//! can never be passed where an `OrderId` is expected.

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
            postgres_types::ToSql, postgres_types::FromSql,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[postgres(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// A registered user.
    UserId
);
typed_id!(
    /// One domain event in a service's outbox; stable across redeliveries, so
    /// subscribers deduplicate on it.
    EventId
);
typed_id!(
    /// A catalog product; its stock record has the same id.
    ProductId
);
typed_id!(
    /// An order; reservations are keyed by it.
    OrderId
);
typed_id!(
    /// One payment attempt (one checkout session) for an order.
    PaymentId
);
typed_id!(
    /// One email in the notification log.
    NotificationId
);
