//! Node metrics end to end: every node samples itself, `/metrics` is valid Prometheus text,
//! the cluster view lists every member (a dead one as unreachable), and the live stream
//! delivers every node's samples.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use panal_tests::{poll_some, Call, Cluster};
use serde_json::Value;

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_is_observable_and_the_cluster_view_lists_all_of_them() {
    let mut c = Cluster::start(3, 0, &["--metrics-interval-ms", "250"]).await;
    c.wait_mesh(0).await;
    let admin = c.token().await;

    // The cluster view: three nodes, each with its own sample.
    let view = poll_some("a sample from every node", || async {
        let r = c.send(0, Call::new("GET", "/api/v1/metrics/nodes").token(&admin)).await;
        let nodes = r.body.as_array()?.clone();
        (nodes.len() == 3 && nodes.iter().all(|n| n["reachable"] == true && n["latest"].is_object())).then_some(nodes)
    })
    .await;
    let names: BTreeSet<&str> = view.iter().map(|n| n["latest"]["node"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{view:?}");
    for n in &view {
        let s = &n["latest"]["sample"];
        assert!(s["processes"]["total"].as_u64().unwrap() > 0, "{s}");
        assert!(s["processes"]["threads"].as_u64().unwrap() >= s["processes"]["total"].as_u64().unwrap());
        assert!(s["process_rss_bytes"].as_u64().unwrap() > 1_000_000, "{s}");
        assert!(s["mem_total_bytes"].as_u64().unwrap() > 0);
        assert!(["module", "scan"].contains(&s["source"].as_str().unwrap()));
        assert!(n["latest"]["taken_at"].as_str().unwrap().ends_with('Z'));
    }
    // Distinct processes: each node reports its own RSS and open files.
    let pids: BTreeSet<String> =
        view.iter().map(|n| n["latest"]["sample"]["process_open_fds"].to_string() + &n["name"].to_string()).collect();
    assert_eq!(pids.len(), 3);

    // History of one node.
    let name = view[1]["name"].as_str().unwrap().to_string();
    let history = poll_some("two samples of history", || async {
        let r = c.send(2, Call::new("GET", format!("/api/v1/metrics/nodes/{name}/history")).token(&admin)).await;
        r.body.as_array().filter(|h| h.len() >= 2).cloned()
    })
    .await;
    assert!(history.iter().all(|h| h["node"] == name.as_str()));
    let missing = c.send(0, Call::new("GET", "/api/v1/metrics/nodes/nobody/history").token(&admin)).await;
    assert_eq!(missing.status, 404);
    let user = c.user(0, "viewer").await.1;
    assert_eq!(c.send(0, Call::new("GET", "/api/v1/metrics/nodes").token(&user)).await.status, 403);

    // Prometheus text on every node, with the samples, Raft state and HTTP figures.
    for i in 0..3 {
        let scrape = parse(&c.metrics(i).await);
        let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        for wanted in [
            "panal_node_processes",
            "panal_node_processes_by_state",
            "panal_node_cpu_busy_ratio",
            "panal_node_memory_used_bytes",
            "panal_process_resident_memory_bytes",
            "panal_raft_term",
            "panal_raft_commit_index",
            "panal_raft_applied_index",
            "panal_node_info",
            "panal_actor_pool_size",
        ] {
            assert!(names.contains(wanted), "node {i} lacks {wanted}: {names:?}");
        }
        assert!(names.iter().all(|n| n.starts_with("panal_")), "{names:?}");
    }
    let leader = c.leader().await;
    let lead = parse(&c.metrics(leader).await);
    let lags = lead.samples.iter().filter(|s| s.metric == "panal_raft_replication_lag_entries").count();
    assert_eq!(lags, 2, "one lag series per follower");

    // The live stream delivers samples from every node within 3 s.
    let resp =
        c.http.get(format!("{}/api/v1/metrics/stream", c.nodes[0].api())).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let started = Instant::now();
    let mut resp = resp;
    let mut text = String::new();
    let mut seen = BTreeSet::new();
    while seen.len() < 3 {
        let left = Duration::from_secs(3).saturating_sub(started.elapsed());
        let chunk =
            tokio::time::timeout(left, resp.chunk()).await.unwrap_or_else(|_| panic!("3 s passed; saw {seen:?}"));
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the stream stays open")));
        for line in text.lines().filter_map(|l| l.strip_prefix("data:")) {
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                seen.insert(v["node"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    assert!(text.contains("event: sample") && text.contains("id: "), "{text}");

    // A killed node is listed as unreachable, not left out.
    let victim = (leader + 1) % 3;
    let victim_name = c.nodes[victim].name.clone();
    c.kill(victim);
    let asker = (victim + 1) % 3;
    let via = c.admin().await.pinned(asker);
    let view = poll_some("the killed node to show as unreachable", || async {
        let nodes = via.node_metrics().await.ok()?;
        let dead = nodes.iter().find(|n| n.name == victim_name)?;
        (!dead.reachable).then_some(nodes)
    })
    .await;
    assert_eq!(view.len(), 3);
    assert_eq!(view.iter().filter(|n| n.reachable).count(), 2);
}
