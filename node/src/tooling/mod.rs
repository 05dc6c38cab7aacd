//! Operator tooling: the command line and everything that talks to a cluster from the
//! outside, over its HTTP API. Depends on the server only to start a node in-process.
//!
//! - `client`: the typed HTTP client every tool (and the e2e tests) talks to nodes with.
//! - `launcher`: the one local-cluster launcher (up, drills, benchmarks, tests).
//! - `cli`: the command-line grammar.
//! - `admin`: `node`, `token`, `status`, `backup` commands.
//! - `up`: `panal up`, a supervised local cluster.
//! - `demo`: the demo data `panal up --demo` loads.
//! - `seed`: the one data seeder (accounts, books, devices) of demo, drill and bench.
//! - `top`: the live cluster view in a terminal.
//! - `drill`: failure rehearsals under a recorded workload.
//! - `bench`: benchmarks writing docs/benchmarks.md.
//! - `health`: the container health probe.
//! - `service`: `service …` and `node update` (orchestration).

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod demo;
pub mod drill;
pub mod health;
pub mod launcher;
pub mod seed;
pub mod service;
pub mod top;
pub mod up;
