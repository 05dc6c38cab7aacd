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
    #[arg(long, env = "PANAL_JOIN")]
    pub join: Option<String>,
    /// How long `--join` keeps trying to reach the member it joins through, in seconds.
    #[arg(long, env = "PANAL_JOIN_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub join_timeout: u64,
    /// Join token printed by `--init` or `panal token show`. Visible to every local user
    /// in `ps`: prefer --token-file or the PANAL_TOKEN variable.
    #[arg(long, env = "PANAL_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the join token (first line), instead of --token on the command line.
    #[arg(long, env = "PANAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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
    /// Origins of browser clients allowed to call the API (CORS), comma-separated:
    /// `https://console.example.com`, or `*` for any. Off by default.
    #[arg(long = "cors-origin", env = "PANAL_CORS_ORIGIN", value_delimiter = ',', value_parser = super::api::cors::parse_origin)]
    pub cors_origins: Vec<String>,
    /// Mutual TLS between nodes (peer port and actor mesh) with certificates from the
    /// cluster's own CA. `off` only to measure what TLS costs: every member must agree.
    #[arg(long, env = "PANAL_PEER_TLS", value_enum, default_value = "on")]
    pub peer_tls: PeerTls,
    /// Lifetime of the node certificates this node issues and asks for, in seconds
    /// (renewed at a random point in 50–80 % of it). Default: 90 days.
    #[arg(long, env = "PANAL_CERT_TTL", default_value_t = 90 * 86_400, value_parser = clap::value_parser!(u64).range(10..=5 * 365 * 86_400))]
    pub cert_ttl: u64,
    #[command(flatten)]
    pub api_tls: ApiTlsArgs,
    #[command(flatten)]
    pub limits: Limits,
}

/// HTTPS on the public API port (see `api_tls.rs`).
#[derive(Debug, Args, Clone, Default)]
pub struct ApiTlsArgs {
    /// HTTPS on the API port: `auto` (a certificate from the cluster CA for the advertised
    /// host, localhost and --api-san) or `off`. Default: `auto`, except `off` when the API
    /// listens on a loopback address only. --api-tls-cert/--api-tls-key serve your own.
    #[arg(long, env = "PANAL_API_TLS", value_enum, conflicts_with = "api_tls_cert")]
    pub api_tls: Option<ApiTlsMode>,
    /// Your own certificate chain for the API port (PEM, leaf first), with --api-tls-key.
    /// Both files are reloaded on SIGHUP and when they change; a new pair that does not
    /// load is logged and the previous one stays in service.
    #[arg(long, env = "PANAL_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, env = "PANAL_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Another name or address the `auto` certificate is valid for (a load balancer's name,
    /// a public address); repeatable or comma-separated.
    #[arg(long, env = "PANAL_API_SAN", value_delimiter = ',')]
    pub api_san: Vec<String>,
}

/// `--api-tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiTlsMode {
    /// A certificate from the cluster CA.
    Auto,
    /// Plain HTTP.
    Off,
}

/// `--peer-tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTls {
    On,
    Off,
}

impl PeerTls {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerTls::On => "on",
            PeerTls::Off => "off",
        }
    }
}

/// Limits that keep a node's memory, connections and threads bounded whatever strangers send.
#[derive(Debug, Args, Clone)]
pub struct Limits {
    /// Lifetime of issued access tokens in seconds. Tokens whose lifetime (exp - iat) is
    /// longer are refused, and a rotated-out signing key stops verifying this long after
    /// its rotation. Use the same value on every node.
    #[arg(long, env = "PANAL_TOKEN_TTL", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(5..=30 * 86_400))]
    pub token_ttl: i64,
    /// Password hashing threads (each keeps one 19 MiB argon2 block while busy, released
    /// after 3 s idle). Default: the number of cores, at most 4.
    #[arg(long, env = "PANAL_HASH_THREADS")]
    pub hash_threads: Option<usize>,
    /// Password checks that may wait for a hashing thread; beyond it: 503 `overloaded`.
    #[arg(long, env = "PANAL_HASH_QUEUE", default_value_t = 32)]
    pub hash_queue: usize,
    /// Failed logins (per account, per client address) allowed before the backoff starts.
    #[arg(long, env = "PANAL_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,
    /// Longest login lockout in seconds (the backoff doubles from 1 s up to this).
    #[arg(long, env = "PANAL_LOGIN_MAX_LOCKOUT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_max_lockout: u64,
    /// Seconds a client may take to send a request's headers on the api and peer ports.
    #[arg(long, env = "PANAL_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds a connection with no request in flight is kept open on the api and peer
    /// ports (waiting for a request's headers is bounded by --header-timeout as well).
    #[arg(long, env = "PANAL_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Open connections per port (api, peer); at the cap the longest-idle one is closed
    /// to make room, so idle connections cannot lock clients out. Lowered to fit the
    /// open-file limit.
    #[arg(long, env = "PANAL_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_connections: u64,
    /// Mesh connections that may be authenticating at once; more are closed at once.
    #[arg(long, env = "PANAL_MESH_MAX_UNAUTHENTICATED", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub mesh_max_unauthenticated: u64,
    /// Largest mesh frame accepted before the peer has authenticated, in bytes.
    #[arg(long, env = "PANAL_MESH_MAX_HANDSHAKE_FRAME", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    pub mesh_max_handshake_frame: u64,
}
