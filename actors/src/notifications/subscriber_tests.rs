//! The subscriber against a real PostgreSQL: a delivered batch's emails.

use super::*;
use crate::pool::Pool;
use crate::wire::Wire;
use mart_schema::db::testing::TestDb;
use mart_schema::order::{OrderEventKind, OrderLine, OrderStatus};
use mart_schema::{EventId, OrderId, ProductId};
use ractor::rpc::CallResult;

/// An order event of `user`'s, as the orders outbox delivers it.
fn order_event(kind: &str, user: UserId, seq: i64) -> EventEnvelope {
    let order = OrderEvent {
        kind: OrderEventKind::Placed,
        order_id: OrderId::new(),
        user_id: user,
        status: OrderStatus::AwaitingPayment,
        items: vec![OrderLine {
            product_id: ProductId::new(),
            name: "Mug".into(),
            unit_price: 1250,
            quantity: 2,
            line_total: 2500,
        }],
        total: 2500,
        currency: "eur".parse().expect("currency"),
        expires_at: mart_schema::now(),
        refund_due: false,
    };
    EventEnvelope {
        event_id: EventId::new(),
        source: Service::Orders,
        event_type: kind.into(),
        aggregate_id: order.order_id.0,
        aggregate_seq: 1,
        partition: 0,
        seq,
        occurred_at: mart_schema::now(),
        data: serde_json::to_value(&order).expect("event data"),
        traceparent: None,
    }
}

async fn deliver(subscriber: &ActorRef<SubscriberMsg>, batch: &[EventEnvelope]) -> i64 {
    let batch = batch.to_vec();
    let asked = subscriber
        .call(
            |reply| SubscriberMsg::Deliver(Wire::Value(batch), reply),
            Some(std::time::Duration::from_secs(10)),
        )
        .await
        .expect("delivered");
    match asked {
        CallResult::Success(Wire::Value(Ok(handled))) => handled,
        other => panic!("delivery not acknowledged: {other:?}"),
    }
}

/// (template, recipient) of every email written, by event.
async fn written(db: &TestDb) -> Vec<(uuid::Uuid, String, String)> {
    let client = db.pool.get().await.expect("client");
    let rows = client
        .query(
            "select event_id, template, recipient from notifications.notifications order by event_id, template",
            &[],
        )
        .await
        .expect("emails");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_delivered_batch_writes_each_email_once_even_when_delivered_again() {
    let db = TestDb::new().await;
    let store = NotificationStore::new(Pool::new(db.pool.clone(), Service::Notifications));
    let (ann, bob) = (UserId::new(), UserId::new());
    store
        .remember(ann, "ann", "ann@example.com")
        .await
        .expect("ann");
    store
        .remember(bob, "bob", "bob@example.com")
        .await
        .expect("bob");
    let (subscriber, handle) = Actor::spawn(None, NotificationSubscriber, store)
        .await
        .expect("subscriber");

    // Several users' orders in one batch, an event that sends nothing among them.
    let mut batch = vec![
        order_event("order.placed", ann, 1),
        order_event("order.placed", bob, 2),
        order_event("order.placed", ann, 3),
        order_event("order.paid", bob, 4),
    ];
    let mut quiet = order_event("order.placed", ann, 5);
    quiet.event_type = "order.unknown".into();
    batch.push(quiet);
    assert_eq!(deliver(&subscriber, &batch).await, 5, "every event handled");

    let mut expected: Vec<(uuid::Uuid, String, String)> = batch[..4]
        .iter()
        .map(|e| {
            let to = if e.data["user_id"] == serde_json::json!(ann) {
                "ann@example.com"
            } else {
                "bob@example.com"
            };
            let template = order_template(&e.event_type).expect("template");
            (e.event_id.0, template.to_owned(), to.to_owned())
        })
        .collect();
    expected.sort();
    assert_eq!(written(&db).await, expected);

    // At-least-once delivery: the same batch again writes nothing new.
    assert_eq!(deliver(&subscriber, &batch).await, 5);
    assert_eq!(written(&db).await, expected);

    subscriber.stop(None);
    handle.await.expect("stopped");
}
