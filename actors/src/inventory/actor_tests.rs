//! The stock actor against a real PostgreSQL: fencing and stale lines.

use super::*;
use crate::batch::{Batched, Batcher};
use crate::pool::Pool;
use mart_schema::db::testing::TestDb;
use ractor::rpc::CallResult;

/// The node's stock writer and loader are registered by name: one test at
/// a time.
static ONE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node's stock writer and loader, as its inventory service runs them.
struct Batchers {
    writer: ActorRef<<Batcher<StockWriter> as Actor>::Msg>,
    loader: ActorRef<<Batcher<StockLoader> as Actor>::Msg>,
}

impl Batchers {
    async fn start(store: &StockStore) -> Self {
        let name = Some(<StockWriter as Batched>::NAME.to_owned());
        let (writer, _) = Actor::spawn(name, Batcher::new(), StockWriter(store.clone()))
            .await
            .expect("writer");
        let name = Some(<StockLoader as Batched>::NAME.to_owned());
        let (loader, _) = Actor::spawn(name, Batcher::new(), StockLoader(store.clone()))
            .await
            .expect("loader");
        Self { writer, loader }
    }

    async fn stop(self) {
        let _ = self.loader.stop_and_wait(None, None).await;
        let _ = self.writer.stop_and_wait(None, None).await;
    }
}

/// A fresh database with one product of `on_hand` units, its stock store,
/// and the node's stock writer and loader (registered by name: hold
/// [`ONE_WRITER`]).
async fn stocked(on_hand: i64) -> (TestDb, ProductId, StockStore, Batchers) {
    let db = TestDb::new().await;
    let product_id = ProductId::new();
    db.pool
        .get()
        .await
        .expect("client")
        .execute(
            "insert into inventory.stock (product_id, on_hand) values ($1, $2)",
            &[&product_id, &on_hand],
        )
        .await
        .expect("stock");
    let store = StockStore::new(Pool::new(db.pool.clone(), mart_schema::Service::Inventory));
    let batchers = Batchers::start(&store).await;
    (db, product_id, store, batchers)
}

/// `(on_hand, reserved)` as stored.
async fn stored_levels(db: &TestDb, product_id: ProductId) -> (i64, i64) {
    let row = db
        .pool
        .get()
        .await
        .expect("client")
        .query_one(
            "select on_hand, reserved from inventory.stock where product_id = $1",
            &[&product_id],
        )
        .await
        .expect("levels");
    (row.get(0), row.get(1))
}

async fn reserve(
    actor: &ActorRef<StockMsg>,
    quantity: i64,
) -> Result<OpDone, Owned<InventoryError>> {
    reserve_for(actor, OrderId::new(), quantity).await
}

async fn reserve_for(
    actor: &ActorRef<StockMsg>,
    order_id: OrderId,
    quantity: i64,
) -> Result<OpDone, Owned<InventoryError>> {
    let op = StockOp::Reserve {
        order_id,
        quantity,
        expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    match actor
        .call(
            |reply| StockMsg::Op(op, Some(reply), None),
            Some(Duration::from_secs(10)),
        )
        .await
    {
        Ok(CallResult::Success(answer)) => answer,
        other => panic!("no answer: {other:?}"),
    }
}

/// Two actors for one product, as two nodes whose views of the membership
/// briefly differ would run. Whichever writes first wins; the other's
/// write changes nothing (its memory is stale), it answers "moved" and
/// stops, and the product's levels stay exact.
#[tokio::test]
async fn a_stale_owner_is_fenced_out_and_nothing_is_oversold() {
    let _one = ONE_WRITER.lock().await;
    let (db, product_id, store, batchers) = stocked(5).await;
    let args = StockArgs {
        product_id,
        store,
        parked: None,
    };
    let (stale, stale_handle) = Actor::spawn(None, StockActor, args.clone())
        .await
        .expect("first owner");
    assert!(reserve(&stale, 2).await.is_ok());

    // A new owner loads (3 available) and sells one.
    let (owner, _) = Actor::spawn(None, StockActor, args)
        .await
        .expect("new owner");
    assert!(reserve(&owner, 1).await.is_ok());
    // The stale actor still believes 3 are available; its write is refused.
    assert!(matches!(reserve(&stale, 3).await, Err(Owned::Moved(_))));
    stale_handle.await.expect("the stale actor stops");
    assert!(matches!(
        reserve(&owner, 3).await,
        Err(Owned::Rejected(InventoryError::InsufficientStock {
            available: 2,
            ..
        }))
    ));
    assert!(reserve(&owner, 2).await.is_ok());
    let row = db
        .pool
        .get()
        .await
        .expect("client")
        .query_one(
            "select on_hand, reserved, (select count(*) from inventory.reservation_lines \
               where product_id = $1) from inventory.stock where product_id = $1",
            &[&product_id],
        )
        .await
        .expect("levels");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (5, 5, 3)
    );
    owner.stop(None);
    batchers.stop().await;
}

/// A reservation asked again after its line was settled and the actor
/// restarted (so memory does not know the line): the line the database
/// holds is the answer, and nothing is reserved twice.
#[tokio::test]
async fn a_reservation_asked_again_after_a_restart_is_not_taken_twice() {
    let _one = ONE_WRITER.lock().await;
    let (db, product_id, store, batchers) = stocked(5).await;
    let client = db.pool.get().await.expect("client");
    let args = StockArgs {
        product_id,
        store,
        parked: None,
    };
    let order = OrderId::new();
    let (first, first_handle) = Actor::spawn(None, StockActor, args.clone())
        .await
        .expect("actor");
    assert!(reserve_for(&first, order, 2).await.is_ok());
    first.stop(None);
    first_handle.await.expect("stops");
    // Sold meanwhile: a fresh actor does not load committed lines.
    client
        .batch_execute(&format!(
            "update inventory.reservation_lines set status = 'committed' where order_id = '{order}'; \
             update inventory.stock set on_hand = 3, reserved = 0, version = version + 1 \
               where product_id = '{product_id}'"
        ))
        .await
        .expect("commit");
    let (second, _) = Actor::spawn(None, StockActor, args).await.expect("actor");
    match reserve_for(&second, order, 2).await {
        Ok(OpDone::Line(line)) => assert_eq!(line.status, LineStatus::Committed),
        other => panic!("the stored line, not {other:?}"),
    }
    assert_eq!(stored_levels(&db, product_id).await, (3, 0));
    second.stop(None);
    batchers.stop().await;
}

/// A change whose value PostgreSQL refuses, flushed with a good one of the
/// same product (both queued before the flush): only the bad one is refused,
/// the good one is written, and the actor lives on.
#[tokio::test]
async fn a_refused_value_fails_only_its_own_change_in_a_shared_flush() {
    let _one = ONE_WRITER.lock().await;
    let (db, product_id, store, batchers) = stocked(5).await;
    let (actor, _) = Actor::spawn(
        None,
        StockActor,
        StockArgs {
            product_id,
            store,
            parked: None,
        },
    )
    .await
    .expect("actor");

    let (bad, bad_answer) = ractor::concurrency::oneshot();
    let (good, good_answer) = ractor::concurrency::oneshot();
    let nul = mart_schema::inventory::StockChange::Adjust {
        delta: 1,
        reason: "bad\0reason".into(),
    };
    let reserve = StockOp::Reserve {
        order_id: OrderId::new(),
        quantity: 1,
        expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    // Both in the mailbox before the first Flush: one batch.
    actor
        .cast(StockMsg::Op(StockOp::Change(nul), Some(bad.into()), None))
        .expect("cast");
    actor
        .cast(StockMsg::Op(reserve, Some(good.into()), None))
        .expect("cast");
    assert!(matches!(
        bad_answer.await.expect("an answer"),
        Err(Owned::Rejected(InventoryError::Invalid(_)))
    ));
    assert!(matches!(
        good_answer.await.expect("an answer"),
        Ok(OpDone::Line(_))
    ));
    assert!(
        reserve_for(&actor, OrderId::new(), 1).await.is_ok(),
        "it lives on"
    );
    assert_eq!(stored_levels(&db, product_id).await, (5, 2));
    actor.stop(None);
    batchers.stop().await;
}

/// Catches what a stock actor it supervises leaves when it stops.
struct Catch(tokio::sync::mpsc::UnboundedSender<Option<Parked>>);

impl Actor for Catch {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: ractor::SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let ractor::SupervisionEvent::ActorTerminated(_, left, _) = event {
            let parked = left
                .and_then(|mut left| left.take::<StockState>().ok())
                .and_then(Parked::of);
            let _ = self.0.send(parked);
        }
        Ok(())
    }
}

/// The router's idle ticks are not activity: an actor that only hears them
/// stops once idle, leaving what it knew, and an actor started from that
/// answers from it without loading (the row changed behind its back here).
#[tokio::test]
async fn an_idle_actor_stops_and_what_it_knew_starts_the_next_one() {
    let _one = ONE_WRITER.lock().await;
    let (db, product_id, store, batchers) = stocked(5).await;
    let (left_tx, mut left) = tokio::sync::mpsc::unbounded_channel();
    let (catch, _) = Actor::spawn(None, Catch(left_tx), ()).await.expect("catch");
    let args = StockArgs {
        product_id,
        store: store.clone(),
        parked: None,
    };
    let (actor, _) = Actor::spawn_linked(None, StockActor, args, catch.get_cell())
        .await
        .expect("actor");
    assert!(matches!(reserve(&actor, 2).await, Ok(OpDone::Line(_))));
    // Ticks more often than the idle time: only the ticks go on.
    for _ in 0..6 {
        let _ = actor.cast(StockMsg::Tick);
        tokio::time::sleep(IDLE / 3).await;
    }
    let parked = tokio::time::timeout(Duration::from_secs(5), left.recv())
        .await
        .expect("the idle actor stopped")
        .flatten()
        .expect("it left what it knew");

    db.pool
        .get()
        .await
        .expect("client")
        .execute(
            "update inventory.stock set on_hand = 99 where product_id = $1",
            &[&product_id],
        )
        .await
        .expect("update");
    let args = StockArgs {
        product_id,
        store,
        parked: Some(parked),
    };
    let (again, _) = Actor::spawn(None, StockActor, args).await.expect("again");
    let levels = match again
        .call(StockMsg::Levels, Some(Duration::from_secs(5)))
        .await
    {
        Ok(CallResult::Success(Ok(levels))) => levels,
        other => panic!("no levels: {other:?}"),
    };
    assert_eq!((levels.on_hand, levels.reserved), (5, 2), "from memory");
    again.stop(None);
    catch.stop(None);
    batchers.stop().await;
}

/// Actors starting at once load through the node's loader, in one query:
/// each gets its own product's levels and open lines (settled lines are not
/// open), and a product without a record is unknown.
#[tokio::test]
async fn actors_starting_together_each_load_their_own_product() {
    let _one = ONE_WRITER.lock().await;
    let (db, open_one, store, batchers) = stocked(5).await;
    let (plain, unknown) = (ProductId::new(), ProductId::new());
    let held = OrderId::new();
    db.pool
        .get()
        .await
        .expect("client")
        .batch_execute(&format!(
            "insert into inventory.stock (product_id, on_hand) values ('{plain}', 7); \
             update inventory.stock set reserved = 3 where product_id = '{open_one}'; \
             insert into inventory.reservation_lines (order_id, product_id, quantity, status, expires_at) \
               values ('{held}', '{open_one}', 2, 'reserved', now() + interval '1 hour'), \
                      ('{}', '{open_one}', 1, 'reserved', now() + interval '1 hour'), \
                      ('{}', '{open_one}', 4, 'committed', now())",
            OrderId::new(),
            OrderId::new()
        ))
        .await
        .expect("stock");
    let spawn = |product_id| {
        let args = StockArgs {
            product_id,
            store: store.clone(),
            parked: None,
        };
        Actor::spawn(None, StockActor, args)
    };
    let (a, b, c) = tokio::join!(spawn(open_one), spawn(plain), spawn(unknown));
    let levels = |actor: ActorRef<StockMsg>| async move {
        match actor
            .call(StockMsg::Levels, Some(Duration::from_secs(5)))
            .await
        {
            Ok(CallResult::Success(answer)) => answer,
            other => panic!("no answer: {other:?}"),
        }
    };
    let (a, _) = a.expect("actor");
    let (b, _) = b.expect("actor");
    let (c, _) = c.expect("actor");
    let mine = levels(a.clone()).await.expect("levels");
    assert_eq!((mine.on_hand, mine.reserved, mine.available), (5, 3, 2));
    let theirs = levels(b).await.expect("levels");
    assert_eq!((theirs.on_hand, theirs.reserved), (7, 0));
    assert!(matches!(
        levels(c).await,
        Err(Owned::Rejected(InventoryError::UnknownProduct(p))) if p == unknown
    ));
    // Its open lines were loaded too: releasing one frees its 2 units.
    let release = StockOp::Release {
        order_id: held,
        expired: false,
    };
    let released = a
        .call(
            |reply| StockMsg::Op(release, Some(reply), None),
            Some(Duration::from_secs(10)),
        )
        .await;
    assert!(matches!(released, Ok(CallResult::Success(Ok(_)))));
    assert_eq!(stored_levels(&db, open_one).await, (5, 1));
    a.stop(None);
    batchers.stop().await;
}

/// A flash sale leaves one product with most reservation lines; loading
/// other products must still look up only their own. Planned from the
/// table's statistics, the load once hash-joined every line there is on
/// each batch (a plan's shape, not a timing: the bench measures the cost).
#[tokio::test]
async fn loading_cold_products_reads_only_their_lines_beside_a_hot_one() {
    let db = TestDb::new().await;
    let hot = ProductId::new();
    // A batch of cold products, as the loader sends them; one holds a line.
    let colds: Vec<ProductId> = (0..12).map(|_| ProductId::new()).collect();
    let cold = colds[0];
    let held = OrderId::new();
    let client = db.pool.get().await.expect("client");
    let cold_ids: Vec<uuid::Uuid> = colds.iter().map(|p| p.0).collect();
    client
        .execute(
            "insert into inventory.stock (product_id, on_hand) select p, 5 from unnest($1::uuid[]) as p",
            &[&cold_ids],
        )
        .await
        .expect("cold stock");
    client
        .batch_execute(&format!(
            "update inventory.stock set reserved = 2 where product_id = '{cold}'; \
             insert into inventory.stock (product_id, on_hand, reserved) values ('{hot}', 100000, 20000); \
             insert into inventory.reservation_lines (order_id, product_id, quantity, status, expires_at) \
               select gen_random_uuid(), '{hot}', 1, 'reserved', now() + interval '1 hour' \
               from generate_series(1, 20000); \
             insert into inventory.reservation_lines (order_id, product_id, quantity, status, expires_at) \
               values ('{held}', '{cold}', 2, 'reserved', now() + interval '1 hour'); \
             analyze inventory.stock, inventory.reservation_lines"
        ))
        .await
        .expect("seed");
    let plan: Vec<String> = client
        .query_typed(
            &format!("explain {}", super::super::store::LOAD_MANY),
            &[(&cold_ids, postgres_types::Type::UUID_ARRAY)],
        )
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !plan
            .iter()
            .any(|l| l.contains("Seq Scan on reservation_lines")),
        "the load scans every line: {plan:#?}"
    );

    let store = StockStore::new(Pool::new(db.pool.clone(), mart_schema::Service::Inventory));
    let loaded = store.load_many(&[cold, colds[1], hot]).await.expect("load");
    let Some((levels, lines)) = &loaded[0] else {
        panic!("no stock for the cold product")
    };
    assert_eq!((levels.on_hand, levels.reserved), (5, 2));
    assert_eq!(lines.keys().collect::<Vec<_>>(), vec![&held]);
    assert_eq!(lines[&held].quantity, 2);
    assert!(matches!(&loaded[1], Some((_, lines)) if lines.is_empty()));
    let Some((_, hot_lines)) = &loaded[2] else {
        panic!("no stock for the hot product")
    };
    assert_eq!(hot_lines.len(), 20000);
}
