//! Inventory against a real PostgreSQL: reservations never oversell, are all or
//! nothing, idempotent, expire (also while the service is down), and race
//! safely with adjustments.

use std::sync::Arc;
use std::time::Duration;

use mart_actors::auth::TokenKeys;
use mart_actors::inventory::Settle;
use mart_actors::{CallError, Hosted, Inventory, Products, ServiceDeps};
use mart_schema::db::testing::TestDb;
use mart_schema::inventory::{
    InventoryError, LineStatus, ReservationLine, ReserveRequest, StockChange, StockLevels,
};
use mart_schema::product::NewProduct;
use mart_schema::user::{Caller, Role};
use mart_schema::{OrderId, ProductId, Service, UserId};
use time::OffsetDateTime;

/// Scenarios run one at a time: process groups are global to the process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Shop {
    hosted: Option<Hosted>,
    db: TestDb,
    products: Products,
    inventory: Inventory,
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

impl Shop {
    async fn open() -> Shop {
        let db = TestDb::new().await;
        let mut shop = Shop {
            hosted: None,
            db,
            products: Products::default(),
            inventory: Inventory::default(),
        };
        shop.start().await;
        shop
    }

    async fn start(&mut self) {
        eventually("the previous service to stop", async || {
            ractor::pg::get_members(&Service::Inventory.group())
                .is_empty()
                .then_some(())
        })
        .await;
        let keys = Arc::new(TokenKeys::new(
            b"inventory test secret",
            Duration::from_secs(60),
        ));
        let pools = [Service::Products, Service::Inventory]
            .into_iter()
            .map(|s| (s, self.db.pool.clone()))
            .collect();
        self.hosted = Some(
            Hosted::start(
                "inventory-test",
                ServiceDeps {
                    pools,
                    keys,
                    settings: Default::default(),
                    payments: None,
                    mailer: None,
                },
            )
            .await
            .expect("start"),
        );
    }

    async fn stop(&mut self) {
        if let Some(hosted) = self.hosted.take() {
            hosted.stop().await;
        }
    }

    /// A product with `stock` units, once its stock record exists.
    async fn product(&self, stock: i64) -> ProductId {
        let admin = Caller::user(UserId::new(), Role::Admin);
        let product = self
            .products
            .create(
                admin,
                NewProduct {
                    name: "Widget".into(),
                    price: 500,
                    stock: Some(stock),
                    ..Default::default()
                },
            )
            .await
            .expect("create product");
        eventually("the stock record", async || {
            self.inventory
                .levels(Caller::Service, product.id)
                .await
                .ok()
        })
        .await;
        product.id
    }

    async fn levels(&self, product: ProductId) -> StockLevels {
        self.inventory
            .levels(Caller::Service, product)
            .await
            .expect("levels")
    }

    /// Levels as stored, to check the database agrees with the actor.
    async fn stored(&self, product: ProductId) -> (i64, i64) {
        let client = self.db.pool.get().await.expect("client");
        let row = client
            .query_one(
                "select on_hand, reserved from inventory.stock where product_id = $1",
                &[&product],
            )
            .await
            .expect("stock row");
        (row.get(0), row.get(1))
    }
}

fn request(order: OrderId, lines: &[(ProductId, i64)], ttl: Duration) -> ReserveRequest {
    ReserveRequest {
        order_id: order,
        lines: lines
            .iter()
            .map(|&(product_id, quantity)| ReservationLine {
                product_id,
                quantity,
            })
            .collect(),
        expires_at: OffsetDateTime::now_utc() + ttl,
    }
}

const LONG: Duration = Duration::from_secs(3600);

/// One unit of `product` for a new order, held for an hour.
async fn reserve_one(
    inventory: Inventory,
    product: ProductId,
) -> Result<mart_schema::inventory::Reservation, CallError<InventoryError>> {
    inventory
        .reserve(
            Caller::Service,
            request(OrderId::new(), &[(product, 1)], LONG),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_sells_exactly_the_stock_and_no_more() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let product = shop.product(50).await;

    let attempts = (0..1000).map(|_| reserve_one(shop.inventory.clone(), product));
    let outcomes = futures::future::join_all(attempts).await;

    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                Err(CallError::Rejected(
                    InventoryError::InsufficientStock { .. }
                ))
            )
        })
        .count();
    assert_eq!(
        (won, refused),
        (50, 950),
        "every caller gets an exact answer"
    );
    let levels = shop.levels(product).await;
    assert_eq!(
        (levels.on_hand, levels.reserved, levels.available),
        (50, 50, 0)
    );
    assert_eq!(shop.stored(product).await, (50, 50));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_reservation_takes_every_line_or_none_and_retries_are_idempotent() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let (mugs, plates) = (shop.product(5).await, shop.product(2).await);

    // Plates run short: the mugs it took are given back.
    let greedy = OrderId::new();
    let refused = shop
        .inventory
        .reserve(
            Caller::Service,
            request(greedy, &[(mugs, 3), (plates, 3)], LONG),
        )
        .await;
    assert!(matches!(
        refused,
        Err(CallError::Rejected(InventoryError::InsufficientStock { product_id, requested: 3, available: 2 }))
            if product_id == plates
    ));
    assert_eq!(shop.levels(mugs).await.available, 5);
    assert_eq!(shop.levels(plates).await.available, 2);

    // A fitting order, sent three times, reserves once.
    let order = OrderId::new();
    let fitting = request(order, &[(mugs, 2), (plates, 1), (mugs, 1)], LONG);
    for _ in 0..3 {
        let reservation = shop
            .inventory
            .reserve(Caller::Service, fitting.clone())
            .await
            .expect("reserve");
        assert_eq!(reservation.lines.len(), 2, "duplicate products merge");
    }
    assert_eq!(shop.levels(mugs).await.reserved, 3);
    assert_eq!(shop.levels(plates).await.reserved, 1);

    // Commit twice: one sale. Releasing a sold reservation is refused.
    let on_hand = (
        shop.levels(mugs).await.on_hand,
        shop.levels(plates).await.on_hand,
    );
    for _ in 0..2 {
        let committed = shop
            .inventory
            .settle(Caller::Service, order, Settle::Commit)
            .await
            .expect("commit");
        assert!(
            committed
                .lines
                .iter()
                .all(|l| l.status == LineStatus::Committed)
        );
    }
    assert_eq!(
        shop.levels(mugs).await,
        StockLevels {
            product_id: mugs,
            on_hand: 2,
            reserved: 0,
            available: 2
        }
    );
    assert!(matches!(
        shop.inventory
            .settle(Caller::Service, order, Settle::Release)
            .await,
        Err(CallError::Rejected(InventoryError::Conflict(_)))
    ));

    // Release twice: one release; the released order cannot be reserved again.
    let other = OrderId::new();
    shop.inventory
        .reserve(Caller::Service, request(other, &[(plates, 1)], LONG))
        .await
        .expect("reserve");
    assert!(
        matches!(
            shop.inventory
                .settle(Caller::Service, other, Settle::Return)
                .await,
            Err(CallError::Rejected(InventoryError::Conflict(_)))
        ),
        "only sold stock can be returned"
    );
    for _ in 0..2 {
        shop.inventory
            .settle(Caller::Service, other, Settle::Release)
            .await
            .expect("release");
    }
    assert_eq!(shop.levels(plates).await.available, 1);
    assert!(
        shop.inventory
            .reserve(Caller::Service, request(other, &[(plates, 1)], LONG))
            .await
            .is_err()
    );
    // Nor after a restart, when the new actor has not seen its line: the
    // write finds the stored line and the actor decides again.
    shop.stop().await;
    shop.start().await;
    assert!(
        shop.inventory
            .reserve(Caller::Service, request(other, &[(plates, 1)], LONG))
            .await
            .is_err()
    );
    assert_eq!(shop.levels(plates).await.available, 1);
    // The sale is undone (a paid order cancelled): twice, one return.
    for _ in 0..2 {
        let returned = shop
            .inventory
            .settle(Caller::Service, order, Settle::Return)
            .await
            .expect("return");
        assert!(
            returned
                .lines
                .iter()
                .all(|l| l.status == LineStatus::Returned)
        );
    }
    assert_eq!(shop.levels(mugs).await.on_hand, on_hand.0);
    assert_eq!(shop.levels(plates).await.on_hand, on_hand.1);
    assert_eq!(shop.stored(mugs).await, (on_hand.0, 0));

    assert!(matches!(
        shop.inventory
            .settle(Caller::Service, OrderId::new(), Settle::Commit)
            .await,
        Err(CallError::Rejected(InventoryError::NoReservation(_)))
    ));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_on_time_and_also_while_the_service_is_down() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let product = shop.product(10).await;

    // The actor's own timer.
    let soon = OrderId::new();
    shop.inventory
        .reserve(
            Caller::Service,
            request(soon, &[(product, 4)], Duration::from_millis(800)),
        )
        .await
        .expect("reserve");
    assert_eq!(shop.levels(product).await.available, 6);
    eventually("the timer to release it", async || {
        (shop.levels(product).await.available == 10).then_some(())
    })
    .await;

    // Due while nobody is running: the start-up sweep releases it.
    let during_downtime = OrderId::new();
    shop.inventory
        .reserve(
            Caller::Service,
            request(during_downtime, &[(product, 3)], Duration::from_secs(2)),
        )
        .await
        .expect("reserve");
    shop.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        shop.stored(product).await,
        (10, 3),
        "still reserved in the database while down"
    );
    shop.start().await;
    eventually("the sweep to release it", async || {
        (shop.stored(product).await == (10, 0)).then_some(())
    })
    .await;
    let reservation = shop
        .inventory
        .reservation(Caller::Service, during_downtime)
        .await
        .expect("reservation");
    assert_eq!(reservation.lines[0].status, LineStatus::Released);
    assert!(matches!(
        shop.inventory
            .settle(Caller::Service, during_downtime, Settle::Commit)
            .await,
        Err(CallError::Rejected(InventoryError::Conflict(_)))
    ));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_racing_reservations_keep_the_books_exact() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let product = shop.product(100).await;

    let reservations = (0..150).map(|_| {
        let reserve = reserve_one(shop.inventory.clone(), product);
        async move { reserve.await.is_ok() }
    });
    let removals = (0..40).map(|_| {
        let inventory = shop.inventory.clone();
        async move {
            let change = StockChange::Adjust {
                delta: -1,
                reason: "damaged".into(),
            };
            inventory
                .change(Caller::Service, product, change)
                .await
                .is_ok()
        }
    });
    let (reserved, removed) = tokio::join!(
        futures::future::join_all(reservations),
        futures::future::join_all(removals)
    );
    let reserved = reserved.iter().filter(|ok| **ok).count() as i64;
    let removed = removed.iter().filter(|ok| **ok).count() as i64;

    let levels = shop.levels(product).await;
    assert_eq!(levels.reserved, reserved);
    assert_eq!(levels.on_hand, 100 - removed);
    assert!(levels.reserved <= levels.on_hand);
    assert_eq!(
        reserved + removed,
        100,
        "every unit went to exactly one of them"
    );
    assert_eq!(
        shop.stored(product).await,
        (levels.on_hand, levels.reserved)
    );

    // Below what is reserved: refused, nothing changes.
    let too_low = shop
        .inventory
        .change(
            Caller::Service,
            product,
            StockChange::Set {
                on_hand: reserved - 1,
            },
        )
        .await;
    assert!(matches!(
        too_low,
        Err(CallError::Rejected(InventoryError::Conflict(_)))
    ));
    assert_eq!(shop.levels(product).await, levels);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_events_tell_the_whole_story_in_order() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let product = shop.product(6).await;
    let order = OrderId::new();
    shop.inventory
        .reserve(Caller::Service, request(order, &[(product, 2)], LONG))
        .await
        .expect("reserve");
    shop.inventory
        .settle(Caller::Service, order, Settle::Commit)
        .await
        .expect("commit");
    shop.inventory
        .change(
            Caller::Service,
            product,
            StockChange::Adjust {
                delta: 5,
                reason: "restock".into(),
            },
        )
        .await
        .expect("adjust");
    let client = shop.db.pool.get().await.expect("client");
    let rows = client
        .query(
            "select event_type, aggregate_seq from inventory.outbox where aggregate_id = $1 order by seq",
            &[&product.0],
        )
        .await
        .expect("events");
    let events: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        events,
        vec![
            ("inventory.reserved".to_owned(), 1),
            ("inventory.low_stock".to_owned(), 2),
            ("inventory.committed".to_owned(), 3),
            ("inventory.adjusted".to_owned(), 4),
        ]
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_postgresql_refuses_is_a_no_and_harms_no_neighbour() {
    let _serial = SERIAL.lock().await;
    let mut shop = Shop::open().await;
    let (poisoned, neighbour) = (shop.product(10).await, shop.product(10).await);

    // PostgreSQL cannot store U+0000 (its event's JSON carries the reason).
    // Sent with reservations of both products, which share its transaction.
    let nul = shop.inventory.change(
        Caller::Service,
        poisoned,
        StockChange::Adjust {
            delta: 1,
            reason: "bad\0reason".into(),
        },
    );
    // Many at once, so that some share the bad change's flush of its product.
    let mut products = vec![poisoned; 8];
    products.extend([neighbour, neighbour]);
    let reservations = products
        .into_iter()
        .map(|product| reserve_one(shop.inventory.clone(), product));
    let (nul, reserved) = tokio::join!(nul, futures::future::join_all(reservations));
    assert!(
        matches!(nul, Err(CallError::Rejected(InventoryError::Invalid(_)))),
        "{nul:?}"
    );
    for outcome in reserved {
        outcome.expect("a neighbour's reservation");
    }

    // The actor lives on, and memory and database agree.
    let fixed = StockChange::Adjust {
        delta: 1,
        reason: "found one".into(),
    };
    let levels = shop
        .inventory
        .change(Caller::Service, poisoned, fixed)
        .await
        .expect("a good change after the bad one");
    assert_eq!((levels.on_hand, levels.reserved), (11, 8));
    assert_eq!(shop.stored(poisoned).await, (11, 8));
    assert_eq!(shop.stored(neighbour).await, (10, 2));
    shop.stop().await;
}
