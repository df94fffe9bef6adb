//! Starting replicas: several `mart` processes started at the same moment on
//! one fresh database all come up (their migrations take turns).

mod support;

use mart_schema::db::testing::TestDb;
use support::{Api, Node, NodeSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_first_started_at_once_all_come_up() {
    let db = TestDb::empty().await;
    let spec = |name: &str| NodeSpec {
        name: name.into(),
        ..NodeSpec::single(&db.url)
    };
    let (a, b, c) = tokio::join!(
        Node::start(spec("replica-a")),
        Node::start(spec("replica-b")),
        Node::start(spec("replica-c")),
    );
    for node in [&a, &b, &c] {
        let log = node.log_text();
        assert!(!log.contains("migration of"), "a start failed:\n{log}");
    }
    // One database behind all three: what one writes, another reads.
    let (_, token) = Api::new(&a.http).customer("shared").await;
    let on_c = Api::new(&c.http)
        .get_json("/user_profile", Some(&token))
        .await;
    assert_eq!(on_c["username"], "shared");
    Api::new(&b.http)
        .token("shared", "tangerine-57-orbit")
        .await;
}

/// A database that cannot be reached says why, in PostgreSQL's or the
/// resolver's words, not just "db error".
#[tokio::test]
async fn a_database_that_cannot_be_used_says_why() {
    let db = TestDb::empty().await;
    let (base, _) = db.url.rsplit_once('/').expect("a database name");
    for (url, said) in [
        (format!("{base}/no_such_database"), "does not exist"),
        (
            "postgresql://mart@no-such-host.invalid:5432/mart".to_owned(),
            "lookup",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mart"))
            .args(["migrate", "--services", "users"])
            .env("DATABASE_URL", &url)
            .output()
            .expect("mart migrate");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{url}: {stderr}");
    }
}

/// Options: a host name where an address is wanted resolves; a bad value
/// from the environment is reported with the variable's name; a public URL
/// that is not one is refused before anything starts.
#[tokio::test]
async fn options_from_the_environment_are_checked_and_named() {
    let db = TestDb::empty().await;
    let mart = |vars: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mart"));
        command
            .args(["migrate", "--services", "users"])
            .env("DATABASE_URL", &db.url)
            .env_remove("MART_HTTP_ADDR")
            .env_remove("MART_PUBLIC_URL");
        for (name, value) in vars {
            command.env(name, value);
        }
        command.output().expect("mart migrate")
    };
    let resolved = mart(&[("MART_HTTP_ADDR", "localhost:0")]);
    assert!(
        resolved.status.success(),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    for (name, value) in [
        ("MART_HTTP_ADDR", "nowhere"),
        ("MART_PUBLIC_URL", "not a url"),
        ("MART_PUBLIC_URL", "ftp://shop.example.com"),
        ("MART_CORS_ORIGINS", "shop.example.com"),
    ] {
        let refused = mart(&[(name, value)]);
        assert!(!refused.status.success(), "{name}={value} accepted");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(name), "{name} not named: {stderr}");
    }
}

/// A Kafka setting librdkafka refuses stops the node at start with one line
/// naming the variable, instead of a bridge restarting forever behind a
/// ready node.
#[tokio::test]
async fn a_kafka_setting_librdkafka_refuses_stops_the_node_naming_it() {
    let db = TestDb::empty().await;
    let data = tempfile_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mart"))
        .args(["--services", "users", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env("DATABASE_URL", &db.url)
        .env("MART_KAFKA_BROKERS", "127.0.0.1:1")
        .env("MART_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
        .env("MART_KAFKA_SASL_MECHANISM", "BOGUS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mart");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the node kept running with a Kafka setting librdkafka refuses");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(stderr.contains("MART_KAFKA_SASL_MECHANISM"), "{stderr}");
    let _ = std::fs::remove_dir_all(&data);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mart-startup-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

/// `mart seed` before the node first starts: a demo catalog whose stock
/// appears once inventory has the events, an admin and a shopper who can log
/// in with the printed passwords; run again, it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_loads_a_demo_shop_once() {
    let db = TestDb::empty().await;
    let data = tempfile_dir();
    let seed = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mart"))
            .arg("seed")
            .arg("--data-dir")
            .arg(&data)
            .env("DATABASE_URL", &db.url)
            .env("MART_JWT_SECRET", support::JWT_SECRET)
            .output()
            .expect("mart seed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = seed();
    let password_of = |who: &str| {
        first
            .lines()
            .find(|l| l.starts_with(who))
            .and_then(|l| l.split("password ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {who} password in:\n{first}"))
            .to_owned()
    };
    let (admin_password, shopper_password) = (password_of("admin"), password_of("shopper"));
    assert_eq!(first.matches(": created (").count(), 6, "{first}");
    let again = seed();
    assert!(!again.contains("shown this once"), "{again}");
    assert_eq!(again.matches(": exists (").count(), 6, "{again}");

    let node = Node::start(NodeSpec {
        // The seeded admin only.
        extra_env: vec![],
        ..NodeSpec::single(&db.url)
    })
    .await;
    let api = Api::new(&node.http);
    let page = api.get_json("/products?limit=100", None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(6), "{page}");
    let whisk = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["name"] == "Matcha Whisk"))
        .expect("the whisk");
    assert_eq!(
        (&whisk["price"], &whisk["currency"]),
        (&2400.into(), &"jpy".into())
    );
    let admin = api.token("admin@mart.localhost", &admin_password).await;
    let shopper = api.token("shopper", &shopper_password).await;
    // Inventory made each product's stock from its product.created event.
    let id = whisk["id"].as_str().expect("id");
    for _ in 0..100 {
        let stock = api.get(&format!("/inventory/{id}"), Some(&admin)).await;
        if stock.status() == reqwest::StatusCode::OK {
            let stock: serde_json::Value = stock.json().await.expect("stock");
            assert_eq!(stock["on_hand"], 12);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let order = api
        .post_json(
            "/orders",
            Some(&shopper),
            serde_json::json!({"product_id": id, "quantity": 2}),
        )
        .await;
    assert_eq!(order.status(), reqwest::StatusCode::CREATED);
    let _ = std::fs::remove_dir_all(&data);
}
