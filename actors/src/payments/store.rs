//! PostgreSQL access for the payment service: the only writer of `payments`.

use crate::pool::Pool;
use mart_schema::payment::{Payment, PaymentError, PaymentEvent, PaymentStatus};
use mart_schema::{OrderId, PaymentId};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::failure::{Failure, Infra};
use crate::idempotency::Idempotency;
use crate::outbox::Outbox;

pub(crate) type StoreResult<T> = Result<T, Failure<PaymentError>>;

const COLUMNS: &str = "payment_id, order_id, user_id, status, amount, currency, checkout_url, created_at, session_id, payment_intent";

/// A payment row with the bookkeeping the service needs.
#[derive(Debug, Clone)]
pub(crate) struct StoredPayment {
    pub(crate) payment: Payment,
    pub(crate) session_id: Option<String>,
    pub(crate) payment_intent: Option<String>,
}

fn read(row: &Row) -> StoreResult<StoredPayment> {
    let status: String = row.get("status");
    let currency: String = row.get("currency");
    Ok(StoredPayment {
        payment: Payment {
            id: row.get("payment_id"),
            order_id: row.get("order_id"),
            user_id: row.get("user_id"),
            status: status.parse().map_err(Infra::bug)?,
            amount: row.get("amount"),
            currency: currency.parse().map_err(Infra::bug)?,
            checkout_url: row.get("checkout_url"),
            created_at: row.get("created_at"),
        },
        session_id: row.get("session_id"),
        payment_intent: row.get("payment_intent"),
    })
}

#[derive(Clone, Debug)]
pub(crate) struct PaymentStore {
    pub(crate) pool: Pool,
    outbox: Outbox,
    pub(crate) keys: Idempotency,
}

impl PaymentStore {
    pub(crate) fn new(pool: Pool, outbox: Outbox) -> Self {
        Self {
            pool,
            outbox,
            keys: Idempotency::new("payments"),
        }
    }

    /// Claims the order's one live payment slot; `None` if another payment
    /// already holds it.
    pub(crate) async fn insert_pending(&self, payment: &Payment) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "insert into payments.payments (payment_id, order_id, user_id, status, amount, currency, created_at) \
                 values ($1, $2, $3, 'pending', $4, $5, $6)",
                &[
                    &payment.id,
                    &payment.order_id,
                    &payment.user_id,
                    &payment.amount,
                    &payment.currency.code(),
                    &payment.created_at,
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives up a pending payment whose session could not be created.
    pub(crate) async fn delete_pending(&self, id: PaymentId) {
        if let Ok(client) = self.pool.get().await {
            let _ = client
                .execute(
                    "delete from payments.payments where payment_id = $1 and status = 'pending' and session_id is null",
                    &[&id],
                )
                .await;
        }
    }

    /// Stores the checkout session and announces the payment, recording the
    /// Idempotency-Key's outcome in the same transaction.
    pub(crate) async fn attach_session(
        &self,
        payment: &Payment,
        session_id: &str,
        idempotency: Option<(&str, &serde_json::Value)>,
    ) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "update payments.payments set session_id = $2, checkout_url = $3, updated_at = now() where payment_id = $1",
            &[&payment.id, &session_id, &payment.checkout_url],
        )
        .await?;
        if let Some((key, outcome)) = idempotency {
            self.keys
                .finish_in(&tx, payment.user_id, key, outcome)
                .await?;
        }
        self.outbox.commit(tx, &[PaymentEvent::of(payment)]).await?;
        Ok(())
    }

    async fn one(
        &self,
        filter: &str,
        param: &(dyn postgres_types::ToSql + Sync),
    ) -> StoreResult<Option<StoredPayment>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from payments.payments where {filter}"),
                &[param],
            )
            .await?;
        row.as_ref().map(read).transpose()
    }

    pub(crate) async fn get(&self, id: PaymentId) -> StoreResult<Option<StoredPayment>> {
        self.one("payment_id = $1", &id).await
    }

    pub(crate) async fn by_session(&self, session: &str) -> StoreResult<Option<StoredPayment>> {
        self.one("session_id = $1", &session).await
    }

    pub(crate) async fn by_intent(&self, intent: &str) -> StoreResult<Option<StoredPayment>> {
        self.one("payment_intent = $1", &intent).await
    }

    /// The order's live (pending or succeeded) payment.
    pub(crate) async fn live_for_order(
        &self,
        order: OrderId,
    ) -> StoreResult<Option<StoredPayment>> {
        self.one(
            "order_id = $1 and status in ('pending', 'succeeded')",
            &order,
        )
        .await
    }

    /// Moves a payment from `from` to `to` and publishes the change
    /// (`payment.succeeded` is how the order learns it was paid); `false` if
    /// it was not in `from` (someone else moved it first).
    pub(crate) async fn transition(
        &self,
        row: &StoredPayment,
        from: PaymentStatus,
        to: PaymentStatus,
        payment_intent: Option<&str>,
    ) -> StoreResult<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "update payments.payments set status = $3, payment_intent = coalesce($4, payment_intent), \
                   updated_at = now() where payment_id = $1 and status = $2",
                &[&row.payment.id, &from.as_str(), &to.as_str(), &payment_intent],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        let mut moved = row.payment.clone();
        moved.status = to;
        self.outbox.commit(tx, &[PaymentEvent::of(&moved)]).await?;
        Ok(true)
    }

    /// Records a Stripe event id; `false` if it was seen before.
    pub(crate) async fn first_sighting(&self, event_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "insert into payments.stripe_events (event_id) values ($1) on conflict do nothing",
                &[&event_id],
            )
            .await?;
        Ok(inserted == 1)
    }

    pub(crate) async fn forget_event(&self, event_id: &str) {
        if let Ok(client) = self.pool.get().await {
            let _ = client
                .execute(
                    "delete from payments.stripe_events where event_id = $1",
                    &[&event_id],
                )
                .await;
        }
    }

    /// Payments the reconciler should look at: pending, with a checkout
    /// session, for longer than `after_secs`.
    pub(crate) async fn unsettled(&self, after_secs: f64) -> StoreResult<Vec<StoredPayment>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from payments.payments \
                     where status = 'pending' and session_id is not null \
                       and created_at < now() - make_interval(secs => $1) \
                     order by created_at limit 100"
                ),
                &[&after_secs],
            )
            .await?;
        rows.iter().map(read).collect()
    }
}
