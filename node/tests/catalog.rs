//! The catalog and inventory through the REST edge of real `mart` processes.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, COOKIE, Node, NodeSpec, free_port, problem};

async fn single_node() -> (TestDb, Node, Api, String) {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    (db, node, api, admin)
}

/// Node a hosts everything; node b is only an edge, joined through a.
async fn two_nodes(db: &TestDb) -> (Node, Node, Api, Api) {
    let a_port = free_port();
    let a = Node::start(NodeSpec {
        name: "node-a".into(),
        cluster_port: Some(a_port),
        cookie: Some(COOKIE.into()),
        ..NodeSpec::single(&db.url)
    })
    .await;
    let b = Node::start(NodeSpec {
        name: "node-b".into(),
        services: "none".into(),
        cluster_port: Some(free_port()),
        peers: vec![a_port],
        cookie: Some(COOKIE.into()),
        http: true,
        ..NodeSpec::default()
    })
    .await;
    b.wait_ready(Duration::from_secs(30)).await;
    let (via_a, via_b) = (Api::new(&a.http), Api::new(&b.http));
    (a, b, via_a, via_b)
}

async fn create(api: &Api, admin: &str, body: Value) -> Value {
    let response = api.post_json("/products/", Some(admin), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("product")
}

/// Waits until the product's stock record exists (it comes through the outbox).
async fn stock_of(api: &Api, admin: &str, id: &str) -> Value {
    for _ in 0..200 {
        let response = api.get(&format!("/inventory/{id}"), Some(admin)).await;
        if response.status() == StatusCode::OK {
            return response.json().await.expect("levels");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no stock record for {id}");
}

#[tokio::test]
async fn admins_manage_the_catalog_and_anyone_browses_it() {
    let (_db, _node, api, admin) = single_node().await;
    let (_, customer) = api.customer("shopper").await;

    let mug = create(
        &api,
        &admin,
        json!({"name": "Blue Mug", "description": "Stoneware", "price": 1999, "stock": 7}),
    )
    .await;
    assert_eq!(mug["currency"], "usd");
    assert_eq!(mug["price"], 1999);
    for field in [
        "id",
        "name",
        "description",
        "price",
        "currency",
        "created_at",
        "updated_at",
    ] {
        assert!(mug.get(field).is_some(), "{field}");
    }
    let id = mug["id"].as_str().expect("id").to_owned();
    let path = format!("/products/{id}");

    problem(
        api.post_json(
            "/products/",
            Some(&customer),
            json!({"name": "x", "price": 1}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        api.post_json("/products/", None, json!({"name": "x", "price": 1}))
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Anyone reads, no token needed.
    assert_eq!(api.get_json(&path, None).await["name"], "Blue Mug");
    problem(
        api.get("/products/not-an-id", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        api.get(&format!("/products/{}", uuid::Uuid::now_v7()), None)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Stock arrives with the product.
    let levels = stock_of(&api, &admin, &id).await;
    assert_eq!(
        levels,
        json!({"product_id": id, "on_hand": 7, "reserved": 0, "available": 7})
    );

    // Patch: partial, validated.
    let patched: Value = api
        .patch(&path, &admin, json!({"price": 2499}))
        .await
        .json()
        .await
        .expect("patched");
    assert_eq!(
        (patched["price"].clone(), patched["name"].clone()),
        (json!(2499), json!("Blue Mug"))
    );
    let body = problem(
        api.patch(&path, &admin, json!({"price": -1})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["errors"]["price"].is_array());

    // Delete archives: gone from reads and listings, twice is 404, no longer reservable.
    assert_eq!(
        api.delete(&path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    problem(api.get(&path, None).await, StatusCode::NOT_FOUND).await;
    problem(api.delete(&path, &admin).await, StatusCode::NOT_FOUND).await;
    let listed = api.get_json("/products/", None).await;
    assert!(
        listed["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|p| p["id"] != json!(id)))
    );
    let mut refused = StatusCode::OK;
    for _ in 0..100 {
        // A fresh order each time: the archive reaches inventory through the outbox.
        let order = uuid::Uuid::now_v7().to_string();
        let response = api
            .post_json(
                "/inventory/reservations",
                Some(&admin),
                json!({"order_id": order, "lines": [{"product_id": id, "quantity": 1}], "expires_at": "2099-01-01T00:00:00Z"}),
            )
            .await;
        refused = response.status();
        if refused == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        refused,
        StatusCode::NOT_FOUND,
        "an archived product cannot be reserved"
    );
}

#[tokio::test]
async fn every_invalid_field_is_named() {
    let (_db, _node, api, admin) = single_node().await;
    let cases = [
        (json!({"name": "", "price": 100}), "name"),
        (json!({"name": "   ", "price": 100}), "name"),
        (json!({"name": "Mug", "price": -1}), "price"),
        (json!({"name": "Mug", "price": 19.99}), "price"),
        (json!({"name": "Mug", "price": "12"}), "price"),
        (json!({"name": "Mug"}), "price"),
        (
            json!({"name": "Mug", "price": 100, "currency": "dollars"}),
            "currency",
        ),
        (
            json!({"name": "Mug", "price": 100, "currency": "USD"}),
            "currency",
        ),
        (json!({"name": "Mug", "price": 100, "stock": -3}), "stock"),
        (
            json!({"name": "Mug", "price": 100, "colour": "blue"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let problem = problem(
            api.post_json("/products/", Some(&admin), body.clone())
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            problem["errors"][field].is_array(),
            "{body} should name {field}: {problem}"
        );
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("sort=popularity", "sort"),
        ("min_price=-5", "min_price"),
        ("min_price=10&max_price=5", "min_price"),
        ("cursor=zz", "cursor"),
        ("max_price=cheap", "max_price"),
    ] {
        let problem = problem(
            api.get(&format!("/products/?{query}"), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            problem["errors"][field].is_array(),
            "{query} should name {field}: {problem}"
        );
    }
    // Nothing was written by any of them.
    assert_eq!(api.get_json("/products/", None).await["items"], json!([]));
}

#[tokio::test]
async fn search_filters_and_sorts_find_the_right_products() {
    let (_db, _node, api, admin) = single_node().await;
    for (name, description, price) in [
        ("Espresso Cup", "Thick porcelain for strong coffee", 900),
        ("Tea Pot", "Brews loose leaf tea", 3500),
        ("Coffee Grinder", "Burr grinder with ceramic burrs", 7900),
        ("Linen Napkin", "Soft and washable", 450),
    ] {
        create(
            &api,
            &admin,
            json!({"name": name, "description": description, "price": price}),
        )
        .await;
    }
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // By a word in the name, or only in the description; stemmed.
    let coffee = api.get_json("/products/?q=coffee", None).await;
    assert_eq!(
        names(&coffee).into_iter().collect::<HashSet<_>>(),
        HashSet::from(["Espresso Cup".to_owned(), "Coffee Grinder".to_owned()])
    );
    assert_eq!(
        names(&api.get_json("/products/?q=brewing", None).await),
        vec!["Tea Pot"]
    );
    assert_eq!(
        names(&api.get_json("/products/?q=washable", None).await),
        vec!["Linen Napkin"]
    );
    assert_eq!(
        names(&api.get_json("/products/?q=unicorn", None).await),
        Vec::<String>::new()
    );
    // Price range and orders.
    assert_eq!(
        names(
            &api.get_json("/products/?min_price=900&max_price=3500&sort=price", None)
                .await
        ),
        vec!["Espresso Cup", "Tea Pot"]
    );
    assert_eq!(
        names(&api.get_json("/products/?sort=-price", None).await),
        vec!["Coffee Grinder", "Tea Pot", "Espresso Cup", "Linen Napkin"]
    );
    assert_eq!(
        names(&api.get_json("/products/?sort=name", None).await),
        vec!["Coffee Grinder", "Espresso Cup", "Linen Napkin", "Tea Pot"]
    );
    assert_eq!(
        names(&api.get_json("/products", None).await),
        vec!["Linen Napkin", "Coffee Grinder", "Tea Pot", "Espresso Cup"],
        "newest first"
    );
}

#[tokio::test]
async fn paging_sees_every_product_exactly_once_while_more_are_added() {
    let (_db, _node, api, admin) = single_node().await;
    let mut existing = HashSet::new();
    for i in 0..45 {
        let product = create(
            &api,
            &admin,
            json!({"name": format!("Item {i:02}"), "price": 100 + (i % 7) * 10}),
        )
        .await;
        existing.insert(product["id"].as_str().expect("id").to_owned());
    }
    for sort in ["created_at", "price", "-price", "name"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut added = 0;
        loop {
            let query = match &cursor {
                Some(c) => format!("/products/?limit=7&sort={sort}&cursor={c}"),
                None => format!("/products/?limit=7&sort={sort}"),
            };
            let page = api.get_json(&query, None).await;
            let items = page["items"].as_array().expect("items");
            assert!(items.len() <= 7);
            seen.extend(
                items
                    .iter()
                    .map(|p| p["id"].as_str().unwrap_or_default().to_owned()),
            );
            // Someone keeps adding products while we page.
            create(
                &api,
                &admin,
                json!({"name": format!("Late {sort} {added}"), "price": 130}),
            )
            .await;
            added += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: a product came twice");
        assert!(existing.is_subset(&unique), "{sort}: a product was skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_entering_through_two_nodes_never_oversells() {
    // A fifth of the attempts win: enough that both entry points sell even
    // when one node's requests reach the owner first (which node's do is
    // timing, not a rule).
    const STOCK: usize = 200;
    let db = TestDb::empty().await;
    let (_a, _b, via_a, via_b) = two_nodes(&db).await;
    let admin = via_a.admin_token().await;
    let product = create(
        &via_a,
        &admin,
        json!({"name": "Limited Sneaker", "price": 25000, "stock": STOCK}),
    )
    .await;
    let id = product["id"].as_str().expect("id").to_owned();
    stock_of(&via_b, &admin, &id).await;

    let attempts = futures::stream::iter(0..1000).map(|i| {
        let api = if i % 2 == 0 {
            via_a.clone()
        } else {
            via_b.clone()
        };
        let (admin, id) = (admin.clone(), id.clone());
        async move {
            let body = json!({
                "order_id": uuid::Uuid::now_v7(),
                "lines": [{"product_id": id, "quantity": 1}],
                "expires_at": "2099-01-01T00:00:00Z",
            });
            let response = api
                .post_json("/inventory/reservations", Some(&admin), body)
                .await;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            (i % 2, status, body)
        }
    });
    let outcomes: Vec<_> = attempts.buffer_unordered(200).collect().await;
    let won: Vec<_> = outcomes
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .collect();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(_, s, b)| {
            *s == StatusCode::CONFLICT
                && b["type"] == "urn:mart:problem:insufficient-stock"
                && b["errors"]["lines[0].product_id"][0] == "insufficient stock"
        })
        .collect();
    assert_eq!(
        (won.len(), refused.len()),
        (STOCK, 1000 - STOCK),
        "{:?}",
        outcomes
            .iter()
            .find(|(_, s, _)| *s != StatusCode::CREATED && *s != StatusCode::CONFLICT)
    );
    assert!(
        won.iter().any(|(node, ..)| *node == 0) && won.iter().any(|(node, ..)| *node == 1),
        "both nodes sold"
    );
    let levels = via_b
        .get_json(&format!("/inventory/{id}"), Some(&admin))
        .await;
    assert_eq!(
        levels,
        json!({"product_id": id, "on_hand": STOCK, "reserved": STOCK, "available": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_while_inventory_is_down_gets_its_stock_when_it_returns() {
    let db = TestDb::empty().await;
    let a_port = free_port();
    let a = Node::start(NodeSpec {
        name: "catalog-node".into(),
        services: "users,products".into(),
        cluster_port: Some(a_port),
        cookie: Some(COOKIE.into()),
        ..NodeSpec::single(&db.url)
    })
    .await;
    let inventory_node = || NodeSpec {
        name: "inventory-node".into(),
        services: "inventory".into(),
        database_url: Some(db.url.clone()),
        cluster_port: Some(free_port()),
        peers: vec![a_port],
        cookie: Some(COOKIE.into()),
        http: false,
        ..NodeSpec::default()
    };
    let api = Api::new(&a.http);
    let admin = api.admin_token().await;

    // Inventory is not running anywhere: the product is still created.
    let product = create(
        &api,
        &admin,
        json!({"name": "Lamp", "price": 4200, "stock": 12}),
    )
    .await;
    let id = product["id"].as_str().expect("id").to_owned();
    let levels = api.get(&format!("/inventory/{id}"), Some(&admin)).await;
    assert!(levels.headers().contains_key("retry-after"));
    problem(levels, StatusCode::SERVICE_UNAVAILABLE).await;

    // Inventory starts on another node: the stock record arrives from the outbox.
    let _b = Node::start(inventory_node()).await;
    assert_eq!(
        stock_of(&api, &admin, &id).await,
        json!({"product_id": id, "on_hand": 12, "reserved": 0, "available": 12})
    );
}

/// Product reads come from each node's memory: a change made through one
/// node shows on the other within a second and at once to its maker; an
/// archived product is gone everywhere once its delete returned; an
/// unchanged product answers `If-None-Match` with 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_catalog_from_memory_and_never_stale() {
    let db = TestDb::empty().await;
    let (_a, _b, via_a, via_b) = two_nodes(&db).await;
    let admin = via_a.admin_token().await;
    let mug = create(&via_a, &admin, json!({"name": "Mug", "price": 1000})).await;
    let path = format!("/products/{}", mug["id"].as_str().expect("id"));

    // Warm on both nodes; the ETag revalidates.
    let first = via_b.get(&path, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    let again = reqwest::Client::new()
        .get(via_b.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("answer");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(via_a.get_json(&path, None).await["price"], 1000);

    // The maker sees its change at once; the other node within a second.
    let changed = via_a.patch(&path, &admin, json!({"price": 1200})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(via_a.get_json(&path, None).await["price"], 1200);
    let changed_at = std::time::Instant::now();
    loop {
        let price = via_b.get_json(&path, None).await["price"].clone();
        if price == 1200 {
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "node b still serves {price} a second after the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = reqwest::Client::new()
        .get(via_b.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        stale.status(),
        StatusCode::OK,
        "a changed product is sent again"
    );

    // A repeated first page comes from memory and still sees changes.
    let page = via_b.get_json("/products?sort=price", None).await;
    assert_eq!(page["items"][0]["price"], 1200);

    // Archived through b: gone on both the moment the delete returned.
    assert_eq!(
        via_b.delete(&path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    for api in [&via_a, &via_b] {
        assert_eq!(api.get(&path, None).await.status(), StatusCode::NOT_FOUND);
        let page = api.get_json("/products?sort=price", None).await;
        assert_eq!(page["items"], json!([]), "{page}");
    }
}

/// A storefront on another origin calls the API from the browser: CORS for
/// the configured origin only, lists compressed when asked, and the API
/// reference page at `/docs`.
#[tokio::test]
async fn browsers_on_a_configured_origin_call_the_api_and_lists_come_compressed() {
    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env.push((
        "MART_CORS_ORIGINS".into(),
        "https://shop.example.com".into(),
    ));
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    for i in 0..40 {
        create(
            &api,
            &admin,
            json!({"name": format!("Mug {i}"), "description": "Stoneware, holds a large coffee", "price": 1200 + i}),
        )
        .await;
    }

    let preflight = |origin: &'static str| {
        api.client
            .request(reqwest::Method::OPTIONS, api.url("/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://shop.example.com")
        .await
        .expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_lowercase()
    };
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        "https://shop.example.com"
    );
    assert!(header(&allowed, "access-control-allow-methods").contains("post"));
    assert!(header(&allowed, "access-control-allow-headers").contains("idempotency-key"));
    let other = preflight("https://evil.example.net")
        .await
        .expect("preflight");
    assert_eq!(header(&other, "access-control-allow-origin"), "");

    // A page reads the ETag of what it fetched.
    let listed = api
        .client
        .get(api.url("/products?limit=40"))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .expect("list");
    assert_eq!(
        header(&listed, "access-control-allow-origin"),
        "https://shop.example.com"
    );
    assert_eq!(header(&listed, "content-encoding"), "", "not asked for");
    let plain = listed.bytes().await.expect("body").len();
    for encoding in ["gzip", "br"] {
        let packed = api
            .client
            .get(api.url("/products?limit=40"))
            .header("accept-encoding", encoding)
            .send()
            .await
            .expect("list");
        assert_eq!(packed.status(), StatusCode::OK);
        assert_eq!(header(&packed, "content-encoding"), encoding);
        let size = packed.bytes().await.expect("body").len();
        assert!(size * 3 < plain, "{encoding}: {size} of {plain} bytes");
    }

    let docs = api.get("/docs", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(header(&docs, "content-type").starts_with("text/html"));
    let page = docs.text().await.expect("page");
    assert!(page.contains("api-reference") && page.contains("/orders"));
}
