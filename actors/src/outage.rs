//! An outage of something outside mart (the SMTP server, Kafka, a database)
//! told as an operator wants it: once when it starts, a reminder at most once
//! a minute while it lasts, and once when it ends; not a line per retry.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a lasting outage is mentioned again.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The state of one outside dependency, kept by whoever retries it.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    /// When it started, and when it was last mentioned.
    down: Option<(Instant, Instant)>,
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self { what, down: None }
    }

    /// An attempt failed with `error`; the work will be retried.
    pub fn failed(&mut self, error: &dyn Display) {
        let now = Instant::now();
        match &mut self.down {
            None => {
                self.down = Some((now, now));
                tracing::warn!(what = self.what, %error, "{} is unavailable; retrying", self.what);
            }
            Some((since, mentioned)) if now.duration_since(*mentioned) >= REMIND_EVERY => {
                *mentioned = now;
                let down_for = now.duration_since(*since);
                tracing::warn!(what = self.what, ?down_for, %error, "{} is still unavailable", self.what);
            }
            Some(_) => tracing::debug!(what = self.what, %error, "still unavailable"),
        }
    }

    /// An attempt worked: the outage, if there was one, is over.
    pub fn ok(&mut self) {
        if let Some((since, _)) = self.down.take() {
            let down_for = since.elapsed();
            tracing::info!(what = self.what, ?down_for, "{} is back", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_and_its_end_once() {
        let mut smtp = Outage::new("the SMTP server");
        smtp.ok();
        assert!(smtp.down.is_none());
        smtp.failed(&"connection refused");
        let started = smtp.down.map(|(since, _)| since);
        smtp.failed(&"connection refused");
        assert_eq!(smtp.down.map(|(since, _)| since), started, "same outage");
        smtp.ok();
        assert!(smtp.down.is_none());
    }
}
