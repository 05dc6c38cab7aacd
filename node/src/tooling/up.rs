//! `panal up`: a local cluster of node processes of this same binary on 127.0.0.1.
//! [`LocalCluster`] is also what the benchmarks start and break.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::tooling::cli::{AdminArgs, UpArgs};

/// Ports of node `i` (0-based): api = base + 10·i, peer = +1, mesh = +2.
pub fn ports(base: u16, i: u16) -> (u16, u16, u16) {
    let api = base + 10 * i;
    (api, api + 1, api + 2)
}

pub struct LocalNode {
    pub name: String,
    pub api_url: String,
    pub peer_addr: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

/// A set of local node processes, stopped when dropped.
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub password: String,
    exe: PathBuf,
}

impl LocalCluster {
    /// Starts (or restarts, when `dir` already holds it) a cluster of `managers` +
    /// `workers` nodes and waits until every node is ready.
    pub async fn up(dir: &Path, managers: u16, workers: u16, base_port: u16, extra: &[String]) -> Result<Self> {
        if managers == 0 {
            return Err(Error::Fatal("--nodes must be at least 1".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::Fatal(format!("cannot create {}: {e}", dir.display())))?;
        let exe = std::env::current_exe().map_err(|e| Error::Fatal(e.to_string()))?;
        let password_file = dir.join("admin-password");
        let existing = dir.join("node1").join("node.json").exists();
        let password = match std::fs::read_to_string(&password_file) {
            Ok(p) if existing => p.trim().to_string(),
            _ => {
                let p = crate::server::identity::random_hex(12);
                write_private(&password_file, &p)?;
                p
            }
        };
        let mut nodes = Vec::new();
        for i in 0..managers + workers {
            let (api, peer, mesh) = ports(base_port, i);
            let name = format!("node{}", i + 1);
            let data_dir = dir.join(&name);
            let mut args = vec![
                "start".into(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--name".into(),
                name.clone(),
                "--api-addr".into(),
                format!("127.0.0.1:{api}"),
                "--peer-addr".into(),
                format!("127.0.0.1:{peer}"),
                "--mesh-addr".into(),
                format!("127.0.0.1:{mesh}"),
            ];
            args.extend(extra.iter().cloned());
            nodes.push(LocalNode {
                log: dir.join(format!("{name}.log")),
                name,
                api_url: format!("http://127.0.0.1:{api}"),
                peer_addr: format!("127.0.0.1:{peer}"),
                args,
                child: None,
            });
        }
        let mut cluster = LocalCluster { nodes, password, exe };
        if existing {
            for i in 0..cluster.nodes.len() {
                cluster.spawn(i, &[])?;
            }
        } else {
            cluster.spawn(0, &["--init".into()])?;
            cluster.wait_ready(0, Duration::from_secs(60)).await?;
            let admin = cluster.admin_args(0);
            let client = crate::tooling::admin::AdminClient::login(&admin).await?;
            let tokens = client.request(reqwest::Method::GET, "/api/v1/cluster/tokens").await?;
            let first_peer = cluster.nodes[0].peer_addr.clone();
            for i in 1..cluster.nodes.len() {
                let role = if (i as u16) < managers { "manager" } else { "worker" };
                let token = tokens[role].as_str().unwrap_or_default().to_string();
                // Through the environment, not argv: `ps` shows every user the command line.
                cluster.spawn_with_env(i, &["--join".into(), first_peer.clone()], &[("PANAL_TOKEN", token)])?;
                // One at a time: each join changes the membership.
                cluster.wait_ready(i, Duration::from_secs(60)).await?;
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, extra: &[String]) -> Result<()> {
        self.spawn_with_env(i, extra, &[])
    }

    fn spawn_with_env(&mut self, i: usize, extra: &[String], env: &[(&str, String)]) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&node.log)
            .map_err(|e| Error::Fatal(format!("cannot open {}: {e}", node.log.display())))?;
        let log_err = log.try_clone().map_err(|e| Error::Fatal(e.to_string()))?;
        let child = Command::new(&self.exe)
            .args(&node.args)
            .args(extra)
            .env("PANAL_ADMIN_PASSWORD", &self.password)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(crate::server::start::LAUNCHER_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Fatal(format!("cannot start {}: {e}", node.name)))?;
        node.child = Some(child);
        Ok(())
    }

    /// Restarts a stopped node from its data dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i, &[])
    }

    /// SIGKILLs node `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn admin_args(&self, i: usize) -> AdminArgs {
        AdminArgs { url: self.nodes[i].api_url.clone(), user: "admin".into(), password: Some(self.password.clone()) }
    }

    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/ready", self.nodes[i].api_url);
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let tail = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                    return Err(Error::Fatal(format!(
                        "{} exited ({status}); last log lines:\n{}",
                        self.nodes[i].name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )));
                }
            }
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!(
                    "{} not ready after {timeout:?}; see {}",
                    self.nodes[i].name,
                    self.nodes[i].log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM to every node and waits for them to exit.
    pub async fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.terminate(i).await;
        }
    }

    /// Sends SIGTERM to node `i` and waits for it to exit (SIGKILL after 10 s).
    pub async fn terminate(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

pub async fn run(args: UpArgs) -> Result<()> {
    let mut cluster = LocalCluster::up(&args.dir, args.nodes, args.workers, args.base_port, &args.node_args).await?;
    println!("Panal cluster up: {} managers, {} workers (data in {})", args.nodes, args.workers, args.dir.display());
    for n in &cluster.nodes {
        println!("  {:<8} {}   (log: {}/{}.log)", n.name, n.api_url, args.dir.display(), n.name);
    }
    println!("Admin user: admin   password: {}", cluster.password);
    let client = crate::tooling::admin::AdminClient::login(&cluster.admin_args(0)).await?;
    let tokens = client.request(reqwest::Method::GET, "/api/v1/cluster/tokens").await?;
    println!("Manager token: {}", tokens["manager"].as_str().unwrap_or_default());
    println!("Worker token:  {}", tokens["worker"].as_str().unwrap_or_default());
    let url = &cluster.nodes[0].api_url;
    let other = cluster.nodes.last().map(|n| n.api_url.as_str()).unwrap_or(url);
    let login = |user: &str, password: &str| {
        format!("curl -s {url}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"username\":\"{user}\",\"password\":\"{password}\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/'")
    };
    if args.demo {
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.api_url.clone()).collect();
        let loaded = crate::tooling::demo::load(&urls).await?;
        if loaded.fresh {
            println!("Demo data loaded: {} books, {} meter readings, a battery CSV.", loaded.books, loaded.readings);
        } else {
            println!("Demo data already present ({} books).", loaded.books);
        }
        for (user, password, what) in crate::tooling::demo::USERS {
            println!("  user {user:<6} password {password:<16} {what}");
        }
        println!("Try:");
        println!("  curl -s '{other}/api/v1/books?q=le+guin'");
        println!("  TOKEN=$({})", login("carol", crate::tooling::demo::USERS[2].1));
        println!(
            "  curl -s '{other}/api/v1/devices/{}/readings?bucket=day' -H \"authorization: Bearer $TOKEN\"",
            loaded.meter_id
        );
        println!(
            "  curl -s '{url}/api/v1/devices/{}/forecast?horizon=24h' -H \"authorization: Bearer $TOKEN\"",
            loaded.meter_id
        );
        println!(
            "  open {url}/api/v1/devices/{}/battery/chart.svg (with the token), or {url}/openapi.json",
            loaded.battery_id
        );
    } else {
        println!("Try:");
        println!("  TOKEN=$({})", login("admin", &cluster.password));
        println!("  curl -s -X PUT {url}/api/v1/cluster/kv/hello -H \"authorization: Bearer $TOKEN\" -d world");
        println!("  curl -s {other}/api/v1/cluster/kv/hello -H \"authorization: Bearer $TOKEN\"");
    }
    println!("  panal node ls --node {url} --password {}", cluster.password);
    println!("  panal top --node {url} --password {}", cluster.password);
    println!(
        "Ctrl-C (or SIGTERM) stops every node; `panal up --dir {}` starts the same cluster again.",
        args.dir.display()
    );

    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // SIGTERM too: a signal ends this process without running destructors, so the nodes
    // must be stopped here or they would outlive it.
    let stop = crate::server::start::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                if let Ok(rows) = client.request(reqwest::Method::GET, "/api/v1/cluster/nodes").await {
                    let line: Vec<String> = rows.as_array().into_iter().flatten().map(|r| {
                        format!("{}:{}{}@{}", r["name"].as_str().unwrap_or("?"), r["state"].as_str().unwrap_or("down"),
                            if r["reachable"].as_bool() == Some(true) { "" } else { "!" }, r["applied_index"])
                    }).collect();
                    println!("status: {}", line.join("  "));
                }
            }
        }
    }
    println!("stopping…");
    cluster.stop().await;
    Ok(())
}

/// Writes a secret readable by this user only (mode 0600, also when the file existed).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| Error::Fatal(format!("cannot write {}: {e}", path.display()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}
