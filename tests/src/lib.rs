//! The end-to-end test harness: starts an N-node cluster of the real `panal` binary, each
//! node a separate process on its own loopback address (127.x.y.z, default ports), and
//! tears it down when dropped. Tests kill, restart and add nodes through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

pub struct Node {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn api(&self) -> String {
        format!("http://{}:7700", self.ip)
    }
    pub fn peer(&self) -> String {
        format!("{}:7701", self.ip)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running cluster. Dropping it kills every node.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub password: String,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    subnet: (u8, u8),
    extra: Vec<String>,
    token: OnceLock<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

impl Cluster {
    /// Starts `managers` managers (the first with `--init`, the others joining) and
    /// `workers` workers, with `extra` flags on every node, and waits until all are ready.
    pub async fn start(managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        Self::start_from(&["start", "--init"], managers, workers, extra).await
    }

    /// Like [`Cluster::start`], with the first node created by `panal restore BACKUP
    /// --init` (the others join it as usual).
    pub async fn restore(backup: &Path, managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        let backup = backup.display().to_string();
        Self::start_from(&["restore", &backup, "--init"], managers, workers, extra).await
    }

    /// `first` is the command line creating the first node, before the common flags.
    async fn start_from(first: &[&str], managers: usize, workers: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            password: "test-admin-password".into(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            subnet: fresh_subnet(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            token: OnceLock::new(),
        };
        let first_node = cluster.new_node();
        cluster.spawn_cmd(first_node, first, &[]);
        cluster.wait_ready(first_node).await;
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
        let mut cluster = Cluster {
            nodes: Vec::new(),
            password: "test-admin-password".into(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            dir,
            subnet: fresh_subnet(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            token: OnceLock::new(),
        };
        let indices: Vec<usize> = (0..total).map(|_| cluster.new_node()).collect();
        let peers: Vec<String> = cluster.nodes.iter().map(|n| n.ip.clone()).collect();
        cluster.extra.extend([
            "--bootstrap-expect".into(),
            expect.to_string(),
            "--peers".into(),
            peers.join(","),
            "--cluster-token-file".into(),
            token_file.display().to_string(),
        ]);
        for &i in &indices {
            cluster.spawn(i, &[]);
        }
        for &i in &indices {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn new_node(&mut self) -> usize {
        let i = self.nodes.len();
        let name = format!("n{}", i + 1);
        let data_dir = self.dir.path().join(&name);
        self.nodes.push(Node {
            log: self.dir.path().join(format!("{name}.log")),
            ip: format!("127.{}.{}.{}", self.subnet.0, self.subnet.1, i + 1),
            name,
            data_dir,
            child: None,
        });
        i
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
        self.spawn_cmd(i, &["start"], extra)
    }

    /// Starts node `i` as `panal CMD… <common flags> EXTRA…`.
    fn spawn_cmd(&mut self, i: usize, cmd: &[&str], extra: &[&str]) {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let child = Command::new(panal_bin())
            .args(cmd)
            .args(["--data-dir", &n.data_dir.display().to_string(), "--name", &n.name])
            .args(["--api-addr", &format!("{}:7700", n.ip), "--peer-addr", &format!("{}:7701", n.ip)])
            .args(["--mesh-addr", &format!("{}:7702", n.ip)])
            .args(&self.extra)
            .args(extra)
            .env("PANAL_ADMIN_PASSWORD", &self.password)
            .env("PANAL_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn panal");
        self.nodes[i].child = Some(child);
    }

    /// Joins a new node with the `role` token (through node 0's peer port) and waits
    /// until it is ready. Returns its index.
    pub async fn add_node(&mut self, role: &str) -> usize {
        let tokens = self.admin_get(0, "/api/v1/cluster/tokens").await;
        let token = tokens[role].as_str().expect("token").to_string();
        let via = self.nodes[0].peer();
        let i = self.new_node();
        self.spawn(i, &["--join", &via, "--token", &token]);
        self.wait_ready(i).await;
        // A manager is ready once it is a voter.
        if role == "manager" {
            let id = self.node_id(i).await;
            poll(&format!("{} to become a manager", self.nodes[i].name), || async {
                let rows = self.admin_get(0, "/api/v1/cluster/nodes").await;
                rows.as_array().unwrap().iter().any(|r| r["id"] == id && r["role"] == "manager")
            })
            .await;
        }
        i
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Thaws a node frozen by [`Cluster::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].child.as_ref().expect("node is running").id();
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGTERMs node `i` and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            c.wait().unwrap();
        }
    }

    /// Restarts a stopped node from its data dir and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.spawn(i, &[]);
        self.wait_ready(i).await;
    }

    /// Restarts every stopped node at once (a lone node cannot become ready without a
    /// quorum) and waits until all are ready.
    pub async fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len()).filter(|i| !self.nodes[*i].is_running()).collect();
        for &i in &stopped {
            self.spawn(i, &[]);
        }
        for &i in &stopped {
            self.wait_ready(i).await;
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_running()).collect()
    }

    pub async fn wait_ready(&mut self, i: usize) {
        let url = format!("{}/ready", self.nodes[i].api());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(c) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
                    panic!("{} exited with {status}:\n{log}", self.nodes[i].name);
                }
            }
            if let Ok(r) = self.http.get(&url).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} not ready within {DEADLINE:?}", self.nodes[i].name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An admin bearer token (tokens verify on any node: the key is replicated).
    pub async fn token(&self) -> String {
        if let Some(t) = self.token.get() {
            return t.clone();
        }
        for i in self.running() {
            let resp = self
                .http
                .post(format!("{}/api/v1/auth/login", self.nodes[i].api()))
                .json(&serde_json::json!({"username": "admin", "password": self.password}))
                .send()
                .await;
            if let Ok(r) = resp {
                if r.status().is_success() {
                    let body: Value = r.json().await.unwrap();
                    let t = body["access_token"].as_str().unwrap().to_string();
                    return self.token.get_or_init(|| t).clone();
                }
            }
        }
        panic!("no node accepted the admin login");
    }

    pub async fn admin_get(&self, i: usize, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.nodes[i].api()))
            .bearer_auth(self.token().await)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path} on {}: {}", self.nodes[i].name, r.status());
        r.json().await.unwrap()
    }

    pub async fn node_id(&self, i: usize) -> u64 {
        self.admin_get(i, "/api/v1/cluster/status").await["node"]["id"].as_u64().unwrap()
    }

    /// The role (`manager` / `worker`) of member `id`, or None when it is not a member.
    pub async fn role(&self, id: u64) -> Option<String> {
        let rows = self.admin_get(self.running()[0], "/api/v1/cluster/nodes").await;
        rows.as_array()?.iter().find(|r| r["id"] == id).map(|r| r["role"].as_str().unwrap_or_default().to_string())
    }

    /// Index (in `nodes`) of the current leader, as reported by a running node.
    pub async fn leader(&self) -> usize {
        poll_some("a leader", || async {
            for i in self.running() {
                let r = self
                    .http
                    .get(format!("{}/api/v1/cluster/status", self.nodes[i].api()))
                    .bearer_auth(self.token().await)
                    .send()
                    .await;
                let Ok(v) = (match r {
                    Ok(r) => r.json::<Value>().await,
                    Err(e) => Err(e),
                }) else {
                    continue;
                };
                if let Some(name) = v["leader"]["name"].as_str() {
                    if let Some(l) = self.nodes.iter().position(|n| n.name == name && n.is_running()) {
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
        let r = self
            .http
            .put(format!("{}/api/v1/cluster/kv/{key}", self.nodes[i].api()))
            .bearer_auth(self.token().await)
            .body(value.to_string())
            .send()
            .await
            .unwrap();
        let index =
            r.headers().get("x-panal-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        (r.status().as_u16(), index)
    }

    /// `GET /api/v1/{service}/ping` on node `i`: (status, node that served it), or the
    /// error body in place of the node when it failed.
    pub async fn ping(&self, i: usize, service: &str) -> (u16, String) {
        match self.http.get(format!("{}/api/v1/{service}/ping", self.nodes[i].api())).send().await {
            Ok(r) => {
                let node =
                    r.headers().get("x-panal-node").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                match r.status().as_u16() {
                    200 => (200, node),
                    status => (status, r.text().await.unwrap_or_default()),
                }
            }
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
        self.http.get(format!("{}/metrics", self.nodes[i].api())).send().await.unwrap().text().await.unwrap()
    }

    /// Reads a key on node `i` at `consistency`, after `min_index` for `session`.
    pub async fn get(&self, i: usize, key: &str, consistency: &str, min_index: u64) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/api/v1/cluster/kv/{key}", self.nodes[i].api()))
            .bearer_auth(self.token().await)
            .header("x-panal-consistency", consistency)
            .header("x-panal-index", min_index.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every running node reports the same applied index and the same
    /// checksum of the application tables; returns it.
    pub async fn converged_checksum(&self) -> (u64, String) {
        poll_some("all nodes to converge to one checksum", || async {
            let mut seen = Vec::new();
            for i in self.running() {
                let v = self.admin_get(i, "/api/v1/cluster/checksum").await;
                seen.push((v["applied_index"].as_u64().unwrap(), v["checksum"].as_str().unwrap().to_string()));
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
        let password = format!("{username}-password");
        let r = self
            .send(
                i,
                Call::new("POST", "/api/v1/auth/register")
                    .json(serde_json::json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(r.status, 201, "register {username}: {}", r.text);
        let login = Call::new("POST", "/api/v1/auth/login")
            .json(serde_json::json!({"username": username, "password": password}))
            .after(r.index);
        let t = self.send(i, login).await;
        assert_eq!(t.status, 200, "login {username}: {}", t.text);
        (r.body["id"].as_i64().unwrap(), t.body["access_token"].as_str().unwrap().to_string(), r.index)
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
