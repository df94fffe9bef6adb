//! The Kafka mirror's lag: from an order's 201 to its `order.placed` record
//! on `mart.orders.v1`, read as an outside consumer would, with orders placed
//! at a steady rate through a node whose bridge writes to librdkafka's mock
//! cluster (in this process).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::edge::{Node, Shop};
use super::load::Seen;
use super::{BenchOptions, Row};

/// How long the mirror may take after the last order, in seconds.
const STRAGGLERS: u64 = 5;
/// How long the bridge may take to deliver its first record.
const WARM_UP: Duration = Duration::from_secs(30);

pub(super) async fn mirror_lag(database_url: &str, options: &BenchOptions) -> anyhow::Result<Row> {
    let bootstrap = mart_bridge::dev_broker().map_err(anyhow::Error::msg)?;
    let node = Node::start(database_url, &["--kafka-brokers", &bootstrap]).await?;
    let outcome = measure(&node, &bootstrap, options).await;
    node.stop().await;
    outcome
}

async fn measure(node: &Node, bootstrap: &str, options: &BenchOptions) -> anyhow::Result<Row> {
    let base = format!("http://{}", node.addr);
    let shop = Shop::open(&base, 100).await?;
    let topic = mart_bridge::topic("mart", mart_schema::Service::Orders);
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals =
        mart_bridge::watch(bootstrap, &[topic], stop.clone()).map_err(anyhow::Error::msg)?;
    // Steady state only: the bridge is up, the topic exists and the consumer
    // has joined its group once the warm-up order is seen.
    let http = reqwest::Client::new();
    let warm_up = place(&http, &base, &shop.clone_ids(), 0).await?;
    let warming = Instant::now();
    while !arrivals.try_iter().any(|a| a.key == warm_up) {
        anyhow::ensure!(
            warming.elapsed() < WARM_UP,
            "the warm-up order did not reach Kafka within {WARM_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rate = options.kafka_orders_per_second.max(1);
    let total = rate * options.seconds;
    let started = Instant::now();
    let mut placing = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (http, base, shop) = (http.clone(), base.clone(), shop.clone_ids());
        placing.push(tokio::spawn(async move {
            let id = place(&http, &base, &shop, i as usize + 1).await?;
            anyhow::Ok((id, Instant::now()))
        }));
    }
    let mut placed = HashMap::new();
    for order in placing {
        let (id, at) = order.await??;
        placed.insert(id, at);
    }
    let elapsed = started.elapsed();
    // Stragglers: give the mirror a few seconds more.
    tokio::time::sleep(Duration::from_secs(STRAGGLERS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut first: HashMap<String, Instant> = HashMap::new();
    for arrival in arrivals
        .try_iter()
        .filter(|a| a.kind == "mart.order.placed")
    {
        first.entry(arrival.key).or_insert(arrival.at);
    }
    let mut seen = Seen::default();
    let mut missing = 0;
    for (id, at) in &placed {
        match first.get(id) {
            Some(arrived) => seen.latencies.push(arrived.saturating_duration_since(*at)),
            None => missing += 1,
        }
    }
    anyhow::ensure!(
        missing == 0,
        "{missing} of {} orders never reached Kafka",
        placed.len()
    );
    seen.elapsed = elapsed;
    // Each order mirrors order.placed and inventory.reserved (and, once its
    // mail is out, notification.sent) through the bridge.
    let name = format!(
        "Kafka mirror lag, 201 to order.placed on mart.orders.v1 ({rate} orders/s, over {} events/s)",
        2 * rate
    );
    Row::measured(&name, seen, None)
}

async fn place(
    http: &reqwest::Client,
    base: &str,
    shop: &ShopIds,
    i: usize,
) -> anyhow::Result<String> {
    let product = &shop.ids[i % shop.ids.len()];
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let response = http
        .post(format!("{base}/orders/"))
        .bearer_auth(&shop.token)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::CREATED,
        "order: {}",
        response.status()
    );
    let order: Value = response.json().await?;
    order["id"].as_str().map(str::to_owned).context("order id")
}

/// What a placing task needs of the shop.
#[derive(Clone)]
pub(super) struct ShopIds {
    ids: Arc<Vec<String>>,
    token: String,
}

impl Shop {
    fn clone_ids(&self) -> ShopIds {
        ShopIds {
            ids: self.ids.clone(),
            token: self.token.clone(),
        }
    }
}
