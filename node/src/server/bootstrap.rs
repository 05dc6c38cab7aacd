//! Orchestrated bootstrap (`panal start --bootstrap-expect N --peers … --cluster-token-file
//! F`): nodes started together by an orchestrator (systemd on several VMs, Docker Swarm)
//! form exactly one cluster without anyone running `--init` or `--join` by hand.
//!
//! Every node derives the same cluster identity and join tokens from the shared token
//! file, so nothing needs to be exchanged but names. A node without data asks every peer
//! (`POST /bootstrap/hello` on the peer port, authenticated with a key derived from the
//! token) who it is and whether it already belongs to the cluster:
//!
//! - a peer that is a member: join through it. A node listed in `--peers` (a bootstrap
//!   candidate: its own hello came back) joins with the derived manager token, and the
//!   leader promotes it only while fewer than N managers exist, so candidates beyond the
//!   expected managers stay workers; a node not listed (a worker pointing at a manager)
//!   joins with the derived worker token and is never promoted, whatever the order of
//!   the joins;
//! - no member yet: once N candidates (this node included) answer, the one with the
//!   smallest name initialises the cluster and the others join it on their next round.
//!   With more than N peers listed, a peer that has not answered yet (still starting) may
//!   have a smaller name: the node waits until every listed peer answered, or for
//!   [`INIT_GRACE`] after it first could have initialised. Otherwise two nodes could both
//!   initialise: the second smallest while the smallest was starting, and the smallest
//!   once up, before the other's cluster showed in its hello (seen in the test suite).
//!   Both can still happen if a peer stays silent past the grace and comes up at the very
//!   moment another initialises; start exactly N managers with the same `--peers`.
//!
//! A node with data restarts from it as usual (and keeps answering hello, so late nodes
//! find the cluster).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use panal_actors::cluster::{ClusterConfig, JoinRole, JoinToken};
use panal_raft::{require_peer_key, PeerClient};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::server::tls::CaMaterial;

/// Default peer port, used when a peer or `--join` names a host without one.
pub const DEFAULT_PEER_PORT: u16 = 7701;

/// How long one hello may take; a peer slower than this counts as absent for a round.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node that could initialise waits for listed peers that have not answered.
pub const INIT_GRACE: Duration = Duration::from_secs(5);

/// What every node derives from the shared cluster token.
#[derive(Debug, Clone)]
pub struct SharedSecrets {
    pub config: ClusterConfig,
    /// Authenticates hello requests between bootstrapping nodes.
    pub hello_key: String,
    /// The cluster CA, derived from the token (see `tls::ca`).
    pub ca: CaMaterial,
}

impl SharedSecrets {
    /// Reads the token file: one line of at least 16 characters, e.g. from
    /// `openssl rand -hex 32`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Fatal(format!("cannot read --cluster-token-file {}: {e}", path.display())))?;
        Self::derive(text.trim())
            .map_err(|reason| Error::Fatal(format!("--cluster-token-file {}: {reason}", path.display())))
    }

    pub fn derive(token: &str) -> std::result::Result<Self, String> {
        if token.len() < 16 || token.chars().any(char::is_whitespace) {
            return Err(
                "the cluster token must be one word of at least 16 characters (e.g. `openssl rand -hex 32`)".into()
            );
        }
        let derive = |label: &str, hex_len: usize| {
            let mut h = Sha256::new();
            h.update(b"panal-bootstrap-v1\0");
            h.update(label.as_bytes());
            h.update(b"\0");
            h.update(token.as_bytes());
            let mut out = hex::encode(h.finalize());
            out.truncate(hex_len);
            out
        };
        let cluster_id = derive("cluster-id", 16);
        // Every node derives the same CA key, so a joining node knows the fingerprint to
        // expect before it talks to anyone, and a node can present a certificate from the
        // cluster CA from its first hello on.
        let ca = CaMaterial::derive(&cluster_id, &derive("cluster-ca", 64)).map_err(|e| e.0)?;
        Ok(Self {
            config: ClusterConfig {
                cluster_id,
                cluster_secret: derive("cluster-secret", 64),
                manager_secret: derive("manager-token", 32),
                worker_secret: derive("worker-token", 32),
                ca_fingerprint: Some(ca.fingerprint().map_err(|e| e.0)?),
            },
            hello_key: derive("hello", 64),
            ca,
        })
    }

    pub fn manager_token(&self) -> JoinToken {
        self.config.token(JoinRole::Manager)
    }

    pub fn token(&self, role: JoinRole) -> JoinToken {
        self.config.token(role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub name: String,
    /// Random per process: tells this node's own answer apart from another node's with
    /// the same name.
    pub nonce: String,
    /// The cluster this node belongs to, once it has one.
    pub cluster_id: Option<String>,
}

/// This node's answer to hello requests, shared with the peer server.
#[derive(Debug, Clone)]
pub struct HelloState {
    name: String,
    nonce: String,
    cluster_id: Arc<OnceLock<String>>,
}

impl HelloState {
    pub fn new(name: String) -> Self {
        Self { name, nonce: crate::server::identity::random_hex(8), cluster_id: Default::default() }
    }

    /// Called once this node belongs to a cluster (created, joined, or restarted).
    pub fn set_member_of(&self, cluster_id: &str) {
        let _ = self.cluster_id.set(cluster_id.to_string());
    }

    fn hello(&self) -> Hello {
        Hello { name: self.name.clone(), nonce: self.nonce.clone(), cluster_id: self.cluster_id.get().cloned() }
    }
}

/// The peer-port route answering hello, authenticated with the derived key.
pub fn hello_router(state: HelloState, hello_key: String) -> Router {
    async fn answer(State(state): State<HelloState>) -> Json<Hello> {
        Json(state.hello())
    }
    Router::new()
        .route("/bootstrap/hello", post(answer))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(hello_key, require_peer_key))
}

/// What a node without data does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the cluster (this node has the smallest name among N candidates).
    Init,
    /// Join through this member's peer address.
    Join { via: String },
}

/// Decides from one round of answers (this node's own answer excluded). Pure, so the
/// rules are tested without a network.
pub fn decide(me: &str, expect: usize, cluster_id: &str, answers: &[(String, Hello)]) -> Result<Option<Decision>> {
    if let Some((addr, hello)) = answers.iter().find(|(_, h)| h.cluster_id.is_some()) {
        let theirs = hello.cluster_id.as_deref().unwrap_or_default();
        if theirs != cluster_id {
            return Err(Error::Fatal(format!(
                "peer {} at {addr} belongs to cluster {theirs}, not to the cluster of this token ({cluster_id})",
                hello.name
            )));
        }
        return Ok(Some(Decision::Join { via: addr.clone() }));
    }
    let mut names: BTreeSet<&str> = answers.iter().map(|(_, h)| h.name.as_str()).collect();
    if names.contains(me) {
        return Err(Error::Fatal(format!(
            "another node is also named {me:?}; every node needs its own --name (or host name)"
        )));
    }
    names.insert(me);
    Ok((names.len() >= expect && names.first() == Some(&me)).then_some(Decision::Init))
}

/// Resolves every peer (a name may stand for several addresses, as `tasks.SERVICE` does in
/// Swarm) to `ip:port` strings. Names that do not resolve yet are skipped.
async fn resolve(peers: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for peer in peers {
        let target = with_default_port(peer);
        match tokio::net::lookup_host(target.clone()).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.to_string())),
            Err(e) => tracing::debug!(peer = %target, error = %e, "peer does not resolve yet"),
        }
    }
    out.into_iter().collect()
}

/// One round of hello: the answers of others (this node's own answer dropped) and how
/// many resolved peer addresses did not answer.
struct Round {
    answers: Vec<(String, Hello)>,
    silent: usize,
    /// This node's own hello came back: it is one of the listed peers.
    listed: bool,
}

/// Asks every peer.
async fn round(client: &PeerClient, peers: &[String], me: &HelloState) -> Round {
    let addrs = resolve(peers).await;
    let asks = addrs.iter().map(|addr| async move {
        let answer = client.call_json::<_, Hello>(addr, "/bootstrap/hello", &(), HELLO_TIMEOUT).await;
        answer.ok().map(|h| (addr.clone(), h))
    });
    let answered: Vec<(String, Hello)> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    let silent = addrs.len() - answered.len();
    let listed = answered.iter().any(|(_, h)| h.nonce == me.nonce);
    Round { answers: answered.into_iter().filter(|(_, h)| h.nonce != me.nonce).collect(), silent, listed }
}

/// Whether a node allowed to initialise does so now: at once when every listed peer
/// answered (none unseen can have a smaller name), else once it has been allowed for
/// [`INIT_GRACE`].
fn init_now(silent: usize, allowed_for: Duration) -> bool {
    silent == 0 || allowed_for >= INIT_GRACE
}

/// Rounds a node that never heard its own hello waits before joining as a worker: its
/// own answer may only have been slow.
const ROUNDS_BEFORE_WORKER: usize = 3;

/// Polls the peers until this node may initialise the cluster or has a member to join;
/// returns the decision and the role a join asks for (see the module's documentation).
pub async fn await_decision(
    secrets: &SharedSecrets,
    peers: &[String],
    expect: usize,
    me: &HelloState,
    tls: Option<panal_raft::PeerTls>,
) -> Result<(Decision, JoinRole)> {
    let client = PeerClient::with_tls(secrets.hello_key.clone(), tls);
    let mut last_report = Instant::now();
    let mut init_allowed_since: Option<Instant> = None;
    let (mut listed, mut rounds) = (false, 0);
    loop {
        let Round { answers, silent, listed: heard_self } = round(&client, peers, me).await;
        listed |= heard_self;
        rounds += 1;
        let decision = decide(&me.name, expect, &secrets.config.cluster_id, &answers)?;
        let decision = match decision {
            Some(Decision::Init) => {
                let since = *init_allowed_since.get_or_insert_with(Instant::now);
                init_now(silent, since.elapsed()).then_some(Decision::Init)
            }
            Some(Decision::Join { .. }) if !listed && rounds < ROUNDS_BEFORE_WORKER => None,
            other => {
                init_allowed_since = None;
                other
            }
        };
        if let Some(decision) = decision {
            let role = if listed { JoinRole::Manager } else { JoinRole::Worker };
            tracing::info!(?decision, ?role, peers = answers.len(), silent, "bootstrap decided");
            return Ok((decision, role));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let seen: Vec<&str> = answers.iter().map(|(_, h)| h.name.as_str()).collect();
            tracing::info!(expect, ?seen, "waiting for the expected peers to answer");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn with_default_port(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/');
    if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PEER_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str, cluster: Option<&str>) -> (String, Hello) {
        (
            format!("{name}:7701"),
            Hello { name: name.into(), nonce: format!("nonce-{name}"), cluster_id: cluster.map(Into::into) },
        )
    }

    #[test]
    fn every_node_derives_the_same_secrets_and_a_token_that_parses() {
        let a = SharedSecrets::derive("0123456789abcdef-shared").unwrap();
        let b = SharedSecrets::derive("0123456789abcdef-shared").unwrap();
        let other = SharedSecrets::derive("0123456789abcdef-other").unwrap();
        assert_eq!(a.config.cluster_secret, b.config.cluster_secret);
        assert_ne!(a.config.cluster_secret, other.config.cluster_secret);
        assert_ne!(a.config.manager_secret, a.config.worker_secret);
        assert_eq!(a.config.ca_fingerprint, b.config.ca_fingerprint, "the same CA everywhere");
        assert_ne!(a.config.ca_fingerprint, other.config.ca_fingerprint);
        let token: JoinToken = a.manager_token().to_string().parse().unwrap();
        assert_eq!(a.config.verify(&token).unwrap(), JoinRole::Manager);
        assert!(SharedSecrets::derive("short").is_err());
        assert!(SharedSecrets::derive("has a space in it, long enough").is_err());
    }

    #[test]
    fn the_smallest_name_initialises_once_enough_candidates_answer() {
        let id = "c1";
        assert_eq!(decide("a", 3, id, &[hello("b", None)]).unwrap(), None);
        assert_eq!(decide("a", 3, id, &[hello("b", None), hello("c", None)]).unwrap(), Some(Decision::Init));
        assert_eq!(decide("b", 3, id, &[hello("a", None), hello("c", None)]).unwrap(), None);
        assert_eq!(decide("a", 1, id, &[]).unwrap(), Some(Decision::Init));
    }

    #[test]
    fn a_member_is_joined_and_a_foreign_cluster_or_a_twin_name_is_an_error() {
        let id = "c1";
        let answers = [hello("c", None), hello("b", Some(id))];
        assert_eq!(decide("a", 3, id, &answers).unwrap(), Some(Decision::Join { via: "b:7701".into() }));
        assert!(decide("a", 3, id, &[hello("b", Some("c2"))]).is_err());
        assert!(decide("a", 3, id, &[hello("a", None)]).is_err());
    }

    #[test]
    fn a_node_that_may_initialise_waits_for_silent_peers_up_to_the_grace() {
        assert!(init_now(0, Duration::ZERO), "every listed peer answered");
        assert!(!init_now(1, Duration::ZERO), "a silent peer may have a smaller name");
        assert!(!init_now(1, INIT_GRACE - Duration::from_millis(1)));
        assert!(init_now(1, INIT_GRACE), "a peer that stays down does not block the cluster");
    }

    #[test]
    fn peers_get_the_default_port() {
        assert_eq!(with_default_port("host"), "host:7701");
        assert_eq!(with_default_port("host:9000"), "host:9000");
        assert_eq!(with_default_port("http://10.0.0.1/"), "10.0.0.1:7701");
    }
}
