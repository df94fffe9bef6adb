//! Sends pending emails, one at a time, each locked while it is sent.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use mart_schema::notification::NotificationStatus;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::store::{Attempt, NotificationStore};
use super::{MailError, Mailer};
use crate::failure::Infra;

/// The registry name of the sender on this node.
pub(crate) const SENDER: &str = "mart.notifications.sender";
/// Emails claimed at a time.
const BATCH: i64 = 32;
/// How long a claimed email is this sender's before it is due again.
const LEASE: Duration = Duration::from_secs(60);
/// The longest pause between attempts at one email.
const MAX_BACKOFF_SECS: i64 = 300;

#[derive(Debug, Clone, Copy)]
pub(crate) struct MailSender;

#[derive(Debug, ractor_cluster::RactorMessage)]
pub(crate) enum SenderMsg {
    Send,
}

#[derive(Debug)]
pub(crate) struct SenderState {
    store: NotificationStore,
    mailer: Arc<dyn Mailer>,
    outage: crate::outage::Outage,
}

impl Actor for MailSender {
    type Msg = SenderMsg;
    type State = SenderState;
    type Arguments = (NotificationStore, Arc<dyn Mailer>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (store, mailer): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || SenderMsg::Send);
        Ok(SenderState {
            store,
            mailer,
            outage: crate::outage::Outage::new("mail delivery"),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut SenderState,
    ) -> Result<(), ActorProcessingErr> {
        // Tried every second while the server is away: said once, not each time.
        match state.send_due().await {
            Ok(()) => state.outage.ok(),
            Err(e) => state.outage.failed(&e.chain()),
        }
        Ok(())
    }
}

/// What one attempt's outcome means for the row.
fn attempt(outcome: &Result<(), MailError>, attempts: i32) -> Attempt {
    let (status, error) = match outcome {
        Ok(()) => (NotificationStatus::Sent, None),
        Err(MailError::Permanent(reply)) => (NotificationStatus::Failed, Some(reply.clone())),
        Err(MailError::Transient(reason)) => (NotificationStatus::Pending, Some(reason.clone())),
    };
    let backoff_secs = 2i64
        .saturating_pow(u32::try_from(attempts).unwrap_or(0).min(16))
        .min(MAX_BACKOFF_SECS);
    Attempt {
        status,
        error,
        backoff_secs,
    }
}

impl SenderState {
    /// Sends what is due until nothing is left or the server is away. Each
    /// email's outcome is written as soon as the server answered, so a
    /// sender that dies resends at most the one in hand.
    async fn send_due(&self) -> Result<(), Infra> {
        loop {
            let due = self.store.claim(BATCH, LEASE).await?;
            if due.is_empty() {
                return Ok(());
            }
            let full = due.len() as i64 == BATCH;
            let mut due = due.into_iter();
            while let Some(next) = due.next() {
                let span = tracing::info_span!(
                    target: crate::trace::TARGET,
                    "send email",
                    otel.kind = "client",
                    template = %next.template,
                    notification_id = %next.email.id.0,
                );
                crate::trace::continue_from(&span, next.trace.as_ref());
                let outcome = self
                    .mailer
                    .send(next.email.clone())
                    .instrument(span.clone())
                    .await;
                if let Err(e) = &outcome {
                    crate::trace::failed(&span, &e.to_string());
                }
                let tried = attempt(&outcome, next.attempts);
                self.store.finish(&next, tried).instrument(span).await?;
                if let Err(MailError::Transient(reason)) = outcome {
                    crate::measure::email_retrying();
                    // The server is away: the rest are due again at once, and
                    // the next round (a second from now) tries again.
                    let rest: Vec<uuid::Uuid> = due.map(|d| d.email.id.0).collect();
                    self.store.unclaim(&rest).await?;
                    return Err(Infra::other("mail transport", MailError::Transient(reason)));
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_to_a_cap_and_permanent_ones_end() {
        let sent = attempt(&Ok(()), 0);
        assert_eq!((sent.status, sent.error), (NotificationStatus::Sent, None));
        let busy = Err(MailError::Transient("421".into()));
        assert_eq!(attempt(&busy, 0).backoff_secs, 1);
        assert_eq!(attempt(&busy, 3).backoff_secs, 8);
        assert_eq!(attempt(&busy, 40).backoff_secs, MAX_BACKOFF_SECS);
        assert_eq!(attempt(&busy, 3).status, NotificationStatus::Pending);
        let refused = attempt(&Err(MailError::Permanent("550".into())), 1);
        assert_eq!(refused.status, NotificationStatus::Failed);
    }
}
