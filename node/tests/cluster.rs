//! Two `mart` processes joined by `ractor_cluster` on loopback: node A hosts only
//! the edge, node B only the user service.

mod support;

use std::time::{Duration, Instant};

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::Value;
use support::{Api, COOKIE, Node, NodeSpec, free_port, problem};

fn users_node(db: &TestDb, port: u16) -> NodeSpec {
    NodeSpec {
        name: "node-b".into(),
        services: "users".into(),
        database_url: Some(db.url.clone()),
        cluster_port: Some(port),
        cookie: Some(COOKIE.into()),
        http: false,
        extra_env: vec![
            ("MART_ADMIN_EMAIL".into(), support::ADMIN_EMAIL.into()),
            ("MART_ADMIN_PASSWORD".into(), support::ADMIN_PASSWORD.into()),
        ],
        ..NodeSpec::default()
    }
}

fn edge_node(name: &str, peer: u16, cookie: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        services: "none".into(),
        cluster_port: Some(free_port()),
        peers: vec![peer],
        cookie: Some(cookie.into()),
        http: true,
        ..NodeSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_serves_users_hosted_on_another_node_and_survives_its_restart() {
    let db = TestDb::empty().await;
    let b_port = free_port();
    let b_metrics = free_port();
    let mut b_spec = users_node(&db, b_port);
    b_spec
        .extra_env
        .push(("MART_METRICS_ADDR".into(), format!("127.0.0.1:{b_metrics}")));
    let mut b = Node::start(b_spec).await;
    let a = Node::start(edge_node("node-a", b_port, COOKIE)).await;
    a.wait_reachable("users", Duration::from_secs(30)).await;
    let api = Api::new(&a.http);
    // Ready for its job (an edge in front of users), though orders and the
    // rest run nowhere.
    let ready = api.get_json("/health/ready", None).await;
    assert_eq!(
        (&ready["status"], &ready["state"]),
        (&serde_json::json!(200), &serde_json::json!("ready")),
        "{ready}"
    );
    assert_eq!(ready["reachable"]["users"], true, "{ready}");
    assert_eq!(ready["reachable"]["orders"], false, "{ready}");

    // Register, log in and read the profile through A; B does the work.
    let (user, token) = api.customer("remote").await;
    let profile: Value = api.get_json("/user_profile", Some(&token)).await;
    assert_eq!(profile["id"], user["id"]);

    // Each node counts its own part: A the HTTP request and its call, B (no
    // edge: metrics on --metrics-addr) the request it served and the event.
    let on_a = api.metrics().await;
    let registered = [
        ("route", "/register"),
        ("method", "POST"),
        ("status", "2xx"),
    ];
    assert_eq!(
        support::metric(&on_a, "mart_http_requests_total", &registered),
        Some(1.0),
        "{on_a}"
    );
    assert!(
        support::metric(&on_a, "mart_service_calls_total", &[("service", "users")])
            .is_some_and(|calls| calls >= 3.0)
    );
    let event = [("service", "users"), ("type", "user.registered")];
    assert_eq!(
        support::metric(&on_a, "mart_domain_events_total", &event),
        None
    );
    let on_b = reqwest::get(format!("http://127.0.0.1:{b_metrics}/metrics"))
        .await
        .expect("B's metrics")
        .text()
        .await
        .expect("text");
    // The admin made at B's start, and the customer.
    assert_eq!(
        support::metric(&on_b, "mart_domain_events_total", &event),
        Some(2.0),
        "{on_b}"
    );
    assert!(
        support::metric(
            &on_b,
            "mart_service_requests_total",
            &[("service", "users"), ("outcome", "ok")]
        )
        .is_some_and(|served| served >= 3.0)
    );

    // Garbage on the cluster port does not bring B down.
    for junk in [
        &b"\x00\x00\x00\x10not a protobuf frame"[..],
        &[0xff; 64][..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        use tokio::io::AsyncWriteExt;
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", b_port)).await {
            let _ = stream.write_all(junk).await;
            let _ = stream.shutdown().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        api.get("/user_profile", Some(&token)).await.status(),
        StatusCode::OK
    );

    // A node with the wrong cookie is refused: it never sees the user service.
    let intruder = Node::start(edge_node("intruder", b_port, "a wrong cluster cookie")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let intruder_api = Api::new(&intruder.http);
    let refused = intruder_api
        .register("sneaky", "sneaky@example.test", "tangerine-57-orbit")
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    problem(
        intruder_api.get("/health/ready", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await
    .get("status");

    // The topology as A sees it (admin only).
    let admin = api.admin_token().await;
    let view = api.get_json("/cluster", Some(&admin)).await;
    let nodes = view["nodes"].as_array().expect("nodes");
    // Nodes go by their --node-name, as entity owners do.
    let node = |name: &str| {
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(node("node-a")["self"], true);
    assert_eq!(node("node-a")["services"], serde_json::json!([]));
    assert_eq!(
        node("node-b")["services"],
        serde_json::json!(["users"]),
        "{view}"
    );
    assert_eq!(node("node-b")["reachable"], true);
    problem(
        api.get("/cluster", Some(&token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // B dies: A answers 503 promptly, never hangs.
    b.kill();
    let started = Instant::now();
    let response = api
        .client
        .get(api.url("/user_profile"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("an answer within 2 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;

    let view = api.get_json("/cluster", Some(&admin)).await;
    let down = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .any(|n| n["reachable"] == false && n["address"].is_string());
    assert!(down, "the configured peer shows as unreachable: {view}");

    // B returns: A reconnects by itself and serves again, with the same data.
    b.restart();
    a.wait_reachable("users", Duration::from_secs(30)).await;
    let again = api.token("remote", "tangerine-57-orbit").await;
    assert_eq!(
        api.get("/user_profile", Some(&again)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        api.get("/user_profile", Some(&token)).await.status(),
        StatusCode::OK
    );
}

/// A CA and one certificate for every node (127.0.0.1), made with openssl.
fn certificates(dir: &std::path::Path) -> Vec<(String, String)> {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mart test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=mart node",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let path = |f: &str| dir.join(f).display().to_string();
    vec![
        ("MART_CLUSTER_TLS_CERT".into(), path("node.pem")),
        ("MART_CLUSTER_TLS_KEY".into(), path("node.key")),
        ("MART_CLUSTER_TLS_CA".into(), path("ca.pem")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speak_mutual_tls_and_a_node_without_a_certificate_cannot_join() {
    let dir = std::env::temp_dir().join(format!("mart-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tls = certificates(&dir);
    let db = TestDb::empty().await;
    let b_port = free_port();
    let mut b_spec = users_node(&db, b_port);
    b_spec.extra_env.extend(tls.clone());
    let _b = Node::start(b_spec).await;
    let mut a_spec = edge_node("node-a", b_port, COOKIE);
    a_spec.extra_env.extend(tls.clone());
    let a = Node::start(a_spec).await;
    a.wait_reachable("users", Duration::from_secs(30)).await;
    let api = Api::new(&a.http);
    let (_, token) = api.customer("encrypted").await;
    assert_eq!(
        api.get("/user_profile", Some(&token)).await.status(),
        StatusCode::OK
    );

    // C knows only A, and finds B through it (dialling B over TLS too).
    let mut c_spec = edge_node("node-c", a.cluster_port.expect("port"), COOKIE);
    c_spec.extra_env.extend(tls);
    let c = Node::start(c_spec).await;
    c.wait_reachable("users", Duration::from_secs(30)).await;
    assert_eq!(
        Api::new(&c.http)
            .get("/user_profile", Some(&token))
            .await
            .status(),
        StatusCode::OK
    );

    // Right cookie, no certificate: the TLS handshake refuses it.
    let plain = Node::start(edge_node("plain", b_port, COOKIE)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let plain_api = Api::new(&plain.http);
    problem(
        plain_api
            .register("nocert", "nocert@example.test", "tangerine-57-orbit")
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_checkout_works_through_the_edge_of_each_of_three_nodes() {
    let db = TestDb::empty().await;
    let sink = support::SmtpSink::start(free_port()).await;
    let ports = [free_port(), free_port(), free_port()];
    // Nodes 2 and 3 know only node 1: any live member is enough to join.
    let node = |i: usize, services: &str| {
        let mut spec = NodeSpec::member(&db.url, &ports, i, services);
        if i > 0 {
            spec.peers = vec![ports[0]];
        }
        spec
    };
    let n1 = Node::start(node(0, "users,products")).await;
    let n2 = Node::start(node(1, "orders,payments")).await;
    // Node 3 also runs the Kafka bridge, as in docker-compose.yml.
    let prefix = format!("mart-test-{}", uuid::Uuid::new_v4().simple());
    let topics: Vec<String> = ["orders", "payments"]
        .iter()
        .map(|s| format!("{prefix}.{s}.v1"))
        .collect();
    let (_kafka, bootstrap) = support::kafka::mock_cluster(&topics);
    let mut n3 = node(2, "inventory,notifications");
    n3.extra_env.extend([
        (
            "MART_SMTP_URL".to_owned(),
            format!("smtp://127.0.0.1:{}", sink.port),
        ),
        ("MART_KAFKA_BROKERS".into(), bootstrap.clone()),
        ("MART_KAFKA_TOPIC_PREFIX".into(), prefix),
        (
            "MART_KAFKA_PARTITIONS".into(),
            support::kafka::PARTITIONS.to_string(),
        ),
    ]);
    let n3 = Node::start(n3).await;
    for n in [&n1, &n2, &n3] {
        n.wait_ready(Duration::from_secs(30)).await;
        // Ready means each node can do its own job; the checkout needs all six.
        for service in support::SERVICES {
            n.wait_reachable(service, Duration::from_secs(30)).await;
        }
    }
    let (e1, e2, e3) = (Api::new(&n1.http), Api::new(&n2.http), Api::new(&n3.http));

    // Each step through a different node's edge.
    let (_, token) = e3.customer("roamer").await;
    let admin = e2.admin_token().await;
    let kettle = e3.stocked_product(&admin, "Kettle", 3999, 10).await;
    let order: Value = e1
        .post_json(
            "/orders/",
            Some(&token),
            serde_json::json!({"product_id": kettle, "quantity": 2}),
        )
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(order["status"], "awaiting_payment", "{order}");
    let id = order["id"].as_str().expect("id").to_owned();
    let payment: Value = e3
        .post_json(
            "/payments/",
            Some(&token),
            serde_json::json!({"order_id": id}),
        )
        .await
        .json()
        .await
        .expect("payment");
    let url = payment["checkout_url"].as_str().expect("url");
    assert_eq!(support::pay_at_checkout(url).await, StatusCode::SEE_OTHER);
    let mut status = Value::Null;
    for _ in 0..200 {
        status = e1.get_json(&format!("/orders/{id}"), Some(&token)).await["status"].clone();
        if status == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "paid");
    let stock = e2
        .get_json(&format!("/inventory/{kettle}"), Some(&admin))
        .await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(8), Some(0))
    );

    // Mail leaves from node 3, for events written on nodes 1 and 2.
    for _ in 0..200 {
        if sink.to("roamer@example.test").len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sink.to("roamer@example.test").len(),
        3,
        "welcome, order received, paid"
    );
    let view = e1.get_json("/cluster", Some(&admin)).await;
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3), "{view}");

    // Kafka carries the order and its payment, mirrored from node 2's outboxes
    // by node 3's bridge.
    let started = Instant::now();
    let mut types: Vec<String> = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        let records = support::kafka::read_all(&bootstrap, &topics);
        types = records
            .iter()
            .filter(|r| r.event["data"]["order_id"] == id.as_str())
            .filter_map(|r| r.event["type"].as_str().map(str::to_owned))
            .collect();
        types.sort();
        if types.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        types,
        [
            "mart.order.paid",
            "mart.order.placed",
            "mart.payment.created",
            "mart.payment.succeeded"
        ],
    );
}

/// Every group a `mart` node's actors join, as a peer sees them.
fn mart_groups() -> Vec<String> {
    mart_schema::Service::ALL
        .iter()
        .flat_map(|s| {
            [
                s.group(),
                s.subscribers_group(),
                format!("{}.owners", s.group()),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_an_authenticated_peer_do_not_crash_a_node() {
    use ractor::Actor;
    use ractor::message::SerializedMessage;

    let db = TestDb::empty().await;
    let port = free_port();
    let mut spec = NodeSpec::single(&db.url);
    spec.name = "target".into();
    spec.cluster_port = Some(port);
    spec.cookie = Some(COOKIE.into());
    let node = Node::start(spec).await;
    node.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;

    // This test process joins as a peer: right cookie, hostile frames.
    let server = ractor_cluster::NodeServer::new(
        free_port(),
        COOKIE.into(),
        "prober".into(),
        "127.0.0.1".into(),
        None,
        None,
    );
    let (server, _) = Actor::spawn(None, server, ()).await.expect("node server");
    ractor_cluster::client_connect(&server, format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let started = Instant::now();
    let targets = loop {
        let remote: Vec<ractor::ActorCell> = mart_groups()
            .iter()
            .flat_map(ractor::pg::get_members)
            .filter(|c| !c.get_id().is_local())
            .collect();
        if remote.len() >= 8 {
            break remote;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node's groups never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // ractor_cluster frames each field as an 8-byte length and its bytes.
    let framed = |payload: &[u8]| {
        let mut frame = (payload.len() as u64).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    };
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 3],
        (0..=255u8).collect(),
        u64::MAX.to_be_bytes().to_vec(),
        framed(b"\xff\x00 not json"),
        framed(br#"{"Ok": "a string where a request should be"}"#),
        framed(br#"{"Ok": [null, {"lines": [{"quantity": -1}]}]}"#),
        framed(&[b'['; 10_000]),
    ];
    let variants = [
        "Reserve",
        "Op",
        "Levels",
        "Transition",
        "Deliver",
        "Place",
        "Login",
        "Create",
        "Sweep",
        "NoSuchVariant",
    ];
    let mut replies = Vec::new();
    for cell in &targets {
        for variant in variants {
            for args in &garbage {
                let _ = cell.send_serialized(SerializedMessage::Cast {
                    variant: variant.into(),
                    args: args.clone(),
                    metadata: Some(args.clone()),
                });
                let (tx, rx) = ractor::concurrency::oneshot();
                let _ = cell.send_serialized(SerializedMessage::Call {
                    variant: variant.into(),
                    args: args.clone(),
                    reply: tx.into(),
                    metadata: None,
                });
                replies.push(rx);
            }
        }
    }
    // Calls of known variants are answered (with an error the payload decodes
    // into); unknown ones are dropped. None hangs or crashes the node.
    let answered = futures::future::join_all(
        replies
            .into_iter()
            .map(|rx| tokio::time::timeout(Duration::from_secs(5), rx)),
    )
    .await
    .into_iter()
    .filter(|r| matches!(r, Ok(Ok(_))))
    .count();
    assert!(answered > 0, "no handler saw a frame");

    // The node is alive and every service still works end to end.
    node.wait_ready(Duration::from_secs(30)).await;
    let (_, token) = api.customer("afterwards").await;
    let lamp = api.stocked_product(&admin, "Lamp", 1500, 3).await;
    let order = api
        .post_json(
            "/orders/",
            Some(&token),
            serde_json::json!({"product_id": lamp, "quantity": 1}),
        )
        .await;
    assert_eq!(order.status(), StatusCode::CREATED);
    assert!(
        !node.log_text().contains("panicked"),
        "a frame made the node panic"
    );
    server.stop(None);
}

/// docker-compose gives every node the same peer list, naming each node:
/// a node does not count itself as an unreachable peer.
#[tokio::test]
async fn a_peer_list_naming_the_node_itself_shows_no_unreachable_peer() {
    let db = TestDb::empty().await;
    let port = free_port();
    let mut spec = NodeSpec::member(&db.url, &[port], 0, "all");
    spec.peers = vec![port];
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    let view: Value = api.get_json("/cluster", Some(&admin)).await;
    let nodes = view["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{view}");
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{view}");
}
