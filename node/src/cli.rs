//! Command-line interface: every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "panal",
    version,
    about = "A self-contained application cluster: supervised services, Raft-replicated SQLite, HTTP on any node."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node: create a cluster (--init), join one (--join), or restart from the data dir.
    Start(Box<StartArgs>),
    /// Start a local cluster of N node processes on 127.0.0.1 and keep it running until Ctrl-C.
    Up(UpArgs),
    /// List and manage cluster members.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show or rotate the join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the cluster's state as seen by one node.
    Status(AdminArgs),
    /// Live per-node CPU, memory, load and process counts of the whole cluster.
    Top(TopArgs),
    /// Write a consistent SQLite copy of the replicated state (as of a linearizable read on
    /// that node) to FILE.
    Backup(BackupArgs),
    /// Start a new cluster (this node its first manager) from a backup: `panal restore FILE
    /// --data-dir DIR --init [start flags]`. Other nodes then join it as usual.
    Restore(Box<RestoreArgs>),
    /// Rehearse a failure (leader kill, pause, partition, restarts, panics) under a recorded
    /// workload and check that nothing acknowledged was lost or applied twice.
    Drill(crate::drill::DrillArgs),
    /// Run a benchmark and print a table.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Probe a node's URL (default: the local /ready); exit 0 iff it answers 200. For
    /// container health checks.
    Health(crate::health::HealthArgs),
}

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
    pub balance: crate::gateway::Policy,
    /// Workers per service on this node (default: the number of cores).
    #[arg(long, env = "PANAL_POOL_SIZE")]
    pub pool_size: Option<usize>,
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

#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Where to write the backup (replaced atomically if it exists).
    pub file: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// A file written by `panal backup`.
    pub file: PathBuf,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2)]
    pub every: u64,
    /// Print one screen and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// API URL of any node.
    #[arg(long = "node", env = "PANAL_URL", default_value = "http://127.0.0.1:7700")]
    pub url: String,
    #[arg(long, env = "PANAL_USER", default_value = "admin")]
    pub user: String,
    #[arg(long, env = "PANAL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Table of members: id, name, role, raft state, leader, api address, reachable, applied index.
    Ls(AdminArgs),
    /// Make a worker a manager (Raft voter).
    Promote {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a manager a worker (learner with a full replica).
    Demote {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a node from the cluster.
    Rm {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the join token for a role.
    Show {
        #[arg(value_parser = ["manager", "worker"])]
        role: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace the join token for a role (the old one stops working), or with `jwt` add a
    /// new token signing key (tokens signed with the old key stay valid until they expire).
    Rotate {
        #[arg(value_parser = ["manager", "worker", "jwt"])]
        role: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Number of managers.
    #[arg(long, env = "PANAL_UP_NODES", default_value_t = 3)]
    pub nodes: u16,
    /// Number of workers in addition to the managers.
    #[arg(long, env = "PANAL_UP_WORKERS", default_value_t = 0)]
    pub workers: u16,
    /// Directory holding every node's data dir and log.
    #[arg(long, env = "PANAL_UP_DIR", default_value = "./.panal")]
    pub dir: PathBuf,
    /// First API port; node i uses base+10*i (api), +1 (peer), +2 (mesh).
    #[arg(long, env = "PANAL_UP_BASE_PORT", default_value_t = 7700)]
    pub base_port: u16,
    /// Load demo data once the cluster is ready (users, books with stock, a meter with 30
    /// days of readings, a battery CSV); skipped when it is there already.
    #[arg(long, env = "PANAL_UP_DEMO")]
    pub demo: bool,
    /// Extra flags for every node's `panal start` (repeatable), e.g. --node-arg=--chaos.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
}
