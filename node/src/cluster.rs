//! Joining the cluster: this node's `ractor_cluster` server, and a keeper that
//! dials every configured peer and dials again whenever a connection drops
//! (`ractor_cluster` does not reconnect by itself).

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::task::JoinHandle;

/// How often the keeper checks its peers.
const KEEP_EVERY: Duration = Duration::from_millis(500);

/// This node's membership in the cluster.
#[derive(Debug)]
pub struct Membership {
    server: ActorRef<NodeServerMessage>,
    keeper: JoinHandle<()>,
}

impl Membership {
    pub async fn join(
        name: &str,
        listen: SocketAddr,
        cookie: String,
        peers: Vec<String>,
    ) -> anyhow::Result<Self> {
        let server = NodeServer::new(
            listen.port(),
            cookie,
            name.to_owned(),
            listen.ip().to_string(),
            None,
            None,
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(Some(format!("mart.cluster.{name}")), server, ())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the cluster listener on {listen}: {e}"))?;
        tracing::info!(%listen, peers = ?peers, "cluster listener started");
        let keeper = tokio::spawn(keep_peers(server.clone(), peers));
        Ok(Self { server, keeper })
    }

    /// Peers connected now: (name, address).
    pub async fn sessions(&self) -> Vec<(String, String)> {
        match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 1000) {
            Ok(sessions) => sessions
                .values()
                .map(|s| {
                    let name = s
                        .peer_name
                        .as_ref()
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    (name, s.peer_addr.clone())
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn leave(&self) {
        self.keeper.abort();
        self.server.stop(Some("node shutting down".into()));
    }
}

/// Who is in the cluster as this node sees it: itself, every peer it has a
/// session with or is configured to join, and which services run where.
pub async fn view(
    membership: Option<&Membership>,
    me: &str,
    peers: &[String],
) -> serde_json::Value {
    let sessions = match membership {
        Some(m) => {
            ractor::call_t!(m.server, NodeServerMessage::GetSessions, 1000).unwrap_or_default()
        }
        None => Default::default(),
    };
    // NodeId -> name, as this node's sessions know them.
    let names: std::collections::HashMap<u64, String> = sessions
        .iter()
        .map(|(id, s)| {
            let name = s
                .peer_name
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| s.peer_addr.clone());
            (*id, name)
        })
        .collect();
    let mut hosts: std::collections::BTreeMap<String, std::collections::BTreeSet<&'static str>> =
        std::collections::BTreeMap::new();
    hosts.entry(me.to_owned()).or_default();
    for service in mart_schema::Service::ALL {
        for cell in ractor::pg::get_members(&service.group()) {
            let id = cell.get_id();
            let node = if id.is_local() {
                me.to_owned()
            } else {
                names
                    .get(&id.node())
                    .cloned()
                    .unwrap_or_else(|| format!("node {}", id.node()))
            };
            hosts.entry(node).or_default().insert(service.name());
        }
    }
    let mut nodes: Vec<serde_json::Value> = hosts
        .iter()
        .map(|(name, services)| {
            let session = sessions
                .values()
                .find(|s| s.peer_name.as_ref().is_some_and(|p| &p.name == name));
            serde_json::json!({
                "name": name,
                "self": name == me,
                "address": session.and_then(|s| s.peer_name.as_ref().map(|p| p.connection_string.clone())),
                "services": services,
                "reachable": true,
            })
        })
        .collect();
    // Configured peers with no session: down, or not yet joined.
    for peer in peers {
        let connected = sessions.values().any(|s| {
            s.peer_name
                .as_ref()
                .is_some_and(|p| p.connection_string == *peer)
                || s.peer_addr == *peer
        });
        if !connected {
            nodes.push(serde_json::json!({
                "name": null, "self": false, "address": peer, "services": [], "reachable": false,
            }));
        }
    }
    serde_json::json!({ "node": me, "nodes": nodes })
}

async fn keep_peers(server: ActorRef<NodeServerMessage>, peers: Vec<String>) {
    let mut connected = vec![false; peers.len()];
    let mut ticker = tokio::time::interval(KEEP_EVERY);
    loop {
        ticker.tick().await;
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else {
            continue;
        };
        for (i, peer) in peers.iter().enumerate() {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host(peer.as_str())
                .await
                .map(|addrs| addrs.collect())
                .unwrap_or_default();
            // A session counts for this peer if the peer advertised this address,
            // or if we dialled it (the session's remote address is the peer's).
            let up = sessions.values().any(|s| {
                let advertised = s.peer_name.as_ref().map(|p| p.connection_string.as_str());
                advertised == Some(peer.as_str())
                    || s.peer_addr
                        .parse::<SocketAddr>()
                        .is_ok_and(|a| resolved.contains(&a))
            });
            if up {
                if !connected[i] {
                    tracing::info!(%peer, "connected to peer");
                }
                connected[i] = true;
                continue;
            }
            if connected[i] {
                tracing::warn!(%peer, "lost peer; reconnecting");
                connected[i] = false;
            }
            if let Err(e) = ractor_cluster::client_connect(&server, peer.as_str()).await {
                tracing::debug!(%peer, error = %e, "peer not reachable yet");
            }
        }
    }
}
