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

/// A value a command's [`Reply`] carries, decoded where the proposer expects it (see
/// `services::Call::write`): the one place a reply is matched against its type.
pub trait FromReply: Sized {
    /// The value, or the reply back when it is of another kind.
    fn from_reply(reply: Reply) -> Result<Self, Box<Reply>>;
}

/// The proposer needs no value: any reply will do.
impl FromReply for () {
    fn from_reply(_: Reply) -> Result<(), Box<Reply>> {
        Ok(())
    }
}

macro_rules! from_reply {
    ($($variant:ident($ty:ty)),+) => {
        $(impl FromReply for $ty {
            fn from_reply(reply: Reply) -> Result<Self, Box<Reply>> {
                match reply {
                    Reply::$variant(v) => Ok(v),
                    other => Err(Box::new(other)),
                }
            }
        })+
    };
}
from_reply!(
    User(auth::User),
    KvEntry(kv::KvEntry),
    Book(catalog::Book),
    Order(catalog::Order),
    Device(energy::Device),
    Count(u64)
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
            Command::Cluster(c) => cluster::apply(db, ctx, c),
            Command::Auth(c) => auth::apply(db, ctx, c),
            Command::Kv(c) => kv::apply(db, ctx, c),
            Command::Catalog(c) => catalog::apply(db, ctx, c),
            Command::Energy(c) => energy::apply(db, ctx, c),
            Command::Orchestration(c) => orchestration::apply(db, ctx, c),
        }
    }
}

/// The replicated database, typed for this application.
pub type Replica = panal_raft::Replica<PanalApp>;
