//! The edge under load over real HTTP, next to its references measured in
//! the same run: product reads against a bare axum route answering the same
//! JSON, order placement against the raw SQL order transaction on the same
//! PostgreSQL. The answers are checked: every 201 has its order row and its
//! reservation, and the levels add up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::load::{self, Ask};
use super::{BenchOptions, Row};
use crate::App;
use crate::config::Cli;

const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench admin password";

/// Product reads and order placement through a whole node, with references.
pub(super) async fn scenarios(
    node_url: &str,
    reference_url: &str,
    options: &BenchOptions,
) -> anyhow::Result<Vec<Row>> {
    let node = Node::start(node_url, &[]).await?;
    let outcome = measure(node.addr, node_url, reference_url, options).await;
    node.stop().await;
    outcome
}

/// A whole node in this process, on its own database and data directory.
pub(super) struct Node {
    pub(super) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    data: std::path::PathBuf,
}

impl Node {
    pub(super) async fn start(database_url: &str, extra: &[&str]) -> anyhow::Result<Node> {
        let data =
            std::env::temp_dir().join(format!("mart-bench-{}", uuid::Uuid::new_v4().simple()));
        let data_dir = data.display().to_string();
        let mut args = vec![
            "mart",
            "--node-name",
            "bench",
            "--http-addr",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--data-dir",
            &data_dir,
            "--jwt-secret",
            "bench only, never a real secret, 32+ bytes",
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args)?;
        let app = App::build(cli.node).await?;
        let addr = app.http_addr().context("the bench node has an edge")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Node {
            addr,
            stop,
            running,
            data,
        })
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.running.await;
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

async fn measure(
    addr: SocketAddr,
    node_url: &str,
    reference_url: &str,
    options: &BenchOptions,
) -> anyhow::Result<Vec<Row>> {
    let base = format!("http://{addr}");
    let duration = Duration::from_secs(options.seconds);
    let shop = Shop::open(&base, options.catalog).await?;
    let mut rows = Vec::new();

    let bare = bare_route(shop.sample.clone()).await?;
    let ids = shop.ids.clone();
    let reads = options.read_connections;
    let path = move |i: usize| ids[i % ids.len()].clone();
    let get = move |i: usize| Ask {
        method: Method::GET,
        path: format!("/products/{}", path(i)),
        body: None,
    };
    let get = Arc::new(get);
    let (g1, g2) = (get.clone(), get.clone());
    let seen = load::run(&bare, None, reads, duration, None, move |i| g1(i)).await?;
    rows.push(Row::http("bare axum route, same product JSON", seen, None)?);
    let seen = load::run(&base, None, reads, duration, None, move |i| g2(i)).await?;
    let reference = Some("bare axum route, same product JSON");
    rows.push(Row::http(
        "GET /products/{id} through the edge",
        seen,
        reference,
    )?);

    let raw = super::orders::raw_sql(reference_url, options.order_connections, duration).await?;
    rows.push(raw);
    let ids = shop.ids.clone();
    let place = move |i: usize| {
        let product = &ids[(i.wrapping_mul(2654435761)) % ids.len()];
        Ask {
            method: Method::POST,
            path: "/orders/".into(),
            body: Some(json!({"items": [{"product_id": product, "quantity": 1}]}).to_string()),
        }
    };
    let token = Some(shop.token.as_str());
    let connections = options.order_connections;
    let created = Some(StatusCode::CREATED);
    let seen = load::run(&base, token, connections, duration, created, place).await?;
    super::orders::check(node_url, &seen).await?;
    let reference = Some(super::orders::RAW);
    rows.push(Row::http(
        "POST /orders/ through the edge",
        seen,
        reference,
    )?);
    Ok(rows)
}

/// A catalog to read and order from, and a shopper.
pub(super) struct Shop {
    pub(super) ids: Arc<Vec<String>>,
    /// One product as the edge answers it (the bare route answers the same).
    sample: Value,
    pub(super) token: String,
}

impl Shop {
    pub(super) async fn open(base: &str, products: usize) -> anyhow::Result<Shop> {
        let http = reqwest::Client::new();
        let token = |username: &str, password: &str| {
            let form = [
                ("username", username.to_owned()),
                ("password", password.to_owned()),
            ];
            let request = http.post(format!("{base}/token")).form(&form);
            async move {
                let grant: Value = request.send().await?.json().await?;
                grant["access_token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no token")
            }
        };
        let admin = token(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let mut ids = Vec::with_capacity(products);
        let mut sample = Value::Null;
        for i in 0..products {
            let product = json!({"name": format!("Bench product {i}"), "description": "A product to read and order.",
                "price": 100 + i, "stock": 1_000_000_000i64});
            let created: Value = http
                .post(format!("{base}/products"))
                .bearer_auth(&admin)
                .json(&product)
                .send()
                .await?
                .json()
                .await?;
            ids.push(created["id"].as_str().context("product id")?.to_owned());
            sample = created;
        }
        let shopper = format!("shopper{}", rand::rng().random::<u32>());
        let registration = json!({"username": shopper, "email": format!("{shopper}@example.com"),
            "password": "correct horse battery"});
        http.post(format!("{base}/register"))
            .json(&registration)
            .send()
            .await?;
        let token = token(&shopper, "correct horse battery").await?;
        // Stock records come through the product outbox: wait for the last.
        let last = ids.last().context("no products")?;
        for _ in 0..200 {
            let levels = http
                .get(format!("{base}/inventory/{last}"))
                .bearer_auth(&admin)
                .send()
                .await?;
            if levels.status() == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Shop {
            ids: Arc::new(ids),
            sample,
            token,
        })
    }
}

/// The ceiling: a bare axum route in this process answering every product
/// read with the same JSON the edge sends.
async fn bare_route(product: Value) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let product = Arc::new(product);
    let app = axum::Router::new().route(
        "/products/{id}",
        axum::routing::get(move || {
            let product = product.clone();
            async move { axum::Json(Value::clone(&product)) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
    }
    Ok(format!("http://{addr}"))
}
