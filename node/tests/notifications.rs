//! Emails over real SMTP: exactly one per (event, template), nothing lost while
//! the server is down, permanent rejections recorded.

mod support;

use std::time::{Duration, Instant};

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, Node, NodeSpec, SmtpSink, free_port, problem};

async fn node_with_smtp(db: &TestDb, smtp_port: u16) -> (Node, Api, String) {
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env.push((
        "MART_SMTP_URL".into(),
        format!("smtp://127.0.0.1:{smtp_port}"),
    ));
    spec.extra_env
        .push(("MART_MAIL_FROM".into(), "shop <shop@example.test>".into()));
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    (node, api, admin)
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn subject(message: &support::Received) -> String {
    // Long headers are folded onto indented continuation lines.
    let mut lines = message
        .data
        .lines()
        .skip_while(|l| !l.starts_with("Subject: "));
    let mut subject = lines
        .next()
        .and_then(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_owned();
    for more in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        subject.push(' ');
        subject.push_str(more.trim());
    }
    subject
}

/// Places an order for two kettles and pays it through the test checkout page.
async fn order_and_pay(api: &Api, admin: &str, token: &str) -> String {
    let kettle = api.stocked_product(admin, "Kettle", 3999, 10).await;
    let order: Value = api
        .post_json(
            "/orders/",
            Some(token),
            json!({"product_id": kettle, "quantity": 2}),
        )
        .await
        .json()
        .await
        .expect("order");
    let order_id = order["id"].as_str().expect("id").to_owned();
    let payment: Value = api
        .post_json("/payments/", Some(token), json!({"order_id": order_id}))
        .await
        .json()
        .await
        .expect("payment");
    let url = payment["checkout_url"].as_str().expect("checkout");
    support::pay_at_checkout(url).await;
    let path = format!("/orders/{order_id}");
    until(
        "the order to be paid",
        Duration::from_secs(20),
        async || api.get_json(&path, Some(token)).await["status"] == "paid",
    )
    .await;
    order_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_flow_sends_exactly_the_expected_emails_once() {
    let db = TestDb::empty().await;
    let sink = SmtpSink::start(free_port()).await;
    let (_node, api, admin) = node_with_smtp(&db, sink.port).await;
    let (_, token) = api.customer("shopper").await;
    let me = "shopper@example.test";

    let order = order_and_pay(&api, &admin, &token).await;
    let path = format!("/orders/{order}");
    api.patch(&path, &admin, json!({"status": "shipped"})).await;
    api.patch(&path, &admin, json!({"status": "delivered"}))
        .await;

    until(
        "five emails to the shopper",
        Duration::from_secs(30),
        async || sink.to(me).len() >= 5,
    )
    .await;
    let mut subjects: Vec<String> = sink.to(me).iter().map(subject).collect();
    subjects.sort();
    let short = &order;
    let mut expected = vec![
        "Welcome to mart, shopper".to_owned(),
        format!("We received your order {short}"),
        format!("Payment received: order {short} is confirmed"),
        format!("Your order {short} has shipped"),
        format!("Your order {short} was delivered"),
    ];
    expected.sort();
    assert_eq!(subjects, expected);
    let placed = sink
        .to(me)
        .into_iter()
        .find(|m| subject(m).starts_with("We received"))
        .expect("placed");
    assert!(
        placed.data.contains("2 x Kettle at 39.99 USD"),
        "{}",
        placed.data
    );
    assert!(placed.data.contains("Total: 79.98 USD"));
    assert!(placed.data.contains("text/html"), "an HTML alternative");
    assert_eq!(
        sink.to("root@example.test").len(),
        1,
        "the admin got their welcome only"
    );

    // The sink sees a message before the sender records it as sent: the
    // DATA reply and the status update are two steps.
    until(
        "five notifications recorded as sent",
        Duration::from_secs(10),
        async || {
            let mine = api.get_json("/my-notifications/", Some(&token)).await;
            mine["items"].as_array().is_some_and(|items| {
                items.len() == 5 && items.iter().all(|n| n["status"] == "sent")
            })
        },
    )
    .await;
    let mine = api.get_json("/my-notifications/", Some(&token)).await;
    let items = mine["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert!(
        items
            .iter()
            .all(|n| n["recipient"] == me && n["attempts"] == 1),
        "{items:?}"
    );
    for field in [
        "id",
        "user_id",
        "template",
        "subject",
        "recipient",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
    ] {
        assert!(items[0].get(field).is_some(), "{field}");
    }
    let all = api
        .get_json("/notifications/?status=sent&limit=2", Some(&admin))
        .await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    problem(
        api.get("/notifications/", Some(&token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let one = items[0]["id"].as_str().expect("id");
    assert_eq!(
        api.get_json(&format!("/notifications/{one}"), Some(&admin))
            .await["id"],
        one
    );

    // Every event delivered again from the start: not one more email.
    let client = db.pool.get().await.expect("client");
    for schema in ["users", "orders"] {
        client
            .execute(&format!("update {schema}.outbox_cursors set delivered_seq = 0 where subscriber = 'mart.notifications.events'"), &[])
            .await
            .expect("rewind");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.to(me).len(), 5, "a redelivered event sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_loses_nothing_and_a_rejection_is_recorded() {
    let db = TestDb::empty().await;
    let port = free_port();
    let (node, api, admin) = node_with_smtp(&db, port).await;
    let (_, token) = api.customer("patient").await;
    let refused = api
        .register("bouncer", "reject-me@example.test", "tangerine-57-orbit")
        .await;
    assert_eq!(refused.status(), StatusCode::CREATED);
    order_and_pay(&api, &admin, &token).await;

    // The server is down: the emails wait, with the reason.
    until("a failed attempt", Duration::from_secs(20), async || {
        let page = api
            .get_json("/notifications/?status=pending", Some(&admin))
            .await;
        page["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|n| n["attempts"].as_i64() >= Some(1) && n["last_error"].is_string())
        })
    })
    .await;

    // Retried every second, said once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = node.log_text();
    assert_eq!(
        log.matches("mail delivery is unavailable").count(),
        1,
        "{log}"
    );

    // It comes back: everything arrives, once; the rejected address is failed.
    let sink = SmtpSink::start(port).await;
    until("the held emails", Duration::from_secs(40), async || {
        sink.to("patient@example.test").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.to("patient@example.test").len(),
        3,
        "welcome, placed, paid: once each"
    );
    until(
        "the rejection to be recorded",
        Duration::from_secs(40),
        async || {
            let page = api
                .get_json("/notifications/?status=failed", Some(&admin))
                .await;
            page["items"].as_array().is_some_and(|items| {
                items.iter().any(|n| {
                    n["recipient"] == "reject-me@example.test"
                        && n["last_error"].as_str().is_some_and(|e| e.contains("550"))
                })
            })
        },
    )
    .await;
    assert!(sink.to("reject-me@example.test").is_empty());
    assert_eq!(node.log_text().matches("mail delivery is back").count(), 1);
    let client = db.pool.get().await.expect("client");
    let failed: i64 = client
        .query_one(
            "select count(*) from notifications.outbox where event_type = 'notification.failed'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(failed, 1);
}
