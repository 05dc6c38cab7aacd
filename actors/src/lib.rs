//! Panal's application: every table and every typed command of the domain, applied
//! deterministically by the replicated state machine of `panal-raft`.
//!
//! - [`cluster`]: cluster identity, secrets, join tokens and node id allocation.
//! - [`auth`]: accounts, password hashing, JWT signing keys, token issue and verification.
//! - [`kv`]: a small key-value table used to exercise writes and reads end to end.
//! - [`catalog`]: the BookStore (listings, orders, payment, shipping, invoices).
//! - [`energy`]: devices, meter readings, battery series.
//! - [`prediction`]: consumption forecasts.
//! - [`services`]: the supervised service actors that serve all of the above.

pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod command;
pub mod energy;
pub mod error;
pub mod kv;
pub mod metrics;
pub mod orchestration;
pub mod page;
pub mod prediction;
pub mod services;
pub mod time;

use panal_raft::rusqlite::{self, Connection};
use panal_raft::{Application, ApplyContext};
use serde::{Deserialize, Serialize};

pub use command::{propose, FromReply, Proposal};
pub use error::{Error, Rejection};

/// Every command that can be proposed to the replicated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "area", content = "command", rename_all = "snake_case")]
pub enum Command {
    Cluster(cluster::ClusterCommand),
    Auth(auth::AuthCommand),
    Kv(kv::KvCommand),
    Catalog(catalog::CatalogCommand),
    Energy(energy::EnergyCommand),
    Orchestration(orchestration::OrchestrationCommand),
}

/// What a command produced: a reply, or a deterministic business rejection.
pub type Response = Result<Reply, Rejection>;

/// The wire form of every command's answer (each command's own type is its
/// [`Proposal::Reply`]; the conversions are in [`command`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Reply {
    Done,
    NodeId(u64),
    User(auth::User),
    KvEntry(kv::KvEntry),
    Book(catalog::Book),
    Order(catalog::Order),
    Device(energy::Device),
    Count(u64),
}

macro_rules! command_from {
    ($($variant:ident($ty:ty)),+) => {
        $(impl From<$ty> for Command {
            fn from(c: $ty) -> Self {
                Command::$variant(c)
            }
        })+
    };
}
command_from!(
    Cluster(cluster::ClusterCommand),
    Auth(auth::AuthCommand),
    Kv(kv::KvCommand),
    Catalog(catalog::CatalogCommand),
    Energy(energy::EnergyCommand),
    Orchestration(orchestration::OrchestrationCommand)
);

/// The application plugged into the replicated state machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct PanalApp;

impl Application for PanalApp {
    type Command = Command;
    type Response = Response;

    fn migrate(&self, db: &Connection) -> rusqlite::Result<()> {
        time::migrate(db)?;
        cluster::migrate(db)?;
        auth::migrate(db)?;
        kv::migrate(db)?;
        catalog::migrate(db)?;
        energy::migrate(db)?;
        orchestration::migrate(db)
    }

    fn apply(&self, db: &Connection, ctx: &ApplyContext, command: Command) -> rusqlite::Result<Response> {
        match command {
            Command::Cluster(c) => c.apply(db, ctx),
            Command::Auth(c) => c.apply(db, ctx),
            Command::Kv(c) => c.apply(db, ctx),
            Command::Catalog(c) => c.apply(db, ctx),
            Command::Energy(c) => c.apply(db, ctx),
            Command::Orchestration(c) => c.apply(db, ctx),
        }
    }
}

/// The replicated database, typed for this application.
pub type Replica = panal_raft::Replica<PanalApp>;
