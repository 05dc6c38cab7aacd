//! Panal: one binary per machine that runs a replicated application cluster.
//!
//! - [`server`]: the node (`panal start`): Raft replica, services, gateway, HTTP API,
//!   peer port and actor mesh. It never imports the tooling.
//! - [`tooling`]: the operator's side (CLI, local-cluster launcher, demo data, drills,
//!   benchmarks, `top`), which talks to nodes over HTTP.
//! - [`error`]: the crate's one error enum and its HTTP mapping.

pub mod error;
pub mod server;
pub mod tooling;

/// Makes aws-lc the process's rustls provider; call it before building an HTTP client.
pub use panal_raft::install_crypto_provider;
