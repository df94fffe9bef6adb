//! PostgreSQL access for the payment service: the only writer of `payments`.

use deadpool_postgres::Pool;
use mart_schema::payment::{Payment, PaymentError, PaymentEvent, PaymentStatus};
use mart_schema::{OrderId, PaymentId};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::call::Failure;
use crate::idempotency::Idempotency;
use crate::outbox::Outbox;

pub(crate) type StoreResult<T> = Result<T, Failure<PaymentError>>;

pub(crate) fn db(e: impl std::fmt::Display) -> Failure<PaymentError> {
    Failure::Infrastructure(e.to_string())
}

const COLUMNS: &str = "payment_id, order_id, user_id, status, amount, currency, checkout_url, created_at, session_id, payment_intent, order_notified";

/// A payment row with the bookkeeping the service needs.
#[derive(Debug, Clone)]
pub(crate) struct Row2 {
    pub(crate) payment: Payment,
    pub(crate) session_id: Option<String>,
    pub(crate) payment_intent: Option<String>,
    pub(crate) order_notified: bool,
}

fn read(row: &Row) -> StoreResult<Row2> {
    let status: String = row.get("status");
    let currency: String = row.get("currency");
    Ok(Row2 {
        payment: Payment {
            id: row.get("payment_id"),
            order_id: row.get("order_id"),
            user_id: row.get("user_id"),
            status: status.parse().map_err(db)?,
            amount: row.get("amount"),
            currency: currency.parse().map_err(db)?,
            checkout_url: row.get("checkout_url"),
            created_at: row.get("created_at"),
        },
        session_id: row.get("session_id"),
        payment_intent: row.get("payment_intent"),
        order_notified: row.get("order_notified"),
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
        let client = self.pool.get().await.map_err(db)?;
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
            Err(e) => Err(db(e)),
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
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "update payments.payments set session_id = $2, checkout_url = $3, updated_at = now() where payment_id = $1",
            &[&payment.id, &session_id, &payment.checkout_url],
        )
        .await
        .map_err(db)?;
        if let Some((key, outcome)) = idempotency {
            self.keys
                .finish_in(&tx, payment.user_id, key, outcome)
                .await
                .map_err(db)?;
        }
        self.outbox
            .append(&tx, &[PaymentEvent::of(payment)])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.outbox.wake();
        Ok(())
    }

    async fn one(
        &self,
        filter: &str,
        param: &(dyn postgres_types::ToSql + Sync),
    ) -> StoreResult<Option<Row2>> {
        let client = self.pool.get().await.map_err(db)?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from payments.payments where {filter}"),
                &[param],
            )
            .await
            .map_err(db)?;
        row.as_ref().map(read).transpose()
    }

    pub(crate) async fn get(&self, id: PaymentId) -> StoreResult<Option<Row2>> {
        self.one("payment_id = $1", &id).await
    }

    pub(crate) async fn by_session(&self, session: &str) -> StoreResult<Option<Row2>> {
        self.one("session_id = $1", &session).await
    }

    pub(crate) async fn by_intent(&self, intent: &str) -> StoreResult<Option<Row2>> {
        self.one("payment_intent = $1", &intent).await
    }

    /// The order's live (pending or succeeded) payment.
    pub(crate) async fn live_for_order(&self, order: OrderId) -> StoreResult<Option<Row2>> {
        self.one(
            "order_id = $1 and status in ('pending', 'succeeded')",
            &order,
        )
        .await
    }

    /// Moves a payment from `from` to `to` and publishes the change; `false`
    /// if it was not in `from` (someone else moved it first).
    pub(crate) async fn transition(
        &self,
        row: &Row2,
        from: PaymentStatus,
        to: PaymentStatus,
        payment_intent: Option<&str>,
    ) -> StoreResult<bool> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let changed = tx
            .execute(
                "update payments.payments set status = $3, payment_intent = coalesce($4, payment_intent), \
                   updated_at = now() where payment_id = $1 and status = $2",
                &[&row.payment.id, &from.as_str(), &to.as_str(), &payment_intent],
            )
            .await
            .map_err(db)?;
        if changed == 0 {
            return Ok(false);
        }
        let mut moved = row.payment.clone();
        moved.status = to;
        self.outbox
            .append(&tx, &[PaymentEvent::of(&moved)])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.outbox.wake();
        Ok(true)
    }

    pub(crate) async fn mark_notified(&self, id: PaymentId) -> StoreResult<()> {
        let client = self.pool.get().await.map_err(db)?;
        client
            .execute(
                "update payments.payments set order_notified = true where payment_id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Records a Stripe event id; `false` if it was seen before.
    pub(crate) async fn first_sighting(&self, event_id: &str) -> StoreResult<bool> {
        let client = self.pool.get().await.map_err(db)?;
        let inserted = client
            .execute(
                "insert into payments.stripe_events (event_id) values ($1) on conflict do nothing",
                &[&event_id],
            )
            .await
            .map_err(db)?;
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

    /// Payments the reconciler should look at: pending for longer than
    /// `after_secs`, or succeeded without the order having been told.
    pub(crate) async fn unsettled(&self, after_secs: f64) -> StoreResult<Vec<Row2>> {
        let client = self.pool.get().await.map_err(db)?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from payments.payments \
                     where (status = 'pending' and session_id is not null \
                            and created_at < now() - make_interval(secs => $1)) \
                        or (status = 'succeeded' and not order_notified) \
                     order by created_at limit 100"
                ),
                &[&after_secs],
            )
            .await
            .map_err(db)?;
        rows.iter().map(read).collect()
    }
}
