//! The services a node can host.

use serde::{Deserialize, Serialize};

/// A service: an actor group that any node may host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Users,
    Products,
    Inventory,
    Orders,
    Payments,
    Notifications,
}

impl Service {
    /// Every service, in start-up order.
    pub const ALL: &'static [Service] = &[
        Service::Users,
        Service::Products,
        Service::Inventory,
        Service::Orders,
        Service::Payments,
        Service::Notifications,
    ];

    /// The name used in `--services`, logs and event sources.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Products => "products",
            Service::Inventory => "inventory",
            Service::Orders => "orders",
            Service::Payments => "payments",
            Service::Notifications => "notifications",
        }
    }

    /// The PostgreSQL schema the service owns.
    pub fn schema(self) -> &'static str {
        self.name()
    }

    /// The process group its request handlers join, cluster-wide.
    pub fn group(self) -> String {
        format!("mart.{}", self.name())
    }

    /// The process group of the actors subscribing to its domain events.
    pub fn subscribers_group(self) -> String {
        format!("mart.{}.subscribers", self.name())
    }

    /// The environment variable that overrides `DATABASE_URL` for this service.
    pub fn database_url_var(self) -> String {
        format!("MART_{}_DATABASE_URL", self.name().to_uppercase())
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .iter()
            .copied()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Service::ALL.iter().map(|s| s.name()).collect();
                format!("unknown service {s:?} (known: {})", known.join(", "))
            })
    }
}
