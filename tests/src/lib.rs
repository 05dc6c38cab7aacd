//! The end-to-end test harness: starts an N-node cluster of the real `panal` binary through
//! the tooling's launcher, each node a separate process on its own loopback address
//! (127.x.y.z, default ports), and tears it down when dropped. Tests kill, restart and add
//! nodes through it, and talk to them with the typed client (`Cluster::client`,
//! `Cluster::admin`, `Cluster::user_client`); `Cluster::send` is the one raw request
//! builder, for malformed input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use panal::tooling::client::{Body, Client, ClientError, Consistency};
pub use panal::tooling::launcher::ApiTransport;
use panal::tooling::launcher::{Addressing, LaunchConfig, LocalCluster};
use panal_actors::auth::User;
use reqwest::Method;
use serde_json::Value;

/// How long the harness waits for anything (readiness, convergence) before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Path of the `panal` binary: `$PANAL_BIN`, or built once with cargo.
pub fn panal_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("PANAL_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "panal", "--bin", "panal", "--message-format=json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "building panal failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported the panal executable")
    })
}

/// Runs `panal ARGS` to completion (for CLI tests).
pub fn run_panal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(panal_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run panal")
}

/// A fresh loopback network 127.<a>.<b>.0/24 for one cluster, distinct per process and
/// per cluster, so tests never fight over ports.
pub fn fresh_subnet() -> (u8, u8) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = (std::process::id() % 200) as u8 + 20;
    (a, (n % 250) as u8 + 1)
}

/// Where a node of a test cluster lives (its process is the launcher's).
pub struct Node {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `http://IP:7700`, or `https://…` when the cluster serves its API over TLS.
    pub api_url: String,
}

impl Node {
    pub fn api(&self) -> String {
        self.api_url.clone()
    }
    pub fn peer(&self) -> String {
        format!("{}:7701", self.ip)
    }
    /// `path` on the peer port (HTTPS: peer TLS is on by default).
    pub fn peer_url(&self, path: &str) -> String {
        format!("https://{}:7701{path}", self.ip)
    }
}

/// A running cluster, started by the tooling's one launcher with one loopback IP per node.
/// Dropping it kills every node (and prints the end of their logs if the test failed).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub password: String,
    /// A raw HTTP client, for requests the typed client refuses to send (malformed input).
    pub http: reqwest::Client,
    /// The processes; declared before `dir` so they die before their directory goes.
    pub launcher: LocalCluster,
    /// The typed client all others derive from (one connection pool).
    base: Client,
    /// The admin's session, logged in on first use.
    admin: tokio::sync::OnceCell<Client>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `managers` managers (the first with `--init`, the others joining) and
    /// `workers` workers, with `extra` flags on every node, and waits until all are ready.
    pub async fn start(managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        Self::start_from(&["start"], managers, workers, extra, ApiTransport::Plain).await
    }

    /// Like [`Cluster::start`], the nodes serving their API as `api` says (HTTPS with the
    /// cluster CA, or with a certificate of the test's own); every client of the harness
    /// trusts what it must.
    pub async fn start_with(api: ApiTransport, managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        Self::start_from(&["start"], managers, workers, extra, api).await
    }

    /// Like [`Cluster::start`], with the first node created by `panal restore BACKUP
    /// --init` (the others join it as usual).
    pub async fn restore(backup: &Path, managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        let backup = backup.display().to_string();
        Self::start_from(&["restore", &backup], managers, workers, extra, ApiTransport::Plain).await
    }

    fn new(dir: tempfile::TempDir, extra: Vec<String>, api: ApiTransport) -> Cluster {
        panal::install_crypto_provider();
        let (a, b) = fresh_subnet();
        let config = LaunchConfig {
            dir: dir.path().to_path_buf(),
            addressing: Addressing::LoopbackPerNode(a, b),
            name_prefix: "n".into(),
            exe: panal_bin().to_path_buf(),
            password: Some("test-admin-password".into()),
            node_args: extra,
            env: vec![("PANAL_LOG".into(), "info,openraft=warn".into())],
            ready_timeout: DEADLINE,
            api,
        };
        let launcher = LocalCluster::new(config).expect("prepare the cluster directory");
        let first_api = Addressing::LoopbackPerNode(a, b).addresses(0).0;
        Cluster {
            base: Client::with_timeout(&[first_api], Duration::from_secs(20)).expect("an address"),
            nodes: Vec::new(),
            password: launcher.password.clone(),
            http: panal::tooling::client::Trust::default()
                .http_client(reqwest::Client::builder().timeout(Duration::from_secs(20)))
                .unwrap(),
            launcher,
            admin: tokio::sync::OnceCell::new(),
            _dir: dir,
        }
    }

    /// A raw HTTPS client of the peer ports that trusts the cluster CA and presents node
    /// `i`'s own certificate, as a member would (the peer key is up to the caller).
    pub fn peer_http(&self, i: usize) -> reqwest::Client {
        let tls = self.nodes[i].data_dir.join("tls");
        let read = |f: &str| std::fs::read(tls.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let identity = reqwest::Identity::from_pem(&[read("node.pem"), read("node.key")].concat()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).unwrap())
            .identity(identity)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// Mirrors the launcher's node slots in `nodes`.
    fn sync_nodes(&mut self) {
        for n in &self.launcher.nodes[self.nodes.len()..] {
            self.nodes.push(Node {
                name: n.name.clone(),
                ip: n.api_addr.rsplit_once(':').map(|(ip, _)| ip.to_string()).unwrap_or_default(),
                data_dir: n.data_dir.clone(),
                log: n.log.clone(),
                api_url: n.api_url.clone(),
            });
        }
    }

    /// Rebuilds the harness's clients with what the launcher's clients trust (the
    /// cluster CA exists once the first node started).
    fn trust_cluster(&mut self) {
        let timeout = Duration::from_secs(20);
        self.base = self.launcher.client_with_timeout(timeout).unwrap_or_else(|e| panic!("{e}"));
        let trust = self.launcher.trust().unwrap_or_else(|e| panic!("{e}"));
        self.http = trust.http_client(reqwest::Client::builder().timeout(timeout)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A cluster with no node started yet, for tests that must know a node's address
    /// before it starts (a certificate for it): [`Cluster::planned_ip`], then
    /// [`Cluster::init`].
    pub fn prepare(api: ApiTransport, extra: &[&str]) -> Cluster {
        Self::new(tempfile::tempdir().unwrap(), extra.iter().map(|s| s.to_string()).collect(), api)
    }

    /// The loopback IP node `i` will have.
    pub fn planned_ip(&self, i: usize) -> String {
        let api = self.launcher.config.addressing.addresses(i).0;
        api.rsplit_once(':').map(|(ip, _)| ip.to_string()).unwrap_or_default()
    }

    /// Starts the first node of a prepared cluster with `--init` and waits until it is ready.
    pub async fn init(&mut self) {
        self.launcher.init(&["start"]).await.unwrap_or_else(|e| panic!("{e}"));
        self.sync_nodes();
        self.trust_cluster();
    }

    /// `first` is the command creating the first node (`--init` is added).
    async fn start_from(first: &[&str], managers: usize, workers: usize, extra: &[&str], api: ApiTransport) -> Cluster {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut cluster = Self::new(tempfile::tempdir().unwrap(), extra, api);
        cluster.launcher.init(first).await.unwrap_or_else(|e| panic!("{e}"));
        cluster.sync_nodes();
        cluster.trust_cluster();
        for _ in 1..managers {
            cluster.add_node("manager").await;
        }
        for _ in 0..workers {
            cluster.add_node("worker").await;
        }
        cluster
    }

    /// Starts `total` nodes at the same moment with orchestrated bootstrap: every node gets
    /// `--bootstrap-expect expect`, all nodes' peer addresses in `--peers` and one shared
    /// token file (also on restarts, as a service manager would). Waits until all are
    /// ready; nobody runs `--init` or `--join`.
    pub async fn bootstrap(expect: usize, total: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("cluster-token");
        std::fs::write(&token_file, "test-cluster-token-0123456789\n").unwrap();
        let mut cluster = Self::new(dir, extra.iter().map(|s| s.to_string()).collect(), ApiTransport::Plain);
        let indices: Vec<usize> = (0..total).map(|_| cluster.launcher.add_slot().unwrap()).collect();
        cluster.sync_nodes();
        let peers: Vec<String> = cluster.nodes.iter().map(|n| n.ip.clone()).collect();
        cluster.launcher.config.node_args.extend([
            "--bootstrap-expect".into(),
            expect.to_string(),
            "--peers".into(),
            peers.join(","),
            "--cluster-token-file".into(),
            token_file.display().to_string(),
        ]);
        for &i in &indices {
            cluster.launcher.spawn(i, &["start"], &[]).unwrap();
        }
        for &i in &indices {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Joins a new node with the `role` token (through node 0's peer port) and waits
    /// until it is ready (a manager: until it is a voter). Returns its index.
    pub async fn add_node(&mut self, role: &str) -> usize {
        let i = self.launcher.join(role).await.unwrap_or_else(|e| panic!("add a {role}: {e}"));
        self.sync_nodes();
        i
    }

    /// Starts a node joining through node 0 with the `role` token, without waiting for it.
    /// Returns its index.
    pub async fn spawn_join(&mut self, role: &str) -> usize {
        let i = self.launcher.spawn_join(role).await.unwrap_or_else(|e| panic!("join a {role}: {e}"));
        self.sync_nodes();
        i
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.launcher.kill(i);
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause(&self, i: usize) {
        self.launcher.pause(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Thaws a node frozen by [`Cluster::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.launcher.resume(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERMs node `i` and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        self.launcher.terminate_blocking(i);
    }

    /// Restarts a stopped node from its data dir and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        self.launcher.restart(i).unwrap_or_else(|e| panic!("{e}"));
        self.wait_ready(i).await;
    }

    /// Restarts every stopped node at once (a lone node cannot become ready without a
    /// quorum) and waits until all are ready.
    pub async fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len()).filter(|i| !self.launcher.nodes[*i].is_running()).collect();
        for &i in &stopped {
            self.launcher.restart(i).unwrap_or_else(|e| panic!("{e}"));
        }
        for &i in &stopped {
            self.wait_ready(i).await;
        }
    }

    pub fn running(&self) -> Vec<usize> {
        self.launcher.running()
    }

    pub async fn wait_ready(&mut self, i: usize) {
        self.launcher.wait_ready(i).await.unwrap_or_else(|e| panic!("{e}"));
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::api).collect()
    }

    /// A typed client of every node with a fresh session, not logged in (see
    /// `panal::tooling::client`); `.pinned(i)` sends to node `i` only.
    pub fn client(&self) -> Client {
        self.base.new_session().with_nodes(&self.urls()).expect("node addresses")
    }

    /// The admin's typed client of every node (logged in once; it fails over to running
    /// nodes). `.pinned(i)` sends to node `i` only.
    pub async fn admin(&self) -> Client {
        let admin = self
            .admin
            .get_or_init(|| async {
                let client = self.client();
                client.login("admin", &self.password).await.unwrap_or_else(|e| panic!("admin login: {e}"));
                client
            })
            .await;
        admin.with_nodes(&self.urls()).expect("node addresses")
    }

    /// An admin bearer token (tokens verify on any node: the key is replicated).
    pub async fn token(&self) -> String {
        self.admin().await.token().expect("logged in")
    }

    pub async fn admin_get(&self, i: usize, path: &str) -> Value {
        self.admin().await.pinned(i).get(path).await.unwrap_or_else(|e| panic!("on {}: {e}", self.nodes[i].name))
    }

    pub async fn node_id(&self, i: usize) -> u64 {
        let status = self.admin().await.pinned(i).cluster_status().await;
        status.unwrap_or_else(|e| panic!("status of {}: {e}", self.nodes[i].name)).node.id
    }

    /// The role (`manager` / `worker`) of member `id`, or None when it is not a member.
    pub async fn role(&self, id: u64) -> Option<String> {
        let rows = self.admin().await.pinned(self.running()[0]).cluster_nodes().await.unwrap_or_else(|e| panic!("{e}"));
        rows.into_iter().find(|r| r.id == id).map(|r| r.role.to_string())
    }

    /// Index (in `nodes`) of the current leader, as reported by a running node.
    pub async fn leader(&self) -> usize {
        let admin = &self.admin().await;
        poll_some("a leader", || async {
            for i in self.running() {
                let Ok(status) = admin.pinned(i).cluster_status().await else { continue };
                if let Some(leader) = status.leader {
                    let running = self.running();
                    if let Some(l) =
                        self.nodes.iter().position(|n| n.name == leader.name).filter(|l| running.contains(l))
                    {
                        return Some(l);
                    }
                }
            }
            None
        })
        .await
    }

    /// `PUT /api/v1/cluster/kv/{key}` on node `i`; returns (status, X-Panal-Index).
    pub async fn put(&self, i: usize, key: &str, value: &str) -> (u16, u64) {
        let body = Body::Text { content_type: "text/plain", text: value.to_string() };
        let result =
            self.admin().await.pinned(i).send(Method::PUT, &format!("/api/v1/cluster/kv/{key}"), &body, &[]).await;
        match result {
            Ok(answer) => (answer.status, answer.index.unwrap_or(0)),
            Err(ClientError::Api { status, .. }) => (status, 0),
            Err(e) => panic!("PUT {key} on {}: {e}", self.nodes[i].name),
        }
    }

    /// `GET /api/v1/{service}/ping` on node `i`: (status, node that served it), or the
    /// error body in place of the node when it failed (status 0: no answer).
    pub async fn ping(&self, i: usize, service: &str) -> (u16, String) {
        match self.client().pinned(i).ping(service).await {
            Ok(node) => (200, node),
            Err(ClientError::Api { status, error, .. }) => (status, serde_json::json!({ "error": error }).to_string()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Waits until pings through node `i` reach a worker on every running node (the actor
    /// mesh is connected).
    pub async fn wait_mesh(&self, i: usize) {
        let want = self.running().len();
        poll("the actor mesh to connect every node", || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..(want * 20) {
                seen.insert(self.ping(i, "auth").await.1);
            }
            seen.len() == want
        })
        .await;
    }

    /// `GET /metrics` on node `i`.
    pub async fn metrics(&self, i: usize) -> String {
        self.client().pinned(i).prometheus().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads a key on node `i` at `consistency`, after `min_index` for `session`.
    pub async fn get(&self, i: usize, key: &str, consistency: &str, min_index: u64) -> (u16, Value) {
        let index = min_index.to_string();
        let headers = [("x-panal-consistency", consistency), ("x-panal-index", index.as_str())];
        let path = format!("/api/v1/cluster/kv/{key}");
        match self.admin().await.pinned(i).send(Method::GET, &path, &Body::None, &headers).await {
            Ok(answer) => (answer.status, serde_json::from_slice(&answer.body).unwrap_or(Value::Null)),
            Err(ClientError::Api { status, error, .. }) => (status, serde_json::json!({ "error": error })),
            Err(e) => panic!("GET {key} on {}: {e}", self.nodes[i].name),
        }
    }

    /// Waits until every running node reports the same applied index and the same
    /// checksum of the application tables; returns it.
    pub async fn converged_checksum(&self) -> (u64, String) {
        let admin = &self.admin().await;
        poll_some("all nodes to converge to one checksum", || async {
            let mut seen = Vec::new();
            for i in self.running() {
                let sum = admin.pinned(i).checksum().await.unwrap_or_else(|e| panic!("{e}"));
                seen.push((sum.applied_index, sum.checksum));
            }
            seen.windows(2).all(|w| w[0] == w[1]).then(|| seen[0].clone())
        })
        .await
    }
}

/// An HTTP answer as the tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
    /// `X-Panal-Node`: who served it.
    pub node: String,
    /// `X-Panal-Index` of a write (0 when absent).
    pub index: u64,
}

/// One API request: method, path, optional bearer token, body and extra headers.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub json: Option<Value>,
    pub text: Option<(String, String)>,
    pub headers: Vec<(String, String)>,
}

impl Call {
    pub fn new(method: &str, path: impl Into<String>) -> Self {
        Call { method: method.into(), path: path.into(), ..Default::default() }
    }
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.json = Some(body);
        self
    }
    /// A text body with its content type.
    pub fn text(mut self, content_type: &str, body: &str) -> Self {
        self.text = Some((content_type.into(), body.into()));
        self
    }
    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.into(), value.to_string()));
        self
    }
    /// Reads at least as new as the write at `index` (session consistency).
    pub fn after(self, index: u64) -> Self {
        self.header("x-panal-index", index)
    }
}

impl Cluster {
    /// Sends `call` to node `i`.
    pub async fn send(&self, i: usize, call: Call) -> Reply {
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{}", self.nodes[i].api(), call.path));
        if let Some(t) = &call.token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = &call.json {
            req = req.json(body);
        }
        if let Some((ct, body)) = &call.text {
            req = req.header("content-type", ct).body(body.clone());
        }
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{} {} on node {i}: {e}", call.method, call.path));
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (status, content_type, node) = (resp.status().as_u16(), header("content-type"), header("x-panal-node"));
        let index = header("x-panal-index").parse().unwrap_or(0);
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, text, content_type, node, index }
    }

    /// Registers `username` through node `i` and logs in; returns (user id, token, index).
    pub async fn user(&self, i: usize, username: &str) -> (i64, String, u64) {
        let (user, client) = self.user_client(i, username).await;
        (user.id, client.token().expect("logged in"), client.last_index())
    }

    /// Registers `username` (password `<username>-password`) through node `i` and returns
    /// the user and a typed client logged in as them (pinned to node `i`).
    pub async fn user_client(&self, i: usize, username: &str) -> (User, Client) {
        let client = self.client().pinned(i);
        let user = client
            .register_and_login(username, &format!("{username}-password"))
            .await
            .unwrap_or_else(|e| panic!("register {username}: {e}"));
        (user, client)
    }
}

/// Polls `cond` every 50 ms until it holds, failing after [`DEADLINE`].
pub async fn poll<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_some(what, || {
        let check = cond();
        async move { check.await.then_some(()) }
    })
    .await
}

/// Polls `f` every 50 ms until it returns a value, failing after [`DEADLINE`].
pub async fn poll_some<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
