//! Drills end to end: `panal drill` on local 3-node clusters must pass (leader kill, leader
//! pause, actor panic storm, node removal, leader isolation, rolling upgrade, 30 s of
//! random faults), and the chaos hooks it relies on remotely — isolate and crash — must
//! behave like a real partition and a real crash.

use std::path::Path;
use std::time::{Duration, Instant};

use panal_tests::{panal_bin, poll, poll_some, ApiTransport, Call, Cluster};
use serde_json::{json, Value};

/// A port range per test process, so parallel runs of this suite do not collide.
fn base_port(offset: u16) -> u16 {
    20_000 + (std::process::id() % 40) as u16 * 300 + offset
}

/// Runs `panal drill ARGS --report DIR` and returns its exit status, output and figures.
fn drill(args: &[&str], report: &Path, port: u16) -> (bool, String, Value) {
    let out = std::process::Command::new(panal_bin())
        .arg("drill")
        .args(args)
        .args(["--report", &report.display().to_string(), "--base-port", &port.to_string()])
        .env("PANAL_LOG", "warn")
        .output()
        .expect("run panal drill");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let figures = std::fs::read(report.join("figures.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), text, figures)
}

/// Asserts a drill passed and wrote its whole report.
fn assert_passed(name: &str, ok: bool, output: &str, figures: &Value, report: &Path) {
    assert!(ok, "{name} failed:\n{output}");
    assert_eq!(figures["passed"], true, "{name}: {figures}");
    let checks = figures["checks"].as_array().expect("checks");
    assert!(checks.len() >= 8, "{checks:?}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.starts_with(&format!("# Drill `{name}`: PASS")), "{md}");
    assert!(std::fs::read_to_string(report.join("timeline.svg")).unwrap().starts_with("<svg"));
    assert!(output.contains("PASS"), "{output}");
    assert!(figures["figures"]["ok"].as_u64().unwrap_or(0) > 100, "too little work: {figures}");
}

#[test]
fn leader_kill_drill_passes_and_measures_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) =
        drill(&["leader-kill", "--duration", "20s", "--rate", "150", "--seed", "7"], dir.path(), base_port(0));
    assert_passed("leader-kill", ok, &out, &f, dir.path());
    let failovers = f["figures"]["failovers"].as_array().unwrap();
    assert!(!failovers.is_empty(), "no leader was killed: {f}");
    assert!(failovers.iter().all(|x| x["hit_leader"] == true && x["first_write_ms"].is_number()), "{failovers:?}");
    assert!(out.contains("seed 7"), "the seed is printed: {out}");
    // The tiny book sells out within a second: the seller restocked it, so purchases went on.
    let restocks = &f["figures"]["by_kind"]["restock"];
    assert!(restocks["ok"].as_u64().unwrap_or(0) > 0, "no restock: {}", f["figures"]["by_kind"]);
    assert!(f["figures"]["by_kind"]["purchase"]["ok"].as_u64().unwrap_or(0) > 100, "{}", f["figures"]["by_kind"]);
}

/// The check named `name` in a drill's figures.json.
fn check<'a>(figures: &'a Value, name: &str) -> &'a Value {
    figures["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).unwrap_or(&Value::Null)
}

#[test]
fn leader_pause_drill_passes_and_says_when_writes_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) = drill(&["leader-pause", "--duration", "15s", "--rate", "150"], dir.path(), base_port(250));
    assert_passed("leader-pause", ok, &out, &f, dir.path());
    let pause = &f["figures"]["by_fault"]["leader-pause"];
    assert!(pause["writes_resumed"]["median_ms"].is_number(), "{pause}");
    assert!(pause["new_leader"]["count"].as_u64().unwrap_or(0) > 0, "{pause}");
    assert!(out.contains("leader-pause ×") && out.contains("writes resumed after median"), "{out}");
}

#[test]
fn remove_node_drill_proves_the_removed_worker_served_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["remove-node", "--workers", "1", "--duration", "20s", "--rate", "150", "--seed", "3"];
    let (ok, out, f) = drill(&args, dir.path(), base_port(150));
    assert_passed("remove-node", ok, &out, &f, dir.path());
    let removals = f["figures"]["failovers"].as_array().unwrap();
    assert!(!removals.is_empty() && removals.iter().all(|x| x["kind"] == "remove-node"), "{removals:?}");
    let silent = check(&f, "removed_nodes_silent");
    assert_eq!(silent["passed"], true, "{silent}");
    assert!(silent["checked"].as_u64().unwrap_or(0) > 50, "too few requests while removed: {silent}");
    let history: Value = serde_json::from_slice(&std::fs::read(dir.path().join("history.json")).unwrap()).unwrap();
    let fault = &history["faults"][0];
    assert_eq!(fault["nodes"][0], "node4", "the worker was removed: {fault}");
    assert!(fault["removed_at"].is_number(), "{fault}");
}

#[test]
fn isolate_leader_drill_measures_how_soon_the_old_side_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) = drill(&["isolate-leader", "--duration", "15s", "--rate", "150"], dir.path(), base_port(50));
    assert_passed("isolate-leader", ok, &out, &f, dir.path());
    let isolated = &f["figures"]["by_fault"]["isolate-leader"];
    assert!(isolated["refused"]["median_ms"].is_number(), "{isolated}");
    assert!(isolated["unready"]["median_ms"].is_number(), "{isolated}");
    assert_eq!(check(&f, "isolated_leader_refused")["passed"], true);
    assert!(out.contains("isolated side 503 after median") && out.contains("not ready after median"), "{out}");
}

#[test]
fn rolling_upgrade_drill_drains_each_node_and_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) = drill(&["rolling-upgrade", "--duration", "30s", "--rate", "150"], dir.path(), base_port(275));
    assert_passed("rolling-upgrade", ok, &out, &f, dir.path());
    let upgraded: Vec<&Value> = f["figures"]["failovers"].as_array().unwrap().iter().collect();
    assert!(upgraded.len() >= 3, "every node upgraded: {upgraded:?}");
    assert!(upgraded.iter().all(|x| x["drained_ms"].is_number()), "{upgraded:?}");
    let clean = check(&f, "rolling_upgrade_without_failures");
    assert_eq!((clean["passed"].as_bool(), clean["violations"].as_u64()), (Some(true), Some(0)), "{clean}");
    assert!(clean["checked"].as_u64().unwrap_or(0) > 100, "{clean}");
}

#[test]
fn actor_panic_storm_drill_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) = drill(&["actor-panic-storm", "--duration", "15s", "--rate", "150"], dir.path(), base_port(100));
    assert_passed("actor-panic-storm", ok, &out, &f, dir.path());
    assert!(!f["figures"]["failovers"].as_array().unwrap().is_empty(), "no storm: {f}");
}

#[test]
fn a_random_drill_of_30_seconds_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, f) = drill(&["random", "--duration", "30s", "--rate", "150"], dir.path(), base_port(200));
    assert_passed("random", ok, &out, &f, dir.path());
    assert!(f["figures"]["failovers"].as_array().unwrap().len() >= 2, "too few faults: {f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_drill_partitions_through_the_chaos_hooks_and_passes() {
    // Over HTTPS: the drill trusts the cluster CA given with --ca-file.
    let c = Cluster::start_with(ApiTransport::ClusterCa, 3, 0, &["--chaos"]).await;
    c.wait_mesh(0).await;
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = c.nodes.iter().map(|n| n.api()).collect();
    assert!(urls.iter().all(|u| u.starts_with("https://")), "{urls:?}");
    let report = dir.path().display().to_string();
    let ca_file = c.nodes[0].data_dir.join("tls/ca.pem").display().to_string();
    let mut args = vec!["drill", "partition-leader", "--duration", "15s", "--rate", "100", "--report", &report];
    args.extend(["--ca-file", &ca_file]);
    args.push("--cluster");
    args.extend(urls.iter().map(String::as_str));
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let password = c.password.clone();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            panal_tests::run_panal(&args, &[("PANAL_PASSWORD", &password), ("PANAL_LOG", "warn")])
        }
    })
    .await
    .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let figures: Value = serde_json::from_slice(&std::fs::read(dir.path().join("figures.json")).unwrap()).unwrap();
    assert_passed("partition-leader", out.status.success(), &text, &figures, dir.path());
    assert!(figures["figures"]["failovers"].as_array().unwrap().iter().all(|f| f["hit_leader"] == true), "{figures}");
    // Remote drills leave the cluster running.
    assert_eq!(c.running().len(), 3);
    c.converged_checksum().await;
}

#[test]
fn bad_drill_arguments_are_refused_with_a_message() {
    let out = panal_tests::run_panal(&["drill", "leader-kill", "--duration", "soon"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"), "{out:?}");
    let out = panal_tests::run_panal(&["drill", "leader-kill", "--nodes", "1"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 3"), "{out:?}");
    let out = panal_tests::run_panal(&["drill", "no-such-scenario"], &[]);
    assert!(!out.status.success());
    let out =
        panal_tests::run_panal(&["drill", "random", "--cluster", "http://127.0.0.1:1", "http://127.0.0.1:2"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("every node (at least 3)"), "{out:?}");
    let urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"];
    let out = panal_tests::run_panal(&["drill", "random", "--cluster", urls[0], urls[1], urls[2]], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the admin password"), "{out:?}");
}

async fn chaos(c: &Cluster, i: usize, hook: &str, body: Value) -> (u16, Value) {
    let r =
        c.send(i, Call::new("POST", format!("/api/v1/admin/chaos/{hook}")).token(&c.token().await).json(body)).await;
    (r.status, r.body)
}

/// The leader as node `i` sees it, by name.
async fn leader_seen_by(c: &Cluster, i: usize) -> Option<String> {
    c.admin().await.pinned(i).cluster_status().await.ok()?.leader.map(|l| l.name)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_leader_loses_the_cluster_which_elects_another_and_it_rejoins_when_healed() {
    let c = Cluster::start(3, 0, &["--chaos"]).await;
    c.wait_mesh(0).await;
    let old = c.leader().await;
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();

    // Bad input: one JSON error shape, nothing isolated.
    for body in [json!({"seconds": 0}), json!({"seconds": 301}), json!({"seconds": "x"}), json!({})] {
        let (status, err) = chaos(&c, old, "isolate", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["error"]["code"].is_string() && err["error"]["request_id"].is_string(), "{err}");
    }
    let (status, body) = chaos(&c, old, "isolate", json!({"seconds": 15})).await;
    assert_eq!(status, 200, "{body}");
    let isolated_at = Instant::now();

    // The majority elects a new leader and keeps writing.
    let new = poll_some("the majority to elect another leader", || async {
        let name = leader_seen_by(&c, others[0]).await?;
        (name != c.nodes[old].name).then_some(name)
    })
    .await;
    let (status, _) = c.put(others[1], "after-partition", "majority").await;
    assert_eq!(status, 200);
    // The isolated node cannot confirm a linearizable read, and sees none of the mesh.
    let (status, _) = c.get(old, "after-partition", "linearizable", 0).await;
    assert_eq!(status, 503);
    for _ in 0..30 {
        let (status, who) = c.ping(others[0], "auth").await;
        assert_eq!(status, 200, "{who}");
        assert_ne!(who, c.nodes[old].name, "the isolated node's workers are still reachable through the mesh");
    }
    assert!(isolated_at.elapsed() < Duration::from_secs(15), "the checks above took too long to prove anything");

    // Healed by itself: it follows the majority's leader and has the majority's write.
    poll("the isolated node to follow the majority's leader", || async {
        let mine = leader_seen_by(&c, old).await;
        mine.is_some() && mine != Some(c.nodes[old].name.clone()) && mine == leader_seen_by(&c, others[0]).await
    })
    .await;
    assert!(new != c.nodes[old].name);
    poll("the healed node to read the majority's write", || async {
        c.get(old, "after-partition", "linearizable", 0).await.0 == 200
    })
    .await;
    c.wait_mesh(others[0]).await;
    c.converged_checksum().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_crash_hook_ends_the_process_and_the_node_restarts_with_its_data() {
    let mut c = Cluster::start(3, 0, &["--chaos"]).await;
    let (status, _) = c.put(0, "before-crash", "kept").await;
    assert_eq!(status, 200);
    let (status, body) = chaos(&c, 2, "crash", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["crashing"], true);
    let crashed = c.client().pinned(2);
    poll("the crashed node to stop answering", || async {
        tokio::time::timeout(Duration::from_millis(500), crashed.health()).await.map_or(true, |r| r.is_err())
    })
    .await;
    // Reap the exited process, then start it again from its data directory.
    c.kill(2);
    c.restart(2).await;
    let (status, v) = c.get(2, "before-crash", "linearizable", 0).await;
    assert_eq!((status, v["value"].as_str()), (200, Some("kept")), "{v}");
    c.converged_checksum().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_and_isolate_are_404_without_chaos() {
    let c = Cluster::start(1, 0, &[]).await;
    assert_eq!(chaos(&c, 0, "crash", json!({})).await.0, 404);
    assert_eq!(chaos(&c, 0, "isolate", json!({"seconds": 5})).await.0, 404);
    let r = c.send(0, Call::new("GET", "/health")).await;
    assert_eq!(r.status, 200, "the node is still up");
}
