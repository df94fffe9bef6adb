//! Orders: the raw SQL order transaction every web app over PostgreSQL runs
//! (the reference), and the check that what the edge said it placed is
//! what PostgreSQL holds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::Row;
use super::load::Seen;

/// The reference row's name.
pub(super) const RAW: &str = "raw SQL order transaction (update stock + insert order + outbox)";

/// `connections` clients, each running the order transaction of a plain web
/// app over PostgreSQL, one after another, in a scratch database at `url`.
pub(super) async fn raw_sql(
    url: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let pool = mart_schema::db::pool(url, connections + 2)?;
    pool.get()
        .await?
        .batch_execute(
            "create table stock (id int primary key, on_hand bigint not null, reserved bigint not null, \
               check (reserved <= on_hand)); \
             insert into stock select i, 1000000000, 0 from generate_series(1, 10000) as i; \
             create table orders (id bigserial primary key, product int not null, qty int not null, \
               created timestamptz not null default now()); \
             create table outbox (seq bigserial primary key, payload jsonb not null);",
        )
        .await
        .context("the reference tables")?;
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..connections {
        let pool = pool.clone();
        clients.push(tokio::spawn(async move {
            let mut db = pool.get().await?;
            let mut latencies = Vec::new();
            let mut i = client * 7919;
            while started.elapsed() < duration {
                let product = i32::try_from(i % 500).unwrap_or(0) + 1;
                i += 1;
                let sent = Instant::now();
                let tx = db.transaction().await?;
                tx.execute(
                    "update stock set reserved = reserved + 1 where id = $1 and on_hand - reserved >= 1",
                    &[&product],
                )
                .await?;
                tx.execute("insert into orders (product, qty) values ($1, 1)", &[&product])
                    .await?;
                tx.execute(
                    r#"insert into outbox (payload) values ('{"type":"order.placed","qty":1}')"#,
                    &[],
                )
                .await?;
                tx.commit().await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut seen = Seen::default();
    for client in clients {
        seen.latencies.extend(client.await??);
    }
    seen.elapsed = started.elapsed();
    pool.close();
    Row::measured(RAW, seen, None)
}

/// Every order the edge answered 201 for is in PostgreSQL with its
/// reservation, and the reserved units add up to what was ordered.
pub(super) async fn check(url: &str, seen: &Seen) -> anyhow::Result<()> {
    let mut placed = HashSet::new();
    for body in &seen.kept {
        let order: Value = serde_json::from_slice(body)?;
        placed.insert(order["id"].as_str().context("an order id")?.to_owned());
    }
    let refused: u64 = seen
        .statuses
        .iter()
        .filter(|(status, _)| **status != 201)
        .map(|(_, count)| count)
        .sum();
    anyhow::ensure!(
        refused == 0,
        "not every order was placed: {:?}",
        seen.statuses
    );
    let (config, tls) = mart_schema::db::tls::connector(url)?;
    let (client, connection) = config.connect(tls).await?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "select (select count(*) from orders.orders), \
               (select count(*) from inventory.reservation_lines where status = 'reserved'), \
               (select coalesce(sum(reserved), 0)::bigint from inventory.stock)",
            &[],
        )
        .await?;
    let (orders, lines, reserved): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let answered = i64::try_from(placed.len())?;
    anyhow::ensure!(
        (orders, lines, reserved) == (answered, answered, answered),
        "201s: {answered}; orders {orders}, reservation lines {lines}, units reserved {reserved}"
    );
    drop(client);
    let _ = connection.await;
    Ok(())
}
