//! The cluster a drill breaks: a local cluster of child processes (faults are real signals:
//! SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restarts; partitions through the isolate hook), or
//! remote nodes started with `--chaos` (faults through the admin chaos API: crash, isolate,
//! panic; crashed nodes must be restarted by their supervisor).

use std::time::{Duration, Instant};

use panal_actors::orchestration::{Availability, Mode, TaskView};
use panal_actors::services::Service;
use panal_raft::MemberRole;
use serde_json::json;

use crate::error::{Error, Result};
use crate::tooling::client::{Client, NodeUpdate, ServiceUpdate, Trust};
use crate::tooling::launcher::LocalCluster;

/// How long a restarted or resumed node may take to be ready again.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

pub enum Nodes {
    Local(Box<LocalCluster>),
    Remote,
}

/// The cluster under test, with what the drill did to each node.
pub struct Target {
    pub nodes: Nodes,
    pub urls: Vec<String>,
    pub names: Vec<String>,
    /// For the workload's raw, timed attempts.
    pub http: reqwest::Client,
    pub token: String,
    /// The admin client of every node (`pinned(i)` for one node).
    pub api: Client,
    /// Nodes the drill stopped (killed, crashed, terminated) and not yet restarted.
    pub down: Vec<bool>,
    /// Nodes the drill froze with SIGSTOP.
    pub paused: Vec<bool>,
    /// Nodes the drill drained (or paused) and not yet activated again.
    pub inactive: Vec<bool>,
    /// Nodes the drill removed from the cluster and not yet joined again, with the role
    /// they join again with.
    pub removed: Vec<Option<&'static str>>,
    /// When the isolation the drill set on a node ends.
    pub isolated_until: Vec<Option<Instant>>,
}

impl Target {
    /// Takes over a local cluster.
    pub async fn local(cluster: LocalCluster) -> Result<Self> {
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.api_url.clone()).collect();
        let names = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let api = cluster.admin_client().await?;
        let trust = cluster.trust()?;
        Self::new(Nodes::Local(Box::new(cluster)), urls, names, api, &trust)
    }

    /// Remote nodes, by API address; each must answer and have the chaos hooks on.
    pub async fn remote(urls: Vec<String>, password: &str, trust: &Trust) -> Result<Self> {
        let api = Client::with_trust(&urls, crate::tooling::client::DEFAULT_TIMEOUT, trust)?;
        let urls = api.nodes().to_vec();
        api.login("admin", password).await.map_err(|e| match e.status() {
            Some(401) => Error::Fatal("the admin password was refused (--password / PANAL_PASSWORD)".into()),
            _ => Error::Fatal(format!("no node accepted the admin login: {e}")),
        })?;
        let mut names = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let node = api.pinned(i);
            let health = node.health().await.map_err(|e| Error::Fatal(format!("{url} does not answer: {e}")))?;
            names.push(
                health["node"].as_str().ok_or_else(|| Error::Fatal(format!("{url}/health names no node")))?.to_string(),
            );
            // A 404 here means the node was started without --chaos; a 400 means the hook is on.
            if let Err(e) = node.chaos("isolate", &json!({ "seconds": 0 })).await {
                match e.status() {
                    Some(404) => {
                        return Err(Error::Fatal(format!("{url} has no chaos hooks: start its node with --chaos")))
                    }
                    Some(_) => {}
                    None => return Err(Error::Fatal(format!("{url}: {e}"))),
                }
            }
        }
        Self::new(Nodes::Remote, urls, names, api, trust)
    }

    fn new(nodes: Nodes, urls: Vec<String>, names: Vec<String>, api: Client, trust: &Trust) -> Result<Self> {
        let n = urls.len();
        let token = api.token().unwrap_or_default();
        Ok(Self {
            nodes,
            urls,
            names,
            http: client(trust)?,
            token,
            api,
            down: vec![false; n],
            paused: vec![false; n],
            removed: vec![None; n],
            inactive: vec![false; n],
            isolated_until: vec![None; n],
        })
    }

    pub fn is_local(&self) -> bool {
        matches!(self.nodes, Nodes::Local(_))
    }

    /// Nodes neither down, frozen nor removed.
    pub fn running(&self) -> Vec<usize> {
        (0..self.urls.len()).filter(|&i| !self.down[i] && !self.paused[i] && self.removed[i].is_none()).collect()
    }

    /// The leader as the running nodes see it.
    pub async fn leader(&self) -> Option<usize> {
        for i in self.running() {
            if let Some(name) = self.leader_seen_by(i).await {
                if let Some(l) = self.names.iter().position(|n| *n == name) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// The leader's name as node `i` sees it (None: no leader, or `i` did not answer in 2 s).
    pub async fn leader_seen_by(&self, i: usize) -> Option<String> {
        let status = tokio::time::timeout(Duration::from_secs(2), self.api.pinned(i).cluster_status()).await;
        status.ok()?.ok()?.leader.map(|l| l.name)
    }

    /// Waits until a leader is known (faults aimed at the leader need one).
    pub async fn wait_leader(&self) -> Result<usize> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal("no leader within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Managers and workers: node ids of the members with role `worker`.
    pub async fn workers(&self) -> Vec<usize> {
        let Some(&i) = self.running().first() else { return Vec::new() };
        let Ok(rows) = self.api.pinned(i).cluster_nodes().await else { return Vec::new() };
        rows.iter()
            .filter(|r| r.role == MemberRole::Worker)
            .filter_map(|r| self.names.iter().position(|n| *n == r.name))
            .collect()
    }

    fn local_cluster(&self, i: usize) -> Result<&LocalCluster> {
        match &self.nodes {
            Nodes::Local(c) => Ok(c),
            Nodes::Remote => Err(Error::Fatal(format!("signals to {} need a local cluster", self.names[i]))),
        }
    }

    /// Stops node `i` at once: SIGKILL locally, the crash hook remotely.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        match &mut self.nodes {
            Nodes::Local(c) => c.kill(i),
            Nodes::Remote => self.crash(i).await?,
        }
        self.down[i] = true;
        Ok(())
    }

    /// Stops node `i` gracefully (SIGTERM) locally; remotely, the crash hook (its supervisor
    /// restarts it either way).
    pub async fn terminate(&mut self, i: usize) -> Result<()> {
        match &mut self.nodes {
            Nodes::Local(c) => c.terminate(i).await,
            Nodes::Remote => self.crash(i).await?,
        }
        self.down[i] = true;
        Ok(())
    }

    /// The crash hook, then waits until the node stopped answering (it exits a moment after
    /// its answer), so that waiting for it to be ready again waits for the restarted process.
    async fn crash(&self, i: usize) -> Result<()> {
        self.chaos(i, "crash", json!({})).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let node = self.api.pinned(i);
        while tokio::time::timeout(Duration::from_millis(300), node.health()).await.is_ok_and(|r| r.is_ok()) {
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!("{} still answers 10 s after its crash", self.names[i])));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until node `i` follows the same leader as another running node (a healed
    /// partition: an isolated leader only steps down once it hears from the majority).
    pub async fn wait_rejoined(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let leader_of = |j: usize| self.leader_seen_by(j);
        loop {
            let other = self.running().into_iter().find(|&j| j != i);
            let (mine, theirs) = match other {
                Some(j) => (leader_of(i).await, leader_of(j).await),
                None => return Ok(()),
            };
            if mine.is_some() && mine == theirs {
                return self.wait_ready(i).await;
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!(
                    "{} follows {mine:?}, the others {theirs:?}, {READY_DEADLINE:?} after its isolation",
                    self.names[i]
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a stopped node again locally (remotely: waits for its supervisor to), and
    /// waits until it is ready.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        if let Nodes::Local(c) = &mut self.nodes {
            c.restart(i)?;
        }
        self.down[i] = false;
        self.wait_ready(i).await
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open, nothing answers.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.local_cluster(i)?.pause(i)?;
        self.paused[i] = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.local_cluster(i)?.resume(i)?;
        self.paused[i] = false;
        Ok(())
    }

    /// Cuts node `i` off from its peers for `seconds` (it heals by itself).
    pub async fn isolate(&mut self, i: usize, seconds: u64) -> Result<()> {
        self.chaos(i, "isolate", json!({ "seconds": seconds })).await?;
        self.isolated_until[i] = Some(Instant::now() + Duration::from_secs(seconds));
        Ok(())
    }

    /// Makes one worker of `service` on node `i` panic.
    pub async fn panic_worker(&self, i: usize, service: &str) -> Result<()> {
        self.chaos(i, "panic", json!({ "service": service })).await
    }

    async fn chaos(&self, i: usize, hook: &str, body: serde_json::Value) -> Result<()> {
        match tokio::time::timeout(Duration::from_secs(10), self.api.pinned(i).chaos(hook, &body)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Fatal(format!("chaos {hook} on {}: {e}", self.names[i]))),
            Err(_) => Err(Error::Fatal(format!("chaos {hook} on {}: timeout", self.names[i]))),
        }
    }

    /// Waits until node `i` answers `/ready` with 200.
    pub async fn wait_ready(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if self.is_ready(i).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!("{} not ready within {READY_DEADLINE:?}", self.names[i])));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn is_ready(&self, i: usize) -> bool {
        self.api.is_ready(i, Duration::from_secs(1)).await
    }

    /// Node `i`'s member id (it changes when the node joins again afresh).
    pub async fn node_id(&self, i: usize) -> Result<u64> {
        let rows = self.api.cluster_nodes().await?;
        rows.iter()
            .find(|r| r.name == self.names[i])
            .map(|r| r.id)
            .ok_or_else(|| Error::Fatal(format!("{} is not a member", self.names[i])))
    }

    /// Whether node `i` is a manager (a Raft voter).
    pub async fn is_manager(&self, i: usize) -> Result<bool> {
        let rows = self.api.cluster_nodes().await?;
        Ok(rows.iter().any(|r| r.name == self.names[i] && r.role == MemberRole::Manager))
    }

    /// Sets node `i`'s availability, as `panal node update`.
    pub async fn set_availability(&mut self, i: usize, availability: Availability) -> Result<()> {
        let id = self.node_id(i).await?;
        self.api.update_node(id, &NodeUpdate { availability: Some(availability), ..Default::default() }).await?;
        self.inactive[i] = availability != Availability::Active;
        Ok(())
    }

    /// Every task of every service.
    async fn tasks(&self) -> Result<Vec<TaskView>> {
        let mut all = Vec::new();
        for service in Service::ALL {
            all.extend(self.api.get::<Vec<TaskView>>(&format!("/api/v1/services/{}/tasks", service.name())).await?);
        }
        Ok(all)
    }

    /// Waits until no task is assigned to node `i` (a drain moved them all away) but its
    /// own `metrics`, which reads that node's kernel statistics and stays.
    pub async fn wait_drained(&self, i: usize) -> Result<()> {
        let id = self.node_id(i).await?;
        self.wait_tasks(&format!("{} to run no task", self.names[i]), |tasks| {
            tasks.iter().all(|t| t.node_id != Some(id) || t.service == Service::Metrics)
        })
        .await
    }

    /// Waits until node `i` runs a task other than its metrics again (after an activation).
    pub async fn wait_serving(&self, i: usize) -> Result<()> {
        let id = self.node_id(i).await?;
        self.wait_tasks(&format!("{} to run tasks again", self.names[i]), |tasks| {
            tasks.iter().any(|t| t.node_id == Some(id) && t.service != Service::Metrics && t.current_state == "running")
        })
        .await
    }

    /// Waits until `service` runs exactly `replicas` tasks, all running.
    pub async fn wait_replicas(&self, service: Service, replicas: usize) -> Result<()> {
        self.wait_tasks(&format!("{} to run {replicas} tasks", service.name()), |tasks| {
            let mine: Vec<&TaskView> = tasks.iter().filter(|t| t.service == service).collect();
            mine.len() == replicas && mine.iter().all(|t| t.current_state == "running")
        })
        .await
    }

    async fn wait_tasks(&self, what: &str, done: impl Fn(&[TaskView]) -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if self.tasks().await.is_ok_and(|t| done(&t)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!("timed out waiting for {what}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `service`'s spec as a patch that restores it (mode and replicas).
    pub async fn service_scale(&self, service: Service) -> Result<ServiceUpdate> {
        let spec = self.api.service(service.name()).await?.spec;
        Ok(ServiceUpdate {
            mode: Some(spec.mode),
            replicas: (spec.mode == Mode::Replicated).then_some(spec.replicas),
            ..Default::default()
        })
    }

    /// Changes `service`'s spec, as `panal service scale` / `update`.
    pub async fn update_service(&self, service: Service, patch: &ServiceUpdate) -> Result<()> {
        self.api.update_service(service.name(), patch).await?;
        Ok(())
    }

    /// Removes node `i` from the cluster through the admin API of another node (it keeps
    /// running, and must stop serving at once).
    pub async fn remove(&mut self, i: usize) -> Result<()> {
        let id = self.node_id(i).await?;
        let role = if self.is_manager(i).await? { "manager" } else { "worker" };
        let via = self.running().into_iter().find(|&j| j != i).unwrap_or(0);
        let admin = self.api.pinned(via);
        if let Err(e) = admin.remove_node(id).await {
            // The cluster answers a removal it committed with 200, even across an election;
            // a 404 can only follow a retry of this request after a lost answer (the
            // client's own), and then the node must be gone.
            let listed = admin.cluster_nodes().await?.iter().any(|r| r.id == id);
            if e.status() != Some(404) || listed {
                return Err(e.into());
            }
        }
        self.removed[i] = Some(role);
        Ok(())
    }

    /// Brings removed node `i` back as a new member with its old role at the same address:
    /// stops the old process, clears its data directory, joins through a running node with
    /// that role's token, and waits until it is ready (a manager: a voter).
    pub async fn rejoin(&mut self, i: usize) -> Result<()> {
        let Some(role) = self.removed[i] else { return Ok(()) };
        let via = self.running().into_iter().find(|&j| j != i).unwrap_or(0);
        let tokens = self.api.pinned(via).join_tokens().await?;
        let Nodes::Local(c) = &mut self.nodes else {
            return Err(Error::Fatal(format!("joining {} again needs a local cluster", self.names[i])));
        };
        c.terminate(i).await;
        let data = c.nodes[i].data_dir.clone();
        std::fs::remove_dir_all(&data).map_err(|e| Error::Fatal(format!("cannot clear {}: {e}", data.display())))?;
        let peer = c.nodes[via].peer_addr.clone();
        c.spawn_with_env(i, &["start"], &["--join", &peer], &[("PANAL_TOKEN", tokens.for_role(role))])?;
        self.removed[i] = None;
        self.wait_ready(i).await?;
        // Ready is the node's own view: wait until another member lists it with its role.
        let deadline = Instant::now() + READY_DEADLINE;
        let admin = self.api.pinned(via);
        loop {
            let rows = admin.cluster_nodes().await.unwrap_or_default();
            if rows.iter().any(|r| r.name == self.names[i] && r.role.to_string() == role) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Fatal(format!("{} is not listed as a {role} again", self.names[i])));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Undoes everything: resumes frozen nodes, restarts stopped ones, waits out
    /// isolations. Returns the nodes that are not ready within the deadline.
    pub async fn heal(&mut self) -> Vec<usize> {
        for i in 0..self.urls.len() {
            if self.paused[i] {
                if let Err(e) = self.resume(i) {
                    eprintln!("drill: heal: {e}");
                }
            }
            if self.down[i] {
                if let Nodes::Local(c) = &mut self.nodes {
                    if let Err(e) = c.restart(i) {
                        eprintln!("drill: heal: {e}");
                    }
                }
                self.down[i] = false;
            }
        }
        for i in 0..self.urls.len() {
            if let Err(e) = self.rejoin(i).await {
                eprintln!("drill: heal: {e}");
            }
        }
        for i in 0..self.urls.len() {
            if self.inactive[i] {
                if let Err(e) = self.wait_ready(i).await {
                    eprintln!("drill: heal: {e}");
                }
                match self.set_availability(i, Availability::Active).await {
                    Ok(()) => {
                        if let Err(e) = self.wait_serving(i).await {
                            eprintln!("drill: heal: {e}");
                        }
                    }
                    Err(e) => eprintln!("drill: heal: {e}"),
                }
            }
        }
        if let Some(last) = self.isolated_until.iter().flatten().max() {
            tokio::time::sleep_until((*last).into()).await;
        }
        self.isolated_until.iter_mut().for_each(|u| *u = None);
        let mut unready = Vec::new();
        for i in 0..self.urls.len() {
            if self.wait_ready(i).await.is_err() {
                unready.push(i);
            }
        }
        unready
    }

    /// Stops a local cluster's nodes (a remote cluster is left running).
    pub async fn shut_down(&mut self) {
        if let Nodes::Local(c) = &mut self.nodes {
            c.stop().await;
        }
    }
}

/// The raw HTTP client of the workload and the observers, trusting what the typed one does.
fn client(trust: &Trust) -> Result<reqwest::Client> {
    Ok(trust
        .http_client(reqwest::Client::builder().pool_max_idle_per_host(64).connect_timeout(Duration::from_secs(1)))?)
}
