//! Peer TLS with the cluster's own CA (`--peer-tls on`, the default).
//!
//! - `ca`: the CA, node certificates issued from signing requests, fingerprints (pure).
//! - `config`: the rustls configurations built from a node's credentials.
//! - here: the files under `<data-dir>/tls/` (`ca.pem` the trust bundle, `node.pem`
//!   the node's certificate and the CA that issued it, `node.key`, and `ca.key` on managers
//!   only, all 0600), [`NodeTls`] (the node's live configurations, swapped through `watch`
//!   channels when its certificate or trust changes), the peer routes that sign
//!   certificates and hand the CA key to managers, and the upkeep that follows the
//!   replicated state: renewal, CA rotation, revocation, the CA key on managers only.
//!
//! CA rotation (`panal ca rotate`) is a dual-trust period: a manager makes a new CA and
//! commits its certificate first in the replicated bundle (old + new trusted, the new one
//! signs); other managers fetch its key; every node re-issues its certificate from it as a
//! renewal and records which CA signed it; once every member holds one, the leader drops
//! the old CA from the bundle and every node stops trusting it.

pub mod ca;
pub mod config;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use panal_actors::Replica;
use panal_raft::{MemberRole, NodeInfo};
use rustls::{ClientConfig, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Error, Result};
pub use ca::{CaMaterial, CertError, CertSummary, DEFAULT_CERT_TTL};
pub use config::{Credentials, Revoked};
use panal_actors::cluster::{self, TrustState};
use panal_actors::services::WRITE_TIMEOUT;

impl From<CertError> for Error {
    fn from(e: CertError) -> Self {
        Error::BadRequest("invalid_certificate", e.0)
    }
}

/// The client certificate a peer presented on this TLS connection (verified against the
/// trusted CAs by the handshake), put into every request's extensions by the listener.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub rustls_pki_types::CertificateDer<'static>);

/// A certificate the CA issued, with the trust bundle to install beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub cert_pem: String,
    pub bundle_pem: String,
    /// The issuer's certificate to present after this one, when it is not the bundle's
    /// first (during a CA rotation: the new CA cross-signed by the old one).
    #[serde(default)]
    pub issuer_pem: Option<String>,
}

impl Issued {
    /// The certificate followed by its issuer's.
    pub fn chain_pem(&self) -> String {
        let issuer = self.issuer_pem.clone().unwrap_or_else(|| first_pem(&self.bundle_pem));
        format!("{}\n{}", self.cert_pem.trim_end(), issuer)
    }
}

/// Files under `<data-dir>/tls/`.
#[derive(Debug, Clone)]
pub struct TlsDir(PathBuf);

impl TlsDir {
    pub fn new(data_dir: &Path) -> Self {
        Self(data_dir.join("tls"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> Result<Option<String>> {
        match std::fs::read_to_string(self.file(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Fatal(format!("cannot read {}: {e}", self.file(name).display()))),
        }
    }

    /// Atomically (temp file, fsync, rename), mode 0600.
    fn write(&self, name: &str, text: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| Error::Fatal(format!("cannot write {}: {e}", self.file(name).display()));
        std::fs::create_dir_all(&self.0).map_err(io)?;
        let tmp = self.file(&format!("{name}.tmp"));
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, self.file(name)).map_err(io)
    }

    /// The node's certificate, key and trust bundle, if it has them.
    pub fn node_files(&self) -> Result<Option<(String, String, String)>> {
        match (self.read("node.pem")?, self.read("node.key")?, self.read("ca.pem")?) {
            (Some(cert), Some(key), Some(bundle)) => Ok(Some((cert, key, bundle))),
            _ => Ok(None),
        }
    }

    /// The trust bundle (`ca.pem`), if the node has one.
    pub fn bundle(&self) -> Result<Option<String>> {
        self.read("ca.pem")
    }

    pub fn write_node(&self, cert_pem: &str, key_pem: &str, bundle_pem: &str) -> Result<()> {
        // The key first: a crash in between leaves the old certificate with a new key,
        // which start-up refuses clearly rather than serving a mismatched pair.
        self.write("node.key", key_pem)?;
        self.write("node.pem", cert_pem)?;
        self.write("ca.pem", bundle_pem)
    }

    /// The key (PEM) of the CA with `fingerprint`, if this node holds it: in `ca.key`, or
    /// in `ca-next.key` (the new CA of a rotation this node started).
    pub fn ca_key(&self, fingerprint: &str) -> Result<Option<String>> {
        for name in ["ca.key", "ca-next.key"] {
            if let Some(key) = self.read(name)? {
                if ca::key_fingerprint(&key).is_ok_and(|fp| fp == fingerprint) {
                    return Ok(Some(key));
                }
            }
        }
        Ok(None)
    }

    /// The CA whose certificate is `cert_pem`, if this node holds its key.
    pub fn ca_for(&self, cert_pem: &str) -> Result<Option<CaMaterial>> {
        let fingerprint = ca::fingerprint(cert_pem)?;
        Ok(self.ca_key(&fingerprint)?.map(|key_pem| CaMaterial { cert_pem: cert_pem.to_string(), key_pem }))
    }

    /// Makes the key of `fingerprint` the one in `ca.key` (the rotation this node started
    /// was committed: the older key signs no more); true if it changed.
    fn settle_ca_key(&self, fingerprint: &str) -> Result<bool> {
        let in_next = self.read("ca-next.key")?.filter(|k| ca::key_fingerprint(k).is_ok_and(|fp| fp == fingerprint));
        let Some(key) = in_next else { return Ok(false) };
        self.write("ca.key", &key)?;
        self.remove("ca-next.key")?;
        Ok(true)
    }

    pub fn write_ca_key(&self, key_pem: &str) -> Result<()> {
        self.write("ca.key", key_pem)
    }

    /// The key of a CA being rotated to, kept beside the current one until committed.
    pub fn write_next_ca_key(&self, key_pem: &str) -> Result<()> {
        self.write("ca-next.key", key_pem)
    }

    /// Deletes every CA key this node holds; true if there was one.
    pub fn remove_ca_keys(&self) -> Result<bool> {
        Ok(self.remove("ca.key")? | self.remove("ca-next.key")?)
    }

    fn remove(&self, name: &str) -> Result<bool> {
        match std::fs::remove_file(self.file(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Fatal(format!("cannot delete {}: {e}", self.file(name).display()))),
        }
    }
}

/// The first PEM block of a bundle.
pub fn first_pem(bundle: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(at) => format!("{}\n", &bundle[..at + END.len()]),
        None => bundle.to_string(),
    }
}

/// The node's TLS: its credentials and the configurations built from them, each behind a
/// `watch` channel so that a renewed certificate takes effect on the next connection.
#[derive(Clone)]
pub struct NodeTls {
    inner: Arc<Inner>,
}

struct Inner {
    dir: TlsDir,
    ttl: Duration,
    revoked: Revoked,
    /// Fingerprint of the CA that signs now (first in the trust bundle).
    signing: watch::Sender<String>,
    credentials: Mutex<Credentials>,
    peer: watch::Sender<Arc<ServerConfig>>,
    mesh: watch::Sender<Arc<ServerConfig>>,
    api: watch::Sender<Arc<ServerConfig>>,
    client: watch::Sender<Arc<ClientConfig>>,
}

impl NodeTls {
    /// From `dir`'s files, or with interim self-signed credentials (nothing trusts them) while
    /// the node has none yet.
    pub fn open(dir: TlsDir, ttl: Duration) -> Result<Self> {
        let credentials = match dir.node_files()? {
            Some((cert, key, bundle)) => Credentials::from_pem(&cert, &key, &bundle)
                .map_err(|e| Error::Fatal(format!("{}: {e}", dir.path().display())))?,
            None => Credentials::self_signed_interim().map_err(|e| Error::Fatal(e.0))?,
        };
        let revoked = Revoked::default();
        let credentials = credentials.with_revoked(revoked.clone());
        let configs = Configs::build(&credentials).map_err(|e| Error::Fatal(e.0))?;
        let signing = ca::fingerprint(credentials.bundle_pem()).unwrap_or_default();
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                ttl,
                revoked,
                signing: watch::channel(signing).0,
                credentials: Mutex::new(credentials),
                peer: watch::channel(configs.peer).0,
                mesh: watch::channel(configs.mesh).0,
                api: watch::channel(configs.api).0,
                client: watch::channel(configs.client).0,
            }),
        })
    }

    pub fn dir(&self) -> &TlsDir {
        &self.inner.dir
    }

    /// Lifetime of the certificates this node asks for (`--cert-ttl`).
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Installs a certificate the CA issued, for `key_pem`.
    pub fn install_issued(&self, issued: &Issued, key_pem: &str) -> Result<()> {
        self.install(&issued.chain_pem(), key_pem, &issued.bundle_pem)
    }

    /// Installs a new certificate (`chain_pem`: the certificate, then its issuer's, or
    /// the certificate alone when the bundle's first CA issued it): files first, then
    /// every configuration.
    pub fn install(&self, cert_pem: &str, key_pem: &str, bundle_pem: &str) -> Result<()> {
        let chain_pem = match ca::certificates(cert_pem)?.len() {
            1 => Issued { cert_pem: cert_pem.to_string(), bundle_pem: bundle_pem.to_string(), issuer_pem: None }
                .chain_pem(),
            _ => cert_pem.to_string(),
        };
        let credentials =
            Credentials::from_pem(&chain_pem, key_pem, bundle_pem)?.with_revoked(self.inner.revoked.clone());
        let configs = Configs::build(&credentials)?;
        self.inner.dir.write_node(&chain_pem, key_pem, bundle_pem)?;
        *self.inner.credentials.lock().unwrap_or_else(|p| p.into_inner()) = credentials;
        self.publish(configs, bundle_pem);
        Ok(())
    }

    /// Trusts the CAs of `bundle_pem` (the replicated bundle changed: a CA rotation began
    /// or ended), keeping the certificate; false if it already did.
    pub fn retrust(&self, bundle_pem: &str) -> Result<bool> {
        let mut credentials = self.inner.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if credentials.bundle_pem() == bundle_pem {
            return Ok(false);
        }
        let next = credentials.with_bundle(bundle_pem)?;
        let configs = Configs::build(&next)?;
        self.inner.dir.write("ca.pem", bundle_pem)?;
        *credentials = next;
        drop(credentials);
        self.publish(configs, bundle_pem);
        Ok(true)
    }

    fn publish(&self, configs: Configs, bundle_pem: &str) {
        self.inner.peer.send_replace(configs.peer);
        self.inner.mesh.send_replace(configs.mesh);
        self.inner.api.send_replace(configs.api);
        self.inner.client.send_replace(configs.client);
        if let Ok(fp) = ca::fingerprint(bundle_pem) {
            self.inner.signing.send_if_modified(|current| {
                if *current == fp {
                    return false;
                }
                *current = fp;
                true
            });
        }
    }

    /// Refuses the certificates of these nodes from the next handshake on.
    pub fn set_revoked(&self, ids: &std::collections::BTreeSet<u64>) {
        self.inner.revoked.set(ids);
    }

    /// Changes when another CA starts signing (a rotation began).
    pub fn signing_ca(&self) -> watch::Receiver<String> {
        self.inner.signing.subscribe()
    }

    /// The fingerprint of the CA that issued this node's certificate.
    pub fn issuer_fingerprint(&self) -> Result<String> {
        Ok(self.inner.credentials.lock().unwrap_or_else(|p| p.into_inner()).issuer_fingerprint()?)
    }

    /// The peer port's configuration (client certificates verified when presented).
    pub fn peer_server(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.inner.peer.subscribe()
    }

    /// The mesh port's configuration (client certificate required).
    pub fn mesh_server(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.inner.mesh.subscribe()
    }

    /// The public API port's configuration: HTTPS with this node's certificate, no client
    /// certificates. Renewals arrive through the channel.
    pub fn api_server(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.inner.api.subscribe()
    }

    /// The client side of peer and mesh connections (presents this node's certificate).
    pub fn client(&self) -> watch::Receiver<Arc<ClientConfig>> {
        self.inner.client.subscribe()
    }

    /// This node's certificate, as far as `ca show` cares.
    pub fn certificate(&self) -> Result<CertSummary> {
        Ok(self.inner.credentials.lock().unwrap_or_else(|p| p.into_inner()).summary()?)
    }
}

struct Configs {
    peer: Arc<ServerConfig>,
    mesh: Arc<ServerConfig>,
    api: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Configs {
    fn build(c: &Credentials) -> std::result::Result<Self, CertError> {
        Ok(Self {
            peer: Arc::new(c.peer_server()?),
            mesh: Arc::new(c.mesh_server()?),
            api: Arc::new(c.api_server()?),
            client: Arc::new(c.client()?),
        })
    }
}

/// The host names and addresses a node's certificate names: the hosts of its advertised
/// addresses, plus `extra` (e.g. more API names).
pub fn hosts_of(node: &NodeInfo, extra: &[String]) -> Vec<String> {
    let host = |addr: &str| addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(['[', ']']).to_string();
    let mut hosts: Vec<String> =
        [&node.peer_addr, &node.api_addr, &node.mesh_addr].into_iter().map(|a| host(a)).collect();
    hosts.extend(extra.iter().cloned());
    hosts.retain(|h| !h.is_empty() && h != "0.0.0.0" && h != "::");
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The `auto` certificate of the API port (`--api-tls auto`): a fresh key and a
/// certificate for the API's names, signed by the cluster CA like the node's own.
pub struct ApiIssuer {
    pub replica: Replica,
    pub tls: NodeTls,
}

impl crate::server::api_tls::ApiCertificateIssuer for ApiIssuer {
    fn issue<'a>(
        &'a self,
        request: &'a crate::server::api_tls::ApiCertificateRequest,
    ) -> futures::future::BoxFuture<'a, Result<crate::server::api_tls::IssuedCertificate>> {
        Box::pin(async move {
            let hosts: Vec<String> =
                request.dns_names.iter().cloned().chain(request.ip_addresses.iter().map(|ip| ip.to_string())).collect();
            let (key_pem, csr_pem) = ca::node_request(&hosts)?;
            let issued = sign_anywhere(&self.replica, &self.tls, &csr_pem, self.replica.id()).await?;
            let summary = CertSummary::of_pem(&issued.cert_pem)?;
            let chain = ca::certificates(&issued.chain_pem())?;
            use rustls::pki_types::pem::PemObject;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| Error::Internal(format!("the API key just made is unreadable: {e}")))?;
            let certified = rustls::sign::CertifiedKey::from_der(chain, key, &config::provider())
                .map_err(|e| Error::Internal(format!("the API certificate does not match its key: {e}")))?;
            Ok(crate::server::api_tls::IssuedCertificate {
                key: Arc::new(certified),
                not_before: summary.not_before,
                not_after: summary.not_after,
            })
        })
    }

    fn interim(&self) -> Arc<ServerConfig> {
        self.tls.api_server().borrow().clone()
    }

    fn replaced(&self) -> futures::future::BoxFuture<'_, ()> {
        let mut signing = self.tls.signing_ca();
        Box::pin(async move {
            if signing.changed().await.is_err() {
                futures::future::pending::<()>().await
            }
        })
    }
}

/// Peer routes of the CA, behind the peer key and a client certificate.
pub fn routes(replica: Replica, tls: NodeTls) -> Router {
    Router::new()
        .route("/tls/sign", post(sign_route))
        .route("/tls/ca-key", post(ca_key_route))
        .route("/tls/rotate", post(rotate_route))
        .with_state(CaState { replica, tls })
}

#[derive(Clone)]
struct CaState {
    replica: Replica,
    tls: NodeTls,
}

/// A signing request for the calling node's own certificate.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignRequest {
    pub csr_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CaKey {
    pub key_pem: String,
}

/// Which CA's key a manager asks for.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaKeyRequest {
    pub fingerprint: String,
}

/// A CA rotation begun: the new CA signs from now on, the old one stays trusted until
/// every member holds a certificate from the new one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaRotated {
    /// The new CA's fingerprint (SHA-256 of its public key, hex), as in new join tokens.
    pub fingerprint: String,
    /// The CA being replaced.
    pub previous_fingerprint: String,
}

/// The node id named by the caller's client certificate.
fn caller(req_cert: Option<&ClientCertificate>) -> Result<u64> {
    let cert = req_cert.ok_or_else(|| Error::Unauthorized("a client certificate is required".into()))?;
    CertSummary::of_der(cert.0.as_ref())?
        .node_id()
        .ok_or_else(|| Error::Forbidden("the client certificate names no member".into()))
}

async fn sign_route(
    State(s): State<CaState>,
    cert: Option<axum::Extension<ClientCertificate>>,
    Json(req): Json<SignRequest>,
) -> Response {
    let result = async {
        let node_id = caller(cert.as_ref().map(|c| &c.0))?;
        if !s.replica.members().iter().any(|(id, _, _)| *id == node_id) {
            return Err(Error::Forbidden(format!("node {node_id} is not a member")));
        }
        sign_locally(&s.replica, &s.tls, &req.csr_pem, node_id).await
    }
    .await;
    match result {
        Ok(issued) => Json(issued).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ca_key_route(
    State(s): State<CaState>,
    cert: Option<axum::Extension<ClientCertificate>>,
    Json(req): Json<CaKeyRequest>,
) -> Response {
    let result = (|| {
        let node_id = caller(cert.as_ref().map(|c| &c.0))?;
        if !is_manager(&s.replica, node_id) {
            return Err(Error::Forbidden(format!("node {node_id} is not a manager: the CA key stays with managers")));
        }
        let key_pem = s.tls.dir().ca_key(&req.fingerprint)?.ok_or_else(no_ca_key)?;
        tracing::info!(node_id, fingerprint = %req.fingerprint, "handing the CA key to a manager");
        Ok(CaKey { key_pem })
    })();
    match result {
        Ok(key) => Json(key).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rotate_route(State(s): State<CaState>, cert: Option<axum::Extension<ClientCertificate>>) -> Response {
    let result = async {
        let node_id = caller(cert.as_ref().map(|c| &c.0))?;
        tracing::info!(by_node = node_id, "CA rotation asked by a member");
        if !is_manager(&s.replica, s.replica.id()) {
            return Err(Error::Unavailable("no_manager", "this node is not a manager".into()));
        }
        rotate_here(&s.replica, &s.tls).await
    }
    .await;
    match result {
        Ok(rotated) => Json(rotated).into_response(),
        Err(e) => e.into_response(),
    }
}

fn no_ca_key() -> Error {
    Error::Unavailable("no_ca_key", "this node does not hold the CA key (ask a manager)".into())
}

fn is_manager(replica: &Replica, node_id: u64) -> bool {
    replica.members().iter().any(|(id, _, role)| *id == node_id && *role == MemberRole::Manager)
}

/// The replicated trust state (`no_ca_key` while this node's state has no bundle yet).
async fn replicated_trust(replica: &Replica) -> Result<(String, TrustState)> {
    let state = replica.state_machine().read(|db| cluster::trust_state(db))??;
    let bundle = state.bundle.clone().ok_or_else(no_ca_key)?;
    Ok((bundle, state))
}

/// Signs with the CA that signs now (first in `bundle_pem`), if this node holds its key;
/// `cross_pem`, during a rotation, goes with the certificate as its issuer's.
pub fn sign_with(
    tls: &NodeTls,
    bundle_pem: &str,
    cross_pem: Option<&str>,
    csr_pem: &str,
    node_id: u64,
) -> Result<Issued> {
    let ca = tls.dir().ca_for(&first_pem(bundle_pem))?.ok_or_else(no_ca_key)?;
    let cert_pem = ca.issue(csr_pem, node_id, tls.ttl())?;
    Ok(Issued { cert_pem, bundle_pem: bundle_pem.to_string(), issuer_pem: cross_pem.map(str::to_string) })
}

/// Signs with this node's key of the cluster's current CA.
pub async fn sign_locally(replica: &Replica, tls: &NodeTls, csr_pem: &str, node_id: u64) -> Result<Issued> {
    let (bundle, state) = replicated_trust(replica).await?;
    let cross = state.rotation.as_ref().map(|r| r.cross_pem.as_str()).filter(|c| !c.is_empty());
    sign_with(tls, &bundle, cross, csr_pem, node_id)
}

/// True if this node can sign with the cluster's current CA.
pub async fn holds_signing_key(replica: &Replica, tls: &NodeTls) -> bool {
    match replicated_trust(replica).await {
        Ok((bundle, _)) => matches!(tls.dir().ca_for(&first_pem(&bundle)), Ok(Some(_))),
        Err(_) => false,
    }
}

/// Begins a CA rotation (`panal ca rotate`): here on a manager, else on one asked over the
/// peer port.
pub async fn rotate(replica: &Replica, tls: &NodeTls) -> Result<CaRotated> {
    if is_manager(replica, replica.id()) {
        match rotate_here(replica, tls).await {
            Err(Error::Unavailable("no_ca_key", _)) => {}
            other => return other,
        }
    }
    let mut last = Error::Unavailable("no_manager", "no manager answered".into());
    for addr in manager_addrs(replica) {
        match replica.peer_client().call_json::<_, CaRotated>(&addr, "/tls/rotate", &(), WRITE_TIMEOUT).await {
            Ok(rotated) => return Ok(rotated),
            Err(e) => last = Error::Unavailable("no_manager", format!("manager {addr}: {e}")),
        }
    }
    Err(last)
}

/// A new CA whose key stays here (and goes to other managers), its certificate committed
/// first in the bundle.
async fn rotate_here(replica: &Replica, tls: &NodeTls) -> Result<CaRotated> {
    let config = replica
        .state_machine()
        .read(|db| cluster::config(db))??
        .ok_or(Error::Actors(panal_actors::Error::NotInitialized))?;
    let previous = config
        .ca_fingerprint
        .clone()
        .ok_or_else(|| Error::BadRequest("no_ca", "this cluster runs without peer TLS: no CA to rotate".into()))?;
    let (bundle, _) = replicated_trust(replica).await?;
    // The current CA cross-signs the new one.
    let current = tls.dir().ca_for(&first_pem(&bundle))?.ok_or_else(no_ca_key)?;
    let (ca, cross_pem) = current.successor(&config.cluster_id)?;
    let fingerprint = ca.fingerprint()?;
    // Kept before the commit, so the new CA can sign as soon as it is in the bundle; a
    // proposal that fails leaves an unused key that the next rotation replaces.
    tls.dir().write_next_ca_key(&ca.key_pem)?;
    let start = cluster::command::StartCaRotation {
        ca_pem: ca.cert_pem,
        cross_pem,
        fingerprint: fingerprint.clone(),
        previous_fingerprint: previous.clone(),
    };
    panal_actors::propose(replica, start, None, WRITE_TIMEOUT).await?;
    tracing::info!(%fingerprint, %previous, "CA rotation begun: the new CA signs, both are trusted until every member holds a certificate from it");
    Ok(CaRotated { fingerprint, previous_fingerprint: previous })
}

/// Signs `csr_pem` for `node_id`: here when this node holds the CA key, else by the
/// leader or another manager over the peer port (this node's own certificate
/// authenticating the call, which is why only a member's own id is ever signed there).
pub async fn sign_anywhere(replica: &Replica, tls: &NodeTls, csr_pem: &str, node_id: u64) -> Result<Issued> {
    match sign_locally(replica, tls, csr_pem, node_id).await {
        Err(Error::Unavailable("no_ca_key", _)) => {}
        other => return other,
    }
    let request = SignRequest { csr_pem: csr_pem.to_string() };
    let mut last = no_ca_key();
    for addr in manager_addrs(replica) {
        match replica.peer_client().call_json::<_, Issued>(&addr, "/tls/sign", &request, Duration::from_secs(5)).await {
            Ok(issued) => return Ok(issued),
            Err(e) => last = Error::Unavailable("no_ca_key", format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// The leader first, then the other managers.
pub fn manager_addrs(replica: &Replica) -> Vec<String> {
    let me = replica.id();
    let leader = replica.leader().filter(|(id, _)| *id != me).map(|(_, n)| n.peer_addr);
    let managers = replica
        .members()
        .into_iter()
        .filter(|(id, _, role)| *id != me && *role == MemberRole::Manager)
        .map(|(_, n, _)| n.peer_addr);
    let mut out: Vec<String> = leader.into_iter().collect();
    for addr in managers {
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Middleware for peer routes other than the join protocol: the connection must carry a
/// verified client certificate.
pub async fn require_client_certificate(req: Request, next: Next) -> Response {
    if req.extensions().get::<ClientCertificate>().is_none() {
        let remote =
            req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.to_string());
        tracing::warn!(path = %req.uri().path(), remote = %remote.as_deref().unwrap_or("-"), "refused a peer request without a client certificate");
        return Error::Unauthorized("this peer route needs a client certificate from the cluster CA".into())
            .into_response();
    }
    next.run(req).await
}

/// Background upkeep of a member's TLS, once a second, following the replicated state:
/// the revoked nodes; the trust bundle (a CA rotation); the CA key on managers only (a
/// manager without the current one fetches it, a worker deletes its copy); a new
/// certificate at a random point in 50–80 % of its life or at once when another CA signs
/// now; which CA signed it, recorded; and on the leader, the end of a rotation once every
/// member holds a certificate from the new CA.
pub async fn upkeep(replica: Replica, tls: NodeTls) {
    let fraction = 0.5 + rand::random::<f64>() * 0.3;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if replica.is_removed() {
            return;
        }
        let state = match replica.state_machine().read(|db| cluster::trust_state(db)) {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster's trust state");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's trust state");
                continue;
            }
        };
        tls.set_revoked(&state.revoked);
        let Some(bundle) = state.bundle.clone() else { continue };
        match tls.retrust(&bundle) {
            Ok(true) => tracing::info!(
                cas = ca::certificates(&bundle).map(|c| c.len()).unwrap_or(0),
                "now trusting the cluster's current CA bundle"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot trust the cluster's CA bundle"),
        }
        let Ok(signing) = ca::fingerprint(&bundle) else { continue };
        if let Err(e) = keep_ca_key(&replica, &tls, &signing).await {
            tracing::debug!(error = %e, "cannot fetch the CA key yet");
        }
        let (Ok(cert), Ok(issuer)) = (tls.certificate(), tls.issuer_fingerprint()) else { continue };
        let rotated = issuer != signing;
        if rotated || SystemTime::now() >= ca::renewal_time(cert.not_before, cert.not_after, fraction) {
            match renew(&replica, &tls).await {
                Ok(until) => tracing::info!(
                    expires_in_s = until.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                    new_ca = rotated,
                    "renewed this node's certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "certificate renewal failed; retrying"),
            }
            continue;
        }
        if let Err(e) = record_and_finish(&replica, &state, &bundle, &issuer).await {
            tracing::debug!(error = %e, "cannot record this node's certificate yet");
        }
    }
}

/// The CA key lives on managers only: a manager without the current CA's key fetches it
/// from another, a worker (a demoted manager) deletes its copy.
async fn keep_ca_key(replica: &Replica, tls: &NodeTls, signing: &str) -> Result<()> {
    let me = replica.id();
    match replica.members().into_iter().find(|(id, _, _)| *id == me).map(|(_, _, role)| role) {
        Some(MemberRole::Worker) => {
            if tls.dir().remove_ca_keys()? {
                tracing::info!("this node is a worker: deleted its copy of the CA key (it lives on managers only)");
            }
            Ok(())
        }
        Some(MemberRole::Manager) => {
            if tls.dir().settle_ca_key(signing)? {
                tracing::info!(fingerprint = %signing, "the CA this manager made signs now");
            }
            if tls.dir().ca_key(signing)?.is_some() {
                return Ok(());
            }
            let request = CaKeyRequest { fingerprint: signing.to_string() };
            for addr in manager_addrs(replica) {
                let Ok(key) = replica
                    .peer_client()
                    .call_json::<_, CaKey>(&addr, "/tls/ca-key", &request, Duration::from_secs(5))
                    .await
                else {
                    continue;
                };
                if ca::key_fingerprint(&key.key_pem).is_ok_and(|fp| fp == signing) {
                    tls.dir().write_ca_key(&key.key_pem)?;
                    tracing::info!(from = %addr, fingerprint = %signing, "this manager now holds the CA key");
                    return Ok(());
                }
            }
            Err(no_ca_key())
        }
        None => Ok(()),
    }
}

/// Records which CA signed this member's certificate; on the leader, ends a rotation that
/// every member has followed.
async fn record_and_finish(replica: &Replica, state: &TrustState, bundle: &str, issuer: &str) -> Result<()> {
    let me = replica.id();
    let members = replica.members();
    if members.iter().any(|(id, _, _)| *id == me) && state.node_cas.get(&me).map(String::as_str) != Some(issuer) {
        let record = cluster::command::RecordNodeCertificate { node_id: me, ca_fingerprint: issuer.to_string() };
        panal_actors::propose(replica, record, None, WRITE_TIMEOUT).await?;
        return Ok(());
    }
    let Some(rotation) = &state.rotation else { return Ok(()) };
    if replica.leader().map(|(id, _)| id) != Some(me) {
        return Ok(());
    }
    let pending = pending_members(state, &members);
    if !pending.is_empty() {
        tracing::debug!(?pending, "CA rotation: waiting for members to hold a certificate from the new CA");
        return Ok(());
    }
    let finish =
        cluster::command::FinishCaRotation { fingerprint: rotation.fingerprint.clone(), ca_pem: first_pem(bundle) };
    panal_actors::propose(replica, finish, None, WRITE_TIMEOUT).await?;
    tracing::info!(fingerprint = %rotation.fingerprint, previous = %rotation.previous_fingerprint, "CA rotation finished: the old CA is no longer trusted");
    Ok(())
}

/// The members that hold no certificate from the CA a rotation moves to (none without a
/// rotation).
pub fn pending_members(state: &TrustState, members: &[(u64, NodeInfo, MemberRole)]) -> Vec<u64> {
    let Some(rotation) = &state.rotation else { return Vec::new() };
    members.iter().map(|(id, _, _)| *id).filter(|id| state.node_cas.get(id) != Some(&rotation.fingerprint)).collect()
}

/// A new key and certificate for this node; returns when the new certificate expires.
pub async fn renew(replica: &Replica, tls: &NodeTls) -> Result<SystemTime> {
    let (key_pem, csr_pem) = ca::node_request(&hosts_of(replica.node(), &[]))?;
    let issued = sign_anywhere(replica, tls, &csr_pem, replica.id()).await?;
    tls.install_issued(&issued, &key_pem)?;
    Ok(tls.certificate()?.not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_with_the_key_unreadable_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsDir::new(dir.path());
        assert!(tls.node_files().unwrap().is_none());
        let ca = CaMaterial::generate("c1").unwrap();
        let (key, csr) = ca::node_request(&["127.0.0.1".into()]).unwrap();
        let cert = ca.issue(&csr, 1, DEFAULT_CERT_TTL).unwrap();
        tls.write_node(&cert, &key, &ca.cert_pem).unwrap();
        tls.write_ca_key(&ca.key_pem).unwrap();
        assert_eq!(tls.node_files().unwrap(), Some((cert, key, ca.cert_pem.clone())));
        assert_eq!(tls.ca_for(&ca.cert_pem).unwrap().unwrap().key_pem, ca.key_pem);
        for f in ["node.key", "ca.key", "node.pem", "ca.pem"] {
            let mode = std::fs::metadata(tls.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{f} is private");
        }
        let (next, _) = ca.successor("c1").unwrap();
        assert!(tls.ca_for(&next.cert_pem).unwrap().is_none(), "no key for another CA");
        tls.write_next_ca_key(&next.key_pem).unwrap();
        assert!(tls.ca_for(&next.cert_pem).unwrap().is_some(), "the next CA's key is held beside the current one");
        assert!(tls.settle_ca_key(&next.fingerprint().unwrap()).unwrap());
        assert!(tls.ca_for(&ca.cert_pem).unwrap().is_none(), "the old key is gone once the new CA signs");
        assert!(tls.remove_ca_keys().unwrap());
        assert!(tls.ca_for(&next.cert_pem).unwrap().is_none() && !tls.remove_ca_keys().unwrap());
    }

    #[test]
    fn a_node_installs_an_issued_certificate_and_its_configs_change() {
        let dir = tempfile::tempdir().unwrap();
        let tls = NodeTls::open(TlsDir::new(dir.path()), DEFAULT_CERT_TTL).unwrap();
        let peer = tls.peer_server();
        let ca = CaMaterial::generate("c1").unwrap();
        tls.dir().write_ca_key(&ca.key_pem).unwrap();
        let (key, csr) = ca::node_request(&["127.0.0.1".into()]).unwrap();
        let cert = ca.issue(&csr, 3, DEFAULT_CERT_TTL).unwrap();
        tls.install(&cert, &key, &ca.cert_pem).unwrap();
        assert!(peer.has_changed().unwrap());
        assert_eq!(tls.certificate().unwrap().node_id(), Some(3));
        let again = sign_with(&tls, &ca.cert_pem, None, &ca::node_request(&[]).unwrap().1, 3).unwrap();
        assert_eq!(CertSummary::of_pem(&again.cert_pem).unwrap().node_id(), Some(3));
        let reopened = NodeTls::open(TlsDir::new(dir.path()), DEFAULT_CERT_TTL).unwrap();
        assert_eq!(reopened.certificate().unwrap().node_id(), Some(3));

        // A rotation: trusting old + new keeps the certificate and its issuer; the
        // signing CA's watch moves.
        let mut signing = tls.signing_ca();
        let (next, cross) = ca.successor("c1").unwrap();
        let bundle = format!("{}{}", next.cert_pem, ca.cert_pem);
        assert!(tls.retrust(&bundle).unwrap());
        assert!(!tls.retrust(&bundle).unwrap(), "once");
        assert!(signing.has_changed().unwrap());
        assert_eq!(*signing.borrow_and_update(), next.fingerprint().unwrap());
        assert_eq!(tls.issuer_fingerprint().unwrap(), ca.fingerprint().unwrap());
        assert_eq!(tls.dir().bundle().unwrap().as_deref(), Some(bundle.as_str()));
        let reopened = NodeTls::open(TlsDir::new(dir.path()), DEFAULT_CERT_TTL).unwrap();
        assert_eq!(reopened.issuer_fingerprint().unwrap(), ca.fingerprint().unwrap(), "node.pem names its issuer");
        assert!(sign_with(&tls, &bundle, None, &ca::node_request(&[]).unwrap().1, 3).is_err(), "no key of the new CA");
        // With it, the new certificate goes with the cross-signed CA and names it as issuer.
        tls.dir().write_next_ca_key(&next.key_pem).unwrap();
        let (key, csr) = ca::node_request(&[]).unwrap();
        let issued = sign_with(&tls, &bundle, Some(&cross), &csr, 3).unwrap();
        tls.install_issued(&issued, &key).unwrap();
        assert_eq!(tls.issuer_fingerprint().unwrap(), next.fingerprint().unwrap());
        assert_eq!(ca::certificates(&tls.dir().node_files().unwrap().unwrap().0).unwrap().len(), 2);
    }

    #[test]
    fn the_certificate_names_every_advertised_host_once() {
        let node = NodeInfo {
            name: "n1".into(),
            peer_addr: "10.0.0.1:7701".into(),
            api_addr: "10.0.0.1:7700".into(),
            mesh_addr: "node-1.example:7702".into(),
        };
        assert_eq!(hosts_of(&node, &["api.example".into()]), ["10.0.0.1", "api.example", "node-1.example"]);
    }

    #[test]
    fn the_first_certificate_of_a_bundle_is_the_current_ca() {
        let a = CaMaterial::generate("a").unwrap();
        let b = CaMaterial::generate("b").unwrap();
        let bundle = format!("{}{}", a.cert_pem, b.cert_pem);
        assert_eq!(ca::fingerprint(&first_pem(&bundle)).unwrap(), a.fingerprint().unwrap());
    }
}
