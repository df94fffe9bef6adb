//! Reservation throughput of the inventory service next to what PostgreSQL
//! sustains for the plain conditional update, in the same run on the same
//! server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mart_actors::auth::TokenKeys;
use mart_actors::{Hosted, Inventory, ServiceDeps};
use mart_schema::inventory::{ReservationLine, ReserveRequest};
use mart_schema::user::Caller;
use mart_schema::{OrderId, ProductId, Service, db};

use super::{BenchOptions, Row};
use time::OffsetDateTime;

pub(super) async fn scenarios(url: &str, options: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let pool = db::pool(url, options.concurrency.max(4) + 8)?;
    db::migrate(&pool, Service::Inventory).await?;
    let hot = ProductId::new();
    let spread: Vec<ProductId> = (0..options.products).map(|_| ProductId::new()).collect();
    seed(&pool, hot, &spread).await?;

    let duration = Duration::from_secs(options.seconds);
    let mut rows = Vec::new();
    rows.push(
        plain(&pool, HOT_PLAIN, options.concurrency, duration, move |_| {
            hot
        })
        .await?,
    );
    let spread_pick = spread.clone();
    rows.push(
        plain(
            &pool,
            SPREAD_PLAIN,
            options.concurrency,
            duration,
            move |i| spread_pick[i % spread_pick.len()],
        )
        .await?,
    );

    let (hosted, inventory) = start_inventory(&pool).await?;
    rows.push(
        actors(
            &inventory,
            HOT_ACTORS,
            options.concurrency,
            duration,
            move |_| hot,
        )
        .await?,
    );
    let spread_pick = spread.clone();
    rows.push(
        actors(
            &inventory,
            SPREAD_ACTORS,
            options.concurrency,
            duration,
            move |i| spread_pick[i % spread_pick.len()],
        )
        .await?,
    );
    hosted.stop().await;
    pool.close();
    Ok(rows)
}

/// The same stock in the plain table and in inventory's: enough that every
/// attempt succeeds during the run.
async fn seed(
    pool: &deadpool_postgres::Pool,
    hot: ProductId,
    spread: &[ProductId],
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .batch_execute(
            "create table plain_stock (id uuid primary key, on_hand bigint not null, reserved bigint not null)",
        )
        .await?;
    let all: Vec<uuid::Uuid> = std::iter::once(hot)
        .chain(spread.iter().copied())
        .map(|p| p.0)
        .collect();
    // Stock that never runs out during the run: every attempt is a success.
    for table in [
        "plain_stock (id, on_hand, reserved)",
        "inventory.stock (product_id, on_hand, reserved)",
    ] {
        client
            .execute(
                &format!(
                    "insert into {table} select id, 1000000000, 0 from unnest($1::uuid[]) as id"
                ),
                &[&all],
            )
            .await?;
    }

    Ok(())
}

/// The inventory service alone, on this process, and a handle on it.
pub(super) async fn start_inventory(
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<(Hosted, Inventory)> {
    let keys = Arc::new(TokenKeys::new(
        b"bench only, never used for tokens",
        Duration::from_secs(60),
    ));
    let hosted = Hosted::start(
        "bench",
        ServiceDeps {
            pools: BTreeMap::from([(Service::Inventory, pool.clone())]),
            keys,
            settings: Default::default(),
            payments: None,
            mailer: None,
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let inventory = Inventory::default();
    // Let the group form before calling it.
    while !inventory.is_reachable() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((hosted, inventory))
}

/// What a stock scenario is compared with.
fn reference(scenario: &str) -> Option<&'static str> {
    match scenario {
        HOT_ACTORS => Some(HOT_PLAIN),
        SPREAD_ACTORS => Some(SPREAD_PLAIN),
        _ => None,
    }
}

const HOT_PLAIN: &str = "plain UPDATE, one hot product";
const SPREAD_PLAIN: &str = "plain UPDATE, spread over products";
const HOT_ACTORS: &str = "stock actor reserve, one hot product";
const SPREAD_ACTORS: &str = "stock actor reserve, spread over products";

/// `callers` loops, each issuing one autocommitted conditional update after another.
async fn plain(
    pool: &deadpool_postgres::Pool,
    scenario: &'static str,
    callers: usize,
    duration: Duration,
    pick: impl Fn(usize) -> ProductId + Send + Sync + Clone + 'static,
) -> anyhow::Result<Row> {
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (pool, ops, pick) = (pool.clone(), ops.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await?;
            let update = client
                .prepare("update plain_stock set reserved = reserved + $2 where id = $1 and on_hand - reserved >= $2")
                .await?;
            let mut i = caller * 7919;
            while started.elapsed() < duration {
                let product = pick(i);
                i += 1;
                if client.execute(&update, &[&product.0, &1i64]).await? == 1 {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Row::counted(
        scenario,
        ops.load(Ordering::Relaxed),
        started.elapsed(),
        reference(scenario),
    ))
}

/// `callers` loops, each reserving one unit through the inventory service.
async fn actors(
    inventory: &Inventory,
    scenario: &'static str,
    callers: usize,
    duration: Duration,
    pick: impl Fn(usize) -> ProductId + Send + Sync + Clone + 'static,
) -> anyhow::Result<Row> {
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let expires_at = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (inventory, ops, pick) = (inventory.clone(), ops.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = caller * 7919;
            while started.elapsed() < duration {
                let request = ReserveRequest {
                    order_id: OrderId::new(),
                    lines: vec![ReservationLine {
                        product_id: pick(i),
                        quantity: 1,
                    }],
                    expires_at,
                };
                i += 1;
                // A loaded machine may take longer than an edge request may.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let reserve = inventory.reserve(Caller::Service, request);
                mart_actors::call::within(deadline, reserve)
                    .await
                    .map_err(|e| anyhow::anyhow!("reserve failed: {e:?}"))?;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Row::counted(
        scenario,
        ops.load(Ordering::Relaxed),
        started.elapsed(),
        reference(scenario),
    ))
}
