//! Node runtime, end to end: the gateway balances requests over every node's service
//! workers through the actor mesh, survives worker panics and node loss.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use panal_tests::Cluster;

/// Sends `n` pings to node `i` with `concurrency` in flight; returns counts by serving
/// node and the failures.
async fn stream(c: &Cluster, i: usize, n: usize, concurrency: usize) -> (HashMap<String, usize>, Vec<(u16, String)>) {
    let results: Vec<(u16, String)> =
        futures::stream::iter(0..n).map(|_| c.ping(i, "auth")).buffer_unordered(concurrency).collect().await;
    let mut by_node = HashMap::new();
    let mut failures = Vec::new();
    for (status, node) in results {
        if status == 200 {
            *by_node.entry(node).or_insert(0) += 1;
        } else {
            failures.push((status, node));
        }
    }
    (by_node, failures)
}

/// The value of the series named exactly `series` in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_requests_evenly_over_all_nodes_and_calls_other_nodes_over_links() {
    let c = Cluster::start(3, 0, &["--balance", "round-robin"]).await;
    c.wait_mesh(0).await;
    let (by_node, failures) = stream(&c, 0, 3000, 8).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(by_node.len(), 3, "{by_node:?}");
    for (node, n) in &by_node {
        assert!((980..=1020).contains(n), "{node} served {n} of 3000, not a third ±2%: {by_node:?}");
    }
    // The links opened on first use (calls went over the mesh meanwhile); now every call
    // to another node takes its link.
    let remote = |m: &str| {
        let count = |t: &str| sample(m, &format!("panal_gateway_remote_calls_total{{transport=\"{t}\"}}"));
        (count("link"), count("mesh"))
    };
    // (At least: waiting for the mesh asked the other nodes about themselves too.)
    let before = remote(&c.metrics(0).await);
    assert!(before.0 + before.1 >= (3000 - by_node["n1"]) as f64, "{before:?}");
    let (by_node, failures) = stream(&c, 0, 600, 8).await;
    assert!(failures.is_empty(), "{failures:?}");
    let after = remote(&c.metrics(0).await);
    assert_eq!(after.1, before.1, "no call over the mesh once the links are up");
    assert!(after.0 - before.0 >= (600 - by_node["n1"]) as f64, "{before:?} {after:?} {by_node:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chaos_panic_during_a_request_stream_fails_no_request_and_is_counted() {
    let c = Cluster::start(3, 0, &["--chaos", "--pool-size", "2"]).await;
    c.wait_mesh(0).await;
    let admin = c.admin().await.pinned(0);
    let panics = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for node in ["n1", "n2", "n3", "n2"] {
            let panic = serde_json::json!({ "service": "auth", "node": node });
            admin.chaos("panic", &panic).await.unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((by_node, failures), ()) = tokio::join!(stream(&c, 0, 3000, 8), panics);
    assert!(failures.is_empty(), "idempotent requests must survive worker panics: {failures:?}");
    assert_eq!(by_node.values().sum::<usize>(), 3000);
    panal_tests::poll("n2's two auth restarts to show in its /metrics", || async {
        sample(&c.metrics(1).await, "panal_actor_restarts_total{service=\"auth\"}") >= 2.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_node_stops_routing_to_it_within_two_seconds() {
    let mut c = Cluster::start(3, 0, &[]).await;
    c.wait_mesh(0).await;
    c.kill(2);
    let killed = Instant::now();
    // From 2 s after the kill on, every idempotent request succeeds, none on the dead node.
    let mut settle_failures = 0;
    while killed.elapsed() < Duration::from_secs(2) {
        if c.ping(0, "auth").await.0 != 200 {
            settle_failures += 1;
        }
    }
    let (by_node, failures) = stream(&c, 0, 600, 8).await;
    assert!(failures.is_empty(), "{failures:?} (and {settle_failures} during the first 2 s)");
    assert!(!by_node.contains_key("n3"), "{by_node:?}");
    assert_eq!(by_node.len(), 2, "{by_node:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_serves_on_the_receiving_node_and_chaos_is_off_by_default() {
    let c = Cluster::start(2, 0, &["--balance", "local"]).await;
    let (by_node, failures) = stream(&c, 1, 200, 8).await;
    assert!(failures.is_empty());
    assert_eq!(by_node.keys().collect::<Vec<_>>(), vec!["n2"], "{by_node:?}");
    let off = c.admin().await.pinned(0).chaos("panic", &serde_json::json!({ "service": "auth" })).await;
    assert_eq!(off.unwrap_err().status(), Some(404));
    let (status, _) = c.ping(0, "nosuchservice").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_dropped_from_the_mesh_by_probes_and_rejoins_when_it_thaws() {
    let c = Cluster::start(3, 0, &[]).await;
    c.wait_mesh(0).await;
    // SIGSTOP keeps the TCP sessions open: only the mesh probes can tell it is gone.
    c.pause(2);
    panal_tests::poll("the frozen node's instances to leave the gateway's view", || async {
        let (by_node, failures) = stream(&c, 0, 30, 4).await;
        failures.is_empty() && !by_node.contains_key("n3")
    })
    .await;
    let (by_node, failures) = stream(&c, 0, 300, 8).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!by_node.contains_key("n3"), "{by_node:?}");
    c.resume(2);
    c.wait_mesh(0).await;
}
