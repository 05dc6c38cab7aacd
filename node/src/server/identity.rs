//! The node's identity on disk (`node.json` in the data directory): who this node is and
//! which cluster it belongs to. Written once the node was admitted to a cluster; its
//! presence is what makes a later start a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: u64,
    pub name: String,
    pub cluster_id: String,
    pub cluster_secret: String,
    /// Set while a join was admitted but the node is not yet in the membership: the
    /// member to ask again after a crash.
    pub pending_join: Option<PendingJoin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingJoin {
    pub via: String,
    pub voter: bool,
    /// Orchestrated bootstrap: promote only while fewer managers exist.
    #[serde(default)]
    pub max_managers: Option<usize>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>> {
    match std::fs::read(path(data_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Fatal(format!("{} is corrupt: {e}", path(data_dir).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Fatal(format!("cannot read {}: {e}", path(data_dir).display()))),
    }
}

/// Writes atomically (temp file, fsync, rename), readable by the owner only: it holds the
/// cluster secret.
pub fn save(data_dir: &Path, identity: &NodeIdentity) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = data_dir.join("node.json.tmp");
    let io = |e: std::io::Error| Error::Fatal(format!("cannot write {}: {e}", tmp.display()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec_pretty(identity).map_err(|e| Error::Fatal(e.to_string()))?).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path(data_dir)).map_err(io)?;
    Ok(())
}

/// Fails unless `dir` exists (or can be created) and is writable, without leaving files.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| Error::Fatal(format!("data dir {} is not usable: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
