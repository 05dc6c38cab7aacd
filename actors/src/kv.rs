//! A key-value table: the simplest replicated state, used by the admin debug endpoint and
//! by tests of writes, reads and convergence.

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::command::{commands, Proposal};
use crate::Rejection;

pub const MAX_KEY_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 64 * 1024;

commands! {
    pub enum KvCommand {
        Put { pub key: String, pub value: String },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    /// Log index of the write that set this value.
    pub index: u64,
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_index INTEGER NOT NULL)",
    )
}

/// Checks a key and value before proposing; `apply` checks again (defence in depth).
pub fn validate(key: &str, value: &str) -> Result<(), Rejection> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Rejection::new("invalid_key", format!("key must be 1 to {MAX_KEY_LEN} bytes")));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(Rejection::new("value_too_large", format!("value must be at most {MAX_VALUE_LEN} bytes")));
    }
    Ok(())
}

impl Proposal for command::Put {
    type Reply = KvEntry;

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<KvEntry, Rejection>> {
        let Self { key, value } = self;
        if let Err(r) = validate(&key, &value) {
            return Ok(Err(r));
        }
        db.prepare_cached(
            "INSERT INTO kv (key, value, updated_index) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_index = excluded.updated_index",
        )?
        .execute(params![key, value, ctx.index as i64])?;
        Ok(Ok(KvEntry { key, value, index: ctx.index }))
    }
}

pub fn get(db: &Connection, key: &str) -> rusqlite::Result<Option<KvEntry>> {
    db.query_row("SELECT key, value, updated_index FROM kv WHERE key = ?1", [key], |r| {
        Ok(KvEntry { key: r.get(0)?, value: r.get(1)?, index: r.get::<_, i64>(2)? as u64 })
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        c
    }

    #[test]
    fn put_then_get_records_the_index() {
        let c = db();
        let ctx = ApplyContext { index: 7, now_ms: 0 };
        (command::Put { key: "a".into(), value: "1".into() }).apply(&c, &ctx).unwrap().unwrap();
        assert_eq!(get(&c, "a").unwrap(), Some(KvEntry { key: "a".into(), value: "1".into(), index: 7 }));
    }

    #[test]
    fn invalid_keys_are_rejected_and_change_nothing() {
        let c = db();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let r = (command::Put { key: String::new(), value: "1".into() }).apply(&c, &ctx).unwrap();
        assert_eq!(r.unwrap_err().code, "invalid_key");
        let r = (command::Put { key: "k".into(), value: "x".repeat(MAX_VALUE_LEN + 1) }).apply(&c, &ctx).unwrap();
        assert_eq!(r.unwrap_err().code, "value_too_large");
        assert_eq!(get(&c, "k").unwrap(), None);
    }
}
