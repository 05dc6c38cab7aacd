//! Command-line interface: every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::server::config::StartArgs;
pub use crate::tooling::client::AdminArgs;

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
    /// Orchestration: list, inspect, scale and update services.
    #[command(subcommand)]
    Service(crate::tooling::service::ServiceCommand),
    /// Show or rotate the join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The cluster CA: fingerprint and expiry, or its certificate for clients.
    #[command(subcommand)]
    Ca(CaCommand),
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
    Drill(crate::tooling::drill::DrillArgs),
    /// Run a benchmark and print a table.
    #[command(subcommand)]
    Bench(crate::tooling::bench::BenchCommand),
    /// Probe a node's URL (default: the local /ready); exit 0 iff it answers 200. For
    /// container health checks.
    Health(crate::tooling::health::HealthArgs),
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

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// The CA's fingerprint (as in the join tokens) and expiry, and the answering node's
    /// certificate expiry.
    Show(AdminArgs),
    /// Write the CA certificate (PEM trust bundle) to FILE, for clients.
    Export {
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace the CA without downtime: a new CA signs from now on, every node gets a new
    /// certificate from it, and the old CA is no longer trusted once all have one.
    Rotate(AdminArgs),
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
    /// Set a node's availability (active, pause, drain) and labels.
    Update(crate::tooling::service::NodeUpdateArgs),
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
