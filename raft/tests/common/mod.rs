//! A small key-value application used to test the replication machinery.

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::{Application, ApplyContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvCommand {
    Set {
        key: String,
        value: String,
    },
    Incr {
        key: String,
    },
    /// Fails with an SQL error after a write, to check the rollback.
    Broken {
        key: String,
    },
    /// Panics inside apply.
    Panic,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum KvResponse {
    Done { at_index: u64, now_ms: i64 },
    Counter(i64),
}

#[derive(Debug, Default)]
pub struct Kv;

impl Application for Kv {
    type Command = KvCommand;
    type Response = KvResponse;

    fn migrate(&self, db: &Connection) -> rusqlite::Result<()> {
        db.execute_batch("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    }

    fn apply(&self, db: &Connection, ctx: &ApplyContext, command: KvCommand) -> rusqlite::Result<KvResponse> {
        match command {
            KvCommand::Set { key, value } => {
                db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)", params![key, value])?;
                Ok(KvResponse::Done { at_index: ctx.index, now_ms: ctx.now_ms })
            }
            KvCommand::Incr { key } => {
                let v: i64 = db
                    .query_row("SELECT value FROM kv WHERE key = ?1", [&key], |r| r.get::<_, String>(0))
                    .optional()?
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
                    + 1;
                db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)", params![key, v.to_string()])?;
                Ok(KvResponse::Counter(v))
            }
            KvCommand::Broken { key } => {
                db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, 'partial')", [key])?;
                db.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                unreachable!("the insert above fails")
            }
            KvCommand::Panic => panic!("boom"),
        }
    }
}

#[allow(dead_code)] // not every test binary reads values back
pub fn get(conn: &Connection, key: &str) -> Option<String> {
    conn.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0)).optional().unwrap()
}
