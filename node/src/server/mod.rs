//! The node itself: what `panal start` runs. Nothing here imports the operator tooling.
//!
//! - `config`: every `panal start` flag.
//! - `start`: start-up and wiring (Raft replica, services, mesh, gateway, API and peer
//!   listeners), `--init`/`--join`, restore, shutdown.
//! - `bootstrap`: the orchestrated bootstrap (`--bootstrap-expect`).
//! - `identity`: the node's identity file and join tokens.
//! - `api`: the public HTTP API (routes, extractors, OpenAPI).
//! - `api_tls`: HTTPS on the API port (`--api-tls`, bring-your-own certificates).
//! - `gateway`: picks a service instance anywhere in the cluster and calls it.
//! - `mesh`: the actor mesh between nodes.
//! - `link`: service calls to another node's instances, over one stream per node pair.
//! - `memory`: returns memory the allocator freed to the system.
//! - `peer`: the peer port (Raft RPC, forwarded writes, joins).
//! - `reconciler`: orchestration on the node (the leader's scheduler, the reconciler).

pub mod api;
pub mod api_tls;
pub mod bootstrap;
pub mod config;
pub mod gateway;
pub mod identity;
pub mod link;
pub mod listen;
pub mod memory;
pub mod mesh;
pub mod peer;
pub mod reconciler;
pub mod start;
pub mod tls;
