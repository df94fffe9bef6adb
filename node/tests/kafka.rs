//! Every domain event mirrored to Kafka (librdkafka's mock cluster, over TCP):
//! CloudEvents, keyed by aggregate, in order, nothing lost while Kafka is down,
//! and readable by an independent client.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use mart_schema::db::testing::TestDb;
use serde_json::{Value, json};
use support::kafka::{PARTITIONS, read_all};
use support::{Api, Node, NodeSpec, SERVICES};

/// Registers, orders and pays; the order's id.
async fn checkout(api: &Api, admin: &str) -> String {
    let (_, token) = api.customer("listener").await;
    let kettle = api.stocked_product(admin, "Kettle", 3999, 10).await;
    let order: Value = api
        .post_json(
            "/orders/",
            Some(&token),
            json!({"product_id": kettle, "quantity": 2}),
        )
        .await
        .json()
        .await
        .expect("order");
    let id = order["id"].as_str().expect("id").to_owned();
    let payment: Value = api
        .post_json("/payments/", Some(&token), json!({"order_id": id}))
        .await
        .json()
        .await
        .expect("payment");
    support::pay_at_checkout(payment["checkout_url"].as_str().expect("url")).await;
    for _ in 0..200 {
        if api.get_json(&format!("/orders/{id}"), Some(&token)).await["status"] == "paid" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order not paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_flow_is_mirrored_in_order_even_through_a_kafka_outage() {
    // A real broker when MART_TEST_KAFKA_BROKERS is set (then there is no
    // outage to stage), else librdkafka's mock cluster.
    let prefix = format!("mart-test-{}", uuid::Uuid::new_v4().simple());
    let topics: Vec<String> = SERVICES
        .iter()
        .map(|s| format!("{prefix}.{s}.v1"))
        .collect();
    let real = std::env::var("MART_TEST_KAFKA_BROKERS").ok();
    let mock = match real {
        Some(_) => None,
        None => Some(rdkafka::mocking::MockCluster::new(1).expect("mock cluster")),
    };
    let bootstrap = match (&real, &mock) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(cluster)) => {
            for topic in &topics {
                cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
            }
            cluster.bootstrap_servers()
        }
        (None, None) => unreachable!("one of them is set"),
    };
    // Kafka is down for the whole checkout.
    if let Some(cluster) = &mock {
        cluster.broker_down(1).expect("down");
    }

    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env
        .push(("MART_KAFKA_BROKERS".into(), bootstrap.clone()));
    spec.extra_env
        .push(("MART_KAFKA_TOPIC_PREFIX".into(), prefix.clone()));
    spec.extra_env
        .push(("MART_KAFKA_PARTITIONS".into(), PARTITIONS.to_string()));
    let mut node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    let order = checkout(&api, &admin).await;
    // Nothing in the request path waited on Kafka; the events wait in the
    // outboxes, and the health report says how far behind the bridge is
    // (once the bridge, starting in the background while the brokers are
    // away, has subscribed: a new subscriber starts from the first event).
    let mut bridge = Value::Null;
    for _ in 0..200 {
        let ready = api.get_json("/health/ready", None).await;
        let lag = ready["hosted"]
            .as_array()
            .expect("hosted")
            .iter()
            .find(|h| h["service"] == "orders")
            .and_then(|orders| orders["lag"].as_array().cloned())
            .unwrap_or_default();
        if let Some(found) = lag
            .into_iter()
            .find(|l| l["subscriber"] == "mart.bridge.kafka")
        {
            bridge = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bridge.is_object(), "the bridge never subscribed");
    assert!(bridge["pending"].as_i64() >= Some(2), "{bridge}");
    assert!(bridge["oldest_age_secs"].as_f64() > Some(0.0));
    if let Some(cluster) = &mock {
        cluster.broker_up(1).expect("up");
    }

    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (
            "mart.users.v1",
            vec!["mart.user.registered", "mart.user.registered"],
        ),
        ("mart.products.v1", vec!["mart.product.created"]),
        (
            "mart.inventory.v1",
            vec!["mart.inventory.committed", "mart.inventory.reserved"],
        ),
        (
            "mart.orders.v1",
            vec!["mart.order.paid", "mart.order.placed"],
        ),
        (
            "mart.payments.v1",
            vec!["mart.payment.created", "mart.payment.succeeded"],
        ),
        ("mart.notifications.v1", vec!["mart.notification.sent"; 4]),
    ]);
    let started = Instant::now();
    let mut distinct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut records = Vec::new();
    while started.elapsed() < Duration::from_secs(90) {
        records = read_all(&bootstrap, &topics);
        let mut seen = HashSet::new();
        distinct.clear();
        for r in &records {
            if seen.insert(r.event["id"].as_str().unwrap_or_default().to_owned()) {
                distinct
                    .entry(r.topic.replacen(&prefix, "mart", 1))
                    .or_default()
                    .push(r.event["type"].as_str().unwrap_or_default().to_owned());
            }
        }
        for types in distinct.values_mut() {
            types.sort();
        }
        let complete = expected.iter().all(|(topic, types)| {
            distinct
                .get(*topic)
                .is_some_and(|got| got.len() >= types.len())
        });
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got: BTreeMap<&str, Vec<&str>> = distinct
        .iter()
        .map(|(t, v)| (t.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(got, expected, "exactly the expected events on each topic");

    // Every record: a CloudEvent keyed by its aggregate, per-aggregate sequence gap-free.
    let mut sequences: HashMap<String, Vec<u64>> = HashMap::new();
    let mut ids_seen = HashSet::new();
    for r in &records {
        let e = &r.event;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(
            e["subject"].as_str(),
            Some(r.key.as_str()),
            "key = aggregate id"
        );
        assert!(
            e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("/mart/"))
        );
        assert!(
            e["time"].is_string()
                && e["data"].is_object()
                && e["datacontenttype"] == "application/json"
        );
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert!(r.traceparent.starts_with("00-") && r.traceparent.len() == 55);
        let sequence = e["sequence"].as_str().expect("sequence");
        assert_eq!(sequence.len(), 20, "zero-padded so it sorts");
        if ids_seen.insert(e["id"].as_str().unwrap_or_default().to_owned()) {
            // Sequences are per aggregate within its source (a product's catalog
            // events and its stock events count separately).
            let aggregate = format!("{} {}", e["source"].as_str().unwrap_or_default(), r.key);
            sequences
                .entry(aggregate)
                .or_default()
                .push(sequence.parse().expect("number"));
        }
    }
    for (key, seqs) in &sequences {
        assert_eq!(
            *seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "aggregate {key}: in order, no gaps"
        );
    }

    // An independent client (Python confluent-kafka) reads the same events.
    let script = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "py-reader", "enable.auto.commit": False})
c.assign([TopicPartition(t, p, 0) for t in sys.argv[2].split(",") for p in range(3)])
types, idle = {}, 0
while idle < 10:
    m = c.poll(0.5)
    if m is None:
        idle += 1
        continue
    if m.error():
        raise SystemExit(str(m.error()))
    e = json.loads(m.value())
    for attr in ("specversion", "id", "source", "type", "subject", "time", "sequence", "data"):
        assert attr in e, attr
    assert dict(m.headers())["content-type"] == b"application/cloudevents+json"
    types[e["id"]] = e["type"]
c.close()
print(len(types))
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, &bootstrap, &topics.join(",")])
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'confluent_kafka'"),
        "pip install confluent-kafka (.ci/run does)"
    );
    assert!(output.status.success(), "python reader failed: {stderr}");
    let read: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("count");
    assert_eq!(read, ids_seen.len(), "the Python client read every event");

    // The node (and its bridge) restarts in the middle of the order's life: the
    // next events continue the order's sequence without a gap.
    node.restart();
    node.wait_live().await;
    let path = format!("/orders/{order}");
    for status in ["shipped", "delivered"] {
        let response = api.patch(&path, &admin, json!({"status": status})).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{status}");
    }
    let mut order_sequence = Vec::new();
    for _ in 0..120 {
        let mut seen = HashSet::new();
        order_sequence = read_all(&bootstrap, &topics)
            .into_iter()
            .filter(|r| r.key == order && r.event["source"] == "/mart/orders")
            .filter(|r| seen.insert(r.event["id"].as_str().unwrap_or_default().to_owned()))
            .map(|r| r.event["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        if order_sequence.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        order_sequence,
        vec![
            "mart.order.placed",
            "mart.order.paid",
            "mart.order.shipped",
            "mart.order.delivered"
        ]
    );
    drop(node);
}

/// Brokers that do not answer (nothing listens on port 1) hold up only the
/// bridge: the edge and the services answer at once, and the outboxes keep
/// the events for when Kafka is reachable.
#[tokio::test]
async fn unreachable_brokers_never_delay_the_edge() {
    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env
        .push(("MART_KAFKA_BROKERS".into(), "127.0.0.1:1".into()));
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let (user, token) = api.customer("early").await;
    let profile = api.get_json("/user_profile", Some(&token)).await;
    assert_eq!(profile["id"], user["id"]);
    // Creating the topics gives up after 8 s; the edge did not wait for it.
    let log = node.log_text();
    for gave_up in ["creating topics timed out", "could not create topics"] {
        assert!(!log.contains(gave_up), "the edge waited for Kafka:\n{log}");
    }
}
