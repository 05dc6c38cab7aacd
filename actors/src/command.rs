//! Commands proposed to the replicated log, each typed by what it answers.
//!
//! Every domain command is a struct (`catalog::command::PlaceOrder`, …) that implements
//! [`Proposal`]: its `Reply` type and the deterministic `apply` that produces it. The area
//! enums (`CatalogCommand`, …, declared with [`commands!`]) and [`Command`] are the form
//! the log carries, [`Reply`] the form every answer travels and is stored in (idempotent
//! replays). A proposer hands the struct to [`propose`] (services: `Call::write`) and gets
//! `P::Reply` back, so asking for another type than the command answers does not compile;
//! the one decode from the wire enum is in [`propose`], and it can only meet the variant
//! `P::apply` encoded.

use std::time::Duration;

use panal_raft::rusqlite::{self, Connection};
use panal_raft::{ApplyContext, WriteOutcome};

use crate::{auth, catalog, cluster, energy, kv, Command, Error, Rejection, Replica, Reply, Response};

/// A command of the domain, typed by its answer.
///
/// A service gets the type the command declares, and no other:
///
/// ```
/// use panal_actors::catalog::{command::PlaceOrder, Order};
/// use panal_actors::{services::Call, Error};
///
/// async fn buy(call: &Call) -> Result<Order, Error> {
///     call.write(PlaceOrder { buyer_id: 2, book_id: 1, quantity: 1 }).await
/// }
/// ```
///
/// ```compile_fail
/// use panal_actors::catalog::{command::PlaceOrder, Book};
/// use panal_actors::{services::Call, Error};
///
/// async fn buy(call: &Call) -> Result<Book, Error> {
///     call.write(PlaceOrder { buyer_id: 2, book_id: 1, quantity: 1 }).await
/// }
/// ```
pub trait Proposal: Into<Command> + Send + 'static {
    /// What applying the command answers when no rule says no.
    type Reply: Into<Reply> + FromReply + Send;

    /// Applies the command inside the entry's transaction: deterministic, identical on
    /// every replica; time is the replicated clock of `ctx`.
    fn apply(self, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Result<Self::Reply, Rejection>>;
}

/// Proposes `proposal` and answers its typed reply (a rejection becomes an error), with the
/// entry's log index.
pub async fn propose<P: Proposal>(
    replica: &Replica,
    proposal: P,
    idempotency_key: Option<String>,
    timeout: Duration,
) -> Result<WriteOutcome<P::Reply>, Error> {
    let out = replica.write(&proposal.into(), idempotency_key, timeout).await?;
    let reply = out.response?;
    // Only a reply of another kind than `P::apply` encodes lands here: an idempotency key
    // reused with another command whose body happened to match, or a log written by a
    // build whose command answered another type.
    let response = P::Reply::from_reply(reply)
        .map_err(|other| Error::Internal(format!("unexpected reply from the state machine: {other:?}")))?;
    Ok(WriteOutcome { response, index: out.index, replayed: out.replayed })
}

/// Applies one command and wraps its typed answer in the wire form; every area enum's
/// `apply` dispatches here, so the variant stored is always the one `P::Reply` decodes.
pub(crate) fn applied<P: Proposal>(proposal: P, db: &Connection, ctx: &ApplyContext) -> rusqlite::Result<Response> {
    Ok(proposal.apply(db, ctx)?.map(Into::into))
}

/// A typed answer read back from its wire form.
pub trait FromReply: Sized {
    /// The value, or the reply back when it is of another kind.
    fn from_reply(reply: Reply) -> Result<Self, Box<Reply>>;
}

macro_rules! reply_types {
    ($($variant:ident($ty:ty)),+) => {
        $(
            impl From<$ty> for Reply {
                fn from(value: $ty) -> Self {
                    Reply::$variant(value)
                }
            }

            impl FromReply for $ty {
                fn from_reply(reply: Reply) -> Result<Self, Box<Reply>> {
                    match reply {
                        Reply::$variant(v) => Ok(v),
                        other => Err(Box::new(other)),
                    }
                }
            }
        )+
    };
}
reply_types!(
    User(auth::User),
    KvEntry(kv::KvEntry),
    Book(catalog::Book),
    Order(catalog::Order),
    Device(energy::Device),
    Count(u64)
);

/// A command that answers nothing but that it was applied.
impl From<()> for Reply {
    fn from((): ()) -> Self {
        Reply::Done
    }
}

impl FromReply for () {
    fn from_reply(reply: Reply) -> Result<(), Box<Reply>> {
        match reply {
            Reply::Done => Ok(()),
            other => Err(Box::new(other)),
        }
    }
}

impl From<cluster::AllocatedNodeId> for Reply {
    fn from(id: cluster::AllocatedNodeId) -> Self {
        Reply::NodeId(id.0)
    }
}

impl FromReply for cluster::AllocatedNodeId {
    fn from_reply(reply: Reply) -> Result<Self, Box<Reply>> {
        match reply {
            Reply::NodeId(id) => Ok(cluster::AllocatedNodeId(id)),
            other => Err(Box::new(other)),
        }
    }
}

/// Declares an area's commands: one struct per command (with fields, in a `command`
/// module next to the enum; without, a unit struct), the area enum carrying them, the
/// conversions into the enum and into [`Command`] (the enum's own conversion is
/// `command_from!` in lib.rs), and the enum's `apply`, which
/// dispatches each command to its [`Proposal::apply`].
///
/// A command with fields is a newtype variant around its struct: serde writes it exactly
/// as the struct variant it replaces (`{"place_order": {"buyer_id": …}}`), and a command
/// without fields stays a unit variant (`"tick"`), so logs and peers of earlier builds
/// read the same bytes.
macro_rules! commands {
    ($(#[$meta:meta])* pub enum $area:ident { $($body:tt)* }) => {
        $crate::command::commands!(@munch $area [$(#[$meta])*] (db, ctx) [] [] [] $($body)*);
    };
    (@munch $area:ident $meta:tt ($db:ident, $ctx:ident) [$($variants:tt)*] [$($items:tt)*] [$($arms:tt)*]
        $(#[$vmeta:meta])* $name:ident { $($fields:tt)* } $(, $($rest:tt)*)?
    ) => {
        $crate::command::commands!(@munch $area $meta ($db, $ctx)
            [$($variants)* $(#[$vmeta])* $name(command::$name),]
            [$($items)*
                $(#[$vmeta])*
                #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
                pub struct $name { $($fields)* }

                impl From<$name> for super::$area {
                    fn from(c: $name) -> Self {
                        super::$area::$name(c)
                    }
                }

                impl From<$name> for $crate::Command {
                    fn from(c: $name) -> Self {
                        super::$area::$name(c).into()
                    }
                }
            ]
            [$($arms)* Self::$name(c) => $crate::command::applied(c, $db, $ctx),]
            $($($rest)*)?
        );
    };
    (@munch $area:ident $meta:tt ($db:ident, $ctx:ident) [$($variants:tt)*] [$($items:tt)*] [$($arms:tt)*]
        $(#[$vmeta:meta])* $name:ident $(, $($rest:tt)*)?
    ) => {
        $crate::command::commands!(@munch $area $meta ($db, $ctx)
            [$($variants)* $(#[$vmeta])* $name,]
            [$($items)*
                $(#[$vmeta])*
                #[derive(Debug, Clone, Copy, Default)]
                pub struct $name;

                impl From<$name> for super::$area {
                    fn from(_: $name) -> Self {
                        super::$area::$name
                    }
                }

                impl From<$name> for $crate::Command {
                    fn from(_: $name) -> Self {
                        super::$area::$name.into()
                    }
                }
            ]
            [$($arms)* Self::$name => $crate::command::applied(command::$name, $db, $ctx),]
            $($($rest)*)?
        );
    };
    (@munch $area:ident [$(#[$meta:meta])*] ($db:ident, $ctx:ident) [$($variants:tt)*] [$($items:tt)*] [$($arms:tt)*]) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $area {
            $($variants)*
        }

        /// The area's commands, one struct each, typed by their reply ([`crate::command::Proposal`]).
        pub mod command {
            #[allow(unused_imports)]
            use super::*;

            $($items)*
        }

        impl $area {
            pub(crate) fn apply(
                self,
                $db: &panal_raft::rusqlite::Connection,
                $ctx: &panal_raft::ApplyContext,
            ) -> panal_raft::rusqlite::Result<$crate::Response> {
                match self {
                    $($arms)*
                }
            }
        }
    };
}
pub(crate) use commands;

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::catalog::{command as catalog_cmd, Actor};
    use crate::cluster::command as cluster_cmd;

    /// The catalog and cluster command shapes as earlier builds declared them (struct and
    /// unit variants), to check that logs and peers of those builds read the same bytes.
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum EarlierCatalog {
        Ship { order_id: i64, actor: Actor, address: String },
        Tick,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum EarlierCluster {
        AllocateNodeId,
        AdvanceClock { ms: i64 },
    }

    #[derive(Serialize)]
    #[serde(tag = "area", content = "command", rename_all = "snake_case")]
    enum Earlier {
        Catalog(EarlierCatalog),
        Cluster(EarlierCluster),
    }

    fn ship() -> catalog_cmd::Ship {
        catalog_cmd::Ship { order_id: 7, actor: Actor { user_id: 2, admin: false }, address: "Calle 1".into() }
    }

    #[test]
    fn commands_keep_the_wire_form_of_earlier_builds() {
        let actor = Actor { user_id: 2, admin: false };
        let pairs: Vec<(Command, Earlier)> = vec![
            (ship().into(), Earlier::Catalog(EarlierCatalog::Ship { order_id: 7, actor, address: "Calle 1".into() })),
            (catalog_cmd::Tick.into(), Earlier::Catalog(EarlierCatalog::Tick)),
            (cluster_cmd::AllocateNodeId.into(), Earlier::Cluster(EarlierCluster::AllocateNodeId)),
            (cluster_cmd::AdvanceClock { ms: 5 }.into(), Earlier::Cluster(EarlierCluster::AdvanceClock { ms: 5 })),
        ];
        for (now, before) in pairs {
            // The log stores JSON; peers forward MessagePack with field names.
            let json = serde_json::to_string(&before).unwrap();
            assert_eq!(serde_json::to_string(&now).unwrap(), json);
            assert_eq!(rmp_serde::to_vec_named(&now).unwrap(), rmp_serde::to_vec_named(&before).unwrap());
            let read: Command = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&read).unwrap(), json);
        }
        assert_eq!(
            serde_json::to_string(&Command::from(catalog_cmd::Tick)).unwrap(),
            r#"{"area":"catalog","command":"tick"}"#
        );
    }

    #[test]
    fn every_reply_type_reads_back_only_from_its_own_variant() {
        assert_eq!(<()>::from_reply(().into()), Ok(()));
        assert_eq!(u64::from_reply(7u64.into()), Ok(7));
        assert_eq!(
            cluster::AllocatedNodeId::from_reply(cluster::AllocatedNodeId(3).into()),
            Ok(cluster::AllocatedNodeId(3))
        );
        // A node id is not a count and "done" is not a value, though both travel as numbers
        // or nothing.
        assert_eq!(u64::from_reply(Reply::NodeId(3)), Err(Box::new(Reply::NodeId(3))));
        assert_eq!(<()>::from_reply(Reply::Count(1)), Err(Box::new(Reply::Count(1))));
        assert!(catalog::Order::from_reply(Reply::Done).is_err());
    }

    #[test]
    fn applying_through_the_area_enum_encodes_the_commands_reply_type() {
        use panal_raft::Application;
        let db = Connection::open_in_memory().unwrap();
        crate::PanalApp.migrate(&db).unwrap();
        let ctx = ApplyContext { index: 1, now_ms: 0 };
        let apply = |c: Command| crate::PanalApp.apply(&db, &ctx, c).unwrap();
        assert_eq!(apply(cluster_cmd::AllocateNodeId.into()), Ok(Reply::NodeId(2)));
        assert_eq!(apply(catalog_cmd::Tick.into()), Ok(Reply::Count(0)));
        assert_eq!(apply(ship().into()).unwrap_err().code, "not_found");
    }
}
