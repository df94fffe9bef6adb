//! Entity ownership across replicas and losing nodes, with real `mart`
//! processes on loopback: one owner per product and per order, `kill -9` of an
//! owner mid-checkout (with and without a replica), and a rolling restart of
//! every node under load. Nothing oversold, charged twice, lost or duplicated.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kafka::{PARTITIONS, mock_cluster, read_all};
use support::{Api, Node, NodeSpec, SmtpSink, free_port};

/// Node `i` of a cluster on `ports`; payments left unsettled (orders
/// unreachable) are retried within a second.
fn member(db: &TestDb, ports: &[u16], i: usize, services: &str) -> NodeSpec {
    let mut spec = NodeSpec::member(&db.url, ports, i, services);
    spec.extra_env
        .push(("MART_PAYMENT_RECONCILE_AFTER".into(), "1s".into()));
    spec
}

fn with_env(mut spec: NodeSpec, env: &[(String, String)]) -> NodeSpec {
    spec.extra_env.extend(env.iter().cloned());
    spec
}

async fn until<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a Checkout session for the order and pays it as the shopper would;
/// the checkout URL, or why not.
async fn pay(api: &Api, token: &str, order: &str) -> Result<(), String> {
    let response = api
        .post_json("/payments/", Some(token), json!({"order_id": order}))
        .await;
    let status = response.status();
    let payment: Value = response.json().await.map_err(|e| e.to_string())?;
    let url = payment["checkout_url"]
        .as_str()
        .ok_or(format!("{status}: {payment}"))?;
    match support::pay_at_checkout(url).await {
        StatusCode::SEE_OTHER => Ok(()),
        other => Err(format!("pay: {other}")),
    }
}

async fn place(api: &Api, token: &str, product: &str, quantity: i64) -> (StatusCode, Value) {
    let response = api
        .post_json(
            "/orders/",
            Some(token),
            json!({"product_id": product, "quantity": quantity}),
        )
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A resource while polling: `Null` for a moment's 503 (a node just died and
/// the cluster has not noticed yet), which a client retries.
async fn poll(api: &Api, path: &str, token: &str) -> Value {
    let response = api.get(path, Some(token)).await;
    if response.status() == StatusCode::OK {
        response.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

/// The position of `node-<n>` in a list of nodes started as `member(.., i, ..)`.
fn index_of(name: &str) -> usize {
    let n: usize = name
        .trim_start_matches("node-")
        .parse()
        .expect("node number");
    n - 1
}

async fn owner(api: &Api, admin: &str, service: &str, id: &str) -> String {
    let owner = api
        .get_json(&format!("/cluster/owners/{service}/{id}"), Some(admin))
        .await;
    owner["node"].as_str().unwrap_or_default().to_owned()
}

async fn count(db: &TestDb, sql: &str, id: &str) -> i64 {
    let id = uuid::Uuid::parse_str(id).expect("uuid");
    db.pool
        .get()
        .await
        .expect("client")
        .query_one(sql, &[&id])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_through_the_edges_of_two_inventory_replicas_never_oversell() {
    let db = TestDb::empty().await;
    let ports = [free_port(), free_port()];
    let n1 = Node::start(member(&db, &ports, 0, "all")).await;
    let n2 = Node::start(member(&db, &ports, 1, "inventory,orders")).await;
    n1.wait_ready(Duration::from_secs(30)).await;
    n2.wait_ready(Duration::from_secs(30)).await;
    let (e1, e2) = (Api::new(&n1.http), Api::new(&n2.http));
    let admin = e1.admin_token().await;
    let lamp = e1.stocked_product(&admin, "Lamp", 1500, 20).await;
    // Both nodes see both owner routers before the rush.
    until(
        "both inventory replicas joined",
        Duration::from_secs(10),
        async || {
            let view = e2.get_json("/cluster", Some(&admin)).await;
            (view["nodes"].as_array().map(Vec::len) == Some(2)).then_some(())
        },
    )
    .await;
    let owner1 = owner(&e1, &admin, "inventory", &lamp).await;
    assert_eq!(owner1, owner(&e2, &admin, "inventory", &lamp).await);
    assert!(["node-1", "node-2"].contains(&owner1.as_str()), "{owner1}");

    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(e1.customer(&format!("buyer{i}")).await.1);
    }
    // 60 orders for 20 lamps, half through each edge, all at once.
    let outcomes = futures::future::join_all((0..60).map(|i| {
        let api = if i % 2 == 0 { e1.clone() } else { e2.clone() };
        let (token, lamp) = (tokens[i % 4].clone(), lamp.clone());
        async move { place(&api, &token, &lamp, 1).await.0 }
    }))
    .await;
    let accepted = outcomes
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = outcomes
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((accepted, refused), (20, 40), "{outcomes:?}");
    let stock = e2
        .get_json(&format!("/inventory/{lamp}"), Some(&admin))
        .await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(20), Some(20)),
        "{stock}"
    );
    let lines = count(
        &db,
        "select coalesce(sum(quantity), 0)::bigint from inventory.reservation_lines \
         where product_id = $1 and status = 'reserved'",
        &lamp,
    )
    .await;
    assert_eq!(lines, 20);
}

/// Three nodes: node 1 with users, products, payments, notifications and the
/// Kafka bridge; nodes 2 (and 3, when `replica`) with orders and inventory.
struct Mesh {
    db: TestDb,
    nodes: Vec<Node>,
    sink: SmtpSink,
    topics: Vec<String>,
    bootstrap: String,
    _kafka: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Mesh {
    async fn start(replica: bool) -> Mesh {
        let db = TestDb::empty().await;
        let sink = SmtpSink::start(free_port()).await;
        let prefix = format!("mart-test-{}", uuid::Uuid::new_v4().simple());
        let topics: Vec<String> = ["orders", "payments", "inventory"]
            .iter()
            .map(|s| format!("{prefix}.{s}.v1"))
            .collect();
        let (kafka, bootstrap) = mock_cluster(&topics);
        let count = if replica { 3 } else { 2 };
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let edge_env = [
            (
                "MART_SMTP_URL".to_owned(),
                format!("smtp://127.0.0.1:{}", sink.port),
            ),
            ("MART_KAFKA_BROKERS".into(), bootstrap.clone()),
            ("MART_KAFKA_TOPIC_PREFIX".into(), prefix),
            ("MART_KAFKA_PARTITIONS".into(), PARTITIONS.to_string()),
        ];
        let mut nodes = vec![
            Node::start(with_env(
                member(&db, &ports, 0, "users,products,payments,notifications"),
                &edge_env,
            ))
            .await,
        ];
        for i in 1..count {
            nodes.push(Node::start(member(&db, &ports, i, "orders,inventory")).await);
        }
        for node in &nodes {
            node.wait_ready(Duration::from_secs(30)).await;
        }
        Mesh {
            db,
            nodes,
            sink,
            topics,
            bootstrap,
            _kafka: kafka,
        }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        &mut self.nodes[index_of(name)]
    }

    /// The order (for 2 of a 10-unit product) gets paid, and then: stock
    /// committed once, one charge, each mail once, and the order's events on
    /// Kafka in sequence without a gap or a duplicate.
    async fn assert_settled_once(
        &self,
        api: &Api,
        token: &str,
        admin: &str,
        product: &str,
        order: &str,
        email: &str,
    ) {
        until(
            "the order to be paid",
            Duration::from_secs(30),
            async || {
                let got = poll(api, &format!("/orders/{order}"), token).await;
                (got["status"] == "paid").then_some(())
            },
        )
        .await;
        until(
            "stock to be committed",
            Duration::from_secs(20),
            async || {
                let stock = poll(api, &format!("/inventory/{product}"), admin).await;
                (stock["reserved"] == 0).then_some(())
            },
        )
        .await;
        let stock = api
            .get_json(&format!("/inventory/{product}"), Some(admin))
            .await;
        assert_eq!(
            (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
            (Some(8), Some(0)),
            "{stock}"
        );
        let charges = count(
            &self.db,
            "select count(*) from payments.payments where order_id = $1 and status = 'succeeded'",
            order,
        )
        .await;
        assert_eq!(charges, 1, "one charge");
        until("three mails", Duration::from_secs(20), async || {
            (self.sink.to(email).len() >= 3).then_some(())
        })
        .await;
        // Late duplicates would arrive within a few delivery passes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            self.sink.to(email).len(),
            3,
            "welcome, order received, paid"
        );

        let events = until(
            "the order's events on Kafka",
            Duration::from_secs(60),
            async || {
                let records = read_all(&self.bootstrap, &self.topics);
                let mine: Vec<Value> = records
                    .into_iter()
                    .filter(|r| r.key == order)
                    .map(|r| r.event)
                    .collect();
                let types: HashSet<&str> = mine.iter().filter_map(|e| e["type"].as_str()).collect();
                types.contains("mart.order.paid").then_some(mine)
            },
        )
        .await;
        let mut by_source: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut ids = HashSet::new();
        for event in &events {
            assert!(
                ids.insert(event["id"].as_str().unwrap_or_default().to_owned()),
                "duplicate record {event}"
            );
            by_source
                .entry(event["source"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(
                    event["sequence"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                );
        }
        for (source, seqs) in &by_source {
            assert_eq!(
                *seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{source}: in order, no gaps"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_order_s_owner_mid_checkout_moves_it_to_the_replica() {
    let mut mesh = Mesh::start(true).await;
    let edge = Api::new(&mesh.nodes[0].http);
    let admin = edge.admin_token().await;
    let kettle = edge.stocked_product(&admin, "Kettle", 3999, 10).await;
    let (_, token) = edge.customer("survivor").await;
    until(
        "both order replicas joined",
        Duration::from_secs(10),
        async || {
            let view = edge.get_json("/cluster", Some(&admin)).await;
            (view["nodes"].as_array().map(Vec::len) == Some(3)).then_some(())
        },
    )
    .await;
    let (status, order) = place(&edge, &token, &kettle, 2).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();

    // Reserved, not paid: its owner dies without a goodbye.
    let owner_node = owner(&edge, &admin, "orders", &id).await;
    mesh.node(&owner_node).kill();
    let survivor = until("the order to move", Duration::from_secs(5), async || {
        let now = owner(&edge, &admin, "orders", &id).await;
        (!now.is_empty() && now != owner_node).then_some(now)
    })
    .await;
    assert!(survivor.starts_with("node-"), "{survivor}");

    pay(&edge, &token, &id).await.expect("pay");
    mesh.assert_settled_once(&edge, &token, &admin, &kettle, &id, "survivor@example.test")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_s_unpaid_order_still_expires_on_time_on_the_replica() {
    let db = TestDb::empty().await;
    let ports = [free_port(), free_port(), free_port()];
    let short = |mut spec: NodeSpec| {
        spec.extra_env
            .push(("MART_RESERVATION_TTL".into(), "4s".into()));
        spec
    };
    let edge_node = Node::start(short(member(
        &db,
        &ports,
        0,
        "users,products,payments,notifications",
    )))
    .await;
    let mut replicas = [
        Node::start(short(member(&db, &ports, 1, "orders,inventory"))).await,
        Node::start(short(member(&db, &ports, 2, "orders,inventory"))).await,
    ];
    for node in replicas.iter().chain([&edge_node]) {
        node.wait_ready(Duration::from_secs(30)).await;
    }
    let edge = Api::new(&edge_node.http);
    let admin = edge.admin_token().await;
    let (_, token) = edge.customer("forgetful").await;
    until("every node joined", Duration::from_secs(10), async || {
        let view = edge.get_json("/cluster", Some(&admin)).await;
        (view["nodes"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    // A product owned by the same node as the order: that node's death takes
    // both the order's expiry timer and the reservation's with it.
    let (lamp, id, owner_node) = until(
        "an order and product on one owner",
        Duration::from_secs(60),
        async || {
            let lamp = edge.stocked_product(&admin, "Lamp", 1500, 5).await;
            let (status, order) = place(&edge, &token, &lamp, 2).await;
            assert_eq!(status, StatusCode::CREATED, "{order}");
            let id = order["id"].as_str().expect("id").to_owned();
            let order_owner = owner(&edge, &admin, "orders", &id).await;
            (order_owner == owner(&edge, &admin, "inventory", &lamp).await).then_some((
                lamp,
                id,
                order_owner,
            ))
        },
    )
    .await;
    // Node 1 is the edge; the replicas are nodes 2 and 3.
    replicas[index_of(&owner_node) - 1].kill();

    // Due after 4 s; the survivor's sweeps (every 5 s) find it.
    until("the order to expire", Duration::from_secs(20), async || {
        let order = poll(&edge, &format!("/orders/{id}"), &token).await;
        (order["status"] == "expired").then_some(())
    })
    .await;
    until(
        "its stock to come back",
        Duration::from_secs(20),
        async || {
            let stock = poll(&edge, &format!("/inventory/{lamp}"), &admin).await;
            (stock["reserved"] == 0 && stock["on_hand"] == 5).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_only_owner_died_completes_when_the_node_returns() {
    let mut mesh = Mesh::start(false).await;
    let edge = Api::new(&mesh.nodes[0].http);
    let admin = edge.admin_token().await;
    let kettle = edge.stocked_product(&admin, "Kettle", 3999, 10).await;
    let (_, token) = edge.customer("patient").await;
    let (status, order) = place(&edge, &token, &kettle, 2).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();

    // Payment starts, then the only orders node dies before the money arrives.
    let response = edge
        .post_json("/payments/", Some(&token), json!({"order_id": id}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let payment: Value = response.json().await.expect("payment");
    mesh.nodes[1].kill();
    let started = Instant::now();
    let down = edge.get(&format!("/orders/{id}"), Some(&token)).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let url = payment["checkout_url"].as_str().expect("url");
    assert_eq!(support::pay_at_checkout(url).await, StatusCode::SEE_OTHER);
    // The money is in; the order cannot hear of it yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let charged = count(
        &mesh.db,
        "select count(*) from payments.payments where order_id = $1 and status = 'succeeded'",
        &id,
    )
    .await;
    assert_eq!(charged, 1);

    mesh.nodes[1].restart();
    mesh.nodes[1].wait_ready(Duration::from_secs(30)).await;
    mesh.assert_settled_once(&edge, &token, &admin, &kettle, &id, "patient@example.test")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing() {
    let db = TestDb::empty().await;
    let sink = SmtpSink::start(free_port()).await;
    let prefix = format!("mart-test-{}", uuid::Uuid::new_v4().simple());
    let topics: Vec<String> = ["orders", "payments"]
        .iter()
        .map(|s| format!("{prefix}.{s}.v1"))
        .collect();
    let (_kafka, bootstrap) = mock_cluster(&topics);
    let ports = [free_port(), free_port(), free_port()];
    let http_ports = [free_port(), free_port(), free_port()];
    // Every node hosts everything, so any one may leave; Stripe is shared.
    let stripe = support::StripeServer::start(&format!(
        "http://127.0.0.1:{}/payments/webhook",
        http_ports[0]
    ))
    .await;
    let env = [
        (
            "MART_SMTP_URL".to_owned(),
            format!("smtp://127.0.0.1:{}", sink.port),
        ),
        ("MART_KAFKA_BROKERS".into(), bootstrap.clone()),
        ("MART_KAFKA_TOPIC_PREFIX".into(), prefix),
        ("MART_KAFKA_PARTITIONS".into(), PARTITIONS.to_string()),
    ];
    let mut nodes = Vec::new();
    for (i, http_port) in http_ports.iter().enumerate() {
        let mut spec = with_env(member(&db, &ports, i, "all"), &env);
        spec.extra_env.extend(stripe.env());
        spec.http_port = Some(*http_port);
        nodes.push(Node::start(spec).await);
    }
    for node in &nodes {
        node.wait_ready(Duration::from_secs(30)).await;
    }
    let edges: Vec<Api> = nodes.iter().map(|n| Api::new(&n.http)).collect();
    let admin = edges[0].admin_token().await;
    let lamp = edges[0].stocked_product(&admin, "Lamp", 1500, 1000).await;
    let (_, token) = edges[1].customer("steady").await;

    // A steady trickle of checkouts through the edges of the nodes that are up.
    let down = std::sync::Arc::new(std::sync::Mutex::new(None::<usize>));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (edges, down, stop, token, lamp) = (
            edges.clone(),
            down.clone(),
            stop.clone(),
            token.clone(),
            lamp.clone(),
        );
        tokio::spawn(async move {
            let mut accepted: Vec<String> = Vec::new();
            let mut turn = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                turn += 1;
                let skip = *down.lock().expect("lock");
                let pick = (0..3)
                    .map(|k| (turn + k) % 3)
                    .find(|i| Some(*i) != skip)
                    .unwrap_or(0);
                let (status, order) = place(&edges[pick], &token, &lamp, 1).await;
                if status == StatusCode::CREATED {
                    let id = order["id"].as_str().expect("id").to_owned();
                    // Paying is retried through another edge: the shopper tries again.
                    for attempt in 0..5 {
                        let skip = *down.lock().expect("lock");
                        let via = (0..3)
                            .map(|k| (pick + attempt + k) % 3)
                            .find(|i| Some(*i) != skip)
                            .unwrap_or(0);
                        if pay(&edges[via], &token, &id).await.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    accepted.push(id);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            accepted
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, node) in nodes.iter_mut().enumerate() {
        *down.lock().expect("lock") = Some(i);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = node.terminate().expect("graceful exit");
        assert!(status.success(), "node-{} exited with {status}", i + 1);
        node.restart();
        node.wait_ready(Duration::from_secs(30)).await;
        *down.lock().expect("lock") = None;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let accepted = load.await.expect("load");
    assert!(
        accepted.len() >= 20,
        "the load kept going: {}",
        accepted.len()
    );

    // Every accepted order reaches a final state: paid.
    let statuses: HashMap<String, String> = until(
        "every accepted order to be paid",
        Duration::from_secs(60),
        async || {
            let mut statuses = HashMap::new();
            for id in &accepted {
                let order = poll(&edges[2], &format!("/orders/{id}"), &token).await;
                statuses.insert(
                    id.clone(),
                    order["status"].as_str().unwrap_or("?").to_owned(),
                );
            }
            statuses.values().all(|s| s == "paid").then_some(statuses)
        },
    )
    .await;
    let paid = statuses.len();

    // PostgreSQL, mail and Kafka tell the same story.
    let client = db.pool.get().await.expect("client");
    let row = client
        .query_one(
            "select (select count(*) from orders.orders where status = 'paid'), \
                    (select count(*) from payments.payments where status = 'succeeded'), \
                    (select on_hand from inventory.stock), (select reserved from inventory.stock)",
            &[],
        )
        .await
        .expect("counts");
    let (orders, charges, on_hand, reserved): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((orders, charges), (paid as i64, paid as i64));
    assert_eq!((on_hand, reserved), (1000 - paid as i64, 0));
    let paid_mails = until(
        "a paid mail per order",
        Duration::from_secs(30),
        async || {
            let mails = sink
                .to("steady@example.test")
                .into_iter()
                .filter(|m| m.data.contains("Payment received"))
                .count();
            (mails >= paid).then_some(mails)
        },
    )
    .await;
    let mut subjects: HashMap<String, usize> = HashMap::new();
    for mail in sink.to("steady@example.test") {
        let subject = mail
            .data
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or_default()
            .to_owned();
        *subjects.entry(subject).or_default() += 1;
    }
    subjects.retain(|_, n| *n > 1);
    assert_eq!(paid_mails, paid, "each paid mail once; twice: {subjects:?}");
    let kafka_paid = until(
        "an order.paid record per order",
        Duration::from_secs(60),
        async || {
            let records = read_all(&bootstrap, &topics);
            let ids: HashSet<String> = records
                .iter()
                .filter(|r| r.event["type"] == "mart.order.paid")
                .filter_map(|r| r.event["id"].as_str().map(str::to_owned))
                .collect();
            let total = records
                .iter()
                .filter(|r| r.event["type"] == "mart.order.paid")
                .count();
            (ids.len() >= paid).then_some((ids.len(), total))
        },
    )
    .await;
    assert_eq!(kafka_paid, (paid, paid), "each order.paid once on Kafka");
}
