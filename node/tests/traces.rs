//! One trace across a two-node cluster, exported over OTLP/HTTP (node A in
//! protobuf, the default, node B in JSON) to a receiver this test runs: the shopper's
//! `traceparent` is honoured at the edge, the order is served on the other
//! node, its `order.placed` record on Kafka carries the trace, and the email
//! for it is sent in a span of the same trace.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use mart_schema::db::testing::TestDb;
use prost::Message;
use serde_json::{Value, json};
use support::kafka::{PARTITIONS, read_all};
use support::{Api, Node, NodeSpec, free_port};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Seen {
    /// The exporting node (`service.instance.id`).
    node: String,
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// How it arrived: `protobuf` or `json`.
    encoding: &'static str,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Seen>>>);

impl Receiver {
    async fn start(self) -> String {
        let port = free_port();
        let store = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move { store.export(&headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://127.0.0.1:{port}")
    }

    fn export(&self, headers: &HeaderMap, body: &[u8]) -> (axum::http::StatusCode, Vec<u8>) {
        let kind = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let spans = match kind {
            "application/x-protobuf" => from_protobuf(body),
            "application/json" => from_json(body),
            other => panic!("unexpected content type {other:?}"),
        };
        self.0.lock().expect("lock").extend(spans);
        // An empty ExportTraceServiceResponse, in either encoding.
        let answer = if kind == "application/json" {
            b"{}".to_vec()
        } else {
            Vec::new()
        };
        (axum::http::StatusCode::OK, answer)
    }

    fn spans(&self) -> Vec<Seen> {
        self.0.lock().expect("lock").clone()
    }
}

fn from_protobuf(body: &[u8]) -> Vec<Seen> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut seen = Vec::new();
    for resource in request.resource_spans {
        let attribute = |key: &str| {
            resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Any::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        let (node, service) = (attribute("service.instance.id"), attribute("service.name"));
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                seen.push(Seen {
                    node: node.clone(),
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    encoding: "protobuf",
                });
            }
        }
    }
    seen
}

/// OTLP/JSON, read by hand: ids are hex strings, keys lowerCamelCase.
fn from_json(body: &[u8]) -> Vec<Seen> {
    let request: Value = serde_json::from_slice(body).expect("OTLP JSON");
    let mut seen = Vec::new();
    for resource in request["resourceSpans"].as_array().expect("resourceSpans") {
        let attribute = |key: &str| {
            resource["resource"]["attributes"]
                .as_array()
                .and_then(|all| all.iter().find(|a| a["key"] == key))
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (node, service) = (attribute("service.instance.id"), attribute("service.name"));
        for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
            for span in scope["spans"].as_array().expect("spans") {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                seen.push(Seen {
                    node: node.clone(),
                    service: service.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent: text("parentSpanId"),
                    name: text("name"),
                    encoding: "json",
                });
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_order_across_nodes_onto_kafka_and_into_its_email() {
    let receiver = Receiver::default();
    let endpoint = receiver.clone().start().await;
    let prefix = format!("mart-trace-{}", uuid::Uuid::new_v4().simple());
    let orders_topic = format!("{prefix}.orders.v1");
    let kafka = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    kafka
        .create_topic(&orders_topic, PARTITIONS, 1)
        .expect("topic");
    let bootstrap = kafka.bootstrap_servers();

    let db = TestDb::empty().await;
    let ports = [free_port(), free_port()];
    // No protocol: OpenTelemetry's default, protobuf.
    let otel = |protocol: Option<&str>| {
        let protocol = protocol.map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), p.to_owned()));
        protocol.into_iter().chain([
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
            ("OTEL_SERVICE_NAME".into(), "mart-test".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("MART_KAFKA_BROKERS".into(), bootstrap.clone()),
            ("MART_KAFKA_TOPIC_PREFIX".into(), prefix.clone()),
            ("MART_KAFKA_PARTITIONS".into(), PARTITIONS.to_string()),
        ])
    };
    // A: the edge and every service but orders; B: orders alone.
    let mut a_spec = NodeSpec::member(
        &db.url,
        &ports,
        0,
        "users,products,inventory,payments,notifications",
    );
    a_spec.extra_env.extend(otel(None));
    a_spec
        .extra_env
        .push(("MART_LOG_FORMAT".into(), "json".into()));
    let mut b_spec = NodeSpec::member(&db.url, &ports, 1, "orders");
    b_spec.extra_env.extend(otel(Some("http/json")));
    let a = Node::start(a_spec).await;
    let b = Node::start(b_spec).await;
    a.wait_reachable("orders", Duration::from_secs(30)).await;
    b.wait_reachable("inventory", Duration::from_secs(30)).await;

    let api = Api::new(&a.http);
    let admin = api.admin_token().await;
    let (_, token) = api.customer("traced").await;
    let kettle = api.stocked_product(&admin, "Kettle", 3999, 5).await;

    // The shopper's own trace: the order joins it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let placed = reqwest::Client::new()
        .post(api.url("/orders/"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"product_id": kettle, "quantity": 1}))
        .send()
        .await
        .expect("order");
    assert_eq!(placed.status(), reqwest::StatusCode::CREATED);
    assert_eq!(
        placed
            .headers()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(trace_id),
        "the edge names the trace it joined"
    );
    let order: Value = placed.json().await.expect("order body");
    let order_id = order["id"].as_str().expect("id").to_owned();

    // The record of order.placed on Kafka carries the same trace.
    let mut record = None;
    for _ in 0..60 {
        record = read_all(&bootstrap, std::slice::from_ref(&orders_topic))
            .into_iter()
            .find(|r| r.key == order_id && r.event["type"] == "mart.order.placed");
        if record.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let record = record.expect("order.placed on Kafka");
    let header: Vec<&str> = record.traceparent.split('-').collect();
    assert_eq!(header.get(1), Some(&trace_id), "{}", record.traceparent);

    // Every span arrives (batches leave every 100 ms).
    let wanted = |spans: &[Seen]| {
        let ours: Vec<&Seen> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let on = |node: &str| ours.iter().any(|s| s.node == node);
        let published = ours
            .iter()
            .any(|s| Some(&s.span_id.as_str()) == header.get(2));
        let emailed = ours.iter().any(|s| s.name == "send email");
        on("node-1") && on("node-2") && published && emailed
    };
    let mut spans = receiver.spans();
    for _ in 0..100 {
        if wanted(&spans) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        spans = receiver.spans();
    }
    let ours: Vec<&Seen> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let describe = || {
        ours.iter()
            .map(|s| {
                format!(
                    "{} {} {}<-{} {}",
                    s.node, s.name, s.span_id, s.parent, s.encoding
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(wanted(&spans), "spans of the trace:\n{}", describe());

    // The edge's span is the shopper's span's child; the order is served on
    // B as a child of A's call; each node exported in its own encoding.
    let by_id: HashMap<&str, &Seen> = ours.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let edge = ours
        .iter()
        .find(|s| s.name == "POST /orders")
        .unwrap_or_else(|| panic!("no edge span:\n{}", describe()));
    assert_eq!(edge.parent, caller_span);
    assert_eq!((edge.node.as_str(), edge.encoding), ("node-1", "protobuf"));
    assert_eq!(edge.service, "mart-test");
    let served = ours
        .iter()
        .find(|s| s.name == "orders NewOrder" && s.node == "node-2")
        .unwrap_or_else(|| panic!("no serve span on B:\n{}", describe()));
    assert_eq!(served.encoding, "json");
    let call = by_id
        .get(served.parent.as_str())
        .unwrap_or_else(|| panic!("B's parent not exported:\n{}", describe()));
    assert_eq!(
        (call.node.as_str(), call.name.as_str()),
        ("node-1", "orders NewOrder")
    );
    // Everything of the trace hangs off the shopper's span: no orphans.
    for span in &ours {
        if span.parent != caller_span {
            assert!(
                by_id.contains_key(span.parent.as_str()),
                "{} has an unknown parent:\n{}",
                span.name,
                describe()
            );
        }
    }

    // A logs JSON (the ids of a line's trace are checked in telemetry.rs).
    let log = a.log_text();
    assert!(
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
}
