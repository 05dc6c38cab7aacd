//! Orchestrated bootstrap, end to end: nodes started at the same moment with
//! `--bootstrap-expect`, `--peers` and one token file form exactly one cluster.

use panal_tests::{poll, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_start_forms_one_cluster_extra_nodes_are_workers_and_a_restart_keeps_data() {
    let mut c = Cluster::bootstrap(3, 4, &[]).await;

    // One cluster: every node reports the same cluster id and, once the joins completed,
    // the same four members, three of them managers.
    let mut cluster_ids = std::collections::BTreeSet::new();
    let admin = c.admin().await.clone();
    for i in 0..4 {
        let node = admin.pinned(i);
        poll(&format!("{} to see 4 members, 3 of them managers", c.nodes[i].name), || async {
            let rows = node.cluster_nodes().await.unwrap();
            let managers = rows.iter().filter(|r| r.role.to_string() == "manager").count();
            assert!(managers <= 3, "more managers than expected: {rows:?}");
            rows.len() == 4 && managers == 3
        })
        .await;
        let tokens = node.join_tokens().await.unwrap();
        cluster_ids.insert(tokens.cluster_id.clone());
    }
    assert_eq!(cluster_ids.len(), 1, "one cluster id: {cluster_ids:?}");
    let leader = c.leader().await;

    // Writes through every node; a restarted manager comes back with its data and role.
    let mut last = 0;
    for i in 0..4 {
        let (s, index) = c.put(i, &format!("k{i}"), "v").await;
        assert_eq!(s, 200);
        last = last.max(index);
    }
    let victim = (leader + 1) % 4;
    let id = c.node_id(victim).await;
    let role = c.role(id).await;
    c.kill(victim);
    let (s, index) = c.put(leader, "while-down", "v").await;
    assert_eq!(s, 200);
    last = last.max(index);
    c.restart(victim).await;
    assert_eq!(c.node_id(victim).await, id, "same node identity after restart");
    assert_eq!(c.role(id).await, role);
    for key in ["k0", "k1", "k2", "k3", "while-down"] {
        let (s, v) = c.get(victim, key, "session", last).await;
        assert_eq!((s, v["value"].as_str()), (200, Some("v")), "{key} on the restarted node");
    }
    poll("four members after the restart", || async { admin.pinned(victim).cluster_nodes().await.unwrap().len() == 4 })
        .await;
    c.converged_checksum().await;
}

#[test]
fn bootstrap_flags_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = dir.path().join("token");
    std::fs::write(&token, "short").unwrap();
    let data_s = data.display().to_string();
    let token_s = token.display().to_string();
    let out = panal_tests::run_panal(
        &[
            "start",
            "--data-dir",
            &data_s,
            "--bootstrap-expect",
            "3",
            "--peers",
            "127.0.0.1",
            "--cluster-token-file",
            &token_s,
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("at least 16 characters"), "{err}");
    assert!(!data.join("node.json").exists());

    let out = panal_tests::run_panal(&["start", "--data-dir", &data_s, "--bootstrap-expect", "3"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--peers") && err.contains("--cluster-token-file"), "{err}");
}
