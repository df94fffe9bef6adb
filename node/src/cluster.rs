//! Joining the cluster: this node's `ractor_cluster` server, and a keeper that
//! dials every configured peer and dials again whenever a connection drops
//! (`ractor_cluster` does not reconnect by itself).
//!
//! Any live member is enough to join: each node runs a directory actor that
//! tells peers which nodes it is connected to, and the keeper dials those too
//! (with TLS when configured — `ractor_cluster`'s own transitive mode dials
//! without it).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mart_actors::wire::Wire;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::task::JoinHandle;

/// How often the keeper checks its peers.
const KEEP_EVERY: Duration = Duration::from_millis(500);
/// Every how many checks it also asks its peers whom they know.
const DISCOVER_EVERY: u32 = 4;
/// The group of every node's directory actor.
const DIRECTORY: &str = "mart.cluster.directory";

/// A node's directory: the addresses of the nodes it is connected to.
#[derive(Debug, ractor_cluster::RactorClusterMessage)]
pub enum DirectoryMsg {
    #[rpc]
    Peers(Wire<()>, RpcReplyPort<Wire<Vec<String>>>),
}

struct Directory;

impl Actor for Directory {
    type Msg = DirectoryMsg;
    type State = ActorRef<NodeServerMessage>;
    type Arguments = ActorRef<NodeServerMessage>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        server: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        ractor::pg::join(DIRECTORY.into(), vec![myself.get_cell()]);
        Ok(server)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        DirectoryMsg::Peers(_, reply): Self::Msg,
        server: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let known = ractor::call_t!(server, NodeServerMessage::GetSessions, 500)
            .map(|sessions| {
                sessions
                    .values()
                    .filter_map(|s| s.peer_name.as_ref().map(|p| p.connection_string.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let _ = reply.send(Wire::Value(known));
        Ok(())
    }
}

/// This node's membership in the cluster.
#[derive(Debug)]
pub struct Membership {
    server: ActorRef<NodeServerMessage>,
    keeper: JoinHandle<()>,
    /// The configured peers other than this node.
    peers: Vec<String>,
}

/// Whether `peer` names this node: its advertised address, or a host that
/// resolves to one of this machine's addresses at its cluster port (a peer
/// list shared by every node, as docker-compose writes it, names each).
async fn is_me(peer: &str, me: &str, listen: SocketAddr) -> bool {
    if peer == me {
        return true;
    }
    let Ok(resolved) = tokio::net::lookup_host(peer).await else {
        return false;
    };
    let mut at_my_port = resolved.filter(|addr| addr.port() == listen.port());
    if !listen.ip().is_unspecified() {
        return at_my_port.any(|addr| addr.ip() == listen.ip());
    }
    // Listening on every interface: any of this host's addresses is mine.
    let local: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| std::net::IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
                })
                .collect()
        })
        .unwrap_or_default();
    at_my_port.any(|addr| local.contains(&addr.ip()))
}

impl Membership {
    pub async fn join(
        name: &str,
        listen: SocketAddr,
        advertise: Option<String>,
        cookie: String,
        peers: Vec<String>,
        tls: Option<TlsFiles>,
    ) -> anyhow::Result<Self> {
        let tls = tls.map(|files| files.load()).transpose()?;
        let incoming = tls
            .as_ref()
            .map(|(acceptor, _)| ractor_cluster::IncomingEncryptionMode::Tls(acceptor.clone()));
        // Peers learn this node's address from what it announces: the host
        // they must dial, not the (maybe unspecified) one it listens on.
        let host = match advertise {
            Some(host) => host,
            None if listen.ip().is_unspecified() => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| listen.ip().to_string()),
            None => listen.ip().to_string(),
        };
        let me = format!("{host}:{}", listen.port());
        let server = NodeServer::new(listen.port(), cookie, name.to_owned(), host, incoming, None)
            .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(Some(format!("mart.cluster.{name}")), server, ())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the cluster listener on {listen}: {e}"))?;
        tracing::info!(%listen, advertised = %me, peers = ?peers, tls = tls.is_some(), "cluster listener started");
        Actor::spawn(None, Directory, server.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the cluster directory: {e}"))?;
        let connector = tls.map(|(_, connector)| connector);
        let mut others = Vec::new();
        for peer in peers {
            if is_me(&peer, &me, listen).await {
                tracing::debug!(%peer, "the peer list names this node; not dialled");
            } else {
                others.push(peer);
            }
        }
        let keeper = tokio::spawn(keep_peers(server.clone(), others.clone(), me, connector));
        Ok(Self {
            server,
            keeper,
            peers: others,
        })
    }

    /// The configured peers other than this node.
    pub fn peers(&self) -> &[String] {
        &self.peers
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
                        .map(|p| node_name(&p.name).to_owned())
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
                .map(|p| node_name(&p.name).to_owned())
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
                .find(|s| s.peer_name.as_ref().is_some_and(|p| node_name(&p.name) == name));
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

/// A peer's `--node-name`: `ractor_cluster` announces `<name>@<host>`; the
/// rest of mart (this view, entity owners) knows nodes by name alone.
fn node_name(announced: &str) -> &str {
    announced
        .rsplit_once('@')
        .map_or(announced, |(name, _)| name)
}

/// Dials the configured peers and those they know of, again whenever a
/// connection drops. `me` is this node's advertised address.
async fn keep_peers(
    server: ActorRef<NodeServerMessage>,
    configured: Vec<String>,
    me: String,
    tls: Option<tokio_rustls::TlsConnector>,
) {
    let mut connected: std::collections::HashMap<String, bool> = Default::default();
    let mut discovered: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(KEEP_EVERY);
    let mut round = 0u32;
    loop {
        ticker.tick().await;
        round = round.wrapping_add(1);
        if round.is_multiple_of(DISCOVER_EVERY) {
            // Only what someone advertises now: a node gone for good drops out.
            discovered = discover(&me).await;
        }
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else {
            continue;
        };
        let targets: BTreeSet<&String> = configured
            .iter()
            .chain(&discovered)
            .filter(|peer| **peer != me)
            .collect();
        for peer in targets {
            let was_up = connected.entry(peer.clone()).or_default();
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
                if !*was_up {
                    tracing::info!(%peer, "connected to peer");
                }
                *was_up = true;
                continue;
            }
            if *was_up {
                tracing::warn!(%peer, "lost peer; reconnecting");
                *was_up = false;
            }
            let dialled = match &tls {
                None => ractor_cluster::client_connect(&server, peer.as_str()).await,
                Some(connector) => {
                    // The peer's certificate must name the host we dial.
                    let host = peer
                        .rsplit_once(':')
                        .map_or(peer.as_str(), |(host, _)| host);
                    match rustls::pki_types::ServerName::try_from(host.to_owned()) {
                        Ok(name) => {
                            ractor_cluster::client_connect_enc(
                                &server,
                                peer.as_str(),
                                connector.clone(),
                                name,
                            )
                            .await
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "peer address is not a TLS server name");
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = dialled {
                tracing::debug!(%peer, error = %e, "peer not reachable yet");
            }
        }
    }
}

/// The addresses the nodes this one is connected to are connected to.
async fn discover(me: &str) -> BTreeSet<String> {
    let asks = ractor::pg::get_members(&DIRECTORY.to_owned())
        .into_iter()
        .filter(|cell| !cell.get_id().is_local())
        .map(|cell| async move {
            let directory = ActorRef::<DirectoryMsg>::from(cell);
            match directory
                .call(
                    |reply| DirectoryMsg::Peers(Wire::Value(()), reply),
                    Some(Duration::from_secs(1)),
                )
                .await
            {
                Ok(CallResult::Success(Wire::Value(peers))) => peers,
                _ => Vec::new(),
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .filter(|peer| peer != me)
        .collect()
}

/// Certificate, key and CA for mutual TLS between nodes: every node presents a
/// certificate signed by the CA, in both directions, on top of the cookie.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl TlsFiles {
    fn load(&self) -> anyhow::Result<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read_certs = |path: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{}: no certificate", path.display());
            Ok(certs)
        };
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certs(&self.ca)? {
            roots
                .add(ca)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.ca.display()))?;
        }
        let roots = std::sync::Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("cluster TLS CA: {e}"))?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| anyhow::anyhow!("cluster TLS certificate: {e}"))?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| anyhow::anyhow!("cluster TLS certificate: {e}"))?;
        Ok((
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
        ))
    }
}
