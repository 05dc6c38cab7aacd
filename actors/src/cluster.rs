//! Cluster identity and membership credentials: the cluster id, the peer secret, the join
//! secrets behind the manager and worker tokens, and node id allocation.

use panal_raft::rusqlite::{self, params, Connection, OptionalExtension};
use panal_raft::ApplyContext;
use serde::{Deserialize, Serialize};

use crate::command::{commands, Proposal};
use crate::{auth, Rejection};

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

/// What a node needs to join: `PANAL-2-<CA fingerprint>-<cluster id>-<secret>-<role>`
/// for a cluster with peer TLS (the joining node checks the member's CA against the
/// fingerprint before it sends the secret, as Docker Swarm's `SWMTKN-1-<CA hash>-…`),
/// `PANAL-1-<cluster id>-<secret>-<role>` for one without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA's public key, hex.
    pub ca_fingerprint: Option<String>,
    pub cluster_id: String,
    pub secret: String,
    pub role: JoinRole,
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ca_fingerprint {
            Some(fp) => write!(f, "PANAL-2-{fp}-{}-{}-{}", self.cluster_id, self.secret, self.role.as_str()),
            None => write!(f, "PANAL-1-{}-{}-{}", self.cluster_id, self.secret, self.role.as_str()),
        }
    }
}

impl std::str::FromStr for JoinToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let (fingerprint, cluster_id, secret, role) = match parts.as_slice() {
            ["PANAL", "1", cluster_id, secret, role] => (None, cluster_id, secret, role),
            ["PANAL", "2", fp, cluster_id, secret, role] => (Some(*fp), cluster_id, secret, role),
            ["PANAL", version, ..] if !matches!(*version, "1" | "2") => {
                return Err(format!("unsupported join token version {version:?}"))
            }
            [prefix, ..] if *prefix != "PANAL" => return Err("malformed join token: it must start with PANAL-".into()),
            _ => {
                return Err(
                    "malformed join token: expected PANAL-2-<CA fingerprint>-<cluster id>-<secret>-<role>".into()
                )
            }
        };
        let hex_ok = |v: &str| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok(cluster_id) || !hex_ok(secret) {
            return Err("malformed join token: cluster id and secret must be hexadecimal".into());
        }
        if fingerprint.is_some_and(|fp| fp.len() != 64 || !hex_ok(fp)) {
            return Err("malformed join token: the CA fingerprint must be 64 hexadecimal digits".into());
        }
        Ok(Self {
            ca_fingerprint: fingerprint.map(str::to_ascii_lowercase),
            cluster_id: cluster_id.to_string(),
            secret: secret.to_string(),
            role: role.parse()?,
        })
    }
}

/// The replicated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_id: String,
    pub cluster_secret: String,
    pub manager_secret: String,
    pub worker_secret: String,
    /// Fingerprint of the cluster CA (see [`JoinToken`]); none without peer TLS.
    #[serde(default)]
    pub ca_fingerprint: Option<String>,
}

impl ClusterConfig {
    pub fn token(&self, role: JoinRole) -> JoinToken {
        let secret = match role {
            JoinRole::Manager => &self.manager_secret,
            JoinRole::Worker => &self.worker_secret,
        };
        JoinToken {
            ca_fingerprint: self.ca_fingerprint.clone(),
            cluster_id: self.cluster_id.clone(),
            secret: secret.clone(),
            role,
        }
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

commands! {
    pub enum ClusterCommand {
        /// Creates the cluster: identity, secrets, first JWT key and the admin account, at once.
        Init {
            pub config: ClusterConfig,
            pub jwt_key: String,
            pub admin_password_hash: String,
            /// The cluster CA's certificates (PEM), which every node trusts; none without peer TLS.
            #[serde(default)]
            pub ca_bundle: Option<String>,
        },
        RotateJoinSecret {
            pub role: JoinRole,
            pub secret: String,
        },
        /// Reserves the next node id for a joining node.
        AllocateNodeId,
        /// Starts a CA rotation: `ca_pem` (the new CA) signs from now on and is trusted
        /// beside the current CA until every member holds a certificate from it.
        StartCaRotation {
            pub ca_pem: String,
            /// The new CA's certificate signed by the current CA (see `CaRotation`).
            pub cross_pem: String,
            pub fingerprint: String,
            /// The CA being replaced, as the proposer saw it (a stale proposal is refused).
            pub previous_fingerprint: String,
        },
        /// Ends the rotation to `fingerprint`: the trust bundle becomes `ca_pem` alone.
        FinishCaRotation {
            pub fingerprint: String,
            pub ca_pem: String,
        },
        /// Notes which CA signed a member's current certificate.
        RecordNodeCertificate {
            pub node_id: u64,
            pub ca_fingerprint: String,
        },
        /// Refuses `node_id`'s certificates from now on (a removed node).
        RevokeNode {
            pub node_id: u64,
        },
        /// Moves the application clock forward (tests and drills of time-driven behaviour).
        AdvanceClock {
            pub ms: i64,
        },
    }
}

/// A node id reserved by [`command::AllocateNodeId`] for a joining node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatedNodeId(pub u64);

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
    db.execute(
        "DELETE FROM cluster_config WHERE key IN ('config', 'next_node_id', 'ca_bundle', 'ca_rotation', 'node_cas', 'revoked_nodes')",
        [],
    )?;
    Ok(())
}

/// The certificates (PEM) of the cluster CA, replicated so that every node trusts them.
pub fn ca_bundle(db: &Connection) -> rusqlite::Result<Option<String>> {
    get(db, "ca_bundle")
}

/// A CA rotation under way: the new CA's fingerprint (first in the bundle, the one
/// that signs) and the one it replaces (still trusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    pub fingerprint: String,
    pub previous_fingerprint: String,
    /// The new CA's certificate signed by the old CA, presented after the certificates
    /// the new CA issues so that nodes still trusting only the old CA accept them.
    pub cross_pem: String,
}

/// What the nodes' TLS follows from the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustState {
    pub bundle: Option<String>,
    pub rotation: Option<CaRotation>,
    /// The fingerprint of the CA that signed each member's current certificate.
    pub node_cas: std::collections::BTreeMap<u64, String>,
    /// Nodes whose certificates are refused (removed members).
    pub revoked: std::collections::BTreeSet<u64>,
}

fn get_json<T: serde::de::DeserializeOwned + Default>(db: &Connection, key: &str) -> rusqlite::Result<T> {
    match get(db, key)? {
        Some(json) => serde_json::from_str(&json).map_err(to_sql),
        None => Ok(T::default()),
    }
}

fn set_json<T: Serialize>(db: &Connection, key: &str, value: &T) -> rusqlite::Result<()> {
    set(db, key, &serde_json::to_string(value).map_err(to_sql)?)
}

pub fn trust_state(db: &Connection) -> rusqlite::Result<TrustState> {
    Ok(TrustState {
        bundle: ca_bundle(db)?,
        rotation: get_json::<Option<CaRotation>>(db, "ca_rotation")?,
        node_cas: get_json(db, "node_cas")?,
        revoked: get_json(db, "revoked_nodes")?,
    })
}

/// The cluster configuration, once `Init` was applied.
pub fn config(db: &Connection) -> rusqlite::Result<Option<ClusterConfig>> {
    let Some(json) = get(db, "config")? else {
        return Ok(None);
    };
    serde_json::from_str(&json).map(Some).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn to_sql(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

impl Proposal for command::Init {
    type Reply = ();

    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Self { config: new, jwt_key, admin_password_hash, ca_bundle } = self;
        if let Some(existing) = config(db)? {
            return Ok(Err(Rejection::new(
                "already_initialized",
                format!("this cluster ({}) is already initialised", existing.cluster_id),
            )));
        }
        set(db, "config", &serde_json::to_string(&new).map_err(to_sql)?)?;
        set(db, "next_node_id", "2")?;
        if let Some(bundle) = ca_bundle {
            set(db, "ca_bundle", &bundle)?;
        }
        auth::install_jwt_key(db, ctx, "k1", &jwt_key)?;
        // A cluster restored from a backup already has an admin account: it keeps its
        // id and everything it owns, with the new cluster's password.
        let restored_admin = db.execute(
            "UPDATE users SET password_hash = ?1, role = ?2 WHERE username = 'admin'",
            params![admin_password_hash, auth::Role::Admin.as_str()],
        )?;
        if restored_admin > 0 {
            return Ok(Ok(()));
        }
        Ok(auth::create_user(db, ctx, "admin", &admin_password_hash, None, auth::Role::Admin)?.map(drop))
    }
}

impl Proposal for command::RotateJoinSecret {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Some(mut cfg) = config(db)? else {
            return Ok(Err(Rejection::new("not_initialized", "the cluster is not initialised")));
        };
        match self.role {
            JoinRole::Manager => cfg.manager_secret = self.secret,
            JoinRole::Worker => cfg.worker_secret = self.secret,
        }
        set(db, "config", &serde_json::to_string(&cfg).map_err(to_sql)?)?;
        Ok(Ok(()))
    }
}

impl Proposal for command::AllocateNodeId {
    type Reply = AllocatedNodeId;

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<AllocatedNodeId, Rejection>> {
        let next: u64 = get(db, "next_node_id")?.and_then(|v| v.parse().ok()).unwrap_or(2);
        set(db, "next_node_id", &(next + 1).to_string())?;
        Ok(Ok(AllocatedNodeId(next)))
    }
}

impl Proposal for command::StartCaRotation {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let Some(mut cfg) = config(db)? else {
            return Ok(Err(Rejection::new("not_initialized", "the cluster is not initialised")));
        };
        if let Some(r) = get_json::<Option<CaRotation>>(db, "ca_rotation")? {
            return Ok(Err(Rejection::new(
                "ca_rotation_in_progress",
                format!(
                    "a rotation to CA {} is under way; wait until every member holds a certificate from it",
                    r.fingerprint
                ),
            )));
        }
        let (Some(current), Some(bundle)) = (cfg.ca_fingerprint.clone(), ca_bundle(db)?) else {
            return Ok(Err(Rejection::new("no_ca", "this cluster runs without peer TLS: no CA to rotate")));
        };
        if current != self.previous_fingerprint {
            return Ok(Err(Rejection::new("ca_changed", "the CA changed meanwhile; ask again")));
        }
        // The bundle holds the current CA only (a finished rotation dropped the older one).
        set(db, "ca_bundle", &format!("{}{}", self.ca_pem, bundle))?;
        let rotation = CaRotation {
            fingerprint: self.fingerprint.clone(),
            previous_fingerprint: current,
            cross_pem: self.cross_pem,
        };
        set_json(db, "ca_rotation", &Some(rotation))?;
        cfg.ca_fingerprint = Some(self.fingerprint);
        set_json(db, "config", &cfg)?;
        Ok(Ok(()))
    }
}

impl Proposal for command::FinishCaRotation {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        match get_json::<Option<CaRotation>>(db, "ca_rotation")? {
            Some(r) if r.fingerprint == self.fingerprint => {
                set(db, "ca_bundle", &self.ca_pem)?;
                db.execute("DELETE FROM cluster_config WHERE key = 'ca_rotation'", [])?;
                Ok(Ok(()))
            }
            _ => Ok(Err(Rejection::new("no_ca_rotation", "no rotation to this CA is under way"))),
        }
    }
}

impl Proposal for command::RecordNodeCertificate {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let mut cas: std::collections::BTreeMap<u64, String> = get_json(db, "node_cas")?;
        cas.insert(self.node_id, self.ca_fingerprint);
        set_json(db, "node_cas", &cas)?;
        Ok(Ok(()))
    }
}

impl Proposal for command::RevokeNode {
    type Reply = ();

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<(), Rejection>> {
        let mut revoked: std::collections::BTreeSet<u64> = get_json(db, "revoked_nodes")?;
        revoked.insert(self.node_id);
        set_json(db, "revoked_nodes", &revoked)?;
        let mut cas: std::collections::BTreeMap<u64, String> = get_json(db, "node_cas")?;
        if cas.remove(&self.node_id).is_some() {
            set_json(db, "node_cas", &cas)?;
        }
        Ok(Ok(()))
    }
}

/// Answers the new clock offset in milliseconds.
impl Proposal for command::AdvanceClock {
    type Reply = u64;

    fn apply(self, db: &Connection, _: &ApplyContext) -> rusqlite::Result<Result<u64, Rejection>> {
        if self.ms <= 0 {
            return Ok(Err(Rejection::new("validation_failed", "the clock only moves forward")));
        }
        Ok(Ok(crate::time::advance(db, self.ms)?.max(0) as u64))
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
            ca_fingerprint: None,
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
            "PANAL-2-abc-c0ffee-5678-worker",
            "PANAL-3-c0ffee-5678-worker",
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} must not parse");
        }
        let fp = "AB".repeat(32);
        let pinned = ClusterConfig { ca_fingerprint: Some(fp.clone()), ..cfg() }.token(JoinRole::Manager);
        assert_eq!(pinned.to_string(), format!("PANAL-2-{fp}-c0ffee-1234-manager"));
        let parsed = pinned.to_string().parse::<JoinToken>().unwrap();
        assert_eq!(parsed.ca_fingerprint.as_deref(), Some(fp.to_ascii_lowercase().as_str()));
        assert_eq!(
            (parsed.cluster_id.as_str(), parsed.secret.as_str(), parsed.role),
            ("c0ffee", "1234", JoinRole::Manager)
        );
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
        let init = |hash: &str| command::Init {
            config: cfg(),
            jwt_key: "k".into(),
            admin_password_hash: hash.into(),
            ca_bundle: None,
        };
        assert_eq!(init("old").apply(&db, &ctx).unwrap(), Ok(()));
        let admin_id: i64 = db.query_row("SELECT id FROM users WHERE username = 'admin'", [], |r| r.get(0)).unwrap();
        forget_identity(&db).unwrap();
        assert_eq!(config(&db).unwrap(), None);
        assert_eq!(init("new").apply(&db, &ctx).unwrap(), Ok(()));
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
        let init =
            || command::Init { config: cfg(), jwt_key: "k".into(), admin_password_hash: "h".into(), ca_bundle: None };
        assert_eq!(init().apply(&db, &ctx).unwrap(), Ok(()));
        assert_eq!(init().apply(&db, &ctx).unwrap().unwrap_err().code, "already_initialized");
        assert_eq!(command::AllocateNodeId.apply(&db, &ctx).unwrap(), Ok(AllocatedNodeId(2)));
        assert_eq!(command::AllocateNodeId.apply(&db, &ctx).unwrap(), Ok(AllocatedNodeId(3)));
        command::RotateJoinSecret { role: JoinRole::Worker, secret: "99".into() }.apply(&db, &ctx).unwrap().unwrap();
        let now = config(&db).unwrap().unwrap();
        assert_eq!(now.worker_secret, "99");
        assert_eq!(now.manager_secret, "1234");
        assert!(now.verify(&cfg().token(JoinRole::Worker)).is_err(), "the rotated token no longer joins");
    }

    #[test]
    fn a_ca_rotation_trusts_both_until_it_finishes_and_revoked_nodes_are_kept() {
        let db = db();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let config = ClusterConfig { ca_fingerprint: Some("old".into()), ..cfg() };
        let init = command::Init {
            config,
            jwt_key: "k".into(),
            admin_password_hash: "h".into(),
            ca_bundle: Some("OLD\n".into()),
        };
        init.apply(&db, &ctx).unwrap().unwrap();
        let start = |previous: &str| command::StartCaRotation {
            ca_pem: "NEW\n".into(),
            cross_pem: "CROSS\n".into(),
            fingerprint: "new".into(),
            previous_fingerprint: previous.into(),
        };
        assert_eq!(start("stale").apply(&db, &ctx).unwrap().unwrap_err().code, "ca_changed");
        start("old").apply(&db, &ctx).unwrap().unwrap();
        let state = trust_state(&db).unwrap();
        assert_eq!(state.bundle.as_deref(), Some("NEW\nOLD\n"), "the new CA first, the old one still trusted");
        assert_eq!(state.rotation.as_ref().map(|r| r.previous_fingerprint.as_str()), Some("old"));
        assert_eq!(config_of(&db).ca_fingerprint.as_deref(), Some("new"), "join tokens name the new CA");
        assert_eq!(start("new").apply(&db, &ctx).unwrap().unwrap_err().code, "ca_rotation_in_progress");
        command::RecordNodeCertificate { node_id: 2, ca_fingerprint: "new".into() }.apply(&db, &ctx).unwrap().unwrap();
        let finish = |fp: &str| command::FinishCaRotation { fingerprint: fp.into(), ca_pem: "NEW\n".into() };
        assert_eq!(finish("other").apply(&db, &ctx).unwrap().unwrap_err().code, "no_ca_rotation");
        finish("new").apply(&db, &ctx).unwrap().unwrap();
        let state = trust_state(&db).unwrap();
        assert_eq!((state.bundle.as_deref(), state.rotation), (Some("NEW\n"), None));
        command::RevokeNode { node_id: 2 }.apply(&db, &ctx).unwrap().unwrap();
        let state = trust_state(&db).unwrap();
        assert_eq!(state.revoked.into_iter().collect::<Vec<_>>(), [2]);
        assert!(state.node_cas.is_empty(), "a revoked node no longer counts for a rotation");
    }

    fn config_of(db: &Connection) -> ClusterConfig {
        config(db).unwrap().unwrap()
    }
}
