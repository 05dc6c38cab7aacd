//! The node's configuration: every `panal start` flag, each with its `PANAL_*` variable.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// Directory for the node's identity, Raft log, state database and snapshots.
    #[arg(long, env = "PANAL_DATA_DIR", default_value = "./panal-data")]
    pub data_dir: PathBuf,
    /// Node name (unique in the cluster). Defaults to the host name.
    #[arg(long, env = "PANAL_NAME")]
    pub name: Option<String>,
    /// Public HTTP API listen address.
    #[arg(long, env = "PANAL_API_ADDR", default_value = "0.0.0.0:7700")]
    pub api_addr: String,
    /// Peer listen address (Raft RPC and forwarding, cluster-secret authenticated).
    #[arg(long, env = "PANAL_PEER_ADDR", default_value = "0.0.0.0:7701")]
    pub peer_addr: String,
    /// Actor mesh listen address.
    #[arg(long, env = "PANAL_MESH_ADDR", default_value = "0.0.0.0:7702")]
    pub mesh_addr: String,
    /// Host other nodes use to reach this one. Defaults to the listen host, or the host
    /// name when listening on 0.0.0.0.
    #[arg(long, env = "PANAL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Create a new cluster with this node as its first manager (first start only).
    #[arg(long, env = "PANAL_INIT", conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster through any member's peer address HOST[:PORT] (first start only).
    #[arg(long, env = "PANAL_JOIN", requires = "token")]
    pub join: Option<String>,
    /// Join token printed by `--init` or `panal token show`.
    #[arg(long, env = "PANAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Orchestrated bootstrap (first start only): wait until this many nodes of --peers
    /// answer, then exactly one of them creates the cluster and the others join; nodes
    /// beyond this many managers join as workers. Needs --peers and --cluster-token-file.
    #[arg(long, env = "PANAL_BOOTSTRAP_EXPECT", conflicts_with_all = ["init", "join"], requires_all = ["peers", "cluster_token_file"])]
    pub bootstrap_expect: Option<usize>,
    /// Peer addresses HOST[:PORT] of the nodes to bootstrap with (comma-separated; this
    /// node may be listed; a name may resolve to several addresses, e.g. tasks.panal).
    #[arg(long, env = "PANAL_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// File holding the shared cluster token (one word, at least 16 characters, e.g. from
    /// `openssl rand -hex 32`) from which every bootstrapping node derives the cluster's
    /// identity and join tokens.
    #[arg(long, env = "PANAL_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "PANAL_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Raft election timeout lower bound in milliseconds (upper bound: 20% more).
    #[arg(long, env = "PANAL_ELECTION_TIMEOUT_MS", default_value_t = 250)]
    pub election_timeout_ms: u64,
    /// Build a snapshot every this many applied entries.
    #[arg(long, env = "PANAL_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot.
    #[arg(long, env = "PANAL_KEEP_AFTER_SNAPSHOT", default_value_t = 1000)]
    pub keep_after_snapshot: u64,
    /// How the gateway picks a service instance among all live ones in the cluster.
    #[arg(long, env = "PANAL_BALANCE", value_enum, default_value = "p2c")]
    pub balance: super::gateway::Policy,
    /// Workers per service on this node (default: the number of cores).
    #[arg(long, env = "PANAL_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// How long a member may be off the actor mesh before the leader moves its tasks to
    /// other nodes, in milliseconds.
    #[arg(long, env = "PANAL_NODE_DOWN_AFTER_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub node_down_after_ms: u64,
    /// Deadline for one call to a service instance, in milliseconds.
    #[arg(long, env = "PANAL_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub call_timeout_ms: u64,
    /// Enable the admin chaos hooks (/api/v1/admin/chaos/…) used by drills.
    #[arg(long, env = "PANAL_CHAOS")]
    pub chaos: bool,
    /// How often the node samples its process and system statistics, in milliseconds.
    #[arg(long, env = "PANAL_METRICS_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub metrics_interval_ms: u64,
    /// Where to read process statistics from (`/proc/panal_procs` there when the kernel
    /// module is loaded, else a scan of the process directories).
    #[arg(long, env = "PANAL_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
}
