//! Backup and restore, end to end: `panal backup` from a running cluster, `panal restore
//! … --init` into a new cluster that nodes then join.

use panal_tests::{run_panal, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_into_a_new_cluster_whose_joiners_get_the_data() {
    let old = Cluster::start(3, 0, &[]).await;
    let mut last = 0;
    for k in 0..20 {
        let (s, index) = old.put(k % 3, &format!("key-{k}"), &format!("value-{k}")).await;
        assert_eq!(s, 200);
        last = last.max(index);
    }
    let old_tokens = old.admin().await.join_tokens().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("panal.backup");
    let file_s = file.display().to_string();
    // Taken through a follower: the backup still holds every acknowledged write.
    let follower = (old.leader().await + 1) % 3;
    let out = run_panal(&["backup", "--node", &old.nodes[follower].api(), "--password", &old.password, &file_s], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backup of"), "{said}");
    assert!(!dir.path().join("panal.partial").exists());
    drop(old);

    let new = Cluster::restore(&file, 3, 0, &[]).await;
    for i in 0..3 {
        for k in 0..20 {
            let (s, v) = new.get(i, &format!("key-{k}"), "linearizable", 0).await;
            assert_eq!((s, v["value"].as_str()), (200, Some(format!("value-{k}").as_str())), "key-{k} on node {i}");
        }
    }
    let new_tokens = new.admin().await.join_tokens().await.unwrap();
    assert_ne!(new_tokens.manager, old_tokens.manager, "a restored cluster is a new cluster");
    let (s, _) = new.put(2, "after-restore", "v").await;
    assert_eq!(s, 200);
    new.converged_checksum().await;
    assert!(last > 0);
}

#[test]
fn restore_refuses_what_it_cannot_use_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let not_backup = dir.path().join("not-a-backup");
    std::fs::write(&not_backup, "hello").unwrap();
    let not_backup_s = not_backup.display().to_string();
    let addr = ["--api-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--mesh-addr", "127.0.0.1:0"];

    let mut args = vec!["restore", &not_backup_s, "--data-dir", &data_s];
    args.extend(addr);
    let out = run_panal(&args, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--init"), "{}", String::from_utf8_lossy(&out.stderr));

    args.push("--init");
    let out = run_panal(&args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a Panal backup"), "{err}");
    assert!(!data.join("node.json").exists() && !data.join("state.db").exists());

    let missing = dir.path().join("missing").display().to_string();
    let out = run_panal(&["restore", &missing, "--data-dir", &data_s, "--init"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a file"));
}
