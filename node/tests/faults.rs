//! A node built in-process with `App::build`, as `main` builds it, to see how
//! faults reach a client and the log: a SQL fault is a 500 whose cause is
//! logged once (with the request id) and never sent; a service no node hosts
//! is a 503 with Retry-After; a node told to stop leaves.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use mart_node::App;
use mart_node::config::Cli;
use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;

/// Everything the node logs, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_fault_is_a_500_logged_once_and_an_absent_service_a_503() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let db = TestDb::new().await;
    let data = std::env::temp_dir().join(format!("mart-faults-{}", uuid::Uuid::new_v4()));
    let data = data.display().to_string();
    let cli = Cli::try_parse_from([
        "mart",
        "--node-name",
        "faults",
        "--services",
        "users,products",
        "--http-addr",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--data-dir",
        &data,
        "--jwt-secret",
        "a test secret of some length, 32 bytes or more",
    ])
    .expect("options");
    let app = App::build(cli.node).await.expect("the node builds");
    let base = format!("http://{}", app.http_addr().expect("an edge"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // Nobody hosts notifications: 503, try again later.
    let registered = http
        .post(format!("{base}/register"))
        .json(&serde_json::json!({"username": "alice", "email": "alice@example.com", "password": "correct horse"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(registered.status(), StatusCode::CREATED, "users serve");
    let grant: serde_json::Value = http
        .post(format!("{base}/token"))
        .form(&[("username", "alice"), ("password", "correct horse")])
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("token");
    let token = grant["access_token"].as_str().expect("access token");
    let absent = http
        .get(format!("{base}/my-notifications"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(absent.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(absent.headers()["retry-after"], "1");
    assert_eq!(absent.headers()["content-type"], "application/problem+json");

    let listing = http
        .get(format!("{base}/products/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .expect("answer");
    assert_eq!(listing.status(), StatusCode::NOT_FOUND, "the catalog works");

    // The catalog's table is gone: a fault no retry fixes.
    db.pool
        .get()
        .await
        .expect("client")
        .batch_execute("drop table products.products cascade")
        .await
        .expect("drop");
    let broken = http
        .get(format!("{base}/products/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .expect("answer");
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(broken.headers().get("retry-after").is_none());
    let request_id = broken.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(broken.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = broken.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:mart:problem:internal");
    assert!(
        !problem.to_string().contains("products.products"),
        "no SQL reaches the client: {problem}"
    );
    let cause = log.lines_with("relation \"products.products\" does not exist");
    assert_eq!(cause.len(), 1, "the cause is logged once: {cause:#?}");
    assert!(
        cause[0].contains(&request_id),
        "with the request id: {}",
        cause[0]
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), node)
        .await
        .expect("the node stops in time")
        .expect("no panic")
        .expect("a clean stop");
    let _ = std::fs::remove_dir_all(&data);
}
