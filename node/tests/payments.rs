//! Checkout end to end over HTTP: orders paid through mart's Stripe test server
//! (its page, its signed webhooks), with every ordering of redirect and webhook.

mod support;

use std::time::Duration;

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, Node, NodeSpec, StripeServer, WEBHOOK_SECRET, free_port, problem};

struct Shop {
    db: TestDb,
    node: Node,
    api: Api,
    admin: String,
    /// A client that does not follow redirects, like a careful browser test.
    browser: reqwest::Client,
}

async fn shop_with(env: Vec<(String, String)>, http_port: Option<u16>, db: Option<TestDb>) -> Shop {
    let db = match db {
        Some(db) => db,
        None => TestDb::empty().await,
    };
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env.extend(env);
    spec.http_port = http_port;
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Shop {
        db,
        node,
        api,
        admin,
        browser,
    }
}

/// An order awaiting payment and its checkout.
struct Checkout {
    token: String,
    order: String,
    product: String,
    payment: Value,
    session: String,
    stripe: String,
}

impl Shop {
    async fn product(&self, stock: i64) -> String {
        self.api
            .stocked_product(&self.admin, "Kettle", 3999, stock)
            .await
    }

    async fn checkout(&self, who: &str) -> Checkout {
        let (_, token) = self.api.customer(who).await;
        let product = self.product(10).await;
        let order: Value = self
            .api
            .post_json(
                "/orders/",
                Some(&token),
                json!({"product_id": product, "quantity": 2}),
            )
            .await
            .json()
            .await
            .expect("order");
        let order = order["id"].as_str().expect("order id").to_owned();
        let response = self
            .api
            .post_json("/payments/", Some(&token), json!({"order_id": order}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let payment: Value = response.json().await.expect("payment");
        assert_eq!(payment["status"], "pending");
        assert_eq!(payment["amount"], 2 * 3999);
        let url = payment["checkout_url"]
            .as_str()
            .expect("checkout url")
            .to_owned();
        let (stripe, session) = url.split_once("/c/pay/").expect("test server checkout url");
        Checkout {
            token,
            order,
            product,
            session: session.to_owned(),
            stripe: stripe.to_owned(),
            payment,
        }
    }

    async fn order_status(&self, c: &Checkout) -> String {
        self.api
            .get_json(&format!("/orders/{}", c.order), Some(&c.token))
            .await["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn eventually_paid(&self, c: &Checkout) {
        for _ in 0..200 {
            if self.order_status(c).await == "paid" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("order never became paid; log:\n{}", self.node.log_text());
    }

    async fn success(&self, session: &str) -> reqwest::Response {
        self.browser
            .get(self.api.url(&format!(
                "/stripe-callback/payment-success/?session_id={session}"
            )))
            .send()
            .await
            .expect("success callback")
    }

    /// How many events of `kind` the outboxes hold for the order or payment.
    async fn events(&self, schema: &str, kind: &str) -> i64 {
        let client = self.db.pool.get().await.expect("client");
        client
            .query_one(
                &format!("select count(*) from {schema}.outbox where event_type = $1"),
                &[&kind],
            )
            .await
            .expect("count")
            .get(0)
    }

    async fn stock(&self, product: &str) -> Value {
        self.api
            .get_json(&format!("/inventory/{product}"), Some(&self.admin))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_pays_on_the_checkout_page_and_the_order_is_paid_once() {
    let shop = shop_with(vec![], None, None).await;
    let c = shop.checkout("payer").await;

    // The page has Pay and Cancel buttons.
    let page = shop
        .browser
        .get(c.payment["checkout_url"].as_str().expect("url"))
        .send()
        .await
        .expect("page");
    let html = page.text().await.expect("html");
    assert!(html.contains(">Pay<") && html.contains(">Cancel<"));

    // Pay: the webhook is delivered, then the browser is redirected (303).
    let paid = shop
        .browser
        .post(format!("{}/c/pay/{}/pay", c.stripe, c.session))
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let location = paid.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.ends_with(&format!(
            "/stripe-callback/payment-success/?session_id={}",
            c.session
        )),
        "{location}"
    );

    // The redirect (JSON for API clients, HTML for browsers); reloading is harmless.
    for _ in 0..3 {
        let outcome: Value = shop
            .browser
            .get(&location)
            .send()
            .await
            .expect("redirect")
            .json()
            .await
            .expect("json");
        assert_eq!(
            outcome,
            json!({"order_id": c.order, "payment_id": c.payment["id"], "status": "succeeded"})
        );
    }
    let page = shop
        .browser
        .get(&location)
        .header("accept", "text/html")
        .send()
        .await
        .expect("html");
    // A browser is sent on to the storefront's page of the order.
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/#/orders/{}", c.order).as_str())
    );

    shop.eventually_paid(&c).await;
    assert_eq!(
        shop.stock(&c.product).await["on_hand"],
        8,
        "the reservation became a sale"
    );
    assert_eq!(shop.stock(&c.product).await["reserved"], 0);
    assert_eq!(shop.events("payments", "payment.succeeded").await, 1);
    assert_eq!(shop.events("orders", "order.paid").await, 1);

    // The node that did the work counted it (GET /metrics, Prometheus text).
    let metrics = shop.api.metrics().await;
    let at_least_one = |name: &str, labels: &[(&str, &str)]| {
        let value = support::metric(&metrics, name, labels);
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{name} {labels:?} = {value:?} in:\n{metrics}"
        );
    };
    for (service, kind) in [
        ("orders", "order.placed"),
        ("orders", "order.paid"),
        ("inventory", "inventory.reserved"),
        ("inventory", "inventory.committed"),
        ("payments", "payment.created"),
        ("payments", "payment.succeeded"),
    ] {
        at_least_one(
            "mart_domain_events_total",
            &[("service", service), ("type", kind)],
        );
    }
    at_least_one(
        "mart_http_requests_total",
        &[("route", "/orders"), ("method", "POST"), ("status", "2xx")],
    );
    at_least_one(
        "mart_http_request_duration_seconds_count",
        &[("route", "/orders/{id}"), ("method", "GET")],
    );
    at_least_one(
        "mart_service_requests_total",
        &[("service", "orders"), ("outcome", "ok")],
    );
    at_least_one(
        "mart_service_calls_total",
        &[("service", "inventory"), ("outcome", "ok")],
    );
    at_least_one("mart_entity_actors", &[("service", "orders")]);
    // Every metric the node exposes is explained in the README's table.
    let readme = include_str!("../../README.md");
    for line in metrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            assert!(
                readme.contains(&format!("`{name}")),
                "{name} is not in the README's table of metrics"
            );
        }
    }
    at_least_one("mart_db_pool_max_connections", &[("service", "orders")]);
    at_least_one(
        "mart_db_pool_checkout_seconds_count",
        &[("service", "orders")],
    );
    // Taken and answered in pairs: never below zero, and no request of the
    // checkout left hanging (a background sweep may be in flight).
    let in_flight = support::metric(
        &metrics,
        "mart_service_requests_in_flight",
        &[("service", "orders")],
    );
    assert!(
        in_flight.is_some_and(|n| (0.0..=2.0).contains(&n)),
        "{in_flight:?} in:\n{metrics}"
    );
    assert!(
        support::metric(
            &metrics,
            "mart_outbox_pending_events",
            &[("service", "orders")]
        )
        .is_some(),
        "{metrics}"
    );
    let payment = shop
        .api
        .get_json(
            &format!("/payments/{}", c.payment["id"].as_str().expect("id")),
            Some(&c.token),
        )
        .await;
    assert_eq!(payment["status"], "succeeded");

    // Paying again for a paid order is refused.
    problem(
        shop.api
            .post_json("/payments/", Some(&c.token), json!({"order_id": c.order}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    // The admin ships and delivers it; a shipped order can no longer be cancelled.
    let path = format!("/orders/{}", c.order);
    problem(
        shop.api
            .patch(&path, &c.token, json!({"status": "shipped"}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        shop.api
            .patch(&path, &shop.admin, json!({"status": "shipped"}))
            .await
            .status(),
        StatusCode::OK
    );
    problem(
        shop.api
            .patch(&path, &c.token, json!({"status": "cancelled"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    let delivered: Value = shop
        .api
        .patch(&path, &shop.admin, json!({"status": "delivered"}))
        .await
        .json()
        .await
        .expect("delivered");
    assert_eq!(delivered["status"], "delivered");
    for kind in ["order.shipped", "order.delivered"] {
        assert_eq!(shop.events("orders", kind).await, 1, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_before_webhook_and_duplicated_webhooks_confirm_once() {
    let shop = shop_with(vec![], None, None).await;
    let c = shop.checkout("early-bird").await;
    // Paid at Stripe, webhook held back: the redirect confirms.
    let paid = shop
        .browser
        .post(format!(
            "{}/_test/sessions/{}/pay?webhook=false",
            c.stripe, c.session
        ))
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status(), StatusCode::OK);
    let outcome: Value = shop
        .success(&c.session)
        .await
        .json()
        .await
        .expect("outcome");
    assert_eq!(outcome["status"], "succeeded");
    shop.eventually_paid(&c).await;

    // The webhook arrives late, then twice more (Stripe retries): nothing changes.
    let mut delivered = Value::Null;
    for _ in 0..3 {
        delivered = shop
            .browser
            .post(format!("{}/_test/sessions/{}/webhook", c.stripe, c.session))
            .send()
            .await
            .expect("webhook")
            .json()
            .await
            .expect("event");
    }
    // The very same event replayed by someone: accepted, ignored.
    let replay = shop
        .api
        .client
        .post(shop.api.url("/stripe/webhook"))
        .header(
            "stripe-signature",
            delivered["signature"].as_str().expect("sig"),
        )
        .body(delivered["event"].as_str().expect("event").to_owned())
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shop.events("payments", "payment.succeeded").await, 1);
    assert_eq!(shop.events("orders", "order.paid").await, 1);

    // Tampered body, or a signature that is not Stripe's: 400.
    let tampered = delivered["event"]
        .as_str()
        .expect("event")
        .replace("checkout.session.completed", "checkout.session.expired");
    let forged = shop
        .api
        .client
        .post(shop.api.url("/stripe/webhook"))
        .header(
            "stripe-signature",
            delivered["signature"].as_str().expect("sig"),
        )
        .body(tampered)
        .send()
        .await
        .expect("forged");
    problem(forged, StatusCode::BAD_REQUEST).await;
    let unsigned = shop
        .api
        .client
        .post(shop.api.url("/stripe/webhook"))
        .body("{}")
        .send()
        .await
        .expect("unsigned");
    problem(unsigned, StatusCode::BAD_REQUEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_success_callback_does_not_pay_and_the_reconciler_settles_silent_payments() {
    let shop = shop_with(
        vec![("MART_PAYMENT_RECONCILE_AFTER".into(), "1s".into())],
        None,
        None,
    )
    .await;
    let c = shop.checkout("forger").await;

    // The shopper never paid: visiting the success URL changes nothing.
    let outcome: Value = shop
        .success(&c.session)
        .await
        .json()
        .await
        .expect("outcome");
    assert_eq!(outcome["status"], "pending");
    assert_eq!(shop.order_status(&c).await, "awaiting_payment");
    problem(shop.success("cs_test_unknown").await, StatusCode::NOT_FOUND).await;
    problem(
        shop.browser
            .get(shop.api.url("/stripe-callback/payment-success/"))
            .send()
            .await
            .expect("no id"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Cancel at Stripe: the attempt fails, the order can still be paid.
    let failed: Value = shop
        .browser
        .get(shop.api.url(&format!(
            "/stripe-callback/payment-fail/?session_id={}",
            c.session
        )))
        .send()
        .await
        .expect("fail")
        .json()
        .await
        .expect("json");
    assert_eq!(failed["status"], "failed");
    assert_eq!(shop.order_status(&c).await, "awaiting_payment");
    // Its checkout is closed: the old page can no longer take the money.
    let old_page = c.payment["checkout_url"].as_str().expect("url");
    assert_eq!(
        support::pay_at_checkout(old_page).await,
        StatusCode::CONFLICT
    );

    // A second attempt is paid at Stripe, and neither webhook nor redirect
    // arrives: the reconciler asks Stripe and settles it.
    let retry: Value = shop
        .api
        .post_json("/payments/", Some(&c.token), json!({"order_id": c.order}))
        .await
        .json()
        .await
        .expect("retry");
    assert_ne!(retry["id"], c.payment["id"]);
    let session = retry["checkout_url"]
        .as_str()
        .expect("url")
        .rsplit('/')
        .next()
        .expect("session")
        .to_owned();
    shop.browser
        .post(format!(
            "{}/_test/sessions/{session}/pay?webhook=false",
            c.stripe
        ))
        .send()
        .await
        .expect("pay");
    shop.eventually_paid(&c).await;
    // The failed attempt stays failed: a success callback for it changes nothing.
    let old: Value = shop.success(&c.session).await.json().await.expect("old");
    assert_eq!(old["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payment_requests_share_one_checkout_and_keys_replay() {
    let shop = shop_with(vec![], None, None).await;
    let (_, token) = shop.api.customer("double-clicker").await;
    let (_, stranger) = shop.api.customer("stranger").await;
    let product = shop.product(5).await;
    let order: Value = shop
        .api
        .post_json(
            "/orders/",
            Some(&token),
            json!({"product_id": product, "quantity": 1}),
        )
        .await
        .json()
        .await
        .expect("order");
    let body = json!({"order_id": order["id"]});

    let clicks = (0..4).map(|_| shop.api.post_json("/payments/", Some(&token), body.clone()));
    let payments: Vec<Value> = futures::future::join_all(
        futures::future::join_all(clicks)
            .await
            .into_iter()
            .map(|r| async move { r.json::<Value>().await.expect("payment") }),
    )
    .await;
    assert!(
        payments.iter().all(|p| p["id"] == payments[0]["id"]),
        "{payments:?}"
    );
    assert!(
        payments
            .iter()
            .all(|p| p["checkout_url"] == payments[0]["checkout_url"])
    );

    // Someone else's order looks absent.
    problem(
        shop.api
            .post_json("/payments/", Some(&stranger), body.clone())
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        shop.api
            .get(
                &format!("/payments/{}", payments[0]["id"].as_str().expect("id")),
                Some(&stranger),
            )
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Idempotency-Key: the first answer again, flagged.
    let keyed = |key: &'static str| {
        shop.api
            .client
            .post(shop.api.url("/payments/"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = keyed("pay-1").await.expect("first");
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = keyed("pay-1").await.expect("again");
    assert_eq!(again.status(), StatusCode::CREATED, "{:?}", again.headers());
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_paid_order_refunds_it_and_puts_its_stock_back() {
    let shop = shop_with(vec![], None, None).await;
    let c = shop.checkout("regretful").await;
    shop.browser
        .post(format!("{}/c/pay/{}/pay", c.stripe, c.session))
        .send()
        .await
        .expect("pay");
    shop.eventually_paid(&c).await;

    let cancelled: Value = shop
        .api
        .patch(
            &format!("/orders/{}", c.order),
            &c.token,
            json!({"status": "cancelled"}),
        )
        .await
        .json()
        .await
        .expect("cancel");
    assert_eq!(cancelled["status"], "cancelled");
    let payment_path = format!("/payments/{}", c.payment["id"].as_str().expect("id"));
    let mut status = Value::Null;
    for _ in 0..200 {
        status = shop.api.get_json(&payment_path, Some(&c.token)).await["status"].clone();
        if status == "refunded" && shop.events("orders", "order.refunded").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "refunded");
    assert_eq!(shop.events("orders", "order.refunded").await, 1);
    assert_eq!(shop.events("payments", "payment.refunded").await, 1);
    // The kettles never shipped: both go back on hand, once.
    let stock = shop.stock(&c.product).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(10), Some(0)),
        "{stock}"
    );
    assert_eq!(shop.events("inventory", "inventory.returned").await, 1);
    let reservation = shop
        .api
        .get_json(
            &format!("/inventory/reservations/{}", c.order),
            Some(&shop.admin),
        )
        .await;
    assert_eq!(
        reservation["lines"][0]["status"], "returned",
        "{reservation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_between_stripe_and_the_order_finishes_after_restart() {
    let db = TestDb::empty().await;
    let http_port = free_port();
    let stripe = StripeServer::start(&format!("http://127.0.0.1:{http_port}/stripe/webhook")).await;
    let mut env = stripe.env();
    env.push(("MART_PAYMENT_RECONCILE_AFTER".into(), "1s".into()));
    let mut shop = shop_with(env, Some(http_port), Some(db)).await;
    let c = shop.checkout("unlucky").await;
    assert!(c.stripe.starts_with(&stripe.base));

    // Paid at Stripe; the node dies before it hears about it.
    shop.node.kill();
    shop.browser
        .post(format!(
            "{}/_test/sessions/{}/pay?webhook=false",
            c.stripe, c.session
        ))
        .send()
        .await
        .expect("pay");
    shop.node.restart();
    shop.node.wait_live().await;
    shop.eventually_paid(&c).await;
    assert_eq!(shop.events("payments", "payment.succeeded").await, 1);

    // Our signatures verify with Stripe's own library.
    let delivered: Value = shop
        .browser
        .post(format!("{}/_test/sessions/{}/webhook", c.stripe, c.session))
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("event");
    let check = |secret: &str| {
        std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, stripe; stripe.Webhook.construct_event(sys.argv[1], sys.argv[2], sys.argv[3]); print('ok')",
                delivered["event"].as_str().unwrap_or_default(),
                delivered["signature"].as_str().unwrap_or_default(),
                secret,
            ])
            .output()
    };
    match check(WEBHOOK_SECRET) {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'stripe'") => {
            panic!("the `stripe` Python package is missing: pip install stripe (.ci/run does)")
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "stripe-python rejected our signature: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let wrong = check("whsec_wrong").expect("python");
            assert!(
                !wrong.status.success(),
                "stripe-python accepted a wrong secret"
            );
        }
        Err(e) => panic!("python3 not runnable: {e}"),
    }
}

/// The in-process test server forgets its sessions when the node restarts.
/// The reconciler hears Stripe's 404 for the lost session, expires that
/// attempt (once, not a warning forever), and the shopper pays anew, landing
/// on the storefront's configured return page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_lost_with_a_restart_expires_and_the_order_is_paid_anew() {
    let mut shop = shop_with(
        vec![
            ("MART_PAYMENT_RECONCILE_AFTER".into(), "1s".into()),
            (
                "MART_CHECKOUT_SUCCESS_URL".into(),
                "https://shop.example.com/orders/{ORDER_ID}?session={CHECKOUT_SESSION_ID}".into(),
            ),
        ],
        Some(free_port()),
        None,
    )
    .await;
    let c = shop.checkout("patient").await;
    shop.node.kill();
    shop.node.restart();
    shop.node.wait_ready(Duration::from_secs(60)).await;
    let payment = format!("/payments/{}", c.payment["id"].as_str().expect("id"));
    let mut status = Value::Null;
    for _ in 0..100 {
        status = shop.api.get_json(&payment, Some(&c.token)).await["status"].clone();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "expired", "log:\n{}", shop.node.log_text());
    assert_eq!(shop.order_status(&c).await, "awaiting_payment");

    let again: Value = shop
        .api
        .post_json("/payments/", Some(&c.token), json!({"order_id": c.order}))
        .await
        .json()
        .await
        .expect("a new attempt");
    assert_eq!(again["status"], "pending");
    let url = again["checkout_url"].as_str().expect("url");
    let paid = shop
        .browser
        .post(format!("{url}/pay"))
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let session = url.rsplit('/').next().expect("session");
    assert_eq!(
        paid.headers().get("location").and_then(|l| l.to_str().ok()),
        Some(
            format!(
                "https://shop.example.com/orders/{}?session={session}",
                c.order
            )
            .as_str()
        )
    );
    shop.eventually_paid(&c).await;
    let warnings = shop
        .node
        .log_text()
        .matches("Stripe does not know this checkout session")
        .count();
    assert_eq!(warnings, 1, "said once");
}

/// The test server speaks Stripe's wire format where clients notice: the key
/// as Basic auth (`curl -u sk_test_...:`), `resource_missing` for an unknown
/// id, and amounts in the currency's own minor units on the checkout page.
#[tokio::test]
async fn the_stripe_test_server_answers_as_stripe_does() {
    let stripe = StripeServer::start("http://127.0.0.1:9/nowhere").await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/v1/checkout/sessions", stripe.base))
        .basic_auth(support::STRIPE_KEY, Some(""))
        .form(&[
            ("mode", "payment"),
            ("success_url", "https://shop.example.com/ok"),
            ("cancel_url", "https://shop.example.com/no"),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", "jpy"),
            ("line_items[0][price_data][unit_amount]", "1500"),
            (
                "line_items[0][price_data][product_data][name]",
                "Matcha Whisk",
            ),
        ])
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("session");
    assert_eq!(created["object"], "checkout.session", "{created}");
    assert_eq!(created["amount_total"], 1500);
    let page = http
        .get(created["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("1500 JPY"), "{page}");
    assert!(!page.contains("15.00"), "{page}");

    let unknown = http
        .get(format!("{}/v1/checkout/sessions/cs_test_nope", stripe.base))
        .bearer_auth(support::STRIPE_KEY)
        .send()
        .await
        .expect("retrieve");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let error: Value = unknown.json().await.expect("error");
    assert_eq!(error["error"]["code"], "resource_missing");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let wrong = http
        .get(format!("{}/v1/checkout/sessions/cs_test_nope", stripe.base))
        .basic_auth("sk_test_wrong", Some(""))
        .send()
        .await
        .expect("retrieve");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}
