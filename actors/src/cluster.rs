//! Cluster identity and membership credentials: the cluster id, the peer secret, the join
//! secrets behind the manager and worker tokens, and node id allocation.

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::{auth, Rejection, Reply, Response};

/// Role a join token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JoinRole {
    Manager,
    Worker,
}

impl JoinRole {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRole::Manager => "manager",
            JoinRole::Worker => "worker",
        }
    }
}

impl std::str::FromStr for JoinRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "manager" => Ok(Self::Manager),
            "worker" => Ok(Self::Worker),
            other => Err(format!("unknown role {other:?}: use manager or worker")),
        }
    }
}

/// `PANAL-1-<cluster id>-<secret>-<role>`: what a node needs to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub cluster_id: String,
    pub secret: String,
    pub role: JoinRole,
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PANAL-1-{}-{}-{}", self.cluster_id, self.secret, self.role.as_str())
    }
}

impl std::str::FromStr for JoinToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, version, cluster_id, secret, role] = parts.as_slice() else {
            return Err("malformed join token: expected PANAL-1-<cluster id>-<secret>-<role>".into());
        };
        if *prefix != "PANAL" {
            return Err("malformed join token: it must start with PANAL-".into());
        }
        if *version != "1" {
            return Err(format!("unsupported join token version {version:?}"));
        }
        let hex_ok = |v: &str| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok(cluster_id) || !hex_ok(secret) {
            return Err("malformed join token: cluster id and secret must be hexadecimal".into());
        }
        Ok(Self { cluster_id: cluster_id.to_string(), secret: secret.to_string(), role: role.parse()? })
    }
}

/// The replicated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_id: String,
    pub cluster_secret: String,
    pub manager_secret: String,
    pub worker_secret: String,
}

impl ClusterConfig {
    pub fn token(&self, role: JoinRole) -> JoinToken {
        let secret = match role {
            JoinRole::Manager => &self.manager_secret,
            JoinRole::Worker => &self.worker_secret,
        };
        JoinToken { cluster_id: self.cluster_id.clone(), secret: secret.clone(), role }
    }

    /// Checks a presented token against this cluster; the error says what is wrong.
    pub fn verify(&self, token: &JoinToken) -> Result<JoinRole, Rejection> {
        if token.cluster_id != self.cluster_id {
            return Err(Rejection::new(
                "wrong_cluster",
                format!("the token is for cluster {}, this is cluster {}", token.cluster_id, self.cluster_id),
            ));
        }
        if !panal_raft::constant_time_eq(&self.token(token.role).secret, &token.secret) {
            return Err(Rejection::new("invalid_join_token", "the join token's secret is wrong or was rotated"));
        }
        Ok(token.role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterCommand {
    /// Creates the cluster: identity, secrets, first JWT key and the admin account, at once.
    Init {
        config: ClusterConfig,
        jwt_key: String,
        admin_password_hash: String,
    },
    RotateJoinSecret {
        role: JoinRole,
        secret: String,
    },
    /// Reserves the next node id for a joining node.
    AllocateNodeId,
    /// Moves the application clock forward (tests and drills of time-driven behaviour).
    AdvanceClock {
        ms: i64,
    },
}

pub(crate) fn migrate(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch("CREATE TABLE IF NOT EXISTS cluster_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
}

fn get(db: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    db.query_row("SELECT value FROM cluster_config WHERE key = ?1", [key], |r| r.get(0)).optional()
}

fn set(db: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO cluster_config (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Drops the cluster's identity from a state restored from a backup, so that `Init`
/// creates a new cluster on top of the restored data.
pub fn forget_identity(db: &Connection) -> rusqlite::Result<()> {
    db.execute("DELETE FROM cluster_config WHERE key IN ('config', 'next_node_id')", [])?;
    Ok(())
}

/// The cluster configuration, once `Init` was applied.
pub fn config(db: &Connection) -> rusqlite::Result<Option<ClusterConfig>> {
    let Some(json) = get(db, "config")? else {
        return Ok(None);
    };
    serde_json::from_str(&json).map(Some).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(crate) fn apply(db: &Connection, ctx: &ApplyContext, command: ClusterCommand) -> rusqlite::Result<Response> {
    let to_sql = |e: serde_json::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    match command {
        ClusterCommand::Init { config: new, jwt_key, admin_password_hash } => {
            if let Some(existing) = config(db)? {
                return Ok(Err(Rejection::new(
                    "already_initialized",
                    format!("this cluster ({}) is already initialised", existing.cluster_id),
                )));
            }
            set(db, "config", &serde_json::to_string(&new).map_err(to_sql)?)?;
            set(db, "next_node_id", "2")?;
            auth::install_jwt_key(db, ctx, "k1", &jwt_key)?;
            // A cluster restored from a backup already has an admin account: it keeps its
            // id and everything it owns, with the new cluster's password.
            let restored_admin = db.execute(
                "UPDATE users SET password_hash = ?1, role = ?2 WHERE username = 'admin'",
                params![admin_password_hash, auth::Role::Admin.as_str()],
            )?;
            if restored_admin > 0 {
                return Ok(Ok(Reply::Done));
            }
            match auth::create_user(db, ctx, "admin", &admin_password_hash, None, auth::Role::Admin)? {
                Ok(_) => Ok(Ok(Reply::Done)),
                Err(r) => Ok(Err(r)),
            }
        }
        ClusterCommand::RotateJoinSecret { role, secret } => {
            let Some(mut cfg) = config(db)? else {
                return Ok(Err(Rejection::new("not_initialized", "the cluster is not initialised")));
            };
            match role {
                JoinRole::Manager => cfg.manager_secret = secret,
                JoinRole::Worker => cfg.worker_secret = secret,
            }
            set(db, "config", &serde_json::to_string(&cfg).map_err(to_sql)?)?;
            Ok(Ok(Reply::Done))
        }
        ClusterCommand::AllocateNodeId => {
            let next: u64 = get(db, "next_node_id")?.and_then(|v| v.parse().ok()).unwrap_or(2);
            set(db, "next_node_id", &(next + 1).to_string())?;
            Ok(Ok(Reply::NodeId(next)))
        }
        ClusterCommand::AdvanceClock { ms } => {
            if ms <= 0 {
                return Ok(Err(Rejection::new("validation_failed", "the clock only moves forward")));
            }
            Ok(Ok(Reply::Count(crate::time::advance(db, ms)?.max(0) as u64)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClusterConfig {
        ClusterConfig {
            cluster_id: "c0ffee".into(),
            cluster_secret: "aa".into(),
            manager_secret: "1234".into(),
            worker_secret: "5678".into(),
        }
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        panal_raft::Application::migrate(&crate::PanalApp, &c).unwrap();
        c
    }

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = cfg().token(JoinRole::Worker);
        assert_eq!(t.to_string(), "PANAL-1-c0ffee-5678-worker");
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        for bad in [
            "",
            "garbage",
            "PANAL-1-c0ffee-5678",
            "PANAL-2-c0ffee-5678-worker",
            "PANAL-1-xyz-5678-worker",
            "PANAL-1-c0ffee-5678-king",
            "NOPE-1-c0ffee-5678-worker",
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn verify_names_the_problem() {
        let c = cfg();
        assert_eq!(c.verify(&c.token(JoinRole::Manager)), Ok(JoinRole::Manager));
        let other = JoinToken { cluster_id: "beef".into(), ..c.token(JoinRole::Manager) };
        assert_eq!(c.verify(&other).unwrap_err().code, "wrong_cluster");
        let wrong = JoinToken { secret: "5678".into(), ..c.token(JoinRole::Manager) };
        assert_eq!(c.verify(&wrong).unwrap_err().code, "invalid_join_token");
    }

    #[test]
    fn init_on_restored_state_keeps_the_admin_account_with_the_new_password() {
        let db = db();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let init =
            |hash: &str| ClusterCommand::Init { config: cfg(), jwt_key: "k".into(), admin_password_hash: hash.into() };
        assert_eq!(apply(&db, &ctx, init("old")).unwrap(), Ok(Reply::Done));
        let admin_id: i64 = db.query_row("SELECT id FROM users WHERE username = 'admin'", [], |r| r.get(0)).unwrap();
        forget_identity(&db).unwrap();
        assert_eq!(config(&db).unwrap(), None);
        assert_eq!(apply(&db, &ctx, init("new")).unwrap(), Ok(Reply::Done));
        let (id, hash): (i64, String) = db
            .query_row("SELECT id, password_hash FROM users WHERE username = 'admin'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id, hash.as_str()), (admin_id, "new"));
    }

    #[test]
    fn init_once_then_allocate_ids_and_rotate() {
        let db = db();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let init = || ClusterCommand::Init { config: cfg(), jwt_key: "k".into(), admin_password_hash: "h".into() };
        assert_eq!(apply(&db, &ctx, init()).unwrap(), Ok(Reply::Done));
        assert_eq!(apply(&db, &ctx, init()).unwrap().unwrap_err().code, "already_initialized");
        assert_eq!(apply(&db, &ctx, ClusterCommand::AllocateNodeId).unwrap(), Ok(Reply::NodeId(2)));
        assert_eq!(apply(&db, &ctx, ClusterCommand::AllocateNodeId).unwrap(), Ok(Reply::NodeId(3)));
        apply(&db, &ctx, ClusterCommand::RotateJoinSecret { role: JoinRole::Worker, secret: "99".into() })
            .unwrap()
            .unwrap();
        let now = config(&db).unwrap().unwrap();
        assert_eq!(now.worker_secret, "99");
        assert_eq!(now.manager_secret, "1234");
        assert!(now.verify(&cfg().token(JoinRole::Worker)).is_err(), "the rotated token no longer joins");
    }
}
