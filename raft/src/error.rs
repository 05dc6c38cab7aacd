//! The crate's one error type.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No leader is known (election in progress or quorum lost). Retry later.
    #[error("no leader is known: the cluster is electing one or has lost its quorum")]
    NoLeader,
    /// The local replica has not applied the requested index within the deadline.
    #[error("this replica has applied index {applied}, the request needs {wanted}")]
    ReplicaLagging { applied: u64, wanted: u64 },
    /// A session read asked for an index beyond anything the cluster has committed (the
    /// leader's log ends before it): no wait could ever satisfy it.
    #[error("index {wanted} is ahead of the cluster, whose log ends at {last}")]
    IndexAhead { wanted: u64, last: u64 },
    /// This node was removed from the cluster: it serves nothing any more.
    #[error("this node was removed from the cluster")]
    NodeRemoved,
    /// The idempotency key was already used for a different command.
    #[error("the Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// `apply` failed on every replica; nothing changed.
    #[error("the command could not be applied: {0}")]
    ApplyFailed(String),
    /// A peer rejected our credentials, or a peer request lacked them.
    #[error("peer authentication failed")]
    Unauthorized,
    /// A membership change that cannot be made (last voter, …).
    #[error("{0}")]
    Membership(String),
    /// The node a membership change names is not a member (never was, or already removed).
    #[error("node {0} is not a member of this cluster")]
    NotMember(crate::NodeId),
    /// Another membership change is still being committed; retried until the deadline.
    #[error("another membership change is in progress: {0}")]
    MembershipBusy(String),
    /// A peer could not be reached or answered with garbage.
    #[error("peer {addr}: {message}")]
    Peer { addr: String, message: String },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the replica is shutting down")]
    ShuttingDown,
    /// Local input that cannot be used (for example a file that is not a backup).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Errors after which retrying the same request elsewhere or later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoLeader | Error::Peer { .. } | Error::ReplicaLagging { .. } | Error::MembershipBusy(_))
    }
}

/// Failures a peer reports back for forwarded requests.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum RemoteFailure {
    NotLeader,
    Membership(String),
    NotMember(crate::NodeId),
    MembershipBusy(String),
    Other(String),
}

impl From<RemoteFailure> for Error {
    fn from(f: RemoteFailure) -> Self {
        match f {
            RemoteFailure::NotLeader => Error::NoLeader,
            RemoteFailure::Membership(m) => Error::Membership(m),
            RemoteFailure::NotMember(id) => Error::NotMember(id),
            RemoteFailure::MembershipBusy(m) => Error::MembershipBusy(m),
            RemoteFailure::Other(m) => Error::Raft(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}
