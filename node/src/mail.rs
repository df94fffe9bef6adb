//! How mail leaves a node, through lettre: SMTP (`MART_SMTP_URL`), or `.eml`
//! files under `MART_DATA_DIR/mail/` when no SMTP server is configured.

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, header::MessageId};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mart_actors::notifications::{Email, MailError, Mailer};

/// SMTP or files.
pub enum LettreMailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Files {
        transport: AsyncFileTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl std::fmt::Debug for LettreMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LettreMailer::Smtp { .. } => f.write_str("LettreMailer::Smtp"),
            LettreMailer::Files { .. } => f.write_str("LettreMailer::Files"),
        }
    }
}

impl LettreMailer {
    /// `smtp://host:port`, `smtps://user:pass@host`, `smtp://host?tls=required`.
    pub fn smtp(url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("MART_SMTP_URL: {e}"))?
            .build();
        Ok(Self::Smtp {
            transport,
            from: mailbox(from)?,
        })
    }

    /// One `.eml` file per message in `dir`.
    pub fn files(dir: &std::path::Path, from: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self::Files {
            transport: AsyncFileTransport::new(dir),
            from: mailbox(from)?,
        })
    }
}

fn mailbox(from: &str) -> anyhow::Result<Mailbox> {
    from.parse()
        .map_err(|e| anyhow::anyhow!("MART_MAIL_FROM {from:?}: {e}"))
}

impl Mailer for LettreMailer {
    fn send(&self, email: Email) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let from = match self {
                LettreMailer::Smtp { from, .. } | LettreMailer::Files { from, .. } => from.clone(),
            };
            let to: Mailbox = email
                .to
                .parse()
                .map_err(|e| MailError::Permanent(format!("bad recipient {}: {e}", email.to)))?;
            let message = Message::builder()
                .from(from)
                .to(to)
                .subject(email.subject)
                .header(MessageId::from(format!("<{}@mart>", email.id)))
                .multipart(MultiPart::alternative_plain_html(email.text, email.html))
                .map_err(|e| MailError::Permanent(e.to_string()))?;
            match self {
                LettreMailer::Smtp { transport, .. } => {
                    transport.send(message).await.map(|_| ()).map_err(|e| {
                        if e.is_permanent() {
                            MailError::Permanent(e.to_string())
                        } else {
                            MailError::Transient(e.to_string())
                        }
                    })
                }
                LettreMailer::Files { transport, .. } => transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| MailError::Transient(e.to_string())),
            }
        })
    }
}
