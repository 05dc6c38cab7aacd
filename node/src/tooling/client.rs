//! The typed HTTP client of the Panal API, used by every in-repo caller (admin CLI, `up`,
//! `top`, the demo loader, drills, benchmarks and the end-to-end tests).
//!
//! One [`Client`] talks to a list of nodes: it sends to the current one and, when a node
//! refuses the connection (the request never reached it, so retrying is safe), moves on to
//! the next. It keeps the session: the bearer token from [`Client::login`], the highest
//! `X-Panal-Index` answered so far (sent with every request, so a read through any node
//! sees this client's writes), an optional `X-Panal-Consistency`. Non-2xx answers become
//! [`ClientError::Api`] with the server's one error shape decoded.
//!
//! Clones share the session; [`Client::pinned`] gives a client bound to one node (for tests
//! that must hit a given node) that still shares it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), panal::tooling::client::ClientError> {
//! use panal::tooling::client::Client;
//! let api = Client::new(&["127.0.0.1:7700", "127.0.0.1:7710"])?;
//! api.login("alice", "alice-demo-pass").await?;
//! let books = api.list_books(&Default::default()).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use panal_actors::auth::ops::{KeyRotated, LoginRequest, RegisterRequest, TokenResponse};
use panal_actors::auth::User;
use panal_actors::catalog::ops::{NewOrder, ShipRequest};
use panal_actors::catalog::payment::CardPayment;
use panal_actors::catalog::{Book, BookPatch, BookQuery, Invoice, NewBook, Order};
use panal_actors::energy::ops::{RangeQuery, ReadingsInput, ReadingsQuery, ReadingsStored};
use panal_actors::energy::{Aggregate, Device, DevicePatch, EnergySummary, NewDevice};
use panal_actors::error::FieldError;
use panal_actors::kv::KvEntry;
use panal_actors::page::{Page, PageParams};
use panal_actors::prediction::{ForecastQuery, ForecastResponse};
pub use panal_raft::Consistency;
use reqwest::Method;

pub use crate::server::api::{
    CaInfo, ClusterStatus, JoinTokens, LeaderRef, NodeMetrics, NodeRow, NodeSettingsView, NodeUpdate, RaftStatus,
    ServiceUpdate, ServiceView, StateChecksum as Checksum,
};
pub use panal_actors::orchestration::TaskView;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod api;

/// The port a node's API listens on unless told otherwise.
pub const DEFAULT_API_PORT: u16 = 7700;
/// How long one request may take by default (a membership change waits for catch-up).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(130);

/// What can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid node address {address:?}: {reason}")]
    Address { address: String, reason: String },
    /// No node in the list accepted a connection.
    #[error("{}", unreachable_message(.tried, .hint))]
    Unreachable {
        /// (url, why) for every node tried, in order.
        tried: Vec<(String, String)>,
        /// What to try instead (other known nodes, or how to start a cluster).
        hint: Option<String>,
    },
    /// The request reached a node but did not complete (timeout, reset): it may have been applied.
    #[error("{method} {url}: {reason}")]
    Transport { method: String, url: String, reason: String, timeout: bool },
    /// The node answered with a non-2xx status.
    #[error("{method} {path}: {status} {}: {}", .error.code, .error.message)]
    Api {
        method: String,
        path: String,
        status: u16,
        error: Box<ApiError>,
        /// `Retry-After` in seconds (503 `no_leader`, `replica_lagging`, 429).
        retry_after: Option<u64>,
    },
    /// A 2xx answer that is not what the operation returns.
    #[error("{method} {path}: unexpected answer: {reason}")]
    Decode { method: String, path: String, reason: String },
    #[error("no admin password: pass --password, set PANAL_PASSWORD, or point --up-dir at a `panal up` directory")]
    NoPassword,
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// The CAs given cannot make a TLS configuration.
    #[error("TLS settings: {0}")]
    Tls(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of an API error (`no_leader`, `validation_failed`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

impl From<ClientError> for crate::error::Error {
    fn from(e: ClientError) -> Self {
        crate::error::Error::Fatal(e.to_string())
    }
}

fn unreachable_message(tried: &[(String, String)], hint: &Option<String>) -> String {
    let tried: Vec<String> = tried.iter().map(|(url, why)| format!("{url} ({why})")).collect();
    let mut out = format!("cannot reach {}", tried.join(", "));
    if let Some(h) = hint {
        out.push_str("\nhint: ");
        out.push_str(h);
    }
    out
}

/// The body of every error answer: `{"error": {"code", "message", "request_id", "fields"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldError>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

impl ApiError {
    /// Decodes an error body; a body in another shape (a proxy's page) is kept as the message.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(e) => e.error,
            Err(_) => ApiError {
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(body).trim().chars().take(500).collect(),
                request_id: None,
                fields: Vec::new(),
            },
        }
    }
}

/// Turns `host:port`, `host` or a URL into a base URL (`http://host:port`, no trailing slash).
pub fn normalize_address(address: &str) -> Result<String, ClientError> {
    normalize_address_as(address, false)
}

/// [`normalize_address`], a bare `host[:port]` meaning `https://` when `https` (the client
/// knows a CA to trust).
pub fn normalize_address_as(address: &str, https: bool) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::Address { address: address.into(), reason: reason.into() };
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let scheme = if https { "https" } else { "http" };
    let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("{scheme}://{trimmed}") };
    let mut url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.port().is_none() && !trimmed.contains("://") {
        let _ = url.set_port(Some(DEFAULT_API_PORT));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(bad("give the node's address only, without a path"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Session state shared by clones and pinned clients.
#[derive(Debug, Default)]
struct Session {
    token: Mutex<Option<String>>,
    index: AtomicU64,
}

/// A 2xx answer before decoding.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `X-Panal-Index` (the write's log index, or the read's applied index).
    pub index: Option<u64>,
    /// `X-Panal-Node`: the node that served the request.
    pub node: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// How an admin command reaches a cluster (`--node`, `--user`, `--password`, `--up-dir`).
#[derive(Debug, clap::Args, Clone)]
pub struct AdminArgs {
    /// Address of any node (`host:port` or a URL); several, comma-separated, are tried in
    /// turn. Default: the nodes of the `--up-dir` cluster, else 127.0.0.1:7700.
    #[arg(long = "node", env = "PANAL_URL")]
    pub url: Option<String>,
    #[arg(long, env = "PANAL_USER", default_value = "admin")]
    pub user: String,
    /// Default: the password `panal up` stored in `--up-dir`.
    #[arg(long, env = "PANAL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A `panal up` directory: its stored admin password and node list are used when
    /// --password / --node are not given (and its other nodes are tried if one is down).
    #[arg(long, env = "PANAL_UP_DIR", default_value = "./.panal")]
    pub up_dir: Option<PathBuf>,
    /// CA certificate(s) (PEM) to trust for https:// nodes: the cluster CA
    /// (`<data-dir>/tls/ca.pem` of any node, or `panal ca export`) or the CA of your own
    /// API certificate. Default: the cluster CA of the --up-dir cluster. With a CA, a bare
    /// HOST:PORT in --node means https.
    #[arg(long, env = "PANAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The certificate authorities a client trusts for `https://` nodes. Empty: `https://`
/// nodes are refused (plain `http://` ones work).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Trust {
    /// The CA certificates in the PEM file at `path` (a bundle may hold several: the old and
    /// the new CA during a rotation).
    pub fn from_pem_file(path: &Path) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        let io = |reason: String| ClientError::Io { path: path.display().to_string(), reason };
        let roots: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| io(e.to_string()))?;
        if roots.is_empty() {
            return Err(io("no certificate in it".into()));
        }
        Ok(Self { roots })
    }

    /// The cluster CA of a node's data directory, if it has one.
    pub fn of_data_dir(dir: &Path) -> Result<Option<Self>, ClientError> {
        let bundle = crate::server::api_tls::ca_bundle_path(dir);
        if bundle.is_file() {
            Self::from_pem_file(&bundle).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The cluster CA of a launcher's directory (`panal up`, tests): that of the first of
    /// its nodes' data directories that has one.
    pub fn of_launch_dir(dir: &Path) -> Result<Option<Self>, ClientError> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_dir()).collect();
        dirs.sort();
        for node_dir in dirs {
            if let Some(trust) = Self::of_data_dir(&node_dir)? {
                return Ok(Some(trust));
            }
        }
        Ok(None)
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// An HTTP client trusting these CAs only.
    pub fn http_client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ClientError> {
        let fail = ClientError::Tls;
        let mut store = rustls::RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone()).map_err(|e| fail(format!("a CA certificate is not usable: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::server::tls::config::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        builder.use_preconfigured_tls(tls).build().map_err(|e| fail(e.to_string()))
    }
}

/// The admin password a launcher stored in `dir`, if any.
pub fn stored_password(dir: &Path) -> Option<String> {
    let p = std::fs::read_to_string(dir.join("admin-password")).ok()?;
    Some(p.trim().to_string()).filter(|p| !p.is_empty())
}

/// The API URLs of the nodes a launcher started from `dir` (empty when none).
pub fn stored_api_urls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("nodes"))
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// A request body.
pub enum Body<'a> {
    None,
    Json(serde_json::Value),
    Text { content_type: &'a str, text: String },
}

/// A typed client of one cluster; see the module documentation.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    nodes: Arc<Vec<String>>,
    /// Which node of the list answered last (where the next request goes first).
    current: Arc<AtomicUsize>,
    session: Arc<Session>,
    consistency: Option<Consistency>,
    /// Other nodes worth suggesting when every listed node is unreachable.
    hint_nodes: Arc<Vec<String>>,
    /// A bare `host:port` means https (the client was given a CA).
    https: bool,
}

impl Client {
    /// A client of the nodes at `addresses` (URLs or bare `host:port`), tried in order.
    pub fn new(addresses: &[impl AsRef<str>]) -> Result<Self, ClientError> {
        Self::with_timeout(addresses, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::new`] with a per-request timeout.
    pub fn with_timeout(addresses: &[impl AsRef<str>], timeout: Duration) -> Result<Self, ClientError> {
        Self::with_trust(addresses, timeout, &Trust::default())
    }

    /// A client trusting `trust` for `https://` nodes; with a CA, bare `host:port`
    /// addresses mean https.
    pub fn with_trust(addresses: &[impl AsRef<str>], timeout: Duration, trust: &Trust) -> Result<Self, ClientError> {
        let https = !trust.is_empty();
        let nodes: Vec<String> =
            addresses.iter().map(|a| normalize_address_as(a.as_ref(), https)).collect::<Result<_, _>>()?;
        if nodes.is_empty() {
            return Err(ClientError::Address { address: String::new(), reason: "no node address given".into() });
        }
        panal_raft::install_crypto_provider();
        let http = trust.http_client(reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(64))?;
        Ok(Self {
            http,
            nodes: Arc::new(nodes),
            current: Arc::default(),
            session: Arc::default(),
            consistency: None,
            hint_nodes: Arc::default(),
            https,
        })
    }

    /// Logs in as the admin of [`AdminArgs`](AdminArgs): its `--node`
    /// list, its password (or the one a `panal up` directory stored), and the other nodes
    /// of that directory as a fallback and hint.
    pub async fn admin(args: &AdminArgs) -> Result<Self, ClientError> {
        let up_nodes = args.up_dir.as_deref().map(stored_api_urls).unwrap_or_default();
        let trust = match (&args.ca_file, &args.up_dir) {
            (Some(file), _) => Trust::from_pem_file(file)?,
            (None, Some(dir)) => Trust::of_launch_dir(dir)?.unwrap_or_default(),
            (None, None) => Trust::default(),
        };
        let password = match &args.password {
            Some(p) => p.clone(),
            None => args.up_dir.as_deref().and_then(stored_password).ok_or(ClientError::NoPassword)?,
        };
        let mut addresses: Vec<String> = match &args.url {
            Some(list) => list.split(',').filter(|a| !a.trim().is_empty()).map(str::to_string).collect(),
            None if up_nodes.is_empty() => vec![format!("127.0.0.1:{DEFAULT_API_PORT}")],
            None => Vec::new(),
        };
        // A bare address of a node the directory knows takes its scheme from there (a
        // `panal up` cluster on loopback serves http even though its CA is known).
        for address in &mut addresses {
            let bare = !address.contains("://");
            let known = normalize_address(address)
                .ok()
                .and_then(|url| up_nodes.iter().find(|u| same_host_port(u, &url)).filter(|_| bare).cloned());
            if let Some(url) = known {
                *address = url;
            }
        }
        let https = !trust.is_empty();
        let given: Vec<String> = addresses.iter().filter_map(|a| normalize_address_as(a, https).ok()).collect();
        // The other nodes of the local cluster are tried after the ones given, so
        // `panal node ls` still works with node1 down.
        for url in &up_nodes {
            if !given.contains(url) {
                addresses.push(url.clone());
            }
        }
        let mut client = Self::with_trust(&addresses, DEFAULT_TIMEOUT, &trust)?;
        client.hint_nodes = Arc::new(up_nodes);
        client.login(&args.user, &password).await?;
        Ok(client)
    }

    /// The same session with reads at `level` (`X-Panal-Consistency`).
    pub fn with_consistency(mut self, level: Consistency) -> Self {
        self.consistency = Some(level);
        self
    }

    /// A client sending only to node `i` of the list (panics if there is none), sharing
    /// this session (token, index).
    pub fn pinned(&self, i: usize) -> Self {
        Self { nodes: Arc::new(vec![self.nodes[i].clone()]), current: Arc::default(), ..self.clone() }
    }

    /// The same session (and connection pool) on another list of nodes.
    pub fn with_nodes(&self, addresses: &[impl AsRef<str>]) -> Result<Self, ClientError> {
        let nodes: Vec<String> =
            addresses.iter().map(|a| normalize_address_as(a.as_ref(), self.https)).collect::<Result<_, _>>()?;
        if nodes.is_empty() {
            return Err(ClientError::Address { address: String::new(), reason: "no node address given".into() });
        }
        Ok(Self { nodes: Arc::new(nodes), current: Arc::default(), ..self.clone() })
    }

    /// A client of the same nodes with a session of its own (not logged in) that starts
    /// from this one's index, so it sees every write made so far: one per user.
    pub fn new_session(&self) -> Self {
        let session = Session { token: Mutex::new(None), index: AtomicU64::new(self.last_index()) };
        Self {
            session: Arc::new(session),
            current: Arc::new(AtomicUsize::new(self.current.load(Ordering::Relaxed))),
            ..self.clone()
        }
    }

    /// The nodes' base URLs.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The node the next request goes to first.
    pub fn current_node(&self) -> &str {
        &self.nodes[self.current.load(Ordering::Relaxed) % self.nodes.len()]
    }

    pub fn token(&self) -> Option<String> {
        self.session.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses `token` from now on (e.g. one obtained by another client).
    pub fn set_token(&self, token: Option<String>) {
        *self.session.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// The highest `X-Panal-Index` seen: reads through this client wait for it.
    pub fn last_index(&self) -> u64 {
        self.session.index.load(Ordering::Acquire)
    }

    /// Raises the session index (to read after a write made by someone else).
    pub fn observe_index(&self, index: u64) {
        self.session.index.fetch_max(index, Ordering::AcqRel);
    }

    /// Sends one request (no decoding): the building block of every operation. Tries the
    /// nodes in turn while they refuse connections; any answer (even an error status) ends it.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &Body<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for k in 0..self.nodes.len() {
            let i = (start + k) % self.nodes.len();
            let url = format!("{}{path}", self.nodes[i]);
            let mut req = self.http.request(method.clone(), &url);
            // Headers given by the caller win over the session's.
            let given = |name: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(name));
            let index = self.last_index();
            if index > 0 && !given("x-panal-index") {
                req = req.header("x-panal-index", index);
            }
            if let Some(level) = self.consistency.filter(|_| !given("x-panal-consistency")) {
                req = req.header("x-panal-consistency", consistency_name(level));
            }
            if let Some(token) = self.token() {
                req = req.bearer_auth(token);
            }
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            req = match body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::Text { content_type, text } => req.header("content-type", *content_type).body(text.clone()),
            };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    tried.push((self.nodes[i].clone(), root_cause(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(ClientError::Transport {
                        method: method.to_string(),
                        url,
                        timeout: e.is_timeout(),
                        reason: root_cause(&e),
                    })
                }
            };
            self.current.store(i, Ordering::Relaxed);
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let answer_index = header("x-panal-index").and_then(|v| v.parse::<u64>().ok());
            let node = header("x-panal-node");
            let content_type = header("content-type");
            let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
                method: method.to_string(),
                url: url.clone(),
                timeout: e.is_timeout(),
                reason: root_cause(&e),
            })?;
            if !(200..300).contains(&status) {
                return Err(ClientError::Api {
                    method: method.to_string(),
                    path: path.to_string(),
                    status,
                    error: Box::new(ApiError::from_body(status, &bytes)),
                    retry_after,
                });
            }
            if let Some(ix) = answer_index {
                self.observe_index(ix);
            }
            return Ok(Answer { status, index: answer_index, node, content_type, body: bytes.to_vec() });
        }
        Err(ClientError::Unreachable { hint: self.unreachable_hint(&tried), tried })
    }

    fn unreachable_hint(&self, tried: &[(String, String)]) -> Option<String> {
        if tried.iter().any(|(_, why)| why.contains("certificate")) {
            return Some(
                "the node's certificate is not trusted: pass --ca-file with the cluster CA (`<data-dir>/tls/ca.pem` of \
                 any node, or `panal ca export`) or the CA of the node's own certificate"
                    .into(),
            );
        }
        let others: Vec<&String> = self.hint_nodes.iter().filter(|n| !tried.iter().any(|(t, _)| t == *n)).collect();
        if !others.is_empty() {
            let list: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
            return Some(format!("other nodes of this cluster: --node {}", list.join(",")));
        }
        let local = tried.iter().any(|(u, _)| u.contains("127.0.0.1") || u.contains("localhost"));
        Some(if local {
            "is the cluster running? `panal up` starts a local one; with several nodes, list them all: \
             --node HOST:PORT,HOST:PORT"
                .into()
        } else {
            "check the address and that the node runs; list several nodes to fail over: --node HOST:PORT,HOST:PORT"
                .into()
        })
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body<'_>) -> Result<T, ClientError> {
        let answer = self.send(method.clone(), path, &body, &[]).await?;
        decode(&method, path, &answer)
    }

    /// GET `path` and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, Body::None).await
    }

    /// POST `body` as JSON to `path` and decode the answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.call(Method::POST, path, json_body(body)?).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::POST, path, Body::None).await
    }

    async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.call(Method::PATCH, path, json_body(body)?).await
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, path, &Body::None, &[]).await.map(drop)
    }
}

fn consistency_name(level: Consistency) -> &'static str {
    match level {
        Consistency::Stale => "stale",
        Consistency::Session => "session",
        Consistency::Linearizable => "linearizable",
    }
}

fn json_body<B: Serialize>(body: &B) -> Result<Body<'static>, ClientError> {
    serde_json::to_value(body).map(Body::Json).map_err(|e| ClientError::Decode {
        method: "encode".into(),
        path: String::new(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, answer: &Answer) -> Result<T, ClientError> {
    // Operations answering no body (`()`-like callers ask for Value) accept an empty one.
    let body: &[u8] = if answer.body.is_empty() { b"null" } else { &answer.body };
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        method: method.to_string(),
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// `path?query` with the query's set fields URL-encoded.
fn with_query<Q: Serialize>(path: &str, query: &Q) -> Result<String, ClientError> {
    let value = serde_json::to_value(query).map_err(|e| ClientError::Decode {
        method: "encode".into(),
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut pairs = Vec::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            pairs.push(format!("{k}={}", percent_encode(&text)));
        }
    }
    Ok(if pairs.is_empty() { path.to_string() } else { format!("{path}?{}", pairs.join("&")) })
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The innermost error message (reqwest's outer one is only "error sending request").
/// Whether two base URLs name the same host and port, whatever their schemes.
fn same_host_port(a: &str, b: &str) -> bool {
    let host_port = |u: &str| u.split_once("://").map_or(u, |(_, rest)| rest).to_ascii_lowercase();
    host_port(a) == host_port(b)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The answer to a battery CSV upload.
#[derive(Debug, Clone, Deserialize)]
pub struct BatteryUploaded {
    pub device_id: i64,
    pub stored: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_and_urls_normalize() {
        assert_eq!(normalize_address("127.0.0.1:7700").unwrap(), "http://127.0.0.1:7700");
        assert_eq!(normalize_address("localhost").unwrap(), "http://localhost:7700");
        assert_eq!(normalize_address("http://10.0.0.2:8000/").unwrap(), "http://10.0.0.2:8000");
        assert_eq!(normalize_address("https://panal.example").unwrap(), "https://panal.example");
        assert_eq!(normalize_address("[::1]:7710").unwrap(), "http://[::1]:7710");
        for bad in ["", "ftp://x:1", "http://x:1/api", "127.0.0.1:notaport"] {
            assert!(matches!(normalize_address(bad), Err(ClientError::Address { .. })), "{bad}");
        }
    }

    #[test]
    fn with_a_ca_a_bare_address_means_https_and_urls_keep_their_scheme() {
        assert_eq!(normalize_address_as("10.0.0.2:7700", true).unwrap(), "https://10.0.0.2:7700");
        assert_eq!(normalize_address_as("panal.example", true).unwrap(), "https://panal.example:7700");
        assert_eq!(normalize_address_as("http://127.0.0.1:7700", true).unwrap(), "http://127.0.0.1:7700");
        assert!(same_host_port("http://127.0.0.1:7700", "https://127.0.0.1:7700"));
        assert!(!same_host_port("http://127.0.0.1:7700", "http://127.0.0.1:7710"));
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_and_a_data_dir_without_tls_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::from_pem_file(&empty).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        assert!(Trust::from_pem_file(&dir.path().join("missing.pem")).is_err());
        assert!(Trust::of_data_dir(dir.path()).unwrap().is_none());
        assert!(Trust::of_launch_dir(dir.path()).unwrap().is_none());
    }

    #[test]
    fn error_bodies_decode_into_the_one_shape() {
        let body = br#"{"error":{"code":"validation_failed","message":"bad","request_id":"r1",
            "fields":[{"field":"price_cents","message":"must be positive"}]}}"#;
        let e = ApiError::from_body(422, body);
        assert_eq!((e.code.as_str(), e.request_id.as_deref()), ("validation_failed", Some("r1")));
        assert_eq!(e.fields[0].field, "price_cents");
        let e = ApiError::from_body(502, b"<html>bad gateway</html>");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("http_502", "<html>bad gateway</html>"));
    }

    #[test]
    fn queries_skip_unset_fields_and_encode_values() {
        let q = BookQuery { q: Some("le guin&co".into()), author: None, limit: Some(5), cursor: None };
        assert_eq!(with_query("/api/v1/books", &q).unwrap(), "/api/v1/books?limit=5&q=le%20guin%26co");
        assert_eq!(with_query("/api/v1/books", &BookQuery::default()).unwrap(), "/api/v1/books");
    }

    #[tokio::test]
    async fn unreachable_nodes_are_all_tried_and_named() {
        // Two ports nothing listens on: bind, read the port, close.
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let (a, b) = (free(), free());
        let client = Client::new(&[a.as_str(), b.as_str()]).unwrap();
        let err = client.get::<serde_json::Value>("/health").await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Unreachable { ref tried, .. } if tried.len() == 2), "{text}");
        assert!(text.contains(&a) && text.contains(&b) && text.contains("hint: is the cluster running?"), "{text}");
    }
}
