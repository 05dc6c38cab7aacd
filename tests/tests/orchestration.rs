//! Built-in orchestration on real processes: scaling, placement constraints, drain, and
//! the CLI and 4xx answers that front them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use panal::tooling::client::{ServiceUpdate, ServiceView, TaskView};
use panal_actors::orchestration::{Constraint, Mode};
use panal_actors::services::{Service, ServiceHealth};
use panal_tests::{poll, run_panal, Call, Cluster};
use serde_json::{json, Value};

/// Nodes that served `n` pings of `service` sent to node 0.
async fn serving(c: &Cluster, service: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (status, node) = c.ping(0, service).await;
        if status == 200 {
            seen.insert(node);
        }
    }
    seen
}

async fn tasks(c: &Cluster, service: &str) -> Vec<TaskView> {
    let any = c.running()[0];
    c.admin().await.pinned(any).service_tasks(service).await.unwrap_or_else(|e| panic!("tasks of {service}: {e}"))
}

async fn service(c: &Cluster, name: &str) -> ServiceView {
    c.admin().await.pinned(0).service(name).await.unwrap_or_else(|e| panic!("service {name}: {e}"))
}

/// A change the server accepts, through the typed client.
async fn update(c: &Cluster, name: &str, update: ServiceUpdate) -> ServiceView {
    c.admin().await.pinned(0).update_service(name, &update).await.unwrap_or_else(|e| panic!("update {name}: {e}"))
}

fn replicated(n: u32) -> ServiceUpdate {
    ServiceUpdate { mode: Some(Mode::Replicated), replicas: Some(n), ..Default::default() }
}

/// Node names of the tasks of `service` that run (`None` when some task is not running).
async fn running_on(c: &Cluster, service: &str, names: &[(u64, String)]) -> Option<BTreeSet<String>> {
    let tasks = tasks(c, service).await;
    let mut out = BTreeSet::new();
    for t in &tasks {
        if t.current_state != "running" {
            return None;
        }
        let id = t.node_id?;
        out.insert(names.iter().find(|(n, _)| *n == id)?.1.clone());
    }
    Some(out)
}

async fn patch(c: &Cluster, path: &str, body: Value) -> panal_tests::Reply {
    c.send(0, Call::new("PATCH", path).token(&c.token().await).json(body)).await
}

fn cli(c: &Cluster, args: &[&str]) -> String {
    let url = c.nodes[0].api();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--node", &url]);
    let out = run_panal(&all, &[("PANAL_PASSWORD", &c.password)]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "panal {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_constrain_and_drain_on_three_nodes() {
    let c = Cluster::start(3, 0, &["--pool-size", "2"]).await;
    c.wait_mesh(0).await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push((c.node_id(i).await, c.nodes[i].name.clone()));
    }
    let all: BTreeSet<String> = names.iter().map(|(_, n)| n.clone()).collect();

    // Defaults: every service global, one running task per node.
    poll("catalog global on every node", || async { running_on(&c, "catalog", &names).await == Some(all.clone()) })
        .await;

    // Scale 3 -> 1 -> 4: tasks and routing follow.
    assert_eq!(update(&c, "catalog", replicated(3)).await.spec.replicas, 3);
    poll("3 catalog tasks on 3 nodes", || async { running_on(&c, "catalog", &names).await == Some(all.clone()) }).await;
    let started = Instant::now();
    cli(&c, &["service", "scale", "catalog=1"]);
    let one = panal_tests::poll_some("1 running catalog task", || async {
        let one_task = tasks(&c, "catalog").await.len() == 1;
        running_on(&c, "catalog", &names).await.filter(|s| one_task && s.len() == 1)
    })
    .await;
    poll("catalog routed to its one node only", || async { serving(&c, "catalog", 30).await == one }).await;
    eprintln!("scale 3 -> 1: routing followed in {:?}", started.elapsed());
    // The cluster view asks every node for its own supervisors' health: catalog's workers
    // run on its one node and are stopped on the others.
    poll("per-node health shows catalog on its one node only", || async {
        let rows = c.admin().await.pinned(0).cluster_nodes().await.unwrap();
        rows.len() == 3
            && rows.iter().all(|r| {
                let workers = if one.contains(&r.name) { 2 } else { 0 };
                r.services.as_ref().and_then(|s| s.get(&Service::Catalog)) == Some(&ServiceHealth::Running { workers })
            })
    })
    .await;
    let started = Instant::now();
    let view = update(&c, "catalog", ServiceUpdate { replicas: Some(4), ..Default::default() }).await;
    assert_eq!((view.spec.mode, view.spec.replicas), (Mode::Replicated, 4));
    poll("4 catalog tasks over 3 nodes", || async {
        tasks(&c, "catalog").await.len() == 4 && running_on(&c, "catalog", &names).await == Some(all.clone())
    })
    .await;
    poll("catalog routed to every node", || async { serving(&c, "catalog", 40).await == all }).await;
    eprintln!("scale 1 -> 4: routing followed in {:?}", started.elapsed());
    let ls = cli(&c, &["service", "ls"]);
    assert!(
        ls.lines().any(|l| l.starts_with("catalog") && l.contains("replicated") && l.contains("4/4")),
        "{ls}\n{:#?}",
        tasks(&c, "catalog").await
    );

    // Bad input: clear 4xx, nothing changed.
    for (body, status, needle) in [
        (json!({"replicas": -1}), 400, "invalid"),
        (json!({"replicas": 5000}), 400, "between 0 and 1000"),
        (json!({"constraint_add": ["node.labels.cpu>=big"]}), 400, "unknown operator"),
        (json!({"constraint_add": ["node.cpu==big"]}), 400, "unknown field"),
        (json!({"replicas": 2, "colour": "red"}), 400, "colour"),
    ] {
        let r = patch(&c, "/api/v1/services/catalog", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(needle), "{body}: {}", r.text);
    }
    let r = patch(&c, "/api/v1/services/metrics", json!({"mode": "replicated", "replicas": 1})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("stays global"), "{}", r.text);
    assert_eq!(patch(&c, "/api/v1/services/nope", json!({})).await.status, 404);
    assert_eq!(patch(&c, "/api/v1/cluster/nodes/99", json!({"availability": "drain"})).await.status, 404);
    let r = patch(&c, &format!("/api/v1/cluster/nodes/{}", names[0].0), json!({"availability": "asleep"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let catalog = service(&c, "catalog").await;
    assert_eq!(catalog.spec.replicas, 4, "a refused change changed nothing: {catalog:?}");
    assert!(catalog.spec.constraints.is_empty());

    // A constraint keeps prediction on labelled nodes, and pending when none is left.
    let (id1, id2) = (names[1].0.to_string(), names[2].0.to_string());
    cli(&c, &["node", "update", &id1, "--label-add", "cpu=big"]);
    cli(&c, &["node", "update", &id2, "--label-add", "cpu=big"]);
    cli(
        &c,
        &[
            "service",
            "update",
            "prediction",
            "--mode",
            "replicated",
            "--replicas",
            "2",
            "--constraint-add",
            "node.labels.cpu==big",
        ],
    );
    let ls = cli(&c, &["node", "ls"]);
    assert!(ls.lines().any(|l| l.contains(&names[1].1) && l.contains("active") && l.contains("cpu=big")), "{ls}");
    let big: BTreeSet<String> = [names[1].1.clone(), names[2].1.clone()].into();
    poll("prediction on the labelled nodes", || async {
        running_on(&c, "prediction", &names).await == Some(big.clone())
    })
    .await;
    poll("prediction routed to the labelled nodes only", || async { serving(&c, "prediction", 30).await == big }).await;
    cli(&c, &["node", "update", &id1, "--label-rm", "cpu"]);
    cli(&c, &["node", "update", &id2, "--label-rm", "cpu"]);
    poll("prediction pending with the reason", || async {
        let t = tasks(&c, "prediction").await;
        t.len() == 2
            && t.iter().all(|t| {
                t.current_state == "pending" && t.error.as_deref() == Some("no node satisfies node.labels.cpu==big")
            })
    })
    .await;
    poll("no prediction instance left", || async { c.ping(0, "prediction").await.0 == 503 }).await;
    let ps = cli(&c, &["service", "ps", "prediction"]);
    assert!(ps.contains("no node satisfies node.labels.cpu==big"), "{ps}");

    // Drain node 2 under a stream of idempotent requests: none fails, and its instances
    // leave routing.
    let stream = RequestStream::start(&c, "catalog");
    let drained = names[2].1.clone();
    let started = Instant::now();
    cli(&c, &["node", "update", &id2, "--availability", "drain"]);
    poll("catalog tasks off the drained node", || async {
        running_on(&c, "catalog", &names).await.is_some_and(|s| !s.contains(&drained))
            && tasks(&c, "catalog").await.len() == 4
    })
    .await;
    poll("the drained node out of routing", || async {
        let catalog = serving(&c, "catalog", 30).await;
        let auth = serving(&c, "auth", 30).await;
        !catalog.contains(&drained) && !auth.contains(&drained) && catalog.len() == 2
    })
    .await;
    let drain_time = started.elapsed();
    let (sent, failures) = stream.stop().await;
    eprintln!("drain: {drain_time:?} until its instances left routing; {sent} requests, {} failed", failures.len());
    assert!(failures.is_empty(), "requests failed during the drain: {failures:?}");
    let auth = tasks(&c, "auth").await;
    assert!(auth.iter().all(|t| t.node_id != Some(names[2].0)), "a drained node runs no global task: {auth:?}");
    let ls = cli(&c, &["node", "ls"]);
    assert!(ls.lines().any(|l| l.contains(&drained) && l.contains(" drain ")), "{ls}");
    // Drain keeps the node's replica and vote.
    assert_eq!(c.role(names[2].0).await.as_deref(), Some("manager"));

    // A rolling restart, one node at a time, under a stream of idempotent requests.
    let stream = RequestStream::start(&c, "catalog");
    let started = Instant::now();
    cli(&c, &["service", "update", "catalog", "--restart", "--update-parallelism", "1", "--update-delay", "300"]);
    poll("every catalog task restarted", || async {
        let t = tasks(&c, "catalog").await;
        !t.is_empty() && t.iter().all(|t| t.generation == Some(1) && t.current_state == "running")
    })
    .await;
    let restart_time = started.elapsed();
    let (sent, failures) = stream.stop().await;
    eprintln!("rolling restart: {restart_time:?}; {sent} requests, {} failed", failures.len());
    assert!(failures.is_empty(), "requests failed during the rolling restart: {failures:?}");
    assert_eq!(service(&c, "catalog").await.spec.restarts, 1);
}

/// Idempotent requests (pings of a service through node 0) sent one after another until
/// stopped; every failure is kept.
struct RequestStream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<Vec<String>>,
}

impl RequestStream {
    fn start(c: &Cluster, service: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let http = c.http.clone();
        let url = format!("{}/api/v1/{service}/ping", c.nodes[0].api());
        let (stop_flag, counter) = (stop.clone(), sent.clone());
        let handle = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                counter.fetch_add(1, Ordering::Relaxed);
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures.push(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        });
        Self { stop, sent, handle }
    }

    /// Stops the stream: (requests sent, failures).
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.handle.await.unwrap();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// Index in `c.nodes` of the node named `name`.
fn index_of(c: &Cluster, name: &str) -> usize {
    c.nodes.iter().position(|n| n.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn drained_leader_hands_over_and_lost_nodes_lose_their_tasks() {
    let mut c = Cluster::start(3, 0, &["--pool-size", "2"]).await;
    c.wait_mesh(0).await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push((c.node_id(i).await, c.nodes[i].name.clone()));
    }

    // Draining the leader moves leadership to another manager; the old leader stays one.
    let old = c.leader().await;
    let old_id = names[old].0;
    let started = Instant::now();
    let r = c
        .send(
            old,
            Call::new("PATCH", format!("/api/v1/cluster/nodes/{old_id}"))
                .token(&c.token().await)
                .json(json!({"availability": "drain"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = panal_tests::poll_some("leadership to move off the drained leader", || async {
        let l = c.leader().await;
        (l != old).then_some(l)
    })
    .await;
    eprintln!("drained leader: leadership moved in {:?}", started.elapsed());
    assert_eq!(c.role(old_id).await.as_deref(), Some("manager"));
    let r = patch(&c, &format!("/api/v1/cluster/nodes/{old_id}"), json!({"availability": "active"})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The only catalog task, kept off the leader, moves when its node is killed.
    let leader_name = c.nodes[new].name.clone();
    let constraint = format!("node.name!={leader_name}");
    let constraint = Constraint::try_from(constraint).unwrap();
    update(&c, "catalog", ServiceUpdate { constraint_add: vec![constraint], ..replicated(1) }).await;
    let holder = panal_tests::poll_some("one running catalog task", || async {
        running_on(&c, "catalog", &names).await.filter(|s| s.len() == 1).and_then(|s| s.into_iter().next())
    })
    .await;
    let ping_via_leader = |c: &Cluster| {
        let url = format!("{}/api/v1/catalog/ping", c.nodes[new].api());
        let http = c.http.clone();
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    r.headers().get("x-panal-node").and_then(|v| v.to_str().ok()).map(String::from)
                }
                _ => None,
            }
        }
    };
    poll("catalog served by its one node only", || async {
        for _ in 0..20 {
            if ping_via_leader(&c).await.as_deref() != Some(&holder) {
                return false;
            }
        }
        true
    })
    .await;
    let victim = index_of(&c, &holder);
    let killed = Instant::now();
    c.kill(victim);
    let survivor = panal_tests::poll_some("catalog answering from another node", || async {
        ping_via_leader(&c).await.filter(|n| *n != holder)
    })
    .await;
    let recovered = killed.elapsed();
    eprintln!("node kill -> first request served by the rescheduled instance on {survivor}: {recovered:?}");
    assert_ne!(survivor, leader_name, "the constraint still holds");
    let moved = tasks(&c, "catalog").await;
    assert_eq!(moved.len(), 1);
    assert_ne!(moved[0].node_id, Some(names[victim].0), "{moved:?}");
    let metrics = c.metrics(new).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("panal_orchestration_reschedules_total{cause=\"node_lost\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_returning_node_gets_tasks_back_only_on_rebalance() {
    let mut c = Cluster::start(3, 0, &["--pool-size", "1"]).await;
    c.wait_mesh(0).await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push((c.node_id(i).await, c.nodes[i].name.clone()));
    }
    let all: BTreeSet<String> = names.iter().map(|(_, n)| n.clone()).collect();
    update(&c, "catalog", replicated(3)).await;
    poll("one catalog task per node", || async { running_on(&c, "catalog", &names).await == Some(all.clone()) }).await;

    // A follower dies: its catalog task moves; when it is back (on the leader's mesh) the
    // task stays where it moved (no thrash).
    let leader = c.leader().await;
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let (victim_id, victim_name) = names[victim].clone();
    c.kill(victim);
    poll("the catalog task to leave the dead node", || async {
        let t = tasks(&c, "catalog").await;
        t.len() == 3 && t.iter().all(|t| t.node_id != Some(victim_id) && t.current_state == "running")
    })
    .await;
    c.restart(victim).await;
    c.wait_ready(victim).await;
    c.wait_mesh(leader).await;
    assert!(
        tasks(&c, "catalog").await.iter().all(|t| t.node_id != Some(victim_id)),
        "a returning node gets no replicated task back by itself"
    );

    // A rebalance spreads the tasks again.
    cli(&c, &["service", "update", "catalog", "--rebalance"]);
    poll("catalog spread over every node again", || async {
        running_on(&c, "catalog", &names).await.is_some_and(|s| s.contains(&victim_name) && s == all)
    })
    .await;
    assert_eq!(service(&c, "catalog").await.spec.rebalances, 1);
}
