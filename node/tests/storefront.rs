//! The storefront and admin console in a real browser: headless Chromium
//! (Debian's `chromium` + `chromium-driver`) over WebDriver, against a real
//! node. A shopper registers, searches, fills a cart, double-clicks "Place
//! order" (one order), pays on the Checkout page and comes back to "Paid";
//! an admin ships it and the shopper sees "Shipped"; a sold-out product
//! cannot be added. The screenshots the README shows are taken here
//! (`MART_UPDATE_SCREENSHOTS=1` writes them to `docs/screenshots`).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use mart_schema::db::testing::TestDb;
use serde_json::{Value, json};
use support::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, Node, NodeSpec, free_port};

/// chromedriver, stopped with the test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian: apt-get install chromium chromium-driver)");
    let driver = Driver(driver);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::native()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// The page, driven as a shopper would.
struct Page {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Page {
    async fn go(&self, fragment: &str) {
        self.client
            .goto(&format!("{}/{fragment}", self.base))
            .await
            .expect("goto");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(found) => found,
            Err(e) => panic!("{css}: {e}\n{}", self.text("main").await),
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }

    /// Clicks `css`, finding it again if the page re-rendered it between
    /// finding and clicking.
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
        panic!("{css} kept going stale");
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(found) => found.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until `css`'s text contains `wanted`.
    async fn until_text(&self, css: &str, wanted: &str) {
        for _ in 0..100 {
            if self.text(css).await.contains(wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{css} never said {wanted:?}; the page says:\n{}",
            self.text("main").await
        );
    }

    async fn hash(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        url.fragment().unwrap_or_default().to_owned()
    }

    async fn sign_in(&self, username: &str, password: &str) {
        self.go("#/login").await;
        self.fill("input[name=username]", username).await;
        self.fill("input[name=password]", password).await;
        self.click("form button[type=submit]").await;
        self.find("#sign-out:not([hidden])").await;
        // Signed in, and back where the sign-in page sends one.
        self.until_text("main h1", "Catalog").await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.find("header a[href='#/login']:not([hidden])").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&self.shots).expect("dir");
        std::fs::write(self.shots.join(format!("{name}.png")), &png).expect("write");
        if std::env::var_os("MART_UPDATE_SCREENSHOTS").is_some() {
            let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs dir");
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("write");
        }
    }

    /// Every control of the page has a label a screen reader can say.
    async fn every_control_is_labelled(&self) {
        let unlabelled = self
            .client
            .execute(
                "return [...document.querySelectorAll('main input, main select, main textarea')]\
                   .filter(c => c.labels.length === 0 && !c.getAttribute('aria-label'))\
                   .map(c => c.outerHTML);",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(unlabelled, json!([]), "controls without a label");
    }
}

async fn product(api: &Api, admin: &str, body: Value) -> String {
    let created = api.post_json("/products", Some(admin), body).await;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let product: Value = created.json().await.expect("product");
    product["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_buys_in_the_browser_and_an_admin_ships_it() {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    api.stocked_product(&admin, "Copper kettle", 3999, 20).await;
    api.stocked_product(&admin, "Stoneware mug", 1250, 40).await;
    let lamp = api.stocked_product(&admin, "Paper lamp", 2400, 0).await;
    product(
        &api,
        &admin,
        json!({"name": "Matcha tin", "price": 1500, "currency": "jpy", "stock": 3,
               "description": "Ceremonial grade, 30 g."}),
    )
    .await;

    // What the shop shows of stock comes from a public endpoint: coarse,
    // exact only when few are left.
    let seen = api
        .get_json(&format!("/availability?ids={lamp},{lamp}"), None)
        .await;
    assert_eq!(seen[0], json!({"product_id": lamp, "status": "sold_out"}));
    assert_eq!(seen.as_array().map(Vec::len), Some(2), "in the order asked");
    let refused = api.get("/availability?ids=nonsense", None).await;
    let problem = support::problem(refused, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem["errors"]["ids"].is_array(), "{problem}");

    let (_driver, client) = browser().await;
    let page = Page {
        client,
        base: node.http.clone(),
        shots: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };

    // The catalog, with prices in their currency's own decimals and stock.
    page.go("#/").await;
    page.until_text("main", "Matcha tin").await;
    page.until_text("main", "Only 3 left").await;
    let catalog = page.text("main").await;
    assert!(catalog.contains("¥1,500"), "JPY has no decimals: {catalog}");
    assert!(catalog.contains("$39.99"), "{catalog}");
    assert!(catalog.contains("Sold out"), "{catalog}");
    page.every_control_is_labelled().await;
    page.screenshot("catalog").await;

    // Register (and be signed in).
    page.go("#/register").await;
    page.fill("input[name=username]", "browsing").await;
    page.fill("input[name=email]", "browsing@example.test")
        .await;
    page.fill("input[name=password]", "weak").await;
    page.click("form button[type=submit]").await;
    // The API's problem, next to the field it names.
    page.until_text(".field-error:not([hidden])", "password")
        .await;
    page.fill("input[name=password]", "tangerine-57-orbit")
        .await;
    page.click("form button[type=submit]").await;
    page.find("#sign-out:not([hidden])").await;

    // Search, and put two products in the cart.
    page.go("#/").await;
    page.fill("input[name=q]", "kettle").await;
    page.click("form[role=search] button[type=submit]").await;
    page.until_text("main h1", "Results for").await;
    page.click("main a[href^='#/product/']").await;
    page.until_text("#availability", "In stock").await;
    page.click("#add-to-cart").await;
    page.until_text(".notice", "Added 1").await;
    page.go("#/?q=mug").await;
    page.until_text("main", "Stoneware mug").await;
    page.click("main a[href^='#/product/']").await;
    page.fill("input[name=quantity]", "2").await;
    page.click("#add-to-cart").await;
    page.until_text(".notice", "Added 2").await;

    // A sold-out product cannot be added.
    page.go(&format!("#/product/{lamp}")).await;
    page.until_text("#availability", "Sold out").await;
    let add = page.find("#add-to-cart").await;
    assert!(!add.is_enabled().await.expect("enabled?"), "sold out");
    assert_eq!(add.text().await.expect("text"), "Sold out");

    // A double click on "Place order" makes one order.
    page.go("#/cart").await;
    page.until_text("main", "Stoneware mug").await;
    page.every_control_is_labelled().await;
    let place = page.find("#place-order").await;
    let double = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: place,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    page.client
        .perform_actions(double)
        .await
        .expect("double click");
    page.until_text("#order-status", "Awaiting payment").await;
    let order = page.hash().await.trim_start_matches("/orders/").to_owned();
    let shopper = api.token("browsing", "tangerine-57-orbit").await;
    let mine = api.get_json("/my-orders", Some(&shopper)).await;
    assert_eq!(
        mine["items"].as_array().map(Vec::len),
        Some(1),
        "one order: {mine}"
    );
    assert_eq!(mine["items"][0]["id"], order.as_str());
    let placed = page.text("main").await;
    assert!(placed.contains("Pay by"), "the payment deadline: {placed}");
    assert!(placed.contains("$64.99"), "39.99 + 2 × 12.50: {placed}");

    // Pay on the Checkout page; back on the order, which says "Paid".
    page.click("#pay").await;
    page.click("form[action$='/pay'] button").await;
    page.until_text("#order-status", "Paid").await;
    assert!(page.hash().await.ends_with(&order), "back on the order");
    page.screenshot("order").await;

    // The admin ships it, in the console.
    page.sign_out().await;
    page.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    page.go("#/admin/orders?status=paid").await;
    page.click(&format!("button[data-order='{order}']")).await;
    page.go("#/admin/orders?status=shipped").await;
    page.find(&format!("button[data-order='{order}']")).await;
    page.every_control_is_labelled().await;
    page.go("#/admin/products").await;
    page.until_text("main", "Matcha tin").await;
    page.every_control_is_labelled().await;
    page.screenshot("admin").await;
    page.go("#/admin/cluster").await;
    page.until_text("main", "solo").await;

    // The shopper sees it shipped, and the emails about it.
    page.sign_out().await;
    page.sign_in("browsing", "tangerine-57-orbit").await;
    page.go(&format!("#/orders/{order}")).await;
    page.until_text("#order-status", "Shipped").await;
    page.go("#/notifications").await;
    page.until_text("main", "browsing@example.test").await;

    // At 375 px wide nothing needs sideways scrolling.
    page.client.set_window_size(375, 800).await.expect("resize");
    for fragment in ["#/", "#/cart", &format!("#/orders/{order}")] {
        page.go(fragment).await;
        page.find("main h1").await;
        let wide = page
            .client
            .execute("return document.documentElement.scrollWidth;", vec![])
            .await
            .expect("width");
        assert!(wide.as_u64() <= Some(375), "{fragment} is {wide} px wide");
    }
    page.client.close().await.expect("close");
}
