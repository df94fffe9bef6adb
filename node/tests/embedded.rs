//! `mart` with nothing configured: its own PostgreSQL in the data directory,
//! kept across restarts and stopped with the node.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::{Api, Node, NodeSpec};

fn postgres_running_in(dir: &std::path::Path) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .any(|cmdline| cmdline.contains("postgres") && cmdline.contains(&dir.display().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_database_url_mart_runs_and_reuses_its_own_postgres() {
    let data =
        std::env::temp_dir().join(format!("mart-embedded-{}", uuid::Uuid::new_v4().simple()));
    let spec = NodeSpec {
        name: "embedded".into(),
        services: "all".into(),
        http: true,
        data_dir: Some(data.clone()),
        ..NodeSpec::default()
    };
    let mut node = Node::start(spec.clone()).await;
    node.wait_ready(Duration::from_secs(60)).await;
    let api = Api::new(&node.http);
    api.customer("kept").await;
    assert!(
        postgres_running_in(&data),
        "no postgres for {}; log:\n{}",
        data.display(),
        node.log_text()
    );
    let status = node.terminate().expect("stops on SIGTERM");
    assert!(status.success(), "{}", node.log_text());
    assert!(
        !postgres_running_in(&data),
        "the embedded server stops with the node"
    );

    // The second start finds the cluster and the account it holds.
    let node = Node::start(spec).await;
    node.wait_ready(Duration::from_secs(60)).await;
    let api = Api::new(&node.http);
    assert_eq!(
        api.login("kept", "tangerine-57-orbit").await.status(),
        StatusCode::OK
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
}
