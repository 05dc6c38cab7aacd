//! The state machine applied directly, without a network: idempotency, rollback of failed
//! commands, the replicated clock, snapshots and the checksum.

mod common;

use common::{get, Kv, KvCommand, KvResponse};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use panal_raft::{Proposal, ProposalBatch, ProposalOutcome, StateMachine};

fn entry(index: u64, cmd: &KvCommand, key: Option<&str>, at_ms: i64) -> openraft::Entry<panal_raft::TypeConfig> {
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(ProposalBatch(vec![Proposal {
            command: serde_json::to_string(cmd).unwrap(),
            proposed_at_ms: at_ms,
            idempotency_key: key.map(String::from),
            idempotency_ttl_ms: 60_000,
        }])),
    }
}

/// Applies entries of one proposal each and returns one outcome per entry.
async fn apply(
    sm: &mut StateMachine<Kv>,
    entries: Vec<openraft::Entry<panal_raft::TypeConfig>>,
) -> Result<Vec<ProposalOutcome>, openraft::StorageError<u64>> {
    Ok(sm.apply(entries).await?.into_iter().flatten().collect())
}

fn incr() -> KvCommand {
    KvCommand::Incr { key: "n".into() }
}

async fn value(sm: &StateMachine<Kv>, key: &'static str) -> Option<String> {
    sm.read(move |c| get(c, key)).unwrap()
}

#[tokio::test]
async fn idempotency_key_applies_once_and_rejects_reuse_for_other_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    let out = apply(
        &mut sm,
        vec![
            entry(1, &incr(), Some("k1"), 1000),
            entry(2, &incr(), Some("k1"), 1001),
            entry(3, &KvCommand::Set { key: "x".into(), value: "y".into() }, Some("k1"), 1002),
            entry(4, &incr(), None, 1003),
        ],
    )
    .await
    .unwrap();
    let counter = serde_json::to_string(&KvResponse::Counter(1)).unwrap();
    assert_eq!(out[0], ProposalOutcome::Applied(counter.clone()));
    assert_eq!(out[1], ProposalOutcome::Replayed(counter));
    assert_eq!(out[2], ProposalOutcome::KeyReused);
    assert_eq!(out[3], ProposalOutcome::Applied(serde_json::to_string(&KvResponse::Counter(2)).unwrap()));
    assert_eq!(value(&sm, "n").await.as_deref(), Some("2"));
    assert_eq!(value(&sm, "x").await, None, "a reused key must change nothing");
}

#[tokio::test]
async fn idempotency_key_expires_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    apply(&mut sm, vec![entry(1, &incr(), Some("k"), 1000), entry(2, &incr(), Some("k"), 1000 + 60_001)])
        .await
        .unwrap();
    assert_eq!(value(&sm, "n").await.as_deref(), Some("2"));
}

#[tokio::test]
async fn failed_and_panicking_commands_roll_back_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    let out = apply(
        &mut sm,
        vec![
            entry(1, &incr(), None, 1),
            entry(2, &KvCommand::Broken { key: "b".into() }, Some("kb"), 2),
            entry(3, &KvCommand::Panic, None, 3),
            entry(4, &incr(), None, 4),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(&out[1], ProposalOutcome::Failed(m) if m.contains("no_such_table")), "{:?}", out[1]);
    assert!(matches!(&out[2], ProposalOutcome::Failed(m) if m.contains("boom")), "{:?}", out[2]);
    assert_eq!(value(&sm, "b").await, None, "the partial write of a failed command is rolled back");
    assert_eq!(value(&sm, "n").await.as_deref(), Some("2"));
    assert_eq!(sm.last_applied().await.unwrap().map(|l| l.index), Some(4));
}

#[tokio::test]
async fn replicated_clock_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    let set = KvCommand::Set { key: "a".into(), value: "1".into() };
    let out = apply(&mut sm, vec![entry(1, &set, None, 5000), entry(2, &set, None, 4000)]).await.unwrap();
    let ProposalOutcome::Applied(json) = &out[1] else { panic!("{out:?}") };
    assert_eq!(serde_json::from_str::<KvResponse>(json).unwrap(), KvResponse::Done { at_index: 2, now_ms: 5000 });
}

#[tokio::test]
async fn snapshot_round_trip_preserves_state_and_checksum() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = StateMachine::open(dir_a.path(), Kv).unwrap();
    let mut b = StateMachine::open(dir_b.path(), Kv).unwrap();
    let entries: Vec<_> = (1..=50).map(|i| entry(i, &incr(), Some(&format!("k{i}")), i as i64)).collect();
    a.apply(entries).await.unwrap();
    let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(50));

    // b has unrelated state that the snapshot must replace entirely.
    b.apply(vec![entry(1, &KvCommand::Set { key: "junk".into(), value: "1".into() }, None, 1)]).await.unwrap();
    b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(value(&b, "n").await.as_deref(), Some("50"));
    assert_eq!(value(&b, "junk").await, None);
    assert_eq!(a.checksum().await.unwrap(), b.checksum().await.unwrap());
    // The idempotency table came along: a replayed key does not apply again on b.
    let out = apply(&mut b, vec![entry(51, &incr(), Some("k7"), 100)]).await.unwrap();
    assert!(matches!(out[0], ProposalOutcome::Replayed(_)));
    // The installed snapshot is b's current snapshot, and survives a reopen.
    drop(b);
    let mut b = StateMachine::open(dir_b.path(), Kv).unwrap();
    let cur = b.get_current_snapshot().await.unwrap().expect("current snapshot");
    assert_eq!(cur.meta.last_log_id.map(|l| l.index), Some(50));
}

#[tokio::test]
async fn corrupt_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    apply(&mut sm, vec![entry(1, &incr(), None, 1)]).await.unwrap();
    let before = sm.checksum().await.unwrap();
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), 9)),
        last_membership: Default::default(),
        snapshot_id: "bad".into(),
    };
    let garbage = Box::new(std::io::Cursor::new(b"not a database at all".repeat(100)));
    assert!(sm.install_snapshot(&meta, garbage).await.is_err());
    assert_eq!(sm.checksum().await.unwrap(), before);
}

#[tokio::test]
async fn a_state_database_behind_its_snapshot_is_restored_from_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let old_copy = tempfile::tempdir().unwrap().keep().join("old.db");
    {
        let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
        sm.apply((1..=10).map(|i| entry(i, &incr(), None, i as i64)).collect::<Vec<_>>()).await.unwrap();
        sm.backup_to(old_copy.clone()).await.unwrap();
        sm.apply((11..=50).map(|i| entry(i, &incr(), None, i as i64)).collect::<Vec<_>>()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    // Simulate a power loss that took the state database back to index 10 while the log
    // behind the snapshot at 50 is gone.
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::copy(&old_copy, dir.path().join("state.db")).unwrap();
    let sm = StateMachine::open(dir.path(), Kv).unwrap();
    assert_eq!(sm.last_applied().await.unwrap().map(|l| l.index), Some(50));
    assert_eq!(value(&sm, "n").await.as_deref(), Some("50"));
}

#[tokio::test]
async fn one_entry_carries_a_batch_of_proposals_with_one_outcome_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), Kv).unwrap();
    let proposal = |cmd: &KvCommand, key: Option<&str>| Proposal {
        command: serde_json::to_string(cmd).unwrap(),
        proposed_at_ms: 7,
        idempotency_key: key.map(String::from),
        idempotency_ttl_ms: 60_000,
    };
    let batch = ProposalBatch(vec![
        proposal(&incr(), Some("same")),
        proposal(&KvCommand::Panic, None),
        proposal(&incr(), Some("same")),
        proposal(&incr(), None),
    ]);
    let e =
        openraft::Entry { log_id: LogId::new(CommittedLeaderId::new(1, 0), 1), payload: EntryPayload::Normal(batch) };
    let out = sm.apply(vec![e]).await.unwrap();
    assert_eq!(out.len(), 1, "one result list per entry");
    let out = &out[0];
    assert_eq!(out.len(), 4, "one outcome per proposal");
    assert!(matches!(out[0], ProposalOutcome::Applied(_)));
    assert!(matches!(out[1], ProposalOutcome::Failed(_)), "a failing proposal does not spoil its batch");
    assert!(matches!(out[2], ProposalOutcome::Replayed(_)), "a duplicate key inside one batch applies once");
    assert_eq!(value(&sm, "n").await.as_deref(), Some("2"));
}
