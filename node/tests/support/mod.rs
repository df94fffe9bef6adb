//! Test support: real `mart` processes on loopback, talking to a throwaway
//! PostgreSQL database, driven over HTTP.

#![allow(dead_code)]

pub mod kafka;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub const JWT_SECRET: &str = "a shared test secret of decent length";
pub const ADMIN_EMAIL: &str = "root@example.test";
pub const ADMIN_PASSWORD: &str = "admin password";
pub const COOKIE: &str = "cluster test cookie";
/// Every service, by the names `--services` and the health report use.
pub const SERVICES: [&str; 6] = [
    "users",
    "products",
    "inventory",
    "orders",
    "payments",
    "notifications",
];

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768 and up): a port the kernel
    // hands out for `:0` can be taken, before the node binds it, by any
    // outgoing connection of a test running alongside (it happened: "address
    // already in use"). Each port is given out once per process.
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + offset) % SPAN).expect("port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

/// A running `mart` node, killed when dropped.
pub struct Node {
    child: Option<Child>,
    pub http: String,
    pub cluster_port: Option<u16>,
    pub log: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// How to start a node.
#[derive(Clone, Default)]
pub struct NodeSpec {
    pub name: String,
    pub services: String,
    pub database_url: Option<String>,
    pub cluster_port: Option<u16>,
    pub peers: Vec<u16>,
    pub cookie: Option<String>,
    pub http: bool,
    pub extra_env: Vec<(String, String)>,
    /// Defaults to a fresh temporary directory, removed with the node.
    pub data_dir: Option<PathBuf>,
    /// Defaults to a free port.
    pub http_port: Option<u16>,
}

impl NodeSpec {
    /// Node `i` (named `node-<i+1>`) of a cluster whose members listen on
    /// `ports`, each knowing the others, with an edge and the admin account.
    pub fn member(database_url: &str, ports: &[u16], i: usize, services: &str) -> Self {
        Self {
            name: format!("node-{}", i + 1),
            services: services.into(),
            database_url: Some(database_url.into()),
            cluster_port: Some(ports[i]),
            peers: ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .collect(),
            cookie: Some(COOKIE.into()),
            http: true,
            extra_env: vec![
                ("MART_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
                ("MART_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ],
            ..Self::default()
        }
    }

    /// One node hosting everything, with an edge and an admin account.
    pub fn single(database_url: &str) -> Self {
        Self {
            name: "solo".into(),
            services: "all".into(),
            database_url: Some(database_url.into()),
            http: true,
            extra_env: vec![
                ("MART_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
                ("MART_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ],
            ..Self::default()
        }
    }
}

impl Node {
    pub async fn start(spec: NodeSpec) -> Node {
        let http_port = spec.http_port.unwrap_or_else(free_port);
        let data_dir = spec.data_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("mart-node-test-{}", uuid::Uuid::new_v4().simple()))
        });
        let mut args = vec![
            "--node-name".to_owned(),
            spec.name.clone(),
            "--services".into(),
            spec.services.clone(),
            "--http-addr".into(),
            if spec.http {
                format!("127.0.0.1:{http_port}")
            } else {
                "none".into()
            },
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if let Some(port) = spec.cluster_port {
            args.extend(["--cluster-addr".into(), format!("127.0.0.1:{port}")]);
        }
        if !spec.peers.is_empty() {
            let peers: Vec<String> = spec
                .peers
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            args.extend(["--peers".into(), peers.join(",")]);
        }
        if let Some(cookie) = &spec.cookie {
            args.extend(["--cookie".into(), cookie.clone()]);
        }
        let mut envs = vec![
            ("MART_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ("RUST_LOG".into(), "info,ractor_cluster=info".into()),
        ];
        if let Some(url) = &spec.database_url {
            envs.push(("DATABASE_URL".into(), url.clone()));
        }
        envs.extend(spec.extra_env.iter().cloned());
        let log = std::env::temp_dir().join(format!(
            "mart-{}-{}.log",
            spec.name,
            uuid::Uuid::new_v4().simple()
        ));
        let mut node = Node {
            child: None,
            http: format!("http://127.0.0.1:{http_port}"),
            cluster_port: spec.cluster_port,
            log,
            data_dir,
            args,
            envs,
        };
        node.spawn();
        if spec.http {
            node.wait_live().await;
        }
        node
    }

    fn spawn(&mut self) {
        // Appended: a restarted node's log keeps what it said before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mart"))
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.envs.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn mart");
        self.child = Some(child);
    }

    pub async fn wait_live(&self) {
        self.wait_for("/health/live", Duration::from_secs(60)).await;
    }

    /// Polls `/health/ready` until it answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        self.wait_for("/health/ready", limit).await;
    }

    /// Polls `/health/ready` until it reports `service` reachable from this node
    /// (the node may still be "not ready" if other services run nowhere).
    pub async fn wait_reachable(&self, service: &str, limit: Duration) {
        let client = Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(response) = client
                .get(format!("{}/health/ready", self.http))
                .send()
                .await
            {
                let report: Value = response.json().await.unwrap_or_default();
                if report["reachable"][service] == true {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{service} not reachable within {limit:?}; log:\n{}",
            self.log_text()
        );
    }

    async fn wait_for(&self, path: &str, limit: Duration) {
        let client = Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            let response = client.get(format!("{}{path}", self.http)).send().await;
            if response.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} not OK within {limit:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no goodbye to peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same node again (same ports, same database).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The shopper pays on the Checkout page (the Stripe test server's); the
/// status of the page's answer (303 back to the shop when paid).
pub async fn pay_at_checkout(checkout_url: &str) -> StatusCode {
    let browser = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    browser
        .post(format!("{checkout_url}/pay"))
        .send()
        .await
        .map_or(StatusCode::BAD_GATEWAY, |r| r.status())
}

/// A small typed HTTP client for the edge.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> Response {
        self.post_json(
            "/register",
            None,
            json!({"username": username, "email": email, "password": password}),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("post")
    }

    /// GET, expecting 200 and a JSON body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        let response = self.get(path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("json body")
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/token"))
            .form(&[
                ("username", username),
                ("password", password),
                ("grant_type", "password"),
            ])
            .send()
            .await
            .expect("token")
    }

    /// Registers `name` and returns `(user, token)`.
    pub async fn customer(&self, name: &str) -> (Value, String) {
        let response = self
            .register(name, &format!("{name}@example.test"), "tangerine-57-orbit")
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let user: Value = response.json().await.expect("user");
        (user, self.token(name, "tangerine-57-orbit").await)
    }

    pub async fn token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        let grant: Value = response.json().await.expect("grant");
        grant["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.token(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("get")
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("patch")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("delete")
    }
}

/// `/user_profile` with `token` answers a status that `settled` accepts
/// within a second (revocations reach every edge that fast), else panics
/// saying `what` did not happen.
pub async fn profile_settles(
    api: &Api,
    token: &str,
    settled: impl Fn(StatusCode) -> bool,
    what: &str,
) {
    for _ in 0..25 {
        if settled(api.get("/user_profile", Some(token)).await.status()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("after a second: {what}");
}

/// Asserts `response` is a problem document with `status`, returning it.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

/// mart's Stripe test server as its own process, killed when dropped.
pub struct StripeServer {
    child: Child,
    pub base: String,
}

pub const STRIPE_KEY: &str = "sk_test_from_the_tests";
pub const WEBHOOK_SECRET: &str = "whsec_from_the_tests";

impl StripeServer {
    /// Starts it, delivering webhooks to `webhook_url`.
    pub async fn start(webhook_url: &str) -> StripeServer {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_mart"))
            .args([
                "stripe-test-server",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--api-key", STRIPE_KEY, "--webhook-secret", WEBHOOK_SECRET])
            .args(["--webhook-url", webhook_url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stripe-test-server");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stripe test server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        StripeServer { child, base }
    }

    /// The environment a node needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MART_STRIPE_SECRET_KEY".into(), STRIPE_KEY.into()),
            ("MART_STRIPE_API_BASE".into(), self.base.clone()),
            ("MART_STRIPE_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
        ]
    }
}

impl Drop for StripeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message an [`SmtpSink`] accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
}

/// A real SMTP server on loopback that keeps what it receives. Recipients whose
/// address contains `reject` are refused with a permanent 550.
pub struct SmtpSink {
    pub port: u16,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(port: u16) -> SmtpSink {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind sink");
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = messages.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set: stopping the sink ends them all.
            let mut sessions = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                sessions.spawn(smtp_session(stream, store.clone()));
            }
        });
        SmtpSink {
            port,
            messages,
            task,
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn to(&self, address: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    store: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 mart-test-sink ESMTP\r\n").await?;
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 mart-test-sink\r\n"
        } else if upper.starts_with("MAIL FROM") {
            to.clear();
            b"250 2.1.0 ok\r\n"
        } else if upper.starts_with("RCPT TO") {
            let address = line[8..]
                .trim()
                .trim_start_matches(['<', ':'])
                .trim_end_matches('>')
                .to_owned();
            if address.contains("reject") {
                b"550 5.1.1 no such mailbox here\r\n"
            } else {
                to.push(address);
                b"250 2.1.5 ok\r\n"
            }
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            if let Ok(mut messages) = store.lock() {
                messages.push(Received {
                    to: std::mem::take(&mut to),
                    data,
                });
            }
            b"250 2.0.0 queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

impl Api {
    /// A product with `stock`, once inventory has its record.
    pub async fn stocked_product(&self, admin: &str, name: &str, price: i64, stock: i64) -> String {
        let response = self
            .post_json(
                "/products/",
                Some(admin),
                json!({"name": name, "price": price, "stock": stock}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.expect("product")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        for _ in 0..200 {
            if self
                .get(&format!("/inventory/{id}"), Some(admin))
                .await
                .status()
                == StatusCode::OK
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no stock record for {name}");
    }
}

/// The value of metric `name` with (at least) `labels` in a Prometheus text
/// exposition, summed over the series that match.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let (series, value) = rest.rsplit_once(' ')?;
        if labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            let value: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

impl Api {
    /// `GET /metrics` on this edge, as text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics")
    }
}
