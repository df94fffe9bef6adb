//! Orders through the REST edge of a real `mart` process.

mod support;

use std::time::Duration;

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, Node, NodeSpec, problem};

struct Shop {
    _db: TestDb,
    _node: Node,
    api: Api,
    admin: String,
}

async fn shop_with(env: Vec<(String, String)>) -> Shop {
    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env.extend(env);
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    Shop {
        _db: db,
        _node: node,
        api,
        admin,
    }
}

impl Shop {
    /// A product with stock, once inventory knows it.
    async fn product(&self, name: &str, price: i64, currency: &str, stock: i64) -> String {
        let response = self
            .api
            .post_json(
                "/products/",
                Some(&self.admin),
                json!({"name": name, "price": price, "currency": currency, "stock": stock}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.expect("product")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        for _ in 0..200 {
            if self
                .api
                .get(&format!("/inventory/{id}"), Some(&self.admin))
                .await
                .status()
                == StatusCode::OK
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no stock for {name}");
    }

    async fn available(&self, product: &str) -> i64 {
        self.api
            .get_json(&format!("/inventory/{product}"), Some(&self.admin))
            .await["available"]
            .as_i64()
            .expect("available")
    }

    async fn order(&self, token: &str, body: Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .api
            .client
            .post(self.api.url("/orders/"))
            .bearer_auth(token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("order")
    }

    async fn set_status(&self, token: &str, order: &str, status: &str) -> reqwest::Response {
        self.api
            .patch(
                &format!("/orders/{order}"),
                token,
                json!({"status": status}),
            )
            .await
    }
}

#[tokio::test]
async fn an_order_is_priced_from_the_catalog_and_reserves_its_stock() {
    let shop = shop_with(vec![]).await;
    let (_, token) = shop.api.customer("buyer").await;
    let mug = shop.product("Mug", 1250, "usd", 10).await;
    let plate = shop.product("Plate", 800, "usd", 4).await;

    let response = shop
        .order(&token, json!({"items": [{"product_id": mug, "quantity": 2}, {"product_id": plate, "quantity": 3}]}), None)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["status"], "awaiting_payment");
    assert_eq!(order["total"], 2 * 1250 + 3 * 800);
    assert_eq!(order["currency"], "usd");
    assert_eq!(
        order["items"][0],
        json!({"product_id": mug, "name": "Mug", "unit_price": 1250, "quantity": 2, "line_total": 2500})
    );
    for field in ["id", "expires_at", "created_at"] {
        assert!(order.get(field).is_some(), "{field}");
    }
    // Times read back exactly as the 201 gave them (to the microsecond).
    let id = order["id"].as_str().expect("id");
    let stored = shop
        .api
        .get_json(&format!("/orders/{id}"), Some(&token))
        .await;
    for field in ["expires_at", "created_at", "updated_at"] {
        assert_eq!(stored[field], order[field], "{field}");
    }
    assert_eq!(
        (shop.available(&mug).await, shop.available(&plate).await),
        (8, 1)
    );

    // The seed's single-line body works too.
    let single = shop
        .order(&token, json!({"product_id": mug, "quantity": 1}), None)
        .await;
    assert_eq!(single.status(), StatusCode::CREATED);

    // Not enough stock: 409 naming the product and its line, as a 422 names
    // its field; nothing reserved.
    let short = problem(shop.order(&token, json!({"items": [{"product_id": mug, "quantity": 1}, {"product_id": plate, "quantity": 2}]}), None).await, StatusCode::CONFLICT).await;
    assert!(
        short["detail"].as_str().is_some_and(|d| d.contains(&plate)),
        "{short}"
    );
    assert_eq!(
        short["errors"],
        json!({"items[1].product_id": ["insufficient stock"]}),
        "{short}"
    );
    let short = problem(
        shop.order(&token, json!({"product_id": plate, "quantity": 2}), None)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        short["errors"],
        json!({"product_id": ["insufficient stock"]})
    );
    assert_eq!(
        (shop.available(&mug).await, shop.available(&plate).await),
        (7, 1)
    );
}

#[tokio::test]
async fn bad_orders_get_422_and_leave_nothing_behind() {
    let shop = shop_with(vec![]).await;
    let (_, token) = shop.api.customer("picky").await;
    let dollars = shop.product("Hat", 2000, "usd", 5).await;
    let euros = shop.product("Scarf", 1500, "eur", 5).await;
    let gone = shop.product("Old Thing", 100, "usd", 5).await;
    assert_eq!(
        shop.api
            .delete(&format!("/products/{gone}"), &shop.admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    let cases = [
        (json!({"items": []}), "items"),
        (
            json!({"items": [{"product_id": dollars, "quantity": 0}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"product_id": dollars, "quantity": 1001}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"product_id": uuid::Uuid::now_v7(), "quantity": 1}]}),
            "items[0].product_id",
        ),
        (
            json!({"items": [{"product_id": dollars, "quantity": 1}, {"product_id": gone, "quantity": 1}]}),
            "items[1].product_id",
        ),
        (
            json!({"items": [{"product_id": dollars, "quantity": 1}, {"product_id": euros, "quantity": 1}]}),
            "items",
        ),
    ];
    for (body, field) in cases {
        let problem = problem(
            shop.order(&token, body.clone(), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            problem["errors"][field].is_array(),
            "{body} should name {field}: {problem}"
        );
    }
    let negative = shop
        .order(
            &token,
            json!({"items": [{"product_id": dollars, "quantity": -2}]}),
            None,
        )
        .await;
    problem(negative, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        shop.api.get_json("/my-orders/", Some(&token)).await,
        json!({"items": [], "next_cursor": null})
    );
    assert_eq!(shop.available(&dollars).await, 5);
}

#[tokio::test]
async fn an_idempotency_key_makes_retries_safe() {
    let shop = shop_with(vec![]).await;
    let (_, token) = shop.api.customer("retrier").await;
    let (_, other) = shop.api.customer("neighbour").await;
    let lamp = shop.product("Lamp", 4500, "usd", 20).await;
    let body = json!({"items": [{"product_id": lamp, "quantity": 2}]});

    let first = shop.order(&token, body.clone(), Some("checkout-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("order");

    let again = shop.order(&token, body.clone(), Some("checkout-1")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.json::<Value>().await.expect("replay"), first);

    let changed = shop
        .order(
            &token,
            json!({"items": [{"product_id": lamp, "quantity": 3}]}),
            Some("checkout-1"),
        )
        .await;
    problem(changed, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Keys are per user.
    assert_eq!(
        shop.order(&other, body.clone(), Some("checkout-1"))
            .await
            .status(),
        StatusCode::CREATED
    );

    // Duplicates racing each other: one order.
    let racing = (0..6).map(|_| shop.order(&token, body.clone(), Some("checkout-2")));
    let statuses: Vec<StatusCode> = futures::future::join_all(racing)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let mine = shop.api.get_json("/my-orders/", Some(&token)).await;
    assert_eq!(
        mine["items"].as_array().map(Vec::len),
        Some(2),
        "one order per key"
    );
    assert_eq!(shop.available(&lamp).await, 20 - 2 * 3);
}

#[tokio::test]
async fn owners_and_admins_see_and_move_orders_by_the_rules() {
    let shop = shop_with(vec![]).await;
    let (_, alice) = shop.api.customer("alice").await;
    let (_, bob) = shop.api.customer("bob").await;
    let chair = shop.product("Chair", 9900, "usd", 10).await;
    let place = async |token: &str| -> String {
        let order: Value = shop
            .order(token, json!({"product_id": chair, "quantity": 1}), None)
            .await
            .json()
            .await
            .expect("order");
        order["id"].as_str().expect("id").to_owned()
    };
    let first = place(&alice).await;
    let second = place(&alice).await;
    place(&bob).await;

    // Reading: own orders only; an admin sees all; filters; someone else's is 404.
    let alices = shop.api.get_json("/orders/", Some(&alice)).await;
    assert_eq!(alices["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        shop.api
            .get_json("/orders?limit=2", Some(&shop.admin))
            .await["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(
        shop.api
            .get_json("/orders?limit=2", Some(&shop.admin))
            .await["next_cursor"]
            .is_string()
    );
    problem(
        shop.api.get(&format!("/orders/{first}"), Some(&bob)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        shop.api.get("/orders/not-an-id", Some(&bob)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        shop.set_status(&bob, &first, "cancelled").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        shop.api.get("/orders?status=lost", Some(&alice)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // A customer cancels their unpaid order: stock comes back; twice is 409.
    assert_eq!(shop.available(&chair).await, 7);
    let cancelled: Value = shop
        .set_status(&alice, &first, "cancelled")
        .await
        .json()
        .await
        .expect("cancelled");
    assert_eq!(cancelled["status"], "cancelled");
    let again = problem(
        shop.set_status(&alice, &first, "cancelled").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        again["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cancelled")),
        "names the current status: {again}"
    );
    for _ in 0..100 {
        if shop.available(&chair).await == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shop.available(&chair).await, 8);
    let filtered = shop
        .api
        .get_json("/orders?status=cancelled", Some(&alice))
        .await;
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(1));

    // Customers cannot ship; an unpaid order cannot be shipped by anyone.
    problem(
        shop.set_status(&alice, &second, "shipped").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        shop.set_status(&shop.admin, &second, "shipped").await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(
        shop.set_status(&alice, &second, "paid").await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // The seed's query form; an admin may cancel anything not yet shipped.
    let response = shop
        .api
        .client
        .patch(shop.api.url(&format!("/orders/{second}?status=cancelled")))
        .bearer_auth(&shop.admin)
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unpaid_order_expires_and_gives_its_stock_back() {
    let shop = shop_with(vec![("MART_RESERVATION_TTL".into(), "2s".into())]).await;
    let (_, token) = shop.api.customer("slowpoke").await;
    let desk = shop.product("Desk", 30000, "usd", 3).await;
    let order: Value = shop
        .order(&token, json!({"product_id": desk, "quantity": 2}), None)
        .await
        .json()
        .await
        .expect("order");
    let path = format!("/orders/{}", order["id"].as_str().expect("id"));
    assert_eq!(shop.available(&desk).await, 1);
    let mut status = Value::Null;
    for _ in 0..300 {
        status = shop.api.get_json(&path, Some(&token)).await["status"].clone();
        if status == "expired" && shop.available(&desk).await == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "expired");
    assert_eq!(shop.available(&desk).await, 3);
    problem(
        shop.set_status(&token, order["id"].as_str().expect("id"), "cancelled")
            .await,
        StatusCode::CONFLICT,
    )
    .await;
}
