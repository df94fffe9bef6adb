//! Login and registration throttling, per account and per client address,
//! with `governor`'s keyed GCRA limiters: a burst, then one attempt per
//! period. Refused attempts get 429 with `Retry-After`; they never reach the
//! user service, so a password guesser also spends no argon2 time of ours.
//!
//! Limits are per node: a client spreading guesses over `n` edges gets `n`
//! times the rate, which still makes guessing a password hopeless.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, ExtraHeader};

/// Attempts at one account: a burst of 10, then one per 6 s.
const ACCOUNT_BURST: u32 = 10;
const ACCOUNT_PERIOD: Duration = Duration::from_secs(6);
/// Attempts from one address (logins and registrations): a burst of 30,
/// then one a second.
const ADDRESS_BURST: u32 = 30;
const ADDRESS_PERIOD: Duration = Duration::from_secs(1);

/// The limiters of one edge.
#[derive(Clone)]
pub struct Throttle {
    accounts: Arc<DefaultKeyedRateLimiter<String>>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    checks: Arc<AtomicU64>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Throttle")
    }
}

fn quota(period: Duration, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            accounts: Arc::new(RateLimiter::keyed(quota(ACCOUNT_PERIOD, ACCOUNT_BURST))),
            addresses: Arc::new(RateLimiter::keyed(quota(ADDRESS_PERIOD, ADDRESS_BURST))),
            checks: Arc::default(),
        }
    }
}

impl Throttle {
    /// One attempt at `account` (if named) from `address` (if known): 429
    /// when either has used its allowance.
    pub fn attempt(&self, account: Option<&str>, address: Option<IpAddr>) -> Result<(), ApiError> {
        // Keys whose allowance is whole again are forgotten now and then.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.accounts.retain_recent();
            self.addresses.retain_recent();
        }
        let now = DefaultClock::default().now();
        if let Some(address) = address
            && let Err(not_until) = self.addresses.check_key(&address)
        {
            return Err(too_many(not_until.wait_time_from(now), "from this address"));
        }
        if let Some(account) = account.map(|a| a.trim().to_lowercase())
            && let Err(not_until) = self.accounts.check_key(&account)
        {
            return Err(too_many(not_until.wait_time_from(now), "for this account"));
        }
        Ok(())
    }
}

fn too_many(wait: Duration, whose: &str) -> ApiError {
    let seconds = u16::try_from(wait.as_secs() + 1).unwrap_or(u16::MAX);
    ApiError {
        header: Some(ExtraHeader::RetryAfterSeconds(seconds)),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-attempts",
            format!("too many attempts {whose}; try again in {seconds} s"),
        )
    }
}

/// The client's address, when the server was started with connection info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        Ok(ClientAddress(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_gets_its_burst_then_429_with_retry_after() {
        let throttle = Throttle::default();
        let address: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..ACCOUNT_BURST {
            assert!(throttle.attempt(Some("Erin"), Some(address)).is_ok());
        }
        let refused = throttle
            .attempt(Some("erin "), Some(address))
            .expect_err("throttled");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(matches!(
            refused.header,
            Some(ExtraHeader::RetryAfterSeconds(1..=7))
        ));
        // Another account from the same address is still fine.
        assert!(throttle.attempt(Some("frank"), Some(address)).is_ok());
    }

    #[test]
    fn an_address_gets_its_burst_over_all_accounts() {
        let throttle = Throttle::default();
        let address: IpAddr = [10, 0, 0, 2].into();
        for i in 0..ADDRESS_BURST {
            assert!(
                throttle
                    .attempt(Some(&format!("user{i}")), Some(address))
                    .is_ok()
            );
        }
        assert!(throttle.attempt(Some("another"), Some(address)).is_err());
        assert!(
            throttle
                .attempt(Some("another"), Some([10, 0, 0, 3].into()))
                .is_ok()
        );
    }
}
