//! The one local-cluster launcher: node processes of a `panal` binary on this machine,
//! started, joined, waited for, broken (kill, pause, terminate) and restarted. `panal up`,
//! the drills, the benchmarks and the end-to-end tests all start clusters through it.
//!
//! Addresses are either 127.0.0.1 with ports from a base (`panal up`), or one loopback IP
//! per node with the default ports (the tests: many clusters side by side, no port hunt).
//! The directory holds every node's data dir and log, the admin password
//! (`admin-password`) and the nodes' API URLs (`nodes`), which the admin commands read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::tooling::client::{stored_password, Client, Trust, DEFAULT_TIMEOUT};

/// How the nodes of a local cluster are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// 127.0.0.1; node i (0-based) on base + 10·i (API), +1 (peer), +2 (mesh).
    BasePort(u16),
    /// Node i on 127.a.b.(i+1) with the default ports 7700 (API), 7701 (peer), 7702 (mesh).
    LoopbackPerNode(u8, u8),
}

impl Addressing {
    /// (api, peer, mesh) addresses of node `i`.
    pub fn addresses(self, i: usize) -> (String, String, String) {
        match self {
            Addressing::BasePort(base) => {
                let api = base as usize + 10 * i;
                (format!("127.0.0.1:{api}"), format!("127.0.0.1:{}", api + 1), format!("127.0.0.1:{}", api + 2))
            }
            Addressing::LoopbackPerNode(a, b) => {
                let ip = format!("127.{a}.{b}.{}", i + 1);
                (format!("{ip}:7700"), format!("{ip}:7701"), format!("{ip}:7702"))
            }
        }
    }
}

/// How the nodes serve their API, and what their clients trust.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ApiTransport {
    /// The node's default (plain HTTP on the loopback addresses the launcher uses).
    #[default]
    Plain,
    /// `--api-tls auto`: HTTPS with a certificate from the cluster CA, which the clients
    /// trust (read from the nodes' data dirs).
    ClusterCa,
    /// HTTPS with a certificate of your own (`--api-tls-cert/--api-tls-key` in
    /// `node_args`), signed by the CA in this file.
    OwnCa(PathBuf),
}

/// What to launch and where.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// Holds every node's data dir and log, the admin password and the node list.
    pub dir: PathBuf,
    pub addressing: Addressing,
    /// Node names are this prefix and 1, 2, …
    pub name_prefix: String,
    /// The `panal` binary the nodes run.
    pub exe: PathBuf,
    /// The admin password of a new cluster; None: the one stored in `dir`, else a random one.
    pub password: Option<String>,
    /// Flags added to every node's command line.
    pub node_args: Vec<String>,
    /// Environment of every node.
    pub env: Vec<(String, String)>,
    /// How long a node may take to become ready.
    pub ready_timeout: Duration,
    pub api: ApiTransport,
}

impl LaunchConfig {
    /// `panal up`'s layout: `node1…` on 127.0.0.1 from `base_port`, this binary.
    pub fn base_port(dir: &Path, base_port: u16) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            addressing: Addressing::BasePort(base_port),
            name_prefix: "node".into(),
            exe: std::env::current_exe().map_err(|e| Error::Fatal(format!("cannot find this binary: {e}")))?,
            password: None,
            node_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            api: ApiTransport::Plain,
        })
    }
}

pub struct LocalNode {
    pub name: String,
    pub api_url: String,
    pub api_addr: String,
    pub peer_addr: String,
    pub mesh_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// A set of local node processes, killed when dropped.
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub password: String,
    pub config: LaunchConfig,
}

/// Writes `text` to `path` readable by the owner only (it may be a password).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).map(|_| f))
        .map_err(|e| Error::Fatal(format!("cannot write {}: {e}", path.display())))?;
    f.flush().map_err(|e| Error::Fatal(e.to_string()))
}

impl LocalCluster {
    /// Prepares `config.dir` (password, no node started yet).
    pub fn new(config: LaunchConfig) -> Result<Self> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::Fatal(format!("cannot create {}: {e}", dir.display())))?;
        let existing = dir.join(format!("{}1", config.name_prefix)).join("node.json").exists();
        // An existing cluster keeps the password it was created with: it is in its state.
        let password = match (existing, stored_password(dir), &config.password) {
            (true, Some(stored), _) => stored,
            (_, _, Some(given)) => given.clone(),
            _ => crate::server::identity::random_hex(12),
        };
        write_private(&dir.join("admin-password"), &password)?;
        Ok(Self { nodes: Vec::new(), password, config })
    }

    /// Starts (or restarts, when `dir` already holds it) `managers` managers and `workers`
    /// workers, the first with `--init`, the others joining one at a time; waits until all
    /// are ready.
    pub async fn up(config: LaunchConfig, managers: usize, workers: usize) -> Result<Self> {
        if managers == 0 {
            return Err(Error::Fatal("--nodes must be at least 1".into()));
        }
        let mut cluster = Self::new(config)?;
        let existing = cluster.config.dir.join(format!("{}1", cluster.config.name_prefix)).join("node.json").exists();
        if existing {
            for _ in 0..managers + workers {
                let i = cluster.add_slot()?;
                cluster.spawn(i, &["start"], &[])?;
            }
            for i in 0..cluster.nodes.len() {
                cluster.wait_ready(i).await?;
            }
            return Ok(cluster);
        }
        cluster.init(&["start"]).await?;
        for _ in 1..managers {
            cluster.join("manager").await?;
        }
        for _ in 0..workers {
            cluster.join("worker").await?;
        }
        Ok(cluster)
    }

    /// Starts the first node of a new cluster as `panal CMD… --init` (`["start"]`, or
    /// `["restore", FILE]`) and waits until it is ready.
    pub async fn init(&mut self, cmd: &[&str]) -> Result<usize> {
        let i = self.add_slot()?;
        self.spawn(i, cmd, &["--init"])?;
        self.wait_ready(i).await?;
        Ok(i)
    }

    /// Starts a node joining through node 0 with the `role` token; waits until it is ready
    /// (a manager: until it is a voter). Returns its index.
    pub async fn join(&mut self, role: &str) -> Result<usize> {
        let i = self.spawn_join(role).await?;
        self.wait_ready(i).await?;
        if role == "manager" {
            let admin = self.admin_client().await?;
            let name = self.nodes[i].name.clone();
            let deadline = Instant::now() + self.config.ready_timeout;
            loop {
                let rows = admin.cluster_nodes().await.unwrap_or_default();
                if rows.iter().any(|r| r.name == name && r.role == panal_raft::MemberRole::Manager) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Fatal(format!("{name} did not become a manager")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(i)
    }

    /// Starts a node joining through node 0 with the `role` token, without waiting for it
    /// (to watch a node while it joins). Returns its index.
    pub async fn spawn_join(&mut self, role: &str) -> Result<usize> {
        let tokens = self.admin_client().await?.join_tokens().await?;
        let via = self.nodes[0].peer_addr.clone();
        let i = self.add_slot()?;
        // The token through the environment, not argv: `ps` shows every user the command line.
        let token = [("PANAL_TOKEN", tokens.for_role(role))];
        self.spawn_with_env(i, &["start"], &["--join", &via], &token)?;
        Ok(i)
    }

    /// Adds a node slot (name, addresses, data dir) without starting it; returns its index.
    pub fn add_slot(&mut self) -> Result<usize> {
        let i = self.nodes.len();
        let name = format!("{}{}", self.config.name_prefix, i + 1);
        let (api_addr, peer_addr, mesh_addr) = self.config.addressing.addresses(i);
        self.nodes.push(LocalNode {
            api_url: match self.config.api {
                ApiTransport::Plain => format!("http://{api_addr}"),
                _ => format!("https://{api_addr}"),
            },
            data_dir: self.config.dir.join(&name),
            log: self.config.dir.join(format!("{name}.log")),
            name,
            api_addr,
            peer_addr,
            mesh_addr,
            child: None,
        });
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.api_url.as_str()).collect();
        write_private(&self.config.dir.join("nodes"), &(urls.join("\n") + "\n"))?;
        Ok(i)
    }

    /// Starts node `i` as `panal CMD… <its addresses and data dir> <node_args> EXTRA…`.
    pub fn spawn(&mut self, i: usize, cmd: &[&str], extra: &[&str]) -> Result<()> {
        self.spawn_with_env(i, cmd, extra, &[])
    }

    /// [`LocalCluster::spawn`] with extra environment variables (secrets stay out of argv).
    pub fn spawn_with_env(&mut self, i: usize, cmd: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let node = &self.nodes[i];
        // Node logs may name secrets of the node's own making: owner only.
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&node.log)
                .map_err(|e| Error::Fatal(format!("cannot open {}: {e}", node.log.display())))
        };
        let mut command = Command::new(&self.config.exe);
        command
            .args(self.arguments(i, cmd, extra))
            .env("PANAL_ADMIN_PASSWORD", &self.password)
            .env(crate::server::start::LAUNCHER_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        for (k, v) in &self.config.env {
            command.env(k, v);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().map_err(|e| Error::Fatal(format!("cannot start {}: {e}", node.name)))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// The arguments of node `i`: `CMD… <its addresses and data dir> <node_args> EXTRA…`.
    pub fn arguments(&self, i: usize, cmd: &[&str], extra: &[&str]) -> Vec<String> {
        let node = &self.nodes[i];
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.extend(["--data-dir".into(), node.data_dir.display().to_string(), "--name".into(), node.name.clone()]);
        args.extend(["--api-addr".into(), node.api_addr.clone(), "--peer-addr".into(), node.peer_addr.clone()]);
        args.extend(["--mesh-addr".into(), node.mesh_addr.clone()]);
        if self.config.api == ApiTransport::ClusterCa {
            args.extend(["--api-tls".into(), "auto".into()]);
        }
        args.extend(self.config.node_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Restarts stopped node `i` from its data dir (does not wait).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].is_running() {
            return Err(Error::Fatal(format!("{} is running", self.nodes[i].name)));
        }
        self.spawn(i, &["start"], &[])
    }

    /// The one ready-wait loop: polls `/ready` of node `i` until 200, failing early (with
    /// the end of its log) if the process exits.
    pub async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            // Built anew each time: a new cluster's CA appears once its first node started.
            let probe = Client::with_trust(&[self.nodes[i].api_url.as_str()], DEFAULT_TIMEOUT, &self.trust()?)?;
            if let Some(status) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.nodes[i].child = None;
                return Err(Error::Fatal(format!(
                    "{} exited ({status}); last log lines:\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log_tail(20)
                )));
            }
            if probe.is_ready(0, Duration::from_secs(1)).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!(
                    "{} not ready after {:?}; see {}",
                    self.nodes[i].name,
                    self.config.ready_timeout,
                    self.nodes[i].log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of every node (not logged in).
    pub fn client(&self) -> Result<Client> {
        self.client_with_timeout(DEFAULT_TIMEOUT)
    }

    /// A client of every node (not logged in) with a per-request timeout.
    pub fn client_with_timeout(&self, timeout: Duration) -> Result<Client> {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.api_url.as_str()).collect();
        Ok(Client::with_trust(&urls, timeout, &self.trust()?)?)
    }

    /// What the clients of these nodes trust: the cluster CA once a node created it, or
    /// the CA of the nodes' own certificate.
    pub fn trust(&self) -> Result<Trust> {
        Ok(match &self.config.api {
            ApiTransport::Plain => Trust::default(),
            ApiTransport::ClusterCa => Trust::of_launch_dir(&self.config.dir)?.unwrap_or_default(),
            ApiTransport::OwnCa(file) => Trust::from_pem_file(file)?,
        })
    }

    /// A client of every node, logged in as the admin.
    pub async fn admin_client(&self) -> Result<Client> {
        let client = self.client()?;
        client.login("admin", &self.password).await?;
        Ok(client)
    }

    /// The nodes that exited by themselves since the last call, with how (reaps them).
    pub fn reap(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exited = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                n.child = None;
                exited.push((i, status));
            }
        }
        exited
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause(&self, i: usize) -> Result<()> {
        self.signal(i, "-STOP")
    }

    /// Thaws a node frozen by [`LocalCluster::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<()> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, sig: &str) -> Result<()> {
        let pid = self.nodes[i].pid().ok_or_else(|| Error::Fatal(format!("{} is not running", self.nodes[i].name)))?;
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(Error::Fatal(format!("kill {sig} {pid} failed")))
        }
    }

    /// SIGTERMs node `i` and waits for it to exit (SIGKILL after 10 s).
    pub async fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERMs node `i` and blocks until it exited (for synchronous callers).
    pub fn terminate_blocking(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// SIGTERMs every node and waits for them to exit.
    pub async fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.terminate(i).await;
        }
    }

    /// Indices of the nodes whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()).collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // A failing test shows what its nodes said last.
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("--- last lines of {} ---\n{}", n.name, n.log_tail(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_give_distinct_addresses() {
        assert_eq!(
            Addressing::BasePort(7700).addresses(1),
            ("127.0.0.1:7710".into(), "127.0.0.1:7711".into(), "127.0.0.1:7712".into())
        );
        assert_eq!(Addressing::LoopbackPerNode(30, 4).addresses(2).0, "127.30.4.3:7700");
    }

    #[test]
    fn password_and_node_list_are_stored_for_the_admin_commands() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LaunchConfig::base_port(dir.path(), 7700).unwrap();
        config.password = Some("chosen-password".into());
        let mut cluster = LocalCluster::new(config).unwrap();
        cluster.add_slot().unwrap();
        cluster.add_slot().unwrap();
        assert_eq!(stored_password(dir.path()).as_deref(), Some("chosen-password"));
        assert_eq!(
            crate::tooling::client::stored_api_urls(dir.path()),
            ["http://127.0.0.1:7700", "http://127.0.0.1:7710"]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin-password")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the password file is private");
    }
}
