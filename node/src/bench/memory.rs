//! Memory: a whole node's resident set when idle (a `mart` process of its
//! own), and what idle entity actors cost (stock actors, in this process:
//! the resident set before and after starting one per product), next to
//! what as many bare ractor actors cost (the floor of an actor per entity).

use std::time::{Duration, Instant};

use anyhow::Context;

use mart_actors::Inventory;
use mart_schema::user::Caller;
use mart_schema::{ProductId, Service, db};

use super::BenchOptions;

/// One memory figure.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Footprint {
    pub(crate) measurement: String,
    pub(crate) rss_mb: f64,
    /// Bytes each entity adds, for the entity rows.
    pub(crate) per_entity_bytes: Option<f64>,
}

/// The resident set of process `pid` (`self` or a number), from `/proc`.
fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

const MB: f64 = 1024.0 * 1024.0;

pub(super) async fn scenarios(
    node_url: &str,
    entities_url: &str,
    options: &BenchOptions,
) -> anyhow::Result<Vec<Footprint>> {
    let idle = idle_node(node_url).await?;
    let mut figures = vec![Footprint {
        measurement: "idle node (every service, edge, no load)".into(),
        rss_mb: idle as f64 / MB,
        per_entity_bytes: None,
    }];
    figures.extend(entities(entities_url, options.entities).await?);
    figures.push(bare_actors(options.entities).await?);
    Ok(figures)
}

/// An actor with nothing in it: no state, a unit message.
struct Bare;

impl ractor::Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<()>,
        _args: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

/// `count` bare actors linked to one parent, as a router's entity actors
/// are, in a `mart` process of its own (in this one, memory the stock actors
/// freed would be reused unseen): what ractor itself costs per actor (its two
/// mailbox channels, the task, the registries), the stock actors' reference.
async fn bare_actors(count: usize) -> anyhow::Result<Footprint> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bench-bare-actors", &count.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "bench-bare-actors: {}", out.status);
    serde_json::from_slice(&out.stdout).context("what bench-bare-actors printed")
}

/// Starts `count` bare actors in this process (they live as long as their
/// parent) and says what they added to its resident set
/// (`mart bench-bare-actors`, which prints it as JSON).
pub(crate) async fn bare_actor_footprint(count: usize) -> anyhow::Result<Footprint> {
    let (parent, _) = ractor::Actor::spawn(None, Bare, ()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes("self")?;
    for _ in 0..count {
        ractor::ActorRuntime::spawn_linked_instant(None, Bare, (), parent.get_cell())?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes("self")?;
    parent.stop(None);
    Ok(Footprint {
        measurement: format!("reference: {count} bare ractor actors (no state, unit message)"),
        rss_mb: after as f64 / MB,
        per_entity_bytes: Some(after.saturating_sub(before) as f64 / count.max(1) as f64),
    })
}

/// Starts `mart` (all services, an edge) on `url`, waits until it is ready
/// and a little longer, and reads its resident set.
async fn idle_node(url: &str) -> anyhow::Result<u64> {
    // A port nobody listens on now (the node binds it a moment later).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let data = std::env::temp_dir().join(format!("mart-bench-idle-{}", uuid::Uuid::new_v4()));
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .env("DATABASE_URL", url)
        .env("MART_JWT_SECRET", "bench only, never used for real tokens")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the node exited at once"))?;
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    let mut up = false;
    for _ in 0..300 {
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(up, "the idle node never became ready");
    // Past start-up's peaks (migrations, the first looks of every keeper).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_bytes(&pid.to_string());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = std::fs::remove_dir_all(&data);
    rss
}

/// Starts a stock actor for each of `count` products and says what they
/// added to this process's resident set.
async fn entities(url: &str, count: usize) -> anyhow::Result<Vec<Footprint>> {
    let pool = db::pool(url, 24)?;
    db::migrate(&pool, Service::Inventory).await?;
    let products: Vec<ProductId> = (0..count).map(|_| ProductId::new()).collect();
    let ids: Vec<uuid::Uuid> = products.iter().map(|p| p.0).collect();
    pool.get()
        .await?
        .execute(
            "insert into inventory.stock (product_id, on_hand, reserved) \
             select id, 100, 0 from unnest($1::uuid[]) as id",
            &[&ids],
        )
        .await?;
    let (hosted, inventory) = super::stock::start_inventory(&pool).await?;
    // Everything but the entities warmed up: a few actors started and
    // stopped, pools filled.
    touch(&inventory, &products[..count.min(64)]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes("self")?;
    touch(&inventory, &products).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes("self")?;
    // Idle actors stop after 10 s (asked every 10 s) and their routers park
    // what they knew; what the actors used goes back to the kernel 5-7 s
    // later (see main.rs).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let parked = rss_bytes("self")?;
    // Every one of them answers again, from what was parked.
    let again = Instant::now();
    touch(&inventory, &products).await?;
    let revived = again.elapsed();
    hosted.stop().await;
    pool.close();
    let added = after.saturating_sub(before) as f64;
    let kept = parked.saturating_sub(before) as f64;
    Ok(vec![
        Footprint {
            measurement: format!("this process, before {count} stock actors"),
            rss_mb: before as f64 / MB,
            per_entity_bytes: None,
        },
        Footprint {
            measurement: format!("this process, {count} live stock actors"),
            rss_mb: after as f64 / MB,
            per_entity_bytes: Some(added / count as f64),
        },
        Footprint {
            measurement: format!(
                "this process, {count} idle entities parked (all {count} answered again in {} ms)",
                revived.as_millis()
            ),
            rss_mb: parked as f64 / MB,
            per_entity_bytes: Some(kept / count as f64),
        },
    ])
}

/// Asks for each product's levels (which starts its actor), 64 at a time.
async fn touch(inventory: &Inventory, products: &[ProductId]) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut asked = futures::stream::iter(products.iter().copied())
        .map(|product| {
            let inventory = inventory.clone();
            async move { inventory.levels(Caller::Service, product).await }
        })
        .buffer_unordered(64);
    while let Some(answer) = asked.next().await {
        answer.map_err(|e| anyhow::anyhow!("levels: {e:?}"))?;
    }
    Ok(())
}
