//! openraft's storage test suite against the SQLite log store and state machine.

mod common;

use openraft::testing::{StoreBuilder, Suite};
use panal_raft::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<common::Kv>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine<common::Kv>), openraft::StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log.db")).expect("log store");
        let sm = StateMachine::open(dir.path(), common::Kv).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite passes");
}
