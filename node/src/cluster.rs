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
        tls: Option<TlsFiles>,
    ) -> anyhow::Result<Self> {
        let tls = tls.map(|files| files.load()).transpose()?;
        let incoming = tls
            .as_ref()
            .map(|(acceptor, _)| ractor_cluster::IncomingEncryptionMode::Tls(acceptor.clone()));
        let server = NodeServer::new(
            listen.port(),
            cookie,
            name.to_owned(),
            listen.ip().to_string(),
            incoming,
            None,
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(Some(format!("mart.cluster.{name}")), server, ())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the cluster listener on {listen}: {e}"))?;
        tracing::info!(%listen, peers = ?peers, tls = tls.is_some(), "cluster listener started");
        let connector = tls.map(|(_, connector)| connector);
        let keeper = tokio::spawn(keep_peers(server.clone(), peers, connector));
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

async fn keep_peers(
    server: ActorRef<NodeServerMessage>,
    peers: Vec<String>,
    tls: Option<tokio_rustls::TlsConnector>,
) {
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
