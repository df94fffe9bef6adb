//! Outbox delivery against a real PostgreSQL: in order, nothing lost while a
//! subscriber is down, redeliveries deduplicated by event id.
//!
//! One scenario per test binary function, run one at a time: process groups are
//! global to the process, and each scenario hosts its own user service.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mart_actors::auth::TokenKeys;
use mart_actors::outbox::{SubscriberMsg, subscribe};
use mart_actors::wire::Wire;
use mart_actors::{Hosted, ServiceDeps, Users};
use mart_schema::db::testing::TestDb;
use mart_schema::user::{Caller, Registration, Role, UserPatch};
use mart_schema::{EventEnvelope, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// What a test subscriber has handled, shared across its restarts (its "database").
#[derive(Default)]
struct Seen {
    ids: HashSet<mart_schema::EventId>,
    events: Vec<EventEnvelope>,
    deliveries: usize,
    /// Refuse this many deliveries first, as a subscriber with a broken dependency would.
    refuse: usize,
    /// Hold the first delivery until this is notified, as a subscriber stuck
    /// on a slow mail server would.
    hold: Option<Arc<tokio::sync::Notify>>,
}

struct TestSubscriber;

impl Actor for TestSubscriber {
    type Msg = SubscriberMsg;
    type State = Arc<Mutex<Seen>>;
    type Arguments = Arc<Mutex<Seen>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        seen: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        subscribe(&myself, &[Service::Users]);
        Ok(seen)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        seen: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SubscriberMsg::Deliver(Wire::Value(batch), reply) = msg else {
            return Ok(());
        };
        let hold = {
            let mut seen = seen.lock().expect("lock");
            seen.deliveries += 1;
            seen.hold.take()
        };
        if let Some(hold) = hold {
            hold.notified().await;
        }
        let mut seen = seen.lock().expect("lock");
        if seen.refuse > 0 {
            seen.refuse -= 1;
            let _ = reply.send(Wire::Value(Err("not today".into())));
            return Ok(());
        }
        let handled = batch.len() as i64;
        for event in batch {
            if seen.ids.insert(event.event_id) {
                seen.events.push(event);
            }
        }
        let _ = reply.send(Wire::Value(Ok(handled)));
        Ok(())
    }
}

/// Scenarios run one at a time: process groups are global to the process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_users(db: &TestDb) -> (Hosted, Users) {
    eventually("the previous scenario's service to stop", || {
        ractor::pg::get_members(&Service::Users.group()).is_empty()
    })
    .await;
    let keys = Arc::new(TokenKeys::new(
        b"test secret for outbox",
        Duration::from_secs(60),
    ));
    let hosted = Hosted::start(
        "outbox-test",
        ServiceDeps {
            pools: [(Service::Users, db.pool.clone())].into(),
            keys,
            settings: Default::default(),
            payments: None,
            mailer: None,
        },
    )
    .await
    .expect("start users");
    (hosted, Users::default())
}

async fn register(users: &Users, name: &str) -> mart_schema::user::User {
    users
        .register(Registration {
            username: name.into(),
            email: format!("{name}@example.test"),
            password: "tangerine-57-orbit".into(),
        })
        .await
        .expect("register")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Events acknowledged by `name`, over all partitions.
async fn cursor(db: &TestDb, name: &str) -> i64 {
    let client = db.pool.get().await.expect("client");
    client
        .query_one(
            "select coalesce(sum(delivered_seq), 0)::bigint from users.outbox_cursors where subscriber = $1",
            &[&name],
        )
        .await
        .expect("cursor")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_subscriber_in_order_even_across_its_downtime() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (hosted, users) = start_users(&db).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let name = "test.subscriber.users";

    // Events written before the subscriber ever existed are not lost either.
    let early = register(&users, "early").await;
    let (sub, _) = Actor::spawn(Some(name.into()), TestSubscriber, seen.clone())
        .await
        .expect("spawn subscriber");
    register(&users, "second").await;
    eventually("two registrations delivered", || {
        seen.lock().expect("lock").events.len() == 2
    })
    .await;

    // Down for a while: events keep accumulating in the outbox, the cursor waits.
    sub.stop_and_wait(None, None).await.expect("stop");
    let admin = Caller::user(early.id, Role::Admin);
    users
        .update(
            admin,
            early.id,
            UserPatch {
                email: Some("early2@example.test".into()),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    register(&users, "third").await;
    users.delete(admin, early.id).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cursor(&db, name).await,
        2,
        "nothing is acknowledged while the subscriber is down"
    );

    // Back, and briefly refusing: everything arrives after retries, once, in order.
    seen.lock().expect("lock").refuse = 2;
    let (sub, _) = Actor::spawn(Some(name.into()), TestSubscriber, seen.clone())
        .await
        .expect("respawn subscriber");
    eventually("all five events delivered", || {
        seen.lock().expect("lock").events.len() == 5
    })
    .await;
    {
        let seen = seen.lock().expect("lock");
        // Within each partition: gap-free from 1, in order.
        let mut partitions: std::collections::BTreeMap<i16, Vec<i64>> = Default::default();
        for event in &seen.events {
            partitions
                .entry(event.partition)
                .or_default()
                .push(event.seq);
        }
        for seqs in partitions.values() {
            assert_eq!(
                *seqs,
                (1..=seqs.len() as i64).collect::<Vec<_>>(),
                "partition order, gap-free"
            );
        }
        let early_types: Vec<&str> = seen
            .events
            .iter()
            .filter(|e| e.aggregate_id == early.id.0)
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(
            early_types,
            vec!["user.registered", "user.updated", "user.deleted"]
        );
        let early_seqs: Vec<i64> = seen
            .events
            .iter()
            .filter(|e| e.aggregate_id == early.id.0)
            .map(|e| e.aggregate_seq)
            .collect();
        assert_eq!(
            early_seqs,
            vec![1, 2, 3],
            "per-aggregate order, from 1, gap-free"
        );
        assert!(seen.deliveries >= 4, "the refusals were retried");
    }
    for _ in 0..100 {
        if cursor(&db, name).await == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cursor(&db, name).await,
        5,
        "the cursor follows the acknowledgements"
    );

    sub.stop_and_wait(None, None).await.expect("stop");
    hosted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_hold_back_another() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (hosted, users) = start_users(&db).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let stuck = Arc::new(Mutex::new(Seen {
        hold: Some(gate.clone()),
        ..Seen::default()
    }));
    let quick = Arc::new(Mutex::new(Seen::default()));
    let (stuck_sub, _) = Actor::spawn(
        Some("test.stuck.users".into()),
        TestSubscriber,
        stuck.clone(),
    )
    .await
    .expect("spawn stuck subscriber");
    let (quick_sub, _) = Actor::spawn(
        Some("test.quick.users".into()),
        TestSubscriber,
        quick.clone(),
    )
    .await
    .expect("spawn quick subscriber");

    register(&users, "first").await;
    eventually("the stuck subscriber holds the first event", || {
        stuck.lock().expect("lock").deliveries == 1
    })
    .await;
    register(&users, "second").await;
    register(&users, "third").await;
    // Well before the stuck delivery's acknowledgement times out (10 s),
    // which is when a shared delivery pass would move on.
    for _ in 0..100 {
        if quick.lock().expect("lock").events.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        quick.lock().expect("lock").events.len(),
        3,
        "the quick subscriber got every event while the other was stuck"
    );
    assert!(stuck.lock().expect("lock").events.is_empty());

    // A node leaving now does not wait on the stuck one (its unacknowledged
    // events stay in the outbox): the flush answers after its 3 s wait,
    // not at its caller's 5 s limit (nor the stuck delivery's 10 s).
    let flushing = std::time::Instant::now();
    mart_actors::outbox::flush(Service::Users).await;
    assert!(
        flushing.elapsed() < Duration::from_millis(4500),
        "flush took {:?}",
        flushing.elapsed()
    );

    gate.notify_one();
    eventually("the stuck subscriber catches up", || {
        stuck.lock().expect("lock").events.len() == 3
    })
    .await;
    stuck_sub.stop_and_wait(None, None).await.expect("stop");
    quick_sub.stop_and_wait(None, None).await.expect("stop");
    hosted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_gap_free_sequence_numbers_per_partition() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    let (hosted, users) = start_users(&db).await;
    let registrations = (0..24).map(|i| {
        let users = users.clone();
        async move { register(&users, &format!("racer{i}")).await }
    });
    futures::future::join_all(registrations).await;
    let client = db.pool.get().await.expect("client");
    let rows = client
        .query(
            "select partition, seq from users.outbox order by partition, seq",
            &[],
        )
        .await
        .expect("outbox");
    assert_eq!(rows.len(), 24);
    let mut partitions: std::collections::BTreeMap<i16, Vec<i64>> = Default::default();
    for row in &rows {
        partitions.entry(row.get(0)).or_default().push(row.get(1));
    }
    for seqs in partitions.values() {
        assert_eq!(
            *seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gap-free per partition"
        );
    }
    hosted.stop().await;
}
