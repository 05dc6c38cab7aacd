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
    /// `--peer-tls` when the node was created (none: before peer TLS existed, i.e. off);
    /// every member must agree, so a restart with another setting is refused.
    #[serde(default)]
    pub peer_tls: Option<crate::server::config::PeerTls>,
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

/// File whose presence says the cluster removed this node (it holds the reason).
fn removed_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("removed")
}

/// Records that this node was removed, so that a restart says so instead of serving.
pub fn record_removal(data_dir: &Path, reason: &str) -> Result<()> {
    std::fs::write(removed_marker(data_dir), format!("{reason}\n"))
        .map_err(|e| Error::Fatal(format!("cannot write {}: {e}", removed_marker(data_dir).display())))
}

/// Why this node was removed, if it was.
pub fn removal(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(removed_marker(data_dir)).ok().map(|s| s.trim().to_string())
}

/// The member other than `me` that already uses one of `node`'s addresses, and which one:
/// two members on one address would receive each other's traffic.
pub fn address_owner(
    me: u64,
    node: &panal_raft::NodeInfo,
    members: &[(u64, panal_raft::NodeInfo, panal_raft::MemberRole)],
) -> Option<(u64, String, &'static str, String)> {
    members.iter().filter(|(id, _, _)| *id != me).find_map(|(id, m, _)| {
        let pairs = [
            ("peer", &node.peer_addr, &m.peer_addr),
            ("api", &node.api_addr, &m.api_addr),
            ("mesh", &node.mesh_addr, &m.mesh_addr),
        ];
        pairs
            .into_iter()
            .find(|(_, mine, theirs)| mine == theirs)
            .map(|(what, addr, _)| (*id, m.name.clone(), what, addr.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use panal_raft::{MemberRole, NodeInfo};

    fn node(name: &str, ip: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            peer_addr: format!("{ip}:7701"),
            api_addr: format!("{ip}:7700"),
            mesh_addr: format!("{ip}:7702"),
        }
    }

    #[test]
    fn an_address_of_another_member_is_found() {
        let members =
            vec![(1, node("n1", "10.0.0.1"), MemberRole::Manager), (2, node("n2", "10.0.0.2"), MemberRole::Manager)];
        assert_eq!(address_owner(2, &node("n2", "10.0.0.2"), &members), None, "its own address");
        let owner = address_owner(3, &node("n3", "10.0.0.2"), &members).unwrap();
        assert_eq!((owner.0, owner.1.as_str(), owner.3.as_str()), (2, "n2", "10.0.0.2:7701"));
        let mut mixed = node("n3", "10.0.0.3");
        mixed.mesh_addr = "10.0.0.1:7702".into();
        assert_eq!(address_owner(3, &mixed, &members).map(|o| o.2), Some("mesh"));
    }

    #[test]
    fn a_removal_is_remembered_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(removal(dir.path()), None);
        record_removal(dir.path(), "n1 removed it").unwrap();
        assert_eq!(removal(dir.path()).as_deref(), Some("n1 removed it"));
    }
}
